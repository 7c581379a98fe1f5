"""Every exception procpool defines, and the stdlib classes it deliberately reuses.

Owns the error vocabulary and the wording of each message; raises nothing itself. Every class
pickles with its attributes intact (tests/test_errors.py checks), so errors survive crossing
a process boundary or a results file.

    Exception
     +-- ProcpoolError                         base of everything procpool raises itself
          +-- WorkerDied  (+ BrokenProcessPool) the worker running this task died: pid, exit
          |                                     code or signal, the likely cause, attempts
          +-- TaskTimeout                       the task ran past its task_timeout and its
          |                                     worker was killed (not a *waiting* timeout)
          +-- PoolBroken  (+ BrokenProcessPool) the pool cannot run anything any more
          |    +-- InitializerFailed            ... because the worker initializer failed
          |         +-- WorkerStartFailed       ... or, with no initializer, a worker could
          |                                     not start (an unguarded script, say)
          +-- PoolTerminated  (+ BrokenProcessPool) the task was dropped by terminate()
          +-- SerializationError (+ pickle.PicklingError)
          |    |                                a worker could not unpickle a function or its
          |    |                                arguments (pickling failures in the parent raise
          |    |                                the pickler's own exception, as the stdlib does)
          |    +-- TaskUnpicklingError (+ BrokenProcessPool)
          |    |                                what the parent makes of the above
          |    +-- ResultSerializationError (+ multiprocessing.pool.MaybeEncodingError)
          |         |                           a result could not travel back
          |         +-- ResultUnpicklingError (+ BrokenProcessPool)
          |                                     ... because the parent could not unpickle it
          +-- RemoteError                       stand-in for a task exception that could not be
                                                pickled or unpickled; keeps type, text, traceback

``procpool.TimeoutError`` *is* ``multiprocessing.TimeoutError``: waiting timeouts raise the class
that code written for the stdlib already catches.
"""

from __future__ import annotations

import signal
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import TimeoutError as TimeoutError

from ._runtime_typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

# The errors a worker raises live apart, so that a worker need not import concurrent.futures
# (for BrokenProcessPool) to start: see _worker_errors.py. They belong to this tree all the same.
from ._result_errors import ResultSerializationError
from ._worker_errors import ProcpoolError, RemoteError, SerializationError

__all__ = [
    "InitializerFailed",
    "PoolBroken",
    "PoolTerminated",
    "ProcpoolError",
    "RemoteError",
    "ResultSerializationError",
    "SerializationError",
    "TaskTimeout",
    "TimeoutError",
    "WorkerDied",
    "describe_exit",
    "how_it_ended",
]


def how_it_ended(exitcode: int | None) -> str:
    """A process's end in a few words: "killed by SIGKILL", or "exit code 3"."""
    signal_name, _ = describe_exit(exitcode)
    return f"killed by {signal_name}" if signal_name else f"exit code {exitcode}"


def describe_exit(exitcode: int | None) -> tuple[str | None, str]:
    """Name the signal (if any) behind a process exit code and say what most likely caused it."""
    if exitcode is None:
        return None, "the process could not be reaped, its exit status is unknown"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        causes = {
            "SIGKILL": "most often the kernel's OOM killer (check `dmesg` and the task's "
            "memory use), or an external `kill -9`",
            "SIGSEGV": "a segmentation fault: a crash in native code (a C extension, "
            "ctypes, or memory corruption)",
            "SIGBUS": "a bus error: a crash in native code, or a memory-mapped file that "
            "shrank",
            "SIGABRT": "an abort: a failed assertion or fatal error in native code",
            "SIGFPE": "a floating-point exception in native code",
            "SIGILL": "an illegal instruction in native code (a build for another CPU?)",
            "SIGTERM": "a SIGTERM sent from outside the pool",
            "SIGINT": "an interrupt (Ctrl-C) sent to the worker",
        }
        return name, causes.get(name, f"a {name} sent from outside the pool")
    if exitcode == 0:
        return None, "the task (or a library it called) ended the process with sys.exit(0)"
    return None, "the task (or a library it called) ran sys.exit() or os._exit()"


class WorkerDied(ProcpoolError, BrokenProcessPool):
    """The worker running a task died before the task finished.

    Only the work that worker held fails with this error; the pool starts a new worker and keeps
    serving. Subclasses ``concurrent.futures.process.BrokenProcessPool`` so handlers written for
    the stdlib executor still catch it.
    """

    __module__ = "procpool"

    def __init__(
        self,
        pid: int | None,
        exitcode: int | None,
        task: str = "",
        peak_rss: int | None = None,
        attempts: int = 1,
        oom_killed: bool = False,
        cause: str | None = None,
    ) -> None:
        self.pid = pid
        self.exitcode = exitcode
        self.signal_name, self.likely_cause = describe_exit(exitcode)
        self.cause = cause  # what the backend knows of a loss it has no exit status for
        if cause is not None:
            self.likely_cause = cause
        elif oom_killed:
            self.likely_cause = (
                "the kernel's OOM killer: the system's count of OOM kills rose when it died; "
                "give the task less data at a time, or the machine more memory"
            )
        self.task = task
        self.peak_rss = peak_rss
        self.attempts = attempts
        self.oom_killed = oom_killed
        how = "lost" if cause is not None and exitcode is None else how_it_ended(exitcode)
        who = "worker" if pid is None else f"worker (pid {pid})"
        text = f"{who} died while running {task or 'a task'}: {how}, "
        text += f"likely cause: {self.likely_cause}"
        if peak_rss is not None:
            text += f"; its peak resident memory was {peak_rss / 2**20:.0f} MiB"
        if attempts > 1:
            text += f"; the task was tried {attempts} times"
        text += ". The pool replaced the worker; other tasks are not affected."
        super().__init__(text)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.pid, self.exitcode, self.task, self.peak_rss, self.attempts,
                             self.oom_killed, self.cause))

    def naming(self, task: str) -> WorkerDied:
        """The same death, naming the task another way (the batch runner's input items)."""
        return type(self)(self.pid, self.exitcode, task, self.peak_rss, self.attempts,
                          self.oom_killed, self.cause)


