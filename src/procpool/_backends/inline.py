"""Workers as threads of the calling process, speaking the same pipe protocol.

For tests and debugging: a breakpoint in a task works, nothing is forked. Tasks still go through
pickle, so what runs inline also runs in processes. A thread cannot be killed: kill() closes its
pipe, and the thread ends after its current task.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from multiprocessing import Pipe
from multiprocessing.connection import Connection

from .._messages import WorkerInit
from .._worker import worker_main
from . import OnThisMachine

# How long reap() waits for a worker thread to end.
_REAP_TIMEOUT = 5.0


class InlineWorker:
    def __init__(self, worker_id: int, init: WorkerInit | None) -> None:
        self.worker_id = worker_id
        self.pid: int | None = os.getpid()
        self.loss_cause: str | None = None
        self.connection, child_end = Pipe(duplex=True)
        # A pipe whose write end closes when the thread ends: a sentinel like a process's.
        self.sentinel, done_write = os.pipe()
        self._thread = threading.Thread(
            target=self._run,
            args=(child_end, init, done_write),
            name=f"procpool-inline-worker-{worker_id}",
            daemon=True,
        )
        self._thread.start()

    @staticmethod
    def _run(child_end: Connection, init: WorkerInit | None, done_write: int) -> None:
        try:
            worker_main(child_end, init)
        finally:
            child_end.close()
            os.close(done_write)

    def kill(self, *, force: bool) -> None:
        if not self.connection.closed:
            self.connection.close()

    def private_fds(self) -> list[int]:
        return []  # nothing is forked

    def reap(self) -> int | None:
        # A thread still running a task (a timed-out one, say) cannot be stopped: give it a
        # moment, then leave it (a daemon) rather than hang the pool's shutdown on it.
        self._thread.join(_REAP_TIMEOUT)
        return None if self._thread.is_alive() else 0

    def close(self) -> None:
        if not self.connection.closed:
            self.connection.close()
        os.close(self.sentinel)


class InlineBackend(OnThisMachine):
    name = "inline"
    inherits_memory = True
    imports_main = False
    shares_memory = False  # threads: nothing to gain over the pipe

    def start_worker(
        self, worker_id: int, init: WorkerInit | None, parent_fds: Sequence[int]
    ) -> InlineWorker:
        return InlineWorker(worker_id, init)
