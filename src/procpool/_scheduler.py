"""Pure scheduling decisions: which chunk goes to which worker, who is replaced, when to stop.

Owns the queue of pending chunks, the record of what each worker holds and how far it got, the
deadlines (task timeouts, initializer timeouts) and the retry policy. It is told what happened
through one door, ``Scheduler.handle(event, now)``, with the current time passed in; the events
are the records below (``Started``, ``Submitted``, ``StreamOpened``, ``StreamClosed``,
``WorkerReady``, ``ItemFinished``, ``ItemFailed``, ``ChunkFinished``, ``WorkerLost``, ``Cancel``,
``Close``, ``Break``, ``Tick``: the ``Event`` union), and every one is answered with a list of
actions for the dispatcher to carry out (``Action``). What else the dispatcher needs to know it
asks through read-only queries (``running_on``, ``next_deadline``, ``stats``, ...), never by
changing anything. No threads, pipes, processes or clocks: tests drive it directly
(tests/test_scheduler.py).
"""

from __future__ import annotations

import enum
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

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
from ._task import Chunk

# ---- actions --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartWorker:
    worker_id: int


@dataclass(frozen=True, slots=True)
class SendChunk:
    worker_id: int
    chunk: Chunk


@dataclass(frozen=True, slots=True)
class StopWorker:
    """Ask a worker to exit once idle (recycling or shutdown); its exit is not a death."""

    worker_id: int


@dataclass(frozen=True, slots=True)
class KillWorker:
    """Kill a worker (and its process group) now: its task ran past its timeout."""

    worker_id: int


@dataclass(frozen=True, slots=True)
class FailChunk:
    chunk: Chunk
    error: BaseException


@dataclass(frozen=True, slots=True)
class DropChunk:
    """Nobody wants ``chunk`` any more (its future was cancelled, its stream abandoned): it
    will not run, or not to its end, and no outcome of it is delivered. The cancellation was
    its answer."""

    chunk: Chunk


@dataclass(frozen=True, slots=True)
class BreakPool:
    """Nothing can run any more (the initializer failed): fail everything, end every worker."""

    error: BaseException


# ---- events ---------------------------------------------------------------------------------
# What happened, told to Scheduler.handle. Not the worker's replies (procpool._messages: Ready,
# ItemDone, ChunkDone): the dispatcher reads those and tells the scheduler in these terms.


@dataclass(frozen=True, slots=True)
class Started:
    """The pool starts: its first workers are wanted."""


@dataclass(frozen=True, slots=True)
class Submitted:
    """New chunks to run, in order (once the pool is broken, they fail at once)."""

    chunks: tuple[Chunk, ...]


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """A job will keep submitting (imap's input is being read): closing must wait for it."""


@dataclass(frozen=True, slots=True)
class StreamClosed:
    """A stream has submitted its last chunk."""


@dataclass(frozen=True, slots=True)
class WorkerReady:
    """A worker finished starting (its initializer ran)."""

    worker_id: int


@dataclass(frozen=True, slots=True)
class ItemFinished:
    """A worker reported one more item of its running chunk (one that reports each item);
    ``running_on`` says which, asked before this is handled."""

    worker_id: int


@dataclass(frozen=True, slots=True)
class ItemFailed:
    """Item ``position`` of ``chunk`` (one that reports each item) raised ``error``."""

    chunk: Chunk
    position: int
    error: BaseException


@dataclass(frozen=True, slots=True)
class ChunkFinished:
    """A worker reported its running chunk done; ``running_on`` says which, asked before this
    is handled. ``rss``: its memory now; ``seconds``: how long it took over the chunk (for
    its function's Pace)."""

    worker_id: int
    rss: int
    seconds: float | None = None


@dataclass(frozen=True, slots=True)
class Death:
    """What the dispatcher learned about a worker that ended without being asked to."""

    pid: int | None
    exitcode: int | None
    peak_rss: int | None = None
    oom_killed: bool = False
    cause: str | None = None  # the backend's account of a loss (Dask: the worker was lost)


@dataclass(frozen=True, slots=True)
class WorkerLost:
    """A worker ended without being asked to."""

    worker_id: int
    death: Death


