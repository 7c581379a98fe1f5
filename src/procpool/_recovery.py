"""What lost or failed work becomes: every retry decision of the pool is made here.

``Recovery`` is told by the scheduler what went wrong: an item raised (``item_failed``), or a
worker ended without being asked to, holding work or while starting (``worker_lost``). It
answers with a ``Recovered``: what goes back to the front of the pending queue, in the order it
must end up there, the actions for the dispatcher, and why the lost worker went away (the cause
its replacement is counted under). It reads the lost worker's slot and never changes it; its
only state is the count of start-up deaths in a row, and it adds to the scheduler's
``SchedulerCounts`` (retries, timeouts). It must not touch the pending queue, the workers or
the replacements: the scheduler (procpool._scheduler) applies what it answers and owns those.
Like the scheduler, it is pure: no threads, pipes, processes or clocks.
"""

from __future__ import annotations

from ._codec import add_note
from ._errors import (
    InitializerFailed,
    TaskTimeout,
    WorkerDied,
    WorkerStartFailed,
    describe_exit,
    how_it_ended,
)
from ._options import WorkerPolicy
from ._runtime_typing import NamedTuple
from ._scheduler_events import (
    Action,
    BreakPool,
    Death,
    DropChunk,
    FailChunk,
    SchedulerCounts,
    Splitter,
)
from ._task import Chunk
from ._worker_slot import KillReason, WorkerSlot


def startup_deaths_allowed(processes: int) -> int:
    """A worker killed by a signal while it starts (the OOM killer, a kill storm) is replaced
    like any other; its chunk never started, so it runs elsewhere. Only more such deaths in a
    row than this, with no worker finishing its start in between, break the pool: something
    kills every worker as it starts, and respawning forever would help nobody."""
    return max(5, 2 * processes)


class Recovered(NamedTuple):
    """What lost or failed work becomes, for the scheduler to apply."""

    # Back to the front of the pending queue, in this order (the first runs first).
    requeue: tuple[Chunk, ...] = ()
    actions: tuple[Action, ...] = ()
    # A lost worker: why it went away, the cause its replacement is counted under. None when
    # no worker was lost, or when it is not to be replaced because the pool breaks (then the
    # actions hold the BreakPool).
    replacing: str | None = None