class TaskTimeout(ProcpoolError):
    """A task ran longer than its ``task_timeout``; its worker was killed and replaced.

    Distinct from ``procpool.TimeoutError`` (``get(timeout)`` giving up waiting, which stops
    nothing). Carries the limit, the worker's pid, the task and how many attempts were made.
    """

    __module__ = "procpool"

    def __init__(self, timeout: float, pid: int | None, task: str = "",
                 attempts: int = 1) -> None:
        self.timeout = timeout
        self.pid = pid
        self.task = task
        self.attempts = attempts
        text = (f"{task or 'a task'} ran longer than its task_timeout of {timeout:g} s; its "
                f"worker (pid {pid}) and the processes it started were killed")
        if attempts > 1:
            text += f"; the task was tried {attempts} times"
        super().__init__(text + ".")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.timeout, self.pid, self.task, self.attempts))

    def naming(self, task: str) -> TaskTimeout:
        """The same timeout, naming the task another way (the batch runner's input items)."""
        return type(self)(self.timeout, self.pid, task, self.attempts)


class PoolBroken(ProcpoolError, BrokenProcessPool):
    """The pool can no longer run tasks; every pending and later task fails with this."""

    __module__ = "procpool"


class InitializerFailed(PoolBroken):
    """The ``initializer`` raised or crashed in a worker, so no worker can be started.

    Raised for every task the pool held and every later submission, instead of respawning
    workers forever as ``multiprocessing.Pool`` does. The worker's exception is ``__cause__``.
    """

    __module__ = "procpool"

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(
            f"the pool's initializer failed in a worker ({detail}); the pool is broken. "
            "Fix the initializer, then create a new pool."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.detail,))


class WorkerStartFailed(InitializerFailed):
    """A worker exited while it started, or too many in a row were killed as they started,
    and no initializer was given to blame.

    Under spawn and forkserver a worker imports the parent's main module before anything
    else; a script that creates its pool at import time, without an
    ``if __name__ == "__main__":`` guard, fails there in every worker (multiprocessing prints
    why in the worker's stderr). An InitializerFailed, so code that catches that still does.
    ``in_a_row``: how many workers in a row were killed (by a signal) while starting, when
    the pool gave up replacing them; None for a worker that exited.
    """

    __module__ = "procpool"

    def __init__(self, pid: int | None, how: str, imports_main: bool,
                 in_a_row: int | None = None) -> None:
        self.pid = pid
        self.how = how
        self.imports_main = imports_main
        self.in_a_row = in_a_row
        if in_a_row is not None:
            self.detail = (f"{in_a_row} workers in a row died during start-up, before any "
                           f"could run a task; the last (pid {pid}) {how}")
            PoolBroken.__init__(self, f"{self.detail}. The pool gave up replacing them and is "
                                "broken.")
            return
        self.detail = f"worker pid {pid} ended ({how}) while starting, before it could run a task"
        if imports_main:
            advice = (
                "Under spawn and forkserver each worker first imports your main module, so "
                "code there that runs at import time runs in every worker too (the worker "
                "printed its traceback above). If your script creates the pool at import "
                'time, move that code under `if __name__ == "__main__":`.'
            )
        else:
            advice = "The worker's own output above may say why."
        PoolBroken.__init__(self, f"{self.detail}; the pool is broken. {advice}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.pid, self.how, self.imports_main, self.in_a_row))


class PoolTerminated(ProcpoolError, BrokenProcessPool):
    """The pool was terminated before this task could finish (``terminate()``,
    ``terminate_workers()``, ``kill_workers()``, Ctrl-C)."""

    __module__ = "procpool"


class TaskUnpicklingError(SerializationError, BrokenProcessPool):
    """A worker could not unpickle a task's function or arguments, so the task never ran.

    Only that task fails, and the pool goes on. The stdlib's executor breaks there, raising
    ``BrokenProcessPool``: this is one too, so ``except`` clauses written for it still match.
    The parent turns the worker's ``SerializationError`` into this one (the worker cannot
    import ``concurrent.futures`` just for the class).
    """

    __module__ = "procpool"


class ResultUnpicklingError(ResultSerializationError, BrokenProcessPool):
    """A task's result was pickled in the worker, but the parent could not unpickle it.

    Only that task (its chunk) fails. Also a ``BrokenProcessPool``, what the stdlib's executor
    raises there. A result that cannot be *pickled* in the worker stays a plain
    ``ResultSerializationError`` (a ``PicklingError``, as in the stdlib).
    """

    __module__ = "procpool"
