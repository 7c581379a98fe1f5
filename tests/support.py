"""Helpers the tests share: waiting for processes to end, FIFOs to synchronise on, the record
of the processes this test run started (which the leak guard in conftest.py reads), and sinks
that stand for a chunk's caller where a test drives the dispatcher itself."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

from procpool._task import Chunk

WAIT = 10.0  # seconds any step may take before the test fails (nothing should wait)

# Every process this test run started, pid -> its start time (None if it was gone before it
# could be read): the leak guard counts a shared-memory segment named after a pid here as this
# run's, even when that process has ended by the time the guard looks (a "parent" interpreter
# a test started with subprocess and killed). conftest.py records every subprocess.Popen and
# multiprocessing.Process started in the test process; a test that starts a process some other
# way calls remember_process itself.
STARTED: dict[int, float | None] = {}


def remember_process(pid: int) -> None:
    """Count ``pid`` as a process of this test run (see STARTED)."""
    try:
        started: float | None = psutil.Process(pid).create_time()
    except psutil.Error:
        started = None
    STARTED[pid] = started


def started_by_this_run(pid: int) -> bool:
    """Whether ``pid`` is a process remembered in STARTED, and not a later process that reuses
    its number."""
    if pid not in STARTED:
        return False
    try:
        now = psutil.Process(pid).create_time()
    except psutil.Error:
        return True  # it has ended: the number is still ours
    return STARTED[pid] is None or now == STARTED[pid]


def still_alive(pids: list[int | None], timeout: float = 10.0) -> list[int]:
    """Wait up to ``timeout`` for every pid to exit; return the ones still running.

    A bounded wait on the processes themselves (psutil), not a sleep. Zombies count as gone:
    they have exited, and only their parent can reap them.
    """
    processes = []
    for pid in pids:
        if pid is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                processes.append(psutil.Process(pid))
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    survivors = []
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            if process.status() != psutil.STATUS_ZOMBIE:
                survivors.append(process.pid)
    return survivors


class Fifos:
    """Named pipes a test and its tasks synchronise on (see misbehaving.announce_then_block)."""

    def __init__(self, directory: Path) -> None:
        self.started = str(directory / "started")
        self.release = str(directory / "release")
        os.mkfifo(self.started)
        os.mkfifo(self.release)

    def wait_started(self) -> str:
        with open(self.started) as fifo:
            return fifo.read()

    def release_task(self, text: str = "released") -> None:
        with open(self.release, "w") as fifo:
            fifo.write(text)


class Outcome:
    """A chunk's sink: what its caller got (each item's value, or the first error)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.settled = threading.Event()
        self.values: list[Any] = []
        self.error: BaseException | None = None

    def chunk_starting(self, chunk: Chunk) -> bool:
        return True

    def chunk_done(self, chunk: Chunk, values: Sequence[Any],
                   failures: Mapping[int, BaseException]) -> None:
        self.values += [v for position, v in enumerate(values) if position not in failures]
        if failures:
            self.error = next(iter(failures.values()))
        if len(self.values) == self.size or failures:
            self.settled.set()

    def chunk_failed(self, chunk: Chunk, error: BaseException) -> None:
        self.error = error
        self.settled.set()

    def result(self) -> Any:
        assert self.settled.wait(WAIT), "the caller was never answered"
        if self.error is not None:
            return self.error
        return self.values


class HeldOutcome(Outcome):
    """An Outcome whose delivery holds the dispatcher thread (where it runs) until the test
    lets it go: ``delivering`` is set once it is held."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.delivering = threading.Event()
        self.let_go = threading.Event()

    def chunk_done(self, chunk: Chunk, values: Sequence[Any],
                   failures: Mapping[int, BaseException]) -> None:
        self.delivering.set()
        assert self.let_go.wait(WAIT), "the test never let the delivery go"
        super().chunk_done(chunk, values, failures)
