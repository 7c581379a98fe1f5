"""The public snapshots: what ``pool.stats()`` and ``executor.stats()`` return, frozen records
of a pool's state, and the ``Progress`` of one call that a ``progress=`` callable receives.

Owns the three records (dataclasses: public, so ``dataclasses.asdict()`` works on them), the
pool snapshot's one-line summary, and how one is put together from its three owners' shares
(``snapshot``): the scheduler's (what waits, what each worker holds, what it counted), the
worker table's (pids, memory) and delivery's (items done and failed). The dispatcher thread
takes it between two events (``Dispatcher.stats``), so a snapshot is consistent and never
changes after it is returned. Imported only when a snapshot is first made (procpool's first
import would otherwise pay for dataclasses); must not be imported by the modules a pool
needs to start.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ._runtime_typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._scheduler_events import SchedulerStats


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """One live worker: its pid, whether it runs a task now, and how it has spent its life."""

    __module__ = "procpool"

    pid: int | None
    busy: bool
    tasks_done: int  # items this worker finished (successfully or not)
    busy_seconds: float  # time spent running tasks
    idle_seconds: float  # time alive (start-up included) not spent running tasks
    peak_rss: int | None  # bytes; None until the worker has reported once


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of a pool. Task counts are items (one call of the function each), not chunks.

    ``tasks_done`` counts items that returned a value and ``tasks_failed`` items whose outcome
    was an error (their own exception, a worker death, a timeout, terminate). ``tasks_retried``
    and ``tasks_timed_out`` count attempts, so a timed-out item that then succeeded on a retry
    counts once in each and once in ``tasks_done``. ``respawn_causes`` says why each replaced
    worker went away ("killed by SIGKILL", "task timeout", "maxtasksperchild reached", ...).
    """

    __module__ = "procpool"

    workers_alive: int
    workers_busy: int
    tasks_queued: int
    tasks_running: int
    tasks_done: int
    tasks_failed: int
    tasks_retried: int
    tasks_timed_out: int
    # A dict of its own per snapshot (not a view), so snapshots pickle and convert with
    # dataclasses.asdict().
    respawn_causes: dict[str, int] = field(default_factory=dict)
    workers: tuple[WorkerStats, ...] = ()

    @property
    def respawns(self) -> int:
        return sum(self.respawn_causes.values())

    def summary(self) -> str:
        """One line: what ``repr(pool)`` shows."""
        line = (f"workers={self.workers_alive} busy={self.workers_busy} "
                f"queued={self.tasks_queued} running={self.tasks_running} "
                f"done={self.tasks_done} failed={self.tasks_failed}")
        if self.tasks_retried:
            line += f" retried={self.tasks_retried}"
        if self.tasks_timed_out:
            line += f" timed_out={self.tasks_timed_out}"
        if self.respawns:
            causes = ", ".join(f"{cause}: {n}" for cause, n in sorted(self.respawn_causes.items()))
            line += f" respawns={self.respawns} ({causes})"
        return line


def snapshot(share: SchedulerStats, workers: Mapping[int, tuple[int | None, int | None]],
             done: int, failed: int) -> PoolStats:
    """A pool's snapshot from the scheduler's ``share``, each active worker's ``(pid,
    peak_rss)`` by worker id, and the items delivered ``done`` and ``failed``."""
    snapshots = []
    for slot in share.workers:
        pid, peak_rss = workers.get(slot.worker_id, (None, None))
        snapshots.append(WorkerStats(
            pid=pid, busy=slot.unanswered > 0, tasks_done=slot.tasks_done,
            busy_seconds=slot.busy_seconds, idle_seconds=slot.idle_seconds, peak_rss=peak_rss,
        ))
    return PoolStats(
        workers_alive=len(workers),
        workers_busy=sum(worker.busy for worker in snapshots),
        tasks_queued=share.tasks_queued,
        tasks_running=sum(slot.unanswered for slot in share.workers),
        tasks_done=done,
        tasks_failed=failed,
        tasks_retried=share.tasks_retried,
        tasks_timed_out=share.tasks_timed_out,
        respawn_causes=share.respawn_causes,
        workers=tuple(snapshots),
    )


@dataclass(frozen=True, slots=True)
class Progress:
    """How far one call has got. Counts are items, not chunks.

    ``completed`` includes the ``failed`` items. ``total`` is None while it is unknown (an
    ``imap`` over a generator, until the generator ends). ``finished`` is True on the last
    snapshot a call sends.
    """

    __module__ = "procpool"

    completed: int
    failed: int
    total: int | None
    elapsed: float  # seconds since the call started
    finished: bool = False

    @property
    def rate(self) -> float:
        """Items per second so far."""
        return self.completed / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the rate so far; None if the total or the rate is unknown."""
        if self.total is None or self.rate == 0:
            return None
        return max(0, self.total - self.completed) / self.rate
