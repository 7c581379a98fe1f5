"""A vocabulary of tasks that misbehave, for the failure tests.

Module-level functions, so that spawn and forkserver workers can import them. Each does one
thing wrong, and is named after it.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import os
import signal
import sys
import threading
from typing import Any


def square(x: int) -> int:
    return x * x


def add(x: int, y: int) -> int:
    return x + y


def identity(x: Any) -> Any:
    return x


def pid_of_worker(_: object = None) -> int:
    return os.getpid()


def current_worker_index(_: object = None) -> int | None:
    import procpool

    worker = procpool.current_worker()
    return None if worker is None else worker.index


def exit_with_code(code: int) -> None:
    os._exit(code)


def exit_when_released(release_fifo: str, code: int) -> None:
    """An initializer that exits with ``code`` once the test writes to the FIFO."""
    with open(release_fifo) as fifo:
        fifo.read()
    os._exit(code)


def sys_exit(code: int) -> None:
    sys.exit(code)


def sys_exit_if(x: int, bad: int = 2) -> int:
    """Return x, but call sys.exit() on item ``bad``."""
    if x == bad:
        sys.exit(x)
    return x


def kill_self(signum: int = signal.SIGKILL) -> None:
    os.kill(os.getpid(), signum)


def segfault(_: object = None) -> None:
    faulthandler.disable()  # the crash is the point; no stack dump on the test's stderr
    ctypes.string_at(0)


def raise_value_error(x: object = None) -> None:
    raise ValueError(f"bad value {x!r}")


def raise_timeout_error_if(x: int, bad: int = 1) -> int:
    """A task whose own error is multiprocessing's TimeoutError (procpool.TimeoutError), as
    a task that waits on a result with a timeout raises."""
    import multiprocessing

    if x == bad:
        raise multiprocessing.TimeoutError(f"the task's own timeout at {x}")
    return x


def return_lock(_: object = None) -> threading.Lock:
    return threading.Lock()


class ExceptionHoldingLock(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def raise_unpicklable_exception(_: object = None) -> None:
    raise ExceptionHoldingLock("holds a lock")


class ExceptionWithTwoArgs(Exception):
    """Pickles fine, but cannot be rebuilt: args holds one value, __init__ wants two
    (cpython gh-79492, which hangs multiprocessing.Pool)."""

    def __init__(self, a: object, b: object) -> None:
        super().__init__(a)
        self.b = b


def raise_unrebuildable_exception(_: object = None) -> None:
    raise ExceptionWithTwoArgs("first", "second")


def _fail_to_unpickle() -> None:
    raise RuntimeError("this object refuses to be unpickled")


class FailsToUnpickle:
    """Pickles fine, raises when unpickled."""

    def __reduce__(self) -> Any:
        return (_fail_to_unpickle, ())


def return_unloadable(_: object = None) -> FailsToUnpickle:
    return FailsToUnpickle()


def crash_if(x: int, bad: int = 3, how: str = "exit") -> int:
    """Return x, but crash the worker on item ``bad``."""
    if x == bad:
        {"exit": lambda: os._exit(7), "kill": lambda: kill_self(), "segv": segfault}[how]()
    return x


def raise_if(x: int, bad: int = 3) -> int:
    if x == bad:
        raise ValueError(f"item {x} is bad")
    return x


def announce_then_block(started_fifo: str, release_fifo: str) -> str:
    """Say "started" on one FIFO, then block until the test writes to the other.

    Opening a FIFO blocks until the other side opens it: synchronisation without sleeps.
    """
    with open(started_fifo, "w") as fifo:
        fifo.write("started")
    with open(release_fifo) as fifo:
        return fifo.read()


def queue_step(step: tuple[Any, ...]) -> str:
    """The steps of one function (so they share one pace), for chunks queued in a worker's
    pipe: ``("quick",)`` returns at once; ``("wait", fifo)`` returns what the test writes to
    ``fifo``. ``("block", runs, started_fifo, release_fifo)``
    appends a byte to ``runs`` (its size: how often the step ran); its first run then says
    "started" and returns what the test writes to the release FIFO, which it holds open for
    reading and writing first (no wait for a writer; a writer that finds it gone knows the
    run was killed), while a second run returns "again" at once."""
    if step[0] == "quick":
        return "quick"
    if step[0] == "wait":
        with open(step[1]) as fifo:
            return fifo.read()
    _, runs, started_fifo, release_fifo = step
    with open(runs, "ab") as log:
        log.write(b".")
        first = log.tell() == 1
    if not first:
        return "again"
    release = os.open(release_fifo, os.O_RDWR)
    try:
        with open(started_fifo, "w") as fifo:
            fifo.write("started")
        return os.read(release, 100).decode()
    finally:
        os.close(release)


def touch(path: str) -> None:
    with open(path, "a"):
        pass


def block_on_first(x: int, started_fifo: str, release_fifo: str) -> int:
    """Return x; item 0 first announces itself and blocks (announce_then_block)."""
    if x == 0:
        announce_then_block(started_fifo, release_fifo)
    return x


def initializer_that_raises(message: str = "initializer failed") -> None:
    raise RuntimeError(message)


def initializer_that_crashes() -> None:
    os._exit(3)


_initialized_value: Any = None


def initializer_sets(value: Any) -> None:
    global _initialized_value
    _initialized_value = value


def read_initialized(_: object = None) -> Any:
    return _initialized_value


def initializer_second_fails(marker: str, started_fifo: str) -> None:
    """The first worker to get here starts normally; the second waits until a task has
    started on the first, then fails."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        with open(started_fifo) as fifo:
            fifo.read()
        raise RuntimeError("the second worker refuses to start") from None


