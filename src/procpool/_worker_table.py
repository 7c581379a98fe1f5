"""The dispatcher's workers: one record per worker it started, from its start to its release.

Owns each worker's handle and what the dispatcher keeps about it: its reply stream, the mirror
of its function cache, its shared-memory account, its peak memory, whether its pipe is still
worth listening to, and, while it retires, the time by which it must have exited. Starting a
worker, asking one to stop, killing them all, and releasing one (reap, close, remove what it
left behind) each happen here, once.

Used by the dispatcher thread only. It decides nothing: the scheduler says which worker to
start, stop or kill, and when.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any

from . import _shared_memory as shared_memory
from ._backends import Backend, WorkerHandle
from ._codec import dumps
from ._framing import FrameReader
from ._messages import Stop, WorkerInit
from ._worker import FunctionCache

logger = logging.getLogger("procpool")

# terminate(): how long workers get to exit after SIGTERM before SIGKILL, and how long after
# SIGKILL before the dispatcher gives up on them (only a thread worker can outlive that).
TERMINATE_GRACE = 1.0
KILL_WAIT = 5.0
# A worker asked to stop that has not exited after this long (a task left a non-daemon thread
# running, which the interpreter waits for at exit) is killed.
RETIRE_TIMEOUT = 5.0


@dataclass(eq=False)
class WorkerRecord:
    """What the dispatcher holds for one worker."""

    handle: WorkerHandle
    reader: FrameReader  # its replies, taken off its pipe without ever waiting
    # The dispatcher's exact mirror of the worker's function cache (same size, same order of
    # use): which functions a chunk must carry.
    functions: FunctionCache = field(default_factory=FunctionCache)
    segments: shared_memory.WorkerSegments | None = None  # None: no shared memory
    peak_rss: int | None = None
    # False once its pipe reached its end, or carried bytes that are not replies: only its
    # sentinel can tell anything more.
    listening: bool = True
    lost_because: str | None = None  # why the dispatcher killed it, for its death's error
    retire_by: float | None = None  # asked to stop: killed if it has not exited by then

    @property
    def worker_id(self) -> int:
        return self.handle.worker_id


class WorkerTable:
    """Every worker a dispatcher has started and not yet released: ``active`` ones (the
    scheduler's workers) and ``retiring`` ones (asked to stop, not yet exited).

    The dispatcher thread alone changes it, and only through these methods, which also
    publish ``pids``: an immutable snapshot that other threads may read at any time.
    """

    def __init__(self, backend: Backend, init: WorkerInit | None, segment_prefix: str | None,
                 parent_fds: Sequence[int]) -> None:
        self._backend = backend
        self._init = init
        self._segment_prefix = segment_prefix
        self._parent_fds = list(parent_fds)  # the dispatcher's own, for forked children to close
        self.active: dict[int, WorkerRecord] = {}
        self.retiring: dict[int, WorkerRecord] = {}
        self.pids: tuple[int | None, ...] = ()  # of the active workers; replaced, never changed

    def __bool__(self) -> bool:
        return bool(self.active or self.retiring)

    def records(self) -> Iterator[WorkerRecord]:
        yield from self.active.values()
        yield from self.retiring.values()

    def start(self, worker_id: int) -> WorkerRecord:
        """Start a worker (raises what the backend raises)."""
        private_fds = list(self._parent_fds)
        for record in self.records():
            private_fds += record.handle.private_fds()
        handle = self._backend.start_worker(worker_id, self._init, private_fds)
        prefix = self._segment_prefix
        record = WorkerRecord(
            handle, FrameReader(handle.connection.fileno()),
            segments=None if prefix is None else shared_memory.WorkerSegments(prefix))
        self.active[worker_id] = record
        self._publish()
        return record

    def lost(self, record: WorkerRecord) -> None:
        """An active worker ended without being asked to."""
        del self.active[record.worker_id]
        self._publish()

    def _publish(self) -> None:
        self.pids = tuple(record.handle.pid for record in self.active.values())

    def forget_init(self) -> None:
        """The initializer may hold Locks and Queues: let them go with the pool."""
        self._init = None

    def retire(self, worker_id: int, now: float) -> None:
        """Ask an active worker to exit once idle; its exit is not a death."""
        record = self.active.pop(worker_id, None)
        if record is None:
            return  # died before it could be asked
        self._publish()
        record.retire_by = now + RETIRE_TIMEOUT
        self.retiring[worker_id] = record
        try:
            record.handle.connection.send_bytes(dumps(Stop()))
        except OSError:
            record.handle.kill(force=True)

    def kill(self, worker_id: int) -> None:
        """SIGKILL an active worker (and its process group): its sentinel then reports it."""
        record = self.active.get(worker_id)
        if record is not None:
            record.handle.kill(force=True)

    def waitables(self) -> list[Any]:
        """What the dispatcher's wait watches for the workers: each active worker's pipe while
        it is worth listening to, and every worker's sentinel."""
        waitables: list[Any] = []
        for record in self.active.values():
            # A killed thread-backed worker (inline, Dask relay) has its pipe closed by
            # kill(): only its sentinel is left to report the end.
            if record.listening and not record.handle.connection.closed:
                waitables.append(record.handle.connection)
            waitables.append(record.handle.sentinel)
        waitables += [record.handle.sentinel for record in self.retiring.values()]
        return waitables

    def next_deadline(self) -> float | None:
        return min((record.retire_by for record in self.retiring.values()
                    if record.retire_by is not None), default=None)

    def expire(self, now: float) -> None:
        """Kill every retiring worker that has not exited in time."""
        for record in self.retiring.values():
            if record.retire_by is not None and record.retire_by <= now:
                record.retire_by = None
                logger.warning("worker pid %s did not exit %g s after it was asked to (a "
                               "non-daemon thread left running?); killing it",
                               record.handle.pid, RETIRE_TIMEOUT)
                record.handle.kill(force=True)

    def retired(self, ready: Iterable[Any]) -> None:
        """Release every retiring worker whose sentinel is in ``ready``."""
        ready = set(ready)
        for worker_id, record in list(self.retiring.items()):
            if record.handle.sentinel in ready:
                del self.retiring[worker_id]
                self.release(record)

    def kill_all(self, *, force: bool = False) -> None:
        """End every worker: SIGTERM (SIGKILL with ``force``), SIGKILL for those still alive
        after a grace period; then release them all."""
        records = list(self.records())
        self.active.clear()
        self.retiring.clear()
        self._publish()
        handles = [record.handle for record in records]
        for handle in handles:
            handle.kill(force=force)
        alive = _wait_for_exit(handles, TERMINATE_GRACE)
        for handle in alive:
            handle.kill(force=True)  # ignored SIGTERM
        for handle in _wait_for_exit(alive, KILL_WAIT):
            logger.error("worker pid %s did not exit after SIGKILL", handle.pid)
        for record in records:
            self.release(record)

    def release(self, record: WorkerRecord) -> None:
        """The worker has ended: reap it, close the parent's ends, and remove the segments it
        left behind."""
        record.handle.reap()
        record.handle.close()
        if record.segments is not None:
            record.segments.worker_ended()


def _wait_for_exit(handles: Iterable[WorkerHandle], timeout: float) -> list[WorkerHandle]:
    """Wait until every handle's sentinel fires or ``timeout`` passes; return the survivors."""
    pending = {handle.sentinel: handle for handle in handles}
    deadline = time.monotonic() + timeout
    while pending:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        for sentinel in wait(list(pending), remaining):
            del pending[sentinel]
    return list(pending.values())
