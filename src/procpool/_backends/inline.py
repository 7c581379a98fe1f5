"""Workers as threads of the calling process, speaking the same pipe protocol.

For tests and debugging: a breakpoint in a task works, nothing is forked. Tasks still go through
pickle, so what runs inline also runs in processes. A thread cannot be killed: kill() closes its
pipe and lets the thread go at once (its sentinel fires), and the thread ends after its current
task, whose reply then finds the pipe closed.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Sequence
from multiprocessing import Pipe
from multiprocessing.connection import Connection

from .. import _threads as threads
from .._messages import WorkerSetup
from .._worker import worker_main
from . import OnThisMachine

# How long reap() waits for a worker thread that ended by itself to finish returning.
_REAP_TIMEOUT = 5.0

# What reap() reports for a worker the pool killed, as for a killed process (and a Dask relay).
_KILLED = -signal.SIGKILL


class InlineWorker:
    def __init__(self, worker_id: int, setup: WorkerSetup) -> None:
        self.worker_id = worker_id
        self.pid: int | None = os.getpid()
        self.loss_cause: str | None = None
        self.connection, child_end = Pipe(duplex=True)
        # A pipe whose write end closes when the thread ends, or when kill() lets the thread
        # go: a sentinel like a process's.
        self.sentinel, done_write = os.pipe()
        self._done_write: int | None = done_write
        self._lock = threading.Lock()
        self._killed = False
        self._exitcode = 0
        self._thread = threading.Thread(
            target=self._run,
            args=(child_end, setup),
            name=f"procpool-inline-worker-{worker_id}",
            daemon=True,
        )
        threads.start(self._thread)  # with SIGINT blocked (_threads.py)

    def _run(self, child_end: Connection, setup: WorkerSetup) -> None:
        try:
            worker_main(child_end, setup)
        except SystemExit as exc:
            # sys.exit() in a task ends a process worker with that status: end this worker
            # the same way, with the same status (not a silent 0, nor a thread traceback).
            code = exc.code
            self._exitcode = code if isinstance(code, int) else 0 if code is None else 1
        except (EOFError, OSError):
            # The pool closed our pipe before its Ready or InitFailed went out (terminated,
            # or done, while we started): nobody is listening, as in the worker's own loop.
            pass
        finally:
            child_end.close()
            self._signal_end()

    def _signal_end(self) -> None:
        """Fire the sentinel: once, whether the thread ended or kill() let it go first."""
        with self._lock:
            if self._done_write is not None:
                os.close(self._done_write)
                self._done_write = None

    def kill(self, *, force: bool) -> None:
        # The pool must not wait for a thread it cannot stop (a timed-out task would hold its
        # TaskTimeout, and terminate() its PoolTerminated, until the task returned): the
        # worker ends for the pool now; the thread runs on to the end of its task.
        with self._lock:
            self._killed = True
        if not self.connection.closed:
            self.connection.close()
        self._signal_end()

    def private_fds(self) -> list[int]:
        return []  # nothing is forked

    def reap(self) -> int | None:
        if self._killed:
            return _KILLED  # the thread may be inside its task still: do not wait for it
        # It ended by itself: its sentinel fired as it returned. A moment to finish, never
        # a hang of the pool's shutdown.
        self._thread.join(_REAP_TIMEOUT)
        return None if self._thread.is_alive() else self._exitcode

    def close(self) -> None:
        if not self.connection.closed:
            self.connection.close()
        os.close(self.sentinel)


class InlineBackend(OnThisMachine):
    name = "inline"
    inherits_memory = True
    imports_main = False
    shares_memory = False  # threads: nothing to gain over the pipe
    own_processes = False

    def start_worker(
        self, worker_id: int, setup: WorkerSetup, parent_fds: Sequence[int]
    ) -> InlineWorker:
        return InlineWorker(worker_id, setup)
