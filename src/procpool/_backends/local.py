"""Workers as local processes, created through a multiprocessing context.

Owns process creation, signalling and reaping. It honours whatever context the pool was given
(fork, spawn, forkserver), so the user's start method and its rules apply unchanged. Each worker
gets a lifeline: a pipe whose write end only the parent holds, so the worker sees EOF the moment
the parent dies, however it dies.

A worker's death is seen through a pidfd (Linux), which becomes readable when the process
exits, whatever its children hold. multiprocessing's own sentinel is a pipe the worker holds
open, and a task's child inherits it: a worker killed while such a child lives on would look
alive for as long as the child does. Where there is no pidfd, that sentinel is the fallback.

Under forkserver, the server is asked to import the worker's modules before it forks anyone
(``preload_into_forkserver``), so a worker starts with them, as a forked one does.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait

from .. import _janitor as janitor
from .. import _shared_memory as shared_memory
from .._messages import WorkerSetup
from .._runtime_typing import TYPE_CHECKING
from .._worker import worker_main
from .._worker_identity import EnvironmentOnArrival
from . import OnThisMachine

if TYPE_CHECKING:
    from typing import Any

# What every worker imports before its first task: its loop. Not the handler that forwards
# log records, nor logging: a worker sets them up only once something imports logging
# (_on_import.py), and in a server they would cost every program's first pool the import of
# logging on its way to the first result, about 10 ms (docs/performance.md, 2026-12-08).
_PACKAGE = worker_main.__module__.rpartition(".")[0]
WORKER_MODULES = (f"{_PACKAGE}._worker",)

# How long reap() may wait for the kernel to report an exit after the sentinel fired; in
# practice microseconds (the pipe closes just before the process becomes a zombie).
_REAP_TIMEOUT = 5.0


class LocalWorker:
    def __init__(self, worker_id: int, process: Any, connection: Connection,
                 lifeline: Connection, pidfd: int | None) -> None:
        self.worker_id = worker_id
        self.process = process
        self.connection = connection
        self.lifeline = lifeline
        self.pid: int | None = process.pid
        self._pidfd = pidfd
        self.sentinel = process.sentinel if pidfd is None else pidfd
        self.loss_cause: str | None = None  # the exit status says it all
        # Until it is reaped, the janitor kills its process group if this process dies
        # (_start_worker told it): a backstop for a task holding the GIL, which stops the
        # worker's lifeline thread.
        self._watched = True

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
        fds = [self.connection.fileno(), self.lifeline.fileno()]
        return fds if self._pidfd is None else [*fds, self._pidfd]

    def reap(self) -> int | None:
        popen = self.process._popen
        # Our own child (fork, spawn): once its pidfd is readable it is a zombie, and waitpid
        # answers at once. Process.join would wait on the sentinel pipe, which a task's child
        # may hold open.
        exitcode: int | None = None
        if (self._pidfd is not None and popen.method in ("fork", "spawn")
                and wait([self._pidfd], _REAP_TIMEOUT)):
            exitcode = popen.poll(os.WNOHANG)
        if exitcode is None:
            # A forkserver's child: the forkserver reaps it and sends us its status.
            self.process.join(_REAP_TIMEOUT)
            exitcode = self.process.exitcode
        if exitcode is not None and self._watched:
            # Once only: by a second call, another process may have taken the pid.
            self._watched = False
            janitor.forget_worker(self.process.pid)
        return exitcode

    def close(self) -> None:
        self.connection.close()
        self.lifeline.close()  # a worker still alive now (it should not be) dies with this
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        # Not process.close(): it sets process._popen to None, and Process.start() in any other
        # thread iterates every child calling p._popen.poll() (multiprocessing.process._cleanup)
        # and would crash on it, breaking another pool that is starting a worker just then.
        # The reaped process leaves multiprocessing's registry by itself; its descriptors
        # close when this handle is dropped.

    def __repr__(self) -> str:
        return f"<LocalWorker {self.worker_id} pid={self.pid}>"


def _open_pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when process ``pid`` exits; None where the kernel
    or Python has none (then multiprocessing's sentinel serves)."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    try:
        return int(pidfd_open(pid))
    except ProcessLookupError:
        return None  # reaped already (a forkserver's child): its sentinel has fired
    except OSError as exc:
        if exc.errno in (errno.ENOSYS, errno.EPERM):  # an old kernel, or a sandbox
            return None
        raise


# Every pool's dispatcher starts workers from its own thread. A fork in one thread while
# another thread is between creating a child's pipes and closing the parent's copies of the
# child's ends would hand those ends to the wrong child: a dead worker's sentinel would then
# not fire until that other child exits, and pipes would not reach EOF. One start at a time.
_START_LOCK = threading.Lock()


class LocalBackend(OnThisMachine):
    name = "local"
    own_processes = True

    def __init__(self, context: Any) -> None:
        self._context = context
        start_method = context.get_start_method()
        if start_method == "forkserver":
            preload_into_forkserver()
        self.inherits_memory = start_method == "fork"
        self.imports_main = not self.inherits_memory
        self.shares_memory = shared_memory.available()

    def start_worker(
        self, worker_id: int, setup: WorkerSetup, parent_fds: Sequence[int]
    ) -> LocalWorker:
        with _START_LOCK:
            return self._start_worker(worker_id, setup, parent_fds)

    def _start_worker(
        self, worker_id: int, setup: WorkerSetup, parent_fds: Sequence[int]
    ) -> LocalWorker:
        # Whatever fails (too few descriptors, no memory), nothing opened here stays open.
        with contextlib.ExitStack() as on_failure, contextlib.ExitStack() as child_ends:
            parent_end, child_end = self._context.Pipe(duplex=True)
            on_failure.callback(parent_end.close)
            child_ends.callback(child_end.close)
            lifeline_read, lifeline_write = self._context.Pipe(duplex=False)
            on_failure.callback(lifeline_write.close)
            child_ends.callback(lifeline_read.close)
            # A forked child holds copies of every descriptor the parent has; it closes the
            # parent's private ones (including its own pipe's and lifeline's parent ends) first.
            to_close = ((*parent_fds, parent_end.fileno(), lifeline_write.fileno())
                        if self.inherits_memory else ())
            # Named after its place, which a replacement takes over (current_worker().index).
            name = f"procpool-worker-{setup.worker_index}"
            if setup.env and not self.inherits_memory:
                # Set as the child unpickles its name, before it imports the main module.
                name = EnvironmentOnArrival(name, setup.env)
            process = self._context.Process(
                target=worker_main,
                args=(child_end, setup, to_close, lifeline_read),
                name=name,
                daemon=True,
            )
            process.start()
            janitor.watch_worker(process.pid)
            on_failure.callback(_kill_and_reap, process)
            worker = LocalWorker(worker_id, process, parent_end, lifeline_write,
                                 _open_pidfd(process.pid))
            on_failure.pop_all()
        return worker


def preload_into_forkserver() -> None:
    """Add the worker's modules to the forkserver's preload list, if the server is not running
    yet: each worker it forks then has them already, instead of importing them (about 5 ms of
    a worker's start; docs/performance.md). A server that runs already (started by another
    pool, or by the program) is left as it is, and its workers import as they start.

    The program's own list is kept, in front (``__main__`` is on it by default): what it
    preloads and in which order does not change. multiprocessing has no public way to add to
    the list, only to replace it, so this reads and extends its private one (the same from 3.4
    to 3.15), and does nothing where that is missing.
    """
    # Imported here: under fork and spawn nothing else needs it (with the modules it imports,
    # 1-3 ms of a program's first pool).
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    preload = getattr(server, "_preload_modules", None)
    if not isinstance(preload, (list, tuple)) or getattr(server, "_forkserver_pid", 0) is not None:
        return
    missing = [name for name in WORKER_MODULES if name not in preload]
    if missing:
        server._preload_modules = [*preload, *missing]  # type: ignore[union-attr]


def _kill_and_reap(process: Any) -> None:
    """A worker started, but the parent could not finish setting it up: end it."""
    with contextlib.suppress(OSError):
        os.kill(process.pid, signal.SIGKILL)
    process.join(_REAP_TIMEOUT)
    if process.exitcode is not None:
        janitor.forget_worker(process.pid)
