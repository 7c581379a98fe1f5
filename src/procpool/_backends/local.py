"""Workers as local processes, created through a multiprocessing context.

Owns process creation, signalling and reaping. It honours whatever context the pool was given
(fork, spawn, forkserver), so the user's start method and its rules apply unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from .._worker import worker_main

# How long reap() may wait for the kernel to report an exit after the sentinel fired; in
# practice microseconds (the pipe closes just before the process becomes a zombie).
_REAP_TIMEOUT = 5.0


class LocalWorker:
    def __init__(self, worker_id: int, process: Any, connection: Connection) -> None:
        self.worker_id = worker_id
        self.process = process
        self.connection = connection
        self.pid: int | None = process.pid
        self.sentinel = process.sentinel

    def kill(self, *, force: bool) -> None:
        try:
            if force:
                self.process.kill()
            else:
                self.process.terminate()
        except (OSError, ValueError):
            pass  # already gone or already closed

    def reap(self) -> int | None:
        self.process.join(_REAP_TIMEOUT)
        exitcode: int | None = self.process.exitcode
        return exitcode

    def close(self) -> None:
        self.connection.close()
        if self.process.exitcode is not None:
            self.process.close()

    def __repr__(self) -> str:
        return f"<LocalWorker {self.worker_id} pid={self.pid}>"


class LocalBackend:
    name = "local"

    def __init__(self, context: Any) -> None:
        self._context = context
        self.inherits_memory = context.get_start_method() == "fork"

    def start_worker(
        self, worker_id: int, init_payload: bytes | None, parent_fds: Sequence[int]
    ) -> LocalWorker:
        parent_end, child_end = self._context.Pipe(duplex=True)
        # A forked child holds copies of every descriptor the parent has; it closes the
        # parent's private ones (including its own pipe's parent end) first thing.
        to_close = (*parent_fds, parent_end.fileno()) if self.inherits_memory else ()
        process = self._context.Process(
            target=worker_main,
            args=(child_end, init_payload, to_close),
            name=f"procpool-worker-{worker_id}",
            daemon=True,
        )
        try:
            process.start()
        finally:
            child_end.close()
        return LocalWorker(worker_id, process, parent_end)