def announce_then_return_big(started_fifo: str, release_fifo: str) -> bytes:
    announce_then_block(started_fifo, release_fifo)
    return b"x" * 2**21  # far more than a pipe buffer holds


# ---- robustness vocabulary -------------------------------------------------------------------


def hang(_: object = None) -> None:
    threading.Event().wait()


def hang_if(x: int, bad: int = 2) -> int:
    if x == bad:
        hang()
    return x


def ignore_sigterm_then_block(started_fifo: str, release_fifo: str) -> str:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return announce_then_block(started_fifo, release_fifo)


def spawn_grandchild_then_hang(pid_fifo: str) -> None:
    """Start a long-lived child process, tell the test its pid, then hang."""
    import subprocess

    child = subprocess.Popen(["sleep", "1000"])
    with open(pid_fifo, "w") as fifo:
        fifo.write(str(child.pid))
    hang()


_held: list[bytearray] = []


def resident_bytes(_: object = None) -> int:
    """The worker's resident memory now, as max_memory_per_child measures it."""
    from procpool._worker import current_rss

    return current_rss()


def allocate_and_hold(megabytes: int) -> int:
    """Allocate and touch ``megabytes`` MiB, keep them for the worker's life; return the pid."""
    block = bytearray(megabytes * 2**20)
    for offset in range(0, len(block), 4096):
        block[offset] = 1
    _held.append(block)
    return os.getpid()


def fail_until_attempt(counter_path: str, succeed_on: int, how: str = "exit") -> int:
    """Count this attempt in a file; fail (die, hang or raise) until attempt ``succeed_on``."""
    fd = os.open(counter_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, b".")
    os.close(fd)
    attempt = os.path.getsize(counter_path)
    if attempt < succeed_on:
        if how == "exit":
            os._exit(1)
        if how == "hang":
            hang()
        raise ValueError(f"attempt {attempt} failed")
    return attempt


def leave_a_thread_running(_: object = None) -> str:
    """Start a non-daemon thread that never ends: the interpreter waits for it at exit."""
    threading.Thread(target=hang, daemon=False).start()
    return "left a thread running"


def initializer_that_hangs() -> None:
    hang()


class ExitsWhenUnpickled:
    """Pickles fine; unpickling it calls sys.exit() (CPython's crash matrix has this case)."""

    def __reduce__(self) -> Any:
        return (sys.exit, (1,))


def return_exits_when_unpickled(_: object = None) -> ExitsWhenUnpickled:
    return ExitsWhenUnpickled()


_shared: Any = None


def initializer_keeps(shared: Any) -> None:
    """Keep a multiprocessing object (a Queue, a Lock) passed through initargs."""
    global _shared
    _shared = shared


def put_pid_on_shared_queue(_: object = None) -> int:
    _shared.put(os.getpid())
    return os.getpid()


class ExitsWhenPickled:
    """Its pickling calls sys.exit() (CPython's test_deadlock ExitAtPickle)."""

    def __reduce__(self) -> Any:
        sys.exit(3)


def return_exits_when_pickled(_: object = None) -> ExitsWhenPickled:
    return ExitsWhenPickled()


class BlocksWhenFreedInAWorker:
    """An argument that, when a worker lets go of it (after its task ran, before the worker
    says its chunk is over), announces itself on one FIFO and blocks on the other."""

    def __init__(self, started_fifo: str, release_fifo: str) -> None:
        self.fifos = (started_fifo, release_fifo)
        self.owner = os.getpid()

    def __del__(self) -> None:
        if os.getpid() != self.owner:
            announce_then_block(*self.fifos)


