"""The backend seam: how workers are started, talked to and stopped.

Owns the contract every backend meets; the dispatcher depends on this protocol only, never on a
concrete backend. A backend hands out WorkerHandles whose ``connection`` and ``sentinel`` can be
passed to ``multiprocessing.connection.wait``: the dispatcher waits on all of them in one call.
"""

from __future__ import annotations

from collections.abc import Sequence

from .._messages import WorkerSetup
from .._runtime_typing import TYPE_CHECKING, Protocol
from .._task import cpu_count

if TYPE_CHECKING:
    from typing import Any

__all__ = ["Backend", "OnThisMachine", "WorkerHandle", "backend_name", "create_backend"]


class WorkerHandle(Protocol):
    """The parent's side of one worker."""

    worker_id: int
    pid: int | None
    # Duplex message pipe to the worker: send_bytes / recv_bytes / fileno.
    connection: Any
    # Becomes ready (for multiprocessing.connection.wait) once the worker has ended.
    sentinel: Any
    # Why the worker ended, when there is no exit status to say it (a Dask worker was lost).
    loss_cause: str | None

    def kill(self, *, force: bool) -> None:
        """End the worker and every process its tasks started: SIGTERM, or SIGKILL when
        ``force``."""

    def private_fds(self) -> list[int]:
        """The parent's descriptors for this worker, which forked children must close."""

    def reap(self) -> int | None:
        """After the sentinel fired: the exit code (negative: killed by that signal)."""

    def close(self) -> None:
        """Release the parent's resources for an ended worker."""


class Backend(Protocol):
    name: str
    # True when workers are forked copies of the parent (they see everything in __main__).
    inherits_memory: bool
    # True when a worker imports the parent's main module as it starts (spawn, forkserver):
    # a script that starts work at import time then fails in every worker.
    imports_main: bool
    # True when workers are processes on this machine, which can map the parent's
    # shared-memory segments: large buffers then travel through them (_shared_memory).
    shares_memory: bool
    # True when each worker is a process of its own: record locks then tell the parent and
    # each worker apart, and a chunk queued on a worker can be taken back (_claims).
    own_processes: bool

    def default_processes(self) -> int:
        """How many workers a pool gets when it does not say."""

    def close(self) -> None:
        """The pool has ended: release what the backend started for it."""

    def start_worker(
        self, worker_id: int, setup: WorkerSetup, parent_fds: Sequence[int]
    ) -> WorkerHandle:
        """Start a worker, told ``setup`` (its index, environment, initializer...).
        ``parent_fds`` are the parent's private descriptors (other workers'
        pipes and lifelines, the wake-up pipe) that a forked child must close."""


class OnThisMachine:
    """What the backends whose workers run on this machine share: one worker per CPU by
    default, and nothing of their own to release when the pool ends."""

    def default_processes(self) -> int:
        return cpu_count()

    def close(self) -> None:
        pass


def backend_name(spec: Any) -> str:
    """The name of the backend ``backend=`` asks for, before it is created."""
    if isinstance(spec, str):
        return spec  # and the Dask module stays unimported
    from .dask import DaskBackend

    return "dask" if isinstance(spec, DaskBackend) else repr(spec)


def create_backend(spec: Any, context: Any) -> Backend:
    """Build a pool's backend from ``backend=``: a name, or a ``procpool.DaskBackend``. Each
    lives in its own module, imported only when chosen."""
    if spec == "local":
        from .local import LocalBackend

        return LocalBackend(context)
    if spec == "inline":
        from .inline import InlineBackend

        return InlineBackend()
    if backend_name(spec) == "dask":
        from .dask import DaskBackend  # imports no Dask itself until a cluster is used

        chosen = DaskBackend() if spec == "dask" else spec
        return chosen.connect()
    raise ValueError(f"unknown backend {spec!r}: choose 'local' (processes), 'inline' (threads), "
                     f"'dask' (a Dask cluster on this machine) or procpool.DaskBackend(...) "
                     f"(an existing Dask cluster)")
