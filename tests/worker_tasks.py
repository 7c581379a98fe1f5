"""Tasks that look at the worker they run in: its identity, its environment, its logging and
its output. Module-level, so spawn and forkserver workers can import them."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import procpool

log = logging.getLogger("worker_tasks")


def where(_: object = None) -> tuple[int, int]:
    worker = procpool.current_worker()
    assert worker is not None
    return worker.index, worker.pid


def env(names: tuple[str, ...]) -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in names}


def index_then_exit_if(x: int, path: str) -> int:
    """Worker 1 exits the first time (a marker file says it has), so it is replaced."""
    worker = procpool.current_worker()
    assert worker is not None
    if worker.index == 1 and not os.path.exists(path):
        open(path, "w").close()
        os._exit(3)
    return worker.index


# Read by initializer_records_env, in the worker, when the initializer runs.
INITIALIZER_SAW: dict[str, str | None] = {}


def initializer_records_env(name: str) -> None:
    INITIALIZER_SAW[name] = os.environ.get(name)


def what_initializer_saw(_: object = None) -> dict[str, str | None]:
    return INITIALIZER_SAW


def log_at_levels(x: int) -> int:
    log.debug("debug %s", x)
    log.info("info %s", x)
    log.warning("warning %s", x)
    return x


def effective_level(name: str) -> int:
    return logging.getLogger(name).getEffectiveLevel()


def root_handler_types(_: object = None) -> list[str]:
    return [type(handler).__name__ for handler in logging.getLogger().handlers]


def log_exception(_: object = None) -> None:
    try:
        raise ValueError("inside the task")
    except ValueError:
        log.exception("it failed")


class Unpicklable:
    def __reduce__(self) -> Any:
        raise TypeError("no pickling")

    def __repr__(self) -> str:
        return "<Unpicklable>"


def log_with_unpicklable_extra(_: object = None) -> None:
    log.warning("carrying %s", "something", extra={"payload": Unpicklable()})


def log_then_die(x: int) -> None:
    log.warning("last words %s", x)
    os.kill(os.getpid(), signal.SIGKILL)


def log_then_hang(started_fifo: str) -> None:
    log.warning("about to hang")
    with open(started_fifo, "w") as fifo:
        fifo.write("started")
    signal.pause()  # until the pool kills it at its task_timeout


def initializer_configures_logging() -> None:
    """The logging cookbook's way: the initializer gives the worker a handler of its own."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("initializer's handler: %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)


def print_piecewise(x: int, width: int = 200) -> int:
    """A line written a character at a time, flushed each time: it must still arrive whole."""
    for _ in range(width):
        sys.stdout.write(str(x % 10))
        sys.stdout.flush()
    sys.stdout.write("\n")
    print(f"stderr {x}", file=sys.stderr)
    return x


def print_without_newline(x: int) -> int:
    sys.stdout.write(f"unfinished {x}")
    return x


def initializer_records_place(directory: str) -> None:
    """Each worker leaves a file named after its pid holding its index."""
    worker = procpool.current_worker()
    assert worker is not None and worker.pid == os.getpid()
    # Written aside and renamed: the test may read the directory while a replacement worker
    # is starting, and must never find a file that is still empty.
    path = os.path.join(directory, str(worker.pid))
    with open(path + ".part", "w") as record:
        record.write(str(worker.index))
    os.replace(path + ".part", path)


def places(directory: str) -> dict[int, int]:
    """What initializer_records_place left: pid -> index (of the workers done writing it)."""
    return {int(path.name): int(path.read_text()) for path in Path(directory).iterdir()
            if path.suffix != ".part"}


def index_and_env(name: str) -> tuple[int, str | None]:
    worker = procpool.current_worker()
    assert worker is not None
    return worker.index, os.environ.get(name)


def initializer_logs_a_lot(count: int) -> None:
    """Fills the reply pipe many times over before the worker is ready."""
    chatty = logging.getLogger("worker_tasks.chatty")
    for n in range(count):
        chatty.warning("starting up, step %d", n)


def length(items: list[int]) -> int:
    return len(items)


class KeywordOnly(Exception):
    """Pickles, but cannot be rebuilt from its pickle (its __init__ wants a keyword)."""

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code


def log_with_extras_the_parent_cannot_rebuild(_: object = None) -> int:
    log.warning("carrying extras", extra={"err": KeywordOnly("bad", code=3), "ids": [1, 2]})
    return os.getpid()


class _SignalsAsItIsAdded(str):
    """Raises SIGUSR1 in this process while the stream is inside write() with it."""

    def __radd__(self, other: str) -> str:
        os.kill(os.getpid(), signal.SIGUSR1)
        return other + str(self)


def print_while_a_signal_handler_prints(_: object = None) -> int:
    signal.signal(signal.SIGUSR1, lambda *_: print("from the signal handler"))
    try:
        sys.stdout.write(_SignalsAsItIsAdded("the task's own line\n"))
        print("after it")
    finally:
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    return os.getpid()


def initializer_says_goodbye_at_exit() -> None:
    import atexit

    atexit.register(lambda: log.warning("goodbye from worker %d",
                                        procpool.current_worker().index))  # type: ignore[union-attr]


def write_bytes_to_stdout(_: object = None) -> int:
    data = "héllo wörld\n".encode()
    sys.stdout.buffer.write(data[:2])  # a character split between two writes
    sys.stdout.buffer.write(data[2:])
    sys.stdout.flush()
    return len(data)


def initializer_blocks_at_place(index: int, release_fifo: str) -> None:
    """The worker at place ``index`` stays starting until the test writes to
    ``release_fifo``; the others start at once."""
    worker = procpool.current_worker()
    assert worker is not None
    if worker.index == index:
        with open(release_fifo) as fifo:
            fifo.read()
