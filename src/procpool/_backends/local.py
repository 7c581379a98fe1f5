"""Workers as local processes, created through a multiprocessing context.

Owns process creation, signalling and reaping. It honours whatever context the pool was given
(fork, spawn, forkserver), so the user's start method and its rules apply unchanged. Each worker
gets a lifeline: a pipe whose write end only the parent holds, so the worker sees EOF the moment
the parent dies, however it dies.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from .. import _shared_memory as shared_memory
from .._messages import WorkerInit
from .._worker import worker_main
from . import OnThisMachine

# How long reap() may wait for the kernel to report an exit after the sentinel fired; in
# practice microseconds (the pipe closes just before the process becomes a zombie).
_REAP_TIMEOUT = 5.0


class LocalWorker:
    def __init__(self, worker_id: int, process: Any, connection: Connection,
                 lifeline: Connection) -> None:
        self.worker_id = worker_id
        self.process = process
        self.connection = connection
        self.lifeline = lifeline
        self.pid: int | None = process.pid
        self.sentinel = process.sentinel
        self.loss_cause: str | None = None  # the exit status says it all

    def kill(self, *, force: bool) -> None:
        if self.process.exitcode is not None:
            return
        signum = signal.SIGKILL if force else signal.SIGTERM
        try:
            # The worker leads its own process group: this reaches what its tasks started.
            os.killpg(self.process.pid, signum)
        except OSError:
            # Not (yet) a group leader: the worker has not run setpgid; signal it alone.
            with contextlib.suppress(OSError):  # already gone
                os.kill(self.process.pid, signum)

    def private_fds(self) -> list[int]:
        return [self.connection.fileno(), self.lifeline.fileno()]

    def reap(self) -> int | None:
        self.process.join(_REAP_TIMEOUT)
        exitcode: int | None = self.process.exitcode
        return exitcode

    def close(self) -> None:
        self.connection.close()
        self.lifeline.close()  # a worker still alive now (it should not be) dies with this
        # Not process.close(): it sets process._popen to None, and Process.start() in any other
        # thread iterates every child calling p._popen.poll() (multiprocessing.process._cleanup)
        # and would crash on it, breaking another pool that is starting a worker just then.
        # The reaped process leaves multiprocessing's registry by itself; its descriptors
        # close when this handle is dropped.

    def __repr__(self) -> str:
        return f"<LocalWorker {self.worker_id} pid={self.pid}>"


# Every pool's dispatcher starts workers from its own thread. A fork in one thread while
# another thread is between creating a child's pipes and closing the parent's copies of the
# child's ends would hand those ends to the wrong child: a dead worker's sentinel would then
# not fire until that other child exits, and pipes would not reach EOF. One start at a time.
_START_LOCK = threading.Lock()


class LocalBackend(OnThisMachine):
    name = "local"

    def __init__(self, context: Any) -> None:
        self._context = context
        self.inherits_memory = context.get_start_method() == "fork"
        self.shares_memory = shared_memory.available()

    def start_worker(
        self, worker_id: int, init: WorkerInit | None, parent_fds: Sequence[int]
    ) -> LocalWorker:
        with _START_LOCK:
            return self._start_worker(worker_id, init, parent_fds)

    def _start_worker(
        self, worker_id: int, init: WorkerInit | None, parent_fds: Sequence[int]
    ) -> LocalWorker:
        parent_end, child_end = self._context.Pipe(duplex=True)
        lifeline_read, lifeline_write = self._context.Pipe(duplex=False)
        # A forked child holds copies of every descriptor the parent has; it closes the
        # parent's private ones (including its own pipe's and lifeline's parent ends) first.
        to_close = ((*parent_fds, parent_end.fileno(), lifeline_write.fileno())
                    if self.inherits_memory else ())
        process = self._context.Process(
            target=worker_main,
            args=(child_end, init, to_close, lifeline_read),
            name=f"procpool-worker-{worker_id}",
            daemon=True,
        )
        try:
            process.start()
        except BaseException:
            parent_end.close()
            lifeline_write.close()
            raise
        finally:
            child_end.close()
            lifeline_read.close()
        return LocalWorker(worker_id, process, parent_end, lifeline_write)