@dataclass(frozen=True, slots=True)
class Cancel:
    """Nobody wants ``chunk`` (or the parts split off it) any more."""

    chunk: Chunk


@dataclass(frozen=True, slots=True)
class Close:
    """Stop once the work is done; with ``abandon_streams``, open streams no longer count
    (terminate: whatever they still submit fails at once)."""

    abandon_streams: bool = False


@dataclass(frozen=True, slots=True)
class Break:
    """Nothing can run any more (or the pool was terminated): fail everything, now and
    later."""

    error: BaseException


@dataclass(frozen=True, slots=True)
class Tick:
    """Time has passed: act on every deadline due by ``now``."""


Action = StartWorker | SendChunk | StopWorker | KillWorker | FailChunk | DropChunk | BreakPool
Event = (Started | Submitted | StreamOpened | StreamClosed | WorkerReady | ItemFinished
         | ItemFailed | ChunkFinished | WorkerLost | Cancel | Close | Break | Tick)


# ---- statistics -------------------------------------------------------------------------------


@dataclass(slots=True)
class SchedulerCounts:
    """What the scheduler has seen happen, for ``stats()``: retries, timeouts and why workers
    were replaced."""

    retried: int = 0
    timed_out: int = 0
    replacements: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class SlotStats:
    """One worker's work as the scheduler sees it (the dispatcher adds its pid and memory)."""

    worker_id: int
    unanswered: int  # items of its running chunk without an answer: busy while above 0
    tasks_done: int
    busy_seconds: float
    idle_seconds: float


@dataclass(frozen=True, slots=True)
class SchedulerStats:
    """The scheduler's share of a ``PoolStats`` snapshot, taken at one instant."""

    tasks_queued: int
    tasks_retried: int
    tasks_timed_out: int
    respawn_causes: dict[str, int]
    workers: tuple[SlotStats, ...]


# Makes a runnable chunk of ``size`` items of ``chunk`` from ``position`` on, for ``attempt``.
Splitter = Callable[[Chunk, int, int, int], Chunk]

# A worker may hold a second chunk queued behind the one it runs, so it starts the next at
# once instead of idling for a round trip through the dispatcher. Only a short chunk is
# queued: a long one gains nothing from it and, near the end of a job, could wait on a busy
# worker while another sits idle. And only a small one: the dispatcher must never block
# writing to a worker that may itself be blocked writing a large result; a queued chunk this
# small fits in the pipe's buffer (208 KiB on Linux) with room to spare.
QUEUE_MAX_SECONDS = 0.02
QUEUE_MAX_BYTES = 32 * 1024



def startup_deaths_allowed(processes: int) -> int:
    """A worker killed by a signal while it starts (the OOM killer, a kill storm) is replaced
    like any other; its chunk never started, so it runs elsewhere. Only more such deaths in a
    row than this, with no worker finishing its start in between, break the pool: something
    kills every worker as it starts, and respawning forever would help nobody."""
    return max(5, 2 * processes)


class KillReason(enum.Enum):
    """Why the scheduler ordered a worker killed (the values name the replacement's cause)."""

    TIMEOUT = "task timeout"
    CANCEL = "task cancelled"


