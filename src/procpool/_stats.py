"""What ``pool.stats()`` and ``executor.stats()`` return: frozen snapshots of a pool's state.

Owns the two snapshot records and their one-line summary. Plain data: the dispatcher thread
builds them from the scheduler's record and its own counters (``Dispatcher.stats``), so a
snapshot is consistent (taken between two events) and never changes after it is returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