class Recovery:
    """Decides, for the scheduler, whether lost or failed work runs again, fails, or is
    dropped, and when deaths at start-up break the pool."""

    def __init__(self, processes: int, worker_policy: WorkerPolicy, split: Splitter | None,
                 counts: SchedulerCounts) -> None:
        self.processes = processes
        self.worker_policy = worker_policy
        self._split = split or _cannot_split
        self.counts = counts  # the scheduler's; decisions never read it
        self._startup_deaths_in_a_row = 0

    def should_retry(self, chunk: Chunk, error: BaseException) -> bool:
        return (chunk.attempt <= chunk.policy.retries
                and isinstance(error, chunk.policy.retried_kinds()))

    def item_failed(self, chunk: Chunk, position: int, error: BaseException) -> Recovered:
        """Item ``position`` of ``chunk`` (one that reports each item) raised ``error``: run
        it again if its policy retries that, else fail it, noting the attempts made."""
        if self.should_retry(chunk, error):
            self.counts.retried += 1
            return Recovered(requeue=(self._split(chunk, position, 1, chunk.attempt + 1),))
        if chunk.attempt > 1 and not hasattr(error, "attempts"):
            add_note(error, f"procpool: the task failed on each of {chunk.attempt} attempts")
        return Recovered(actions=(FailChunk(chunk.part(position, 1), error),))

    def worker_started(self) -> None:
        """A worker finished starting: the start-up deaths before it were not in a row."""
        self._startup_deaths_in_a_row = 0

    def worker_lost(self, slot: WorkerSlot, death: Death) -> Recovered:
        """The worker of ``slot`` ended without being asked to: what becomes of what it held."""
        # A worker killed for a cancel is no start-up failure; one killed for the bytes its
        # initializer wrote into its reply pipe is.
        if not slot.ready and slot.kill_reason in (None, KillReason.LOST):
            return self._lost_while_starting(slot, death)
        # What is left of the running chunk goes back to the queue before the queued ones.
        requeue: list[Chunk] = []
        queued, cancelled = slot.queued_by_fate()
        actions: list[Action] = [DropChunk(c) for c in cancelled]
        chunk = slot.running
        unfinished = slot.unfinished()
        if chunk is None or unfinished is None:
            pass
        elif slot.collateral:
            # Killed for the chunk before it. The rest runs again (if its future was
            # cancelled meanwhile, its sink drops it then), unless its arguments were in
            # shared memory, which the kill may have taken with it (the scheduler queues no
            # such chunk, so none should get here; if one does, it fails rather than hangs).
            if chunk.segments is None:
                requeue.append(unfinished if unfinished is chunk else self._split(
                    chunk, slot.position, chunk.size - slot.position, chunk.attempt))
            else:
                actions.append(FailChunk(chunk, _died(chunk, death)))
        elif slot.running_cancelled:
            actions.append(DropChunk(unfinished))
        else:
            lost = self._chunk_lost(chunk, slot, death)
            requeue += lost.requeue
            actions += lost.actions
        requeue += queued  # they never started: run them elsewhere
        return Recovered(tuple(requeue), tuple(actions), _cause_of(slot, death))

    def _lost_while_starting(self, slot: WorkerSlot, death: Death) -> Recovered:
        """A worker ended before it was ready. Its chunk, if it had one, waited in its pipe
        and never started: it goes back to the front of the queue either way. A worker that
        exited (its initializer, or a spawned child's import of __main__, failed) breaks the
        pool; one killed by a signal is replaced, up to startup_deaths_allowed in a row."""
        requeue = () if slot.running is None else (slot.running,)
        signal_name, cause = describe_exit(death.exitcode)
        how = how_it_ended(death.exitcode)
        killed = signal_name is not None or death.cause is not None
        self._startup_deaths_in_a_row += 1
        allowed = startup_deaths_allowed(self.processes)
        if not killed:
            return Recovered(requeue, (BreakPool(self._start_failure(death, how, cause)),))
        if self._startup_deaths_in_a_row > allowed:
            return Recovered(requeue, (BreakPool(self._gave_up(death, how, cause)),))
        return Recovered(requeue, replacing=_cause_of(slot, death))

    def _gave_up(self, death: Death, how: str, cause: str) -> BaseException:
        """Why the pool stopped replacing workers killed as they started: blamed on the
        initializer only if there is one."""
        in_a_row = self._startup_deaths_in_a_row
        if self.worker_policy.has_initializer:
            return InitializerFailed(f"{in_a_row} workers in a row died during start-up, the "
                                     f"last (pid {death.pid}) {how}: {cause}; the pool gave "
                                     "up replacing them")
        return WorkerStartFailed(death.pid, f"{how}: {cause}", self.worker_policy.imports_main,
                                 in_a_row=in_a_row)

    def _start_failure(self, death: Death, how: str, cause: str) -> BaseException:
        """Why a worker that exited while starting broke the pool, as far as we can tell."""
        policy = self.worker_policy
        if policy.has_initializer:
            return InitializerFailed(f"worker pid {death.pid} died during start-up, {how}: "
                                     f"{cause}")
        return WorkerStartFailed(death.pid, how, policy.imports_main)

    def _chunk_lost(self, chunk: Chunk, slot: WorkerSlot, death: Death) -> Recovered:
        """The worker died, or was killed for a timeout, running ``chunk``: fail it, or (a
        chunk that reports each item) fail or retry the item it was on and requeue the rest."""
        if not chunk.policy.reports_each_item:
            return Recovered(actions=(FailChunk(chunk, _died(chunk, death)),))
        # The worker reported items before `position`; it was running `position`; the items
        # after it never started, so they can run elsewhere with no risk of running twice.
        position = slot.position
        lost = chunk.part(position, 1)
        error: BaseException
        if slot.kill_reason is KillReason.TIMEOUT:
            assert chunk.policy.timeout is not None
            self.counts.timed_out += 1
            error = TaskTimeout(chunk.policy.timeout, death.pid, lost.description, chunk.attempt)
            if slot.killed_loading:
                add_note(error, f"procpool: it never began to run: after "
                                f"{slot.loading_allowance():g} s its worker was still loading "
                                f"its function or its arguments (importing their modules)")
        else:
            error = _died(lost, death)
        rest = chunk.size - position - 1
        requeue = (self._split(chunk, position + 1, rest, chunk.attempt),) if rest > 0 else ()
        if self.should_retry(chunk, error):
            self.counts.retried += 1
            # The retry runs first, then the rest.
            return Recovered((self._split(chunk, position, 1, chunk.attempt + 1), *requeue))
        return Recovered(requeue, (FailChunk(lost, error),))


def _died(chunk: Chunk, death: Death) -> WorkerDied:
    """The error of ``chunk``, whose worker died running it."""
    return WorkerDied(death.pid, death.exitcode, chunk.description, death.peak_rss,
                      chunk.attempt, death.oom_killed, death.cause)


def _cause_of(slot: WorkerSlot, death: Death) -> str:
    """Why a worker that ended unasked went away, in a few words (the key of its count)."""
    if slot.kill_reason is not None:
        return slot.kill_reason.value
    if death.oom_killed:
        return "killed by the OOM killer"
    if death.cause is not None:
        return "lost"
    return how_it_ended(death.exitcode)


def _cannot_split(chunk: Chunk, position: int, size: int, attempt: int) -> Chunk:
    raise RuntimeError("this scheduler was built without a splitter, so it cannot requeue")