@dataclass(slots=True)
class _WorkerSlot:
    running: Chunk | None = None
    # Sent to the worker, waiting in its pipe behind ``running``: it cannot have started before
    # the worker reports ``running`` done, so a death before that leaves it safe to rerun.
    queued: Chunk | None = None
    queued_cancelled: bool = False  # cancel() while queued: kill the worker when it starts
    position: int = 0  # items of the running chunk already reported (chunks that report each)
    deadline: float | None = None  # the running item's timeout, or the initializer's
    ready: bool = False
    # Why a kill was ordered: its running chunk timed out, or was cancelled. The worker may
    # still report the chunk it was finishing as the signal lands, but it must never be given
    # another one; its death is expected.
    kill_reason: KillReason | None = None
    # The running chunk was queued behind the one the kill was ordered for, and the worker
    # went on to it before the signal landed: what it leaves unanswered is no fault of its
    # own, and runs again elsewhere.
    collateral: bool = False
    chunks_done: int = 0
    # For statistics: when the slot was created, when its current chunk started, how long it
    # has spent running chunks, and how many items it finished.
    born: float = 0.0
    busy_since: float | None = None
    busy_seconds: float = 0.0
    items_done: int = 0

    @property
    def doomed(self) -> bool:
        return self.kill_reason is not None

    def finish_chunk(self, now: float, items: int) -> None:
        if self.busy_since is not None:
            self.busy_seconds += now - self.busy_since
        self.busy_since = None
        self.items_done += items

    @property
    def unanswered(self) -> int:
        """How many items of the running chunk have no answer yet. 0 also once a chunk that
        reports each item has reported them all and its end has yet to come: then the worker
        holds nothing a death could lose."""
        return 0 if self.running is None else self.running.size - self.position

    def unfinished(self) -> Chunk | None:
        """What of the running chunk has no answer yet: all of it, or (a chunk that reports
        each item) the items from the one running on; None if nothing."""
        chunk = self.running
        if chunk is None or self.position == 0:
            return chunk
        if self.unanswered <= 0:
            return None
        return chunk.part(self.position, self.unanswered)

    def stats(self, worker_id: int, now: float) -> SlotStats:
        busy = self.busy_seconds
        if self.busy_since is not None:
            busy += now - self.busy_since
        return SlotStats(worker_id, self.unanswered, self.items_done, busy,
                         max(0.0, now - self.born - busy))