class Plain:
    """A picklable object that supports weak references."""


def make_plain(_: object = None) -> Plain:
    return Plain()


# ---- large buffers (shared memory) ------------------------------------------------------------


def _mapping_of(array: Any) -> str:
    """What an array's memory belongs to: "mmap" when it is a shared-memory mapping."""
    base = array
    while getattr(base, "base", None) is not None:
        base = base.base
    return type(base.obj).__name__ if isinstance(base, memoryview) else type(base).__name__


def double_and_say_where(array: Any) -> tuple[Any, str]:
    """Twice the array, and where its input's memory was (shared memory or not)."""
    return array * 2, _mapping_of(array)


def double_or_crash(array: Any) -> Any:
    """Twice the array; a worker given an array whose first element is -1 dies instead."""
    if array[0] == -1:
        os._exit(7)
    return array * 2


def double_or_block(array: Any, started_fifo: str, release_fifo: str) -> Any:
    """Twice the array; for an array whose first element is -1, announce and block."""
    if array[0] == -1:
        announce_then_block(started_fifo, release_fifo)
    return array * 2


# ---- exactly once: tasks that misbehave with their own process --------------------------------


def fork_child_then_hang(pid_fifo: str, new_session: bool) -> None:
    """Fork a child that outlives this worker (in a session of its own, or in the worker's
    process group) and holds every descriptor the worker had; report "worker child", hang."""
    child = os.fork()
    if child == 0:
        if new_session:
            os.setsid()
        signal.pause()
        os._exit(0)
    with open(pid_fifo, "w") as fifo:
        fifo.write(f"{os.getpid()} {child}")
    hang()


def fork_child_that_waits_then_return(release_fifo: str, x: int) -> int:
    """Return x at once, leaving behind a forked child (holding the worker's descriptors)
    that lives until the test writes to ``release_fifo``."""
    if os.fork() == 0:
        try:
            with open(release_fifo) as fifo:
                fifo.read()
        finally:
            os._exit(0)
    return x


def pipes_and_sockets() -> set[tuple[int, int]]:
    """The pipes and sockets this process holds above stderr, as (device, inode) pairs."""
    import stat

    held = set()
    for fd in range(3, 256):
        try:
            status = os.fstat(fd)
        except OSError:
            continue
        if stat.S_ISFIFO(status.st_mode) or stat.S_ISSOCK(status.st_mode):
            held.add((status.st_dev, status.st_ino))
    return held


def write_to_every_descriptor(x: int, spare: frozenset[tuple[int, int]] = frozenset()) -> int:
    """Write a log line to every pipe and socket this process holds above stderr (a task
    that thinks descriptor 3 is its log file, say), then return x. ``spare``: (device,
    inode) pairs to leave alone, the test runner's own (pytest-xdist talks to its workers
    through pipes that a forked worker inherits)."""
    import stat

    for fd in range(3, 256):
        try:
            status = os.fstat(fd)
        except OSError:
            continue
        if (stat.S_ISFIFO(status.st_mode) or stat.S_ISSOCK(status.st_mode)) and (
                (status.st_dev, status.st_ino) not in spare):
            with contextlib.suppress(OSError):  # a read end, say
                os.write(fd, b"log: hello\n")
    return x


def kill_self_on_first_start(marker: str) -> None:
    """An initializer: the first worker to start is SIGKILLed while starting (the OOM
    killer, say); the replacements start normally."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


def announce_then_hold_the_gil(started_fifo: str, seconds: int) -> None:
    """Say this worker's pid, then sleep in C *holding the GIL* (a PyDLL call does not
    release it), as an extension stuck in native code would: no thread of this process
    runs Python meanwhile, the lifeline thread included."""
    with open(started_fifo, "w") as fifo:
        fifo.write(str(os.getpid()))
    ctypes.PyDLL(None).sleep(seconds)


_KEPT: list[Any] = []


def use_input(how: str, array: Any) -> Any:
    """What a task may do with an array it was sent (test_shared_memory): return a new one,
    return it, keep it, change it in place, or return a larger or smaller new one."""
    import numpy as np

    if how == "same":
        return array
    if how == "kept":
        _KEPT.append(array)
        return -array
    if how == "in_place":
        array += 1
        return array
    if how == "larger":
        return np.concatenate([array, array])
    if how == "smaller":
        return array[: len(array) // 2].copy()
    return -array
