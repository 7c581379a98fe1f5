"""Helpers the tests share: waiting for processes to end, FIFOs to synchronise on, and the
record of the processes this test run started (which the leak guard in conftest.py reads)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import psutil

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