class Scheduler:
    """Keeps ``processes`` workers busy with chunks in submission order (FIFO).

    A worker runs one chunk at a time and may hold one short chunk queued behind it. Replies
    arrive in order on its pipe, so the dispatcher always knows which chunk was running when a
    worker died: exactly that chunk is affected (when the chunk reports each item, exactly the
    item it was running), and the queued one runs elsewhere.
    """

    def __init__(self, processes: int, workers: WorkerPolicy | None = None,
                 split: Splitter | None = None) -> None:
        self.processes = processes
        self.worker_policy = workers or WorkerPolicy()
        self._split = split or _cannot_split
        self.pending: deque[Chunk] = deque()
        self.workers: dict[int, _WorkerSlot] = {}
        self._idle: deque[int] = deque()
        self._next_worker_id = 0
        self.open_streams = 0
        self.closing = False
        self.broken: BaseException | None = None
        self._startup_deaths_in_a_row = 0
        # Counters for statistics (pool.stats()); decisions never read them.
        self.counts = SchedulerCounts()

    # ---- queries -------------------------------------------------------------------------

    @property
    def running(self) -> dict[int, Chunk]:
        return {wid: s.running for wid, s in self.workers.items() if s.running is not None}

    def has_work(self) -> bool:
        return bool(self.pending) or self.open_streams > 0 or any(
            s.running is not None for s in self.workers.values()
        )

    def is_drained(self) -> bool:
        """Closing, nothing left to run, and every worker asked to stop."""
        return self.closing and not self.has_work() and not self.workers

    def stats(self, now: float) -> SchedulerStats:
        """Its share of a snapshot: what waits, what each worker holds, what it counted."""
        queued = sum(chunk.size for chunk in self.pending) + sum(
            slot.queued.size for slot in self.workers.values() if slot.queued)
        counts = self.counts
        return SchedulerStats(
            tasks_queued=queued, tasks_retried=counts.retried, tasks_timed_out=counts.timed_out,
            respawn_causes=dict(counts.replacements),
            workers=tuple(slot.stats(worker_id, now) for worker_id, slot in self.workers.items()),
        )

    def running_on(self, worker_id: int) -> tuple[Chunk, int]:
        """The chunk worker ``worker_id`` runs and the position of the item it is on: what its
        next ``ItemDone`` or ``ChunkDone`` reply belongs to (ask before handling the event)."""
        slot = self.workers[worker_id]
        assert slot.running is not None, f"worker {worker_id} reported on a chunk it was not given"
        return slot.running, slot.position

    def next_deadline(self) -> float | None:
        deadlines = [s.deadline for s in self.workers.values() if s.deadline is not None]
        return min(deadlines, default=None)

    def should_retry(self, chunk: Chunk, error: BaseException) -> bool:
        return chunk.attempt <= chunk.policy.retries and isinstance(error, chunk.policy.retry_on)

    # ---- events --------------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Action]:
        """The one way in: ``event`` happened at ``now``; answer what the dispatcher is to do.
        Anything that is not an ``Event`` raises TypeError (a reply or command passed by
        mistake must not be lost quietly)."""
        match event:
            case Started():
                return self._on_started(now)
            case Submitted(chunks):
                return self._on_submitted(chunks, now)
            case StreamOpened():
                return self._on_stream_opened()
            case StreamClosed():
                return self._on_stream_closed(now)
            case WorkerReady(worker_id):
                return self._on_worker_ready(worker_id, now)
            case ItemFinished(worker_id):
                return self._on_item_finished(worker_id, now)
            case ItemFailed(chunk, position, error):
                return self._on_item_failed(chunk, position, error, now)
            case ChunkFinished(worker_id, rss, seconds):
                return self._on_chunk_finished(worker_id, rss, seconds, now)
            case WorkerLost(worker_id, death):
                return self._on_worker_lost(worker_id, death, now)
            case Cancel(chunk):
                return self._on_cancel(chunk)
            case Close(abandon_streams):
                return self._on_close(now, abandon_streams)
            case Break(error):
                return self._on_break(error)
            case Tick():
                return self._on_tick(now)
            case _:
                raise TypeError(f"the scheduler handles events, not {event!r}")

    def _on_started(self, now: float) -> list[Action]:
        return [self._new_worker(now) for _ in range(self.processes)]

    def _on_submitted(self, chunks: Iterable[Chunk], now: float) -> list[Action]:
        if self.broken is not None:
            return [FailChunk(chunk, self.broken) for chunk in chunks]
        self.pending.extend(chunks)
        return self._dispatch(now)

    def _on_stream_opened(self) -> list[Action]:
        self.open_streams += 1
        return []

    def _on_stream_closed(self, now: float) -> list[Action]:
        self.open_streams = max(0, self.open_streams - 1)
        return self._dispatch(now)

    def _on_worker_ready(self, worker_id: int, now: float) -> list[Action]:
        slot = self.workers.get(worker_id)
        if slot is None:
            return []
        slot.ready = True
        slot.deadline = None
        self._startup_deaths_in_a_row = 0
        if slot.running is not None:
            slot.busy_since = now
            self._start_item(slot, now)  # its chunk was waiting in the pipe until now
        return []

    def _on_item_finished(self, worker_id: int, now: float) -> list[Action]:
        """A reporting chunk finished one more item; the next one starts now."""
        slot = self.workers[worker_id]
        chunk = slot.running
        assert chunk is not None, f"worker {worker_id} reported an item it was not given"
        slot.position += 1
        slot.items_done += 1
        slot.deadline = None
        if slot.position < chunk.size:
            self._start_item(slot, now)
        return []

    def _on_chunk_finished(self, worker_id: int, rss: int, seconds: float | None,
                           now: float) -> list[Action]:
        """``seconds``: how long the worker took over the chunk (for its function's Pace)."""
        slot = self.workers[worker_id]
        chunk = slot.running
        assert chunk is not None, f"worker {worker_id} reported a chunk it was not given"
        if seconds is not None:
            chunk.function.pace.observe(chunk.size, seconds)
        slot.finish_chunk(now, chunk.size - slot.position)
        slot.running, slot.position, slot.deadline = None, 0, None
        slot.collateral = False
        slot.chunks_done += 1
        if slot.doomed:  # its death is on the way: no more work for it
            if slot.queued is not None:  # but this one is in its pipe, and may start
                slot.running, slot.queued = slot.queued, None
                slot.collateral, slot.queued_cancelled = True, False
            return self._dispatch(now)
        if slot.queued is not None:
            return self._start_queued(worker_id, slot, now)
        policy = self.worker_policy
        actions: list[Action] = []
        recycle = None
        if policy.max_tasks is not None and slot.chunks_done >= policy.max_tasks:
            recycle = "maxtasksperchild reached"
        elif policy.max_memory is not None and rss > policy.max_memory:
            recycle = "max_memory_per_child exceeded"
        if recycle is not None:
            del self.workers[worker_id]
            actions.append(StopWorker(worker_id))
            if not self.closing or self.has_work():
                actions.append(self._new_worker(now, replacing=recycle))
        else:
            self._idle.append(worker_id)
        actions += self._dispatch(now)
        return actions

    def _on_cancel(self, chunk: Chunk) -> list[Action]:
        """Nobody wants ``chunk`` any more: drop it if pending, kill its worker if running
        (if queued on a worker, as soon as it starts there). The parts a retry or a death
        split off it share its sink, and go the same way."""
        sink = chunk.sink
        actions: list[Action] = []
        for waiting in [c for c in self.pending if c.sink is sink]:
            self.pending.remove(waiting)
            actions.append(DropChunk(waiting))
        for worker_id, slot in self.workers.items():
            if slot.queued is not None and slot.queued.sink is sink:
                slot.queued_cancelled = True
            if slot.running is not None and slot.running.sink is sink and not slot.doomed:
                slot.kill_reason = KillReason.CANCEL
                slot.deadline = None
                actions.append(KillWorker(worker_id))
        return actions

    def _on_item_failed(self, chunk: Chunk, position: int, error: BaseException,
                        now: float) -> list[Action]:
        """Item ``position`` of ``chunk`` (one that reports each item) raised ``error``: run
        it again if its policy retries that, else fail it, noting the attempts made."""
        if self.should_retry(chunk, error):
            self.counts.retried += 1
            self.pending.appendleft(self._split(chunk, position, 1, chunk.attempt + 1))
            return self._dispatch(now)
        if chunk.attempt > 1 and not hasattr(error, "attempts"):
            add_note(error, f"procpool: the task failed on each of {chunk.attempt} attempts")
        return [FailChunk(chunk.part(position, 1), error)]

    def _on_tick(self, now: float) -> list[Action]:
        """Act on every deadline that has passed."""
        actions: list[Action] = []
        for worker_id, slot in self.workers.items():
            if slot.deadline is None or slot.deadline > now:
                continue
            slot.deadline = None
            if not slot.ready:
                limit = self.worker_policy.initializer_timeout
                return [BreakPool(InitializerFailed(
                    f"a worker did not finish starting up within initializer_timeout={limit:g} s"
                ))]
            slot.kill_reason = KillReason.TIMEOUT
            actions.append(KillWorker(worker_id))
        return actions

    def _on_worker_lost(self, worker_id: int, death: Death, now: float) -> list[Action]:
        """A worker ended without being asked to; fail or retry what it held, replace it."""
        slot = self.workers.pop(worker_id, None)
        if slot is None:
            return []  # it was retiring already
        if worker_id in self._idle:
            self._idle.remove(worker_id)
        if not slot.ready and not slot.doomed:  # a worker we killed is no start-up failure
            return self._lost_while_starting(slot, death, now)
        actions: list[Action] = []
        if slot.queued is not None:
            if slot.queued_cancelled:
                actions.append(DropChunk(slot.queued))
            else:
                self.pending.appendleft(slot.queued)  # it never started: run it elsewhere
        chunk = slot.running
        unfinished = slot.unfinished()
        if chunk is None or unfinished is None:
            pass
        elif slot.collateral:
            # Killed for the chunk before it. The rest runs again (if its future was
            # cancelled meanwhile, its sink drops it then), unless its arguments were in
            # shared memory: a worker removes those once it has mapped them.
            if chunk.segments is None:
                self.pending.appendleft(unfinished if unfinished is chunk else self._split(
                    chunk, slot.position, chunk.size - slot.position, chunk.attempt))
            else:
                actions.append(FailChunk(chunk, _died(chunk, death)))
        elif slot.kill_reason is KillReason.CANCEL:
            actions.append(DropChunk(unfinished))
        else:
            actions += self._chunk_lost(chunk, slot, death)
        if self.broken is None and (not self.closing or self.has_work()):
            actions.append(self._new_worker(now, replacing=_cause_of(slot, death)))
        actions += self._dispatch(now)
        return actions

    def _on_break(self, error: BaseException) -> list[Action]:
        """Fail every chunk, pending or running, and forget every worker; later submissions
        fail at once. The dispatcher ends the workers."""
        self.broken = error
        actions: list[Action] = [FailChunk(chunk, error) for chunk in self.pending]
        self.pending.clear()
        for slot in self.workers.values():
            unfinished = slot.unfinished()
            if unfinished is not None and slot.kill_reason is KillReason.CANCEL:
                actions.append(DropChunk(unfinished))
            elif unfinished is not None:
                actions.append(FailChunk(unfinished, error))
            if slot.queued is not None:
                actions.append(DropChunk(slot.queued) if slot.queued_cancelled
                               else FailChunk(slot.queued, error))
        self.workers.clear()
        self._idle.clear()
        return actions

    def _on_close(self, now: float, abandon_streams: bool) -> list[Action]:
        """Stop once the work is done; with ``abandon_streams``, open streams no longer count
        (terminate: whatever they still submit fails at once)."""
        self.closing = True
        if abandon_streams:
            self.open_streams = 0
        return self._dispatch(now)

    # ---- internals -----------------------------------------------------------------------

    def _lost_while_starting(self, slot: _WorkerSlot, death: Death, now: float) -> list[Action]:
        """A worker ended before it was ready. Its chunk, if it had one, waited in its pipe
        and never started: it goes back to the front of the queue either way. A worker that
        exited (its initializer, or a spawned child's import of __main__, failed) breaks the
        pool; one killed by a signal is replaced, up to startup_deaths_allowed in a row."""
        if slot.running is not None:
            self.pending.appendleft(slot.running)
        signal_name, cause = describe_exit(death.exitcode)
        how = how_it_ended(death.exitcode)
        killed = signal_name is not None or death.cause is not None
        self._startup_deaths_in_a_row += 1
        allowed = startup_deaths_allowed(self.processes)
        if not killed:
            return [BreakPool(self._start_failure(death, how, cause))]
        if self._startup_deaths_in_a_row > allowed:
            return [BreakPool(InitializerFailed(
                f"{self._startup_deaths_in_a_row} workers in a row died during start-up, the "
                f"last (pid {death.pid}) {how}: {cause}; the pool gave up replacing them"))]
        actions: list[Action] = []
        if self.broken is None and (not self.closing or self.has_work()):
            actions.append(self._new_worker(now, replacing=_cause_of(slot, death)))
        return actions + self._dispatch(now)

    def _start_failure(self, death: Death, how: str, cause: str) -> BaseException:
        """Why a worker that exited while starting broke the pool, as far as we can tell."""
        policy = self.worker_policy
        if policy.has_initializer:
            return InitializerFailed(f"worker pid {death.pid} died during start-up, {how}: "
                                     f"{cause}")
        return WorkerStartFailed(death.pid, how, policy.imports_main)

    def _chunk_lost(self, chunk: Chunk, slot: _WorkerSlot, death: Death) -> list[Action]:
        if not chunk.policy.reports_each_item:
            return [FailChunk(chunk, _died(chunk, death))]
        # The worker reported items before `position`; it was running `position`; the items
        # after it never started, so they can run elsewhere with no risk of running twice.
        position = slot.position
        lost = chunk.part(position, 1)
        error: BaseException
        if slot.kill_reason is KillReason.TIMEOUT:
            assert chunk.policy.timeout is not None
            self.counts.timed_out += 1
            error = TaskTimeout(chunk.policy.timeout, death.pid, lost.description, chunk.attempt)
        else:
            error = _died(lost, death)
        actions: list[Action] = []
        rest = chunk.size - position - 1
        if rest > 0:
            self.pending.appendleft(self._split(chunk, position + 1, rest, chunk.attempt))
        if self.should_retry(chunk, error):
            self.counts.retried += 1
            self.pending.appendleft(self._split(chunk, position, 1, chunk.attempt + 1))
        else:
            actions.append(FailChunk(lost, error))
        return actions

    def _start_queued(self, worker_id: int, slot: _WorkerSlot, now: float) -> list[Action]:
        """The worker has gone on to its queued chunk: it is running now."""
        assert slot.queued is not None
        slot.running, slot.queued = slot.queued, None
        slot.busy_since = now
        self._start_item(slot, now)
        if slot.queued_cancelled:
            slot.queued_cancelled = False
            slot.kill_reason = KillReason.CANCEL
            slot.deadline = None
            return [KillWorker(worker_id)]
        return self._dispatch(now)

    def _may_queue_on(self, slot: _WorkerSlot) -> bool:
        """Whether a chunk may wait on this worker behind the one it runs: not on a worker
        that is starting, doomed, or to be recycled once its running chunk is done."""
        policy = self.worker_policy
        return (slot.running is not None and slot.queued is None and slot.ready
                and not slot.doomed and policy.max_memory is None
                and (policy.max_tasks is None or slot.chunks_done + 2 <= policy.max_tasks))

    def _start_item(self, slot: _WorkerSlot, now: float) -> None:
        assert slot.running is not None
        timeout = slot.running.policy.timeout
        # A doomed worker's kill is on its way: no deadline of its own can matter.
        slot.deadline = None if timeout is None or slot.doomed else now + timeout

    def _new_worker(self, now: float, replacing: str | None = None) -> StartWorker:
        """A new worker slot; ``replacing`` says why the worker it replaces went away."""
        if replacing is not None:
            self.counts.replacements[replacing] += 1
        worker_id = self._next_worker_id
        self._next_worker_id += 1
        slot = _WorkerSlot(born=now)
        limit = self.worker_policy.initializer_timeout
        if limit is not None:
            slot.deadline = now + limit
        self.workers[worker_id] = slot
        self._idle.append(worker_id)
        return StartWorker(worker_id)

    def _dispatch(self, now: float) -> list[Action]:
        actions: list[Action] = []
        # Work waiting means a full complement of workers, even if they were all stopped
        # already (a submission racing with close() from another thread).
        while self.pending and self.broken is None and len(self.workers) < self.processes:
            actions.append(self._new_worker(now))
        while self.pending and self._idle:
            chunk = self.pending.popleft()
            if not chunk.sink.chunk_starting(chunk):
                actions.append(DropChunk(chunk))  # cancelled while it waited
                continue
            worker_id = self._idle.popleft()
            slot = self.workers[worker_id]
            slot.running = chunk
            slot.position = 0
            if slot.ready:
                slot.busy_since = now
                self._start_item(slot, now)
            actions.append(SendChunk(worker_id, slot.running))
        for worker_id, slot in self.workers.items():
            while self._may_queue_on(slot) and self.pending and _short_and_small(self.pending[0]):
                chunk = self.pending.popleft()
                if chunk.sink.chunk_starting(chunk):
                    slot.queued = chunk
                    actions.append(SendChunk(worker_id, chunk))
                else:
                    actions.append(DropChunk(chunk))  # cancelled while it waited
        if self.closing and not self.has_work():
            actions += [StopWorker(worker_id) for worker_id in self.workers]
            self.workers.clear()
            self._idle.clear()
        return actions


def _short_and_small(chunk: Chunk) -> bool:
    """Whether ``chunk`` may be queued behind another (see QUEUE_MAX_SECONDS). Only what goes
    through the pipe counts: buffers in shared memory do not."""
    seconds = chunk.function.pace.seconds_for(chunk.size)
    return (seconds is not None and seconds <= QUEUE_MAX_SECONDS
            and len(chunk.items_payload) + len(chunk.function.payload) <= QUEUE_MAX_BYTES)


def _died(chunk: Chunk, death: Death) -> WorkerDied:
    """The error of ``chunk``, whose worker died running it."""
    return WorkerDied(death.pid, death.exitcode, chunk.description, death.peak_rss,
                      chunk.attempt, death.oom_killed, death.cause)


def _cause_of(slot: _WorkerSlot, death: Death) -> str:
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
