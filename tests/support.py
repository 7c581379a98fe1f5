"""Helpers the tests share: waiting for processes to end, and FIFOs to synchronise on."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import psutil


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
