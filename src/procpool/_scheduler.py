"""Pure scheduling decisions: which chunk goes to which worker, who is replaced, when to stop.

Owns the queue of pending chunks, the record of what each worker holds and how far it got (a
``WorkerSlot`` each, procpool._worker_slot), every deadline of the pool (task timeouts,
initializer timeouts, the time a worker asked to stop has to exit), replacing, recycling and
stopping workers, closing and breaking. It is told what happened through one door,
``Scheduler.handle(event, now)``, with the current time passed in, and answers every event with
a list of actions for the dispatcher to carry out; the events (the ``Event`` union), the
actions (``Action``) and the statistics it reports are records of their own in
procpool._scheduler_events. What becomes of lost or failed work (retry, requeue, fail, drop, or
break the pool after too many deaths at start-up) its ``Recovery`` decides (procpool._recovery);
the scheduler puts back on its queue what that answers. What else the dispatcher needs to know
it asks through read-only queries (``running_on``, ``next_deadline``, ``stats``, ...), never by
changing anything. No threads, pipes, processes or clocks: tests drive it directly
(tests/test_scheduler.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from ._errors import InitializerFailed
from ._options import WorkerPolicy
from ._recovery import Recovered, Recovery
from ._scheduler_events import (
    Action,
    Break,
    BreakPool,
    Cancel,
    ChunkFinished,
    Close,
    Death,
    DropChunk,
    Event,
    FailChunk,
    FirstCallBegan,
    ItemFailed,
    ItemFinished,
    KillSpared,
    KillWorker,
    QueuedWithdrawn,
    SchedulerCounts,
    SchedulerStats,
    SendChunk,
    Splitter,
    Started,
    StartWorker,
    StopWorker,
    StreamClosed,
    StreamLost,
    StreamOpened,
    Submitted,
    Tick,
    WithdrawQueued,
    WorkerExited,
    WorkerLost,
    WorkerReady,
)
from ._task import Chunk
from ._worker_slot import LOADING_POLL, KillReason, WorkerSlot, pipe_bytes

# A worker may hold a few chunks queued behind the one it runs (at most QUEUE_MAX_CHUNKS), so
# it starts the next at once instead of idling for a round trip through the dispatcher, and
# so that the dispatcher can send several at once: a write to a worker asleep on its pipe
# wakes it, which costs the dispatcher about 15 us here, as much as the rest of a tiny
# chunk's sending. A chunk is queued only if it would start within QUEUE_MAX_SECONDS, as far
# as the measured paces tell: one queued behind a long one, or a long queue, could wait on a
# busy worker while another sits idle (near the end of a job, or behind one long call among
# short ones), which the stdlib's shared queue never does. And only small ones,
# QUEUE_MAX_BYTES in all, none with arguments in shared memory (``_may_wait_in_pipe``):
# queued chunks this small fit in the pipe's buffer (208 KiB on Linux) with room to spare.
QUEUE_MAX_SECONDS = 0.02
QUEUE_MAX_BYTES = 32 * 1024


# A worker asked to stop that has not exited after this long (a task left a non-daemon thread
# running, which the interpreter waits for at exit) is killed.
RETIRE_TIMEOUT = 5.0


class Scheduler:
    """Keeps ``processes`` workers busy with chunks in submission order (FIFO).

    A worker runs one chunk at a time and may hold a few short chunks queued behind it.
    Replies arrive in order on its pipe, so the dispatcher always knows which chunk was running
    when a worker died: exactly that chunk is affected (when the chunk reports each item,
    exactly the item it was running), and the queued ones run elsewhere.
    """

    def __init__(self, processes: int, workers: WorkerPolicy | None = None,
                 split: Splitter | None = None) -> None:
        self.processes = processes
        self.worker_policy = workers or WorkerPolicy()
        self.pending: deque[Chunk] = deque()
        self.workers: dict[int, WorkerSlot] = {}
        self._idle: deque[int] = deque()
        # Workers asked to stop, by the time they must have exited by; then they are killed.
        self.retiring: dict[int, float] = {}
        self._next_worker_id = 0
        self.open_streams = 0
        self.closing = False
        self.broken: BaseException | None = None
        # Counters for statistics (pool.stats()); decisions never read them.
        self.counts = SchedulerCounts()
        self._recovery = Recovery(processes, self.worker_policy, split, self.counts)

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
            chunk.size for slot in self.workers.values() for chunk in slot.queued)
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

    def queued_on(self, worker_id: int) -> int:
        """How many chunks wait queued behind the one worker ``worker_id`` runs (0 if it is no
        longer one of the scheduler's workers)."""
        slot = self.workers.get(worker_id)
        return 0 if slot is None else len(slot.queued)

    def next_deadline(self) -> float | None:
        """The soonest deadline of the pool, the only one the dispatcher waits for."""
        deadlines = [s.deadline for s in self.workers.values() if s.deadline is not None]
        overruns = [s.overrun_at for s in self.workers.values() if s.overrun_at is not None]
        return min([*deadlines, *overruns, *self.retiring.values()], default=None)

    def should_retry(self, chunk: Chunk, error: BaseException) -> bool:
        """Whether ``error`` in ``chunk`` is retried (the rule is Recovery's)."""
        return self._recovery.should_retry(chunk, error)

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
            case StreamLost(worker_id):
                return self._on_stream_lost(worker_id)
            case ItemFinished(worker_id):
                return self._on_item_finished(worker_id, now)
            case ItemFailed(chunk, position, error):
                return self._on_item_failed(chunk, position, error, now)
            case ChunkFinished(worker_id, rss, seconds):
                return self._on_chunk_finished(worker_id, rss, seconds, now)
            case WorkerExited(worker_id):
                self.retiring.pop(worker_id, None)
                return []
            case WorkerLost(worker_id, death):
                return self._on_worker_lost(worker_id, death, now)
            case Cancel(chunk):
                return self._on_cancel(chunk)
            case QueuedWithdrawn(worker_id, taken):
                return self._on_queued_withdrawn(worker_id, taken, now)
            case KillSpared(worker_id):
                return self._on_kill_spared(worker_id)
            case FirstCallBegan(worker_id, since):
                return self._on_first_call_began(worker_id, since, now)
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
        slot.become_ready(now)
        self._recovery.worker_started()
        if slot.doomed:
            return []  # its stream was lost as it started: it is being killed
        return self._dispatch(now)  # a chunk too large to wait in its pipe may go now

    def _on_stream_lost(self, worker_id: int) -> list[Action]:
        """The worker's stream is corrupt and the table is killing it: it gets no more work
        (its replies from before the corruption still count), and its death is expected."""
        slot = self.workers.get(worker_id)
        if slot is not None and not slot.doomed:
            slot.doom(KillReason.LOST)
            if worker_id in self._idle:
                self._idle.remove(worker_id)
        return []

    def _on_item_finished(self, worker_id: int, now: float) -> list[Action]:
        """A reporting chunk finished one more item; the next one starts now."""
        slot = self.workers[worker_id]
        assert slot.running is not None, f"worker {worker_id} reported an item it was not given"
        slot.finish_item(now)
        return []

    def _on_chunk_finished(self, worker_id: int, rss: int, seconds: float | None,
                           now: float) -> list[Action]:
        """``seconds``: how long the worker took over the chunk (for its function's Pace)."""
        slot = self.workers[worker_id]
        chunk = slot.running
        assert chunk is not None, f"worker {worker_id} reported a chunk it was not given"
        if seconds is not None:
            chunk.function.pace.observe(chunk.size, seconds)
        slot.finish_chunk(now)
        if slot.doomed:  # its death is on the way: no more work for it
            if slot.queued:  # but the next one is in its pipe, and may start
                slot.start_queued(now)  # the kill is coming
                slot.collateral = not slot.running_cancelled
            return self._dispatch(now)
        if slot.queued:
            return self._start_queued(worker_id, slot, now)
        actions: list[Action] = []
        recycle = slot.recycle_cause(self.worker_policy, rss)
        if recycle is not None:
            del self.workers[worker_id]
            actions.append(self._stop(worker_id, now))
            if not self.closing or self.has_work():
                actions.append(self._new_worker(now, replacing=recycle))
        else:
            self._idle.append(worker_id)
        actions += self._dispatch(now)
        return actions

    def _on_cancel(self, chunk: Chunk) -> list[Action]:
        """Nobody wants ``chunk`` any more: drop it if pending, kill its worker if running.
        If it is queued on a worker, take that queue back (QueuedWithdrawn then drops it);
        should the worker have gone on to it first, it is killed as it starts there
        (``_start_queued``). The parts a retry or a death split off it share its sink, and
        go the same way."""
        sink = chunk.sink
        actions: list[Action] = []
        for waiting in [c for c in self.pending if c.sink is sink]:
            self.pending.remove(waiting)
            actions.append(DropChunk(waiting))
        for worker_id, slot in self.workers.items():
            cancelled = [c for c in slot.queued if c.sink is sink]
            slot.cancelled_queued.update(cancelled)
            if slot.running is not None and slot.running.sink is sink:
                slot.running_cancelled = True
                if not slot.doomed:  # (the kill takes the queue back first)
                    actions.append(self._kill(worker_id, slot, KillReason.CANCEL))
            elif cancelled and not slot.doomed and not slot.queue_closed:
                actions.append(WithdrawQueued(worker_id, slot.close_queue()))
        return actions

    def _on_item_failed(self, chunk: Chunk, position: int, error: BaseException,
                        now: float) -> list[Action]:
        """Item ``position`` of ``chunk`` (one that reports each item) raised ``error``: it
        runs again or fails, as Recovery decides."""
        recovered = self._recovery.item_failed(chunk, position, error)
        actions = self._take_back(recovered)
        return actions + self._dispatch(now) if recovered.requeue else actions

    def _on_queued_withdrawn(self, worker_id: int, taken: int, now: float) -> list[Action]:
        """The last ``taken`` chunks queued on a worker were taken back (WithdrawQueued,
        KillWorker): they go back to the front of the queue, in their order, and those
        cancelled while they waited are dropped."""
        slot = self.workers.get(worker_id)
        if slot is None:
            return []
        wanted, cancelled = slot.withdraw_queued(taken)
        self.pending.extendleft(reversed(wanted))
        return [*(DropChunk(chunk) for chunk in cancelled), *self._dispatch(now)]

    def _on_kill_spared(self, worker_id: int) -> list[Action]:
        """The kill ordered for a worker's running chunk was not carried out: the worker had
        gone on to a queued one (KillSpared). It keeps its work; the done chunk's answer comes
        next, and what is cancelled of it is dropped then."""
        slot = self.workers.get(worker_id)
        if slot is not None:
            slot.spare()
        return []

    def _on_first_call_began(self, worker_id: int, since: float | None,
                             now: float) -> list[Action]:
        """The worker began to call its chunk's first item at ``since`` (None: it has not
        yet, it is loading the function or the items). The timeout counts from then: the
        kill ordered at the deadline counted from the chunk's start stands only if the item
        has run that long, or if loading has taken longer than its allowance
        (``WorkerSlot.loading_allowance``); else the deadline moves
        (``KillWorker.first_call_of``)."""
        slot = self.workers.get(worker_id)
        if slot is None or slot.kill_reason is not KillReason.TIMEOUT or slot.running is None:
            return []
        timeout = slot.running.policy.timeout
        assert timeout is not None and slot.busy_since is not None
        if since is None:
            if now - slot.busy_since < slot.loading_allowance():
                slot.postpone_timeout(now + min(timeout, LOADING_POLL))
                return []
            slot.killed_loading = True
        elif since + timeout > now:
            slot.first_call_seen = True
            slot.postpone_timeout(since + timeout)
            return []
        return [KillWorker(worker_id, len(slot.queued))]

    def _on_tick(self, now: float) -> list[Action]:
        """Act on every deadline that has passed."""
        actions: list[Action] = []
        for worker_id, deadline in list(self.retiring.items()):
            if deadline <= now:  # asked to stop, and still there (a non-daemon thread?)
                del self.retiring[worker_id]
                actions.append(KillWorker(worker_id))
        for worker_id, slot in self.workers.items():
            if slot.deadline is not None and slot.deadline <= now:
                slot.deadline = None
                if not slot.ready:
                    limit = self.worker_policy.initializer_timeout
                    return [*actions, BreakPool(InitializerFailed(
                        f"a worker did not finish starting up within initializer_timeout="
                        f"{limit:g} s"))]
                # (The kill takes back what is queued: no overrun is left to watch.)
                actions.append(self._kill(worker_id, slot, KillReason.TIMEOUT))
            elif slot.overrun_at is not None and slot.overrun_at <= now:
                slot.overrun_at = None  # one try: if one has started, its end says more
                actions.append(WithdrawQueued(worker_id, slot.close_queue()))
        return actions

    def _on_worker_lost(self, worker_id: int, death: Death, now: float) -> list[Action]:
        """A worker ended without being asked to: what it held runs again, fails or is
        dropped, as Recovery decides; it is replaced, unless that breaks the pool."""
        slot = self.workers.pop(worker_id, None)
        if slot is None:
            return []  # it was retiring already
        if worker_id in self._idle:
            self._idle.remove(worker_id)
        recovered = self._recovery.worker_lost(slot, death)
        actions = self._take_back(recovered)
        if recovered.replacing is None:
            return actions  # the pool breaks (a BreakPool among the actions)
        if self.broken is None and (not self.closing or self.has_work()):
            actions.append(self._new_worker(now, replacing=recovered.replacing))
        return actions + self._dispatch(now)

    def _on_break(self, error: BaseException) -> list[Action]:
        """Fail every chunk, pending or running, and forget every worker; later submissions
        fail at once. The dispatcher ends the workers."""
        self.broken = error
        actions: list[Action] = [FailChunk(chunk, error) for chunk in self.pending]
        self.pending.clear()
        for slot in self.workers.values():
            unfinished = slot.unfinished()
            if unfinished is not None and slot.running_cancelled:
                actions.append(DropChunk(unfinished))
            elif unfinished is not None:
                actions.append(FailChunk(unfinished, error))
            wanted, cancelled = slot.queued_by_fate()
            actions += [FailChunk(queued, error) for queued in wanted]
            actions += [DropChunk(queued) for queued in cancelled]
        self.workers.clear()
        self._idle.clear()
        self.retiring.clear()  # the dispatcher ends those too
        return actions

    def _on_close(self, now: float, abandon_streams: bool) -> list[Action]:
        """Stop once the work is done; with ``abandon_streams``, open streams no longer count
        (terminate: whatever they still submit fails at once)."""
        self.closing = True
        if abandon_streams:
            self.open_streams = 0
        return self._dispatch(now)

    # ---- internals -----------------------------------------------------------------------

    def _take_back(self, recovered: Recovered) -> list[Action]:
        """Put what Recovery requeues back at the front of the queue, in its order (its first
        chunk first); return its actions."""
        self.pending.extendleft(reversed(recovered.requeue))
        return list(recovered.actions)

    def _start_queued(self, worker_id: int, slot: WorkerSlot, now: float) -> list[Action]:
        """The worker has gone on to its next queued chunk: it is running now, unless it was
        cancelled while it waited there (then its worker is killed)."""
        slot.start_queued(now)
        if slot.running_cancelled:
            return [self._kill(worker_id, slot, KillReason.CANCEL)]
        return self._dispatch(now)

    @staticmethod
    def _kill(worker_id: int, slot: WorkerSlot, reason: KillReason) -> KillWorker:
        """Kill a worker to stop its running chunk, for ``reason``. The chunks queued behind
        it are taken back first: one the worker started before the kill landed would run
        again elsewhere (with no error or attempt of its own to show for it). If it has
        started one, the running chunk is done, and the kill is spared (KillSpared). The
        timeout of a chunk's first item asks first since when it has been called
        (FirstCallBegan)."""
        slot.doom(reason)
        running = slot.running
        if (reason is KillReason.TIMEOUT and running is not None and slot.position == 0
                and not slot.first_call_seen):
            return KillWorker(worker_id, len(slot.queued), running.chunk_id)
        return KillWorker(worker_id, len(slot.queued))

    def _stop(self, worker_id: int, now: float) -> StopWorker:
        """Ask a worker to exit once idle (recycling, closing): its exit is not a death, and it
        is killed if it has not exited within RETIRE_TIMEOUT."""
        self.retiring[worker_id] = now + RETIRE_TIMEOUT
        return StopWorker(worker_id)

    def _new_worker(self, now: float, replacing: str | None = None) -> StartWorker:
        """A new worker slot; ``replacing`` says why the worker it replaces went away."""
        if replacing is not None:
            self.counts.replacements[replacing] += 1
        worker_id = self._next_worker_id
        self._next_worker_id += 1
        # A replacement takes the place of the worker it replaces (a GPU, a port, a scratch
        # directory per place stay in use).
        taken = {slot.index for slot in self.workers.values()}
        index = next(i for i in range(len(taken) + 1) if i not in taken)
        slot = WorkerSlot(born=now, index=index)
        limit = self.worker_policy.initializer_timeout
        if limit is not None:
            slot.deadline = now + limit
        self.workers[worker_id] = slot
        self._idle.append(worker_id)
        return StartWorker(worker_id, index)

    def _idle_worker_for(self, chunk: Chunk, *, starting: bool) -> int | None:
        """The idle worker ``chunk`` may go to: a ready one, or (``starting``) one still
        starting. A worker still starting (its initializer running, and logging, say) reads
        nothing until it is ready: only a chunk that may wait in a pipe
        (``_may_wait_in_pipe``) goes to it before then."""
        for worker_id in self._idle:
            if self.workers[worker_id].ready:
                if not starting:
                    return worker_id
            elif starting and _may_wait_in_pipe(chunk):
                return worker_id
        return None

    def _dispatch(self, now: float) -> list[Action]:
        actions: list[Action] = []
        # Work waiting means a full complement of workers, even if they were all stopped
        # already (a submission racing with close() from another thread).
        while self.pending and self.broken is None and len(self.workers) < self.processes:
            actions.append(self._new_worker(now))
        # Idle ready workers first, then queues behind busy ones, and only then workers still
        # starting: a short chunk that can start within 20 ms on a ready worker must not wait
        # for a spawned worker's start (40-50 ms here), as no task in the stdlib's shared
        # queue does. Where no pace is known yet (a pool's first call), nothing is queued,
        # and the starting workers get the work as before.
        self._run_on_idle(actions, now, starting=False)
        if self.pending:
            self._queue_pending(actions, now)
        self._run_on_idle(actions, now, starting=True)
        if self.closing and not self.has_work():
            actions += [self._stop(worker_id, now) for worker_id in self.workers]
            self.workers.clear()
            self._idle.clear()
        return actions

    def _run_on_idle(self, actions: list[Action], now: float, *, starting: bool) -> None:
        """Start pending chunks on idle workers: ready ones, or (``starting``) ones still
        starting, in whose pipe the chunk waits until they are ready."""
        while self.pending and self._idle:
            worker_id = self._idle_worker_for(self.pending[0], starting=starting)
            if worker_id is None:
                return  # none of that kind is idle, or the chunk is too large to wait
            chunk = self.pending.popleft()
            if not chunk.sink.chunk_starting(chunk):
                actions.append(DropChunk(chunk))  # cancelled while it waited
                continue
            self._idle.remove(worker_id)
            self.workers[worker_id].run(chunk, now)
            actions.append(SendChunk(worker_id, chunk))

    def _queue_pending(self, actions: list[Action], now: float) -> None:
        """Queue pending chunks on busy workers, one per worker in turn, while they may wait
        there (may_queue, _queueable_seconds)."""
        added = True
        while added and self.pending:
            added = False
            for worker_id, slot in self.workers.items():
                if not self.pending:
                    return
                chunk = self.pending[0]
                if not slot.may_queue(self.worker_policy):
                    continue
                seconds = _queueable_seconds(slot, chunk, now)
                if seconds is None:
                    continue
                self.pending.popleft()
                added = True
                if chunk.sink.chunk_starting(chunk):
                    slot.queue(chunk, seconds)
                    actions.append(SendChunk(worker_id, chunk, queued=True))
                else:
                    actions.append(DropChunk(chunk))  # cancelled while it waited


def _may_wait_in_pipe(chunk: Chunk, already: int = 0) -> bool:
    """Whether ``chunk`` may be sent to a worker that will not start it at once (one still
    starting, or busy), behind ``already`` bytes waiting in its pipe. Sending it must not
    block the dispatcher: it fits in the pipe's buffer (see QUEUE_MAX_BYTES) even if the
    worker reads nothing for a while, when the worker may itself be blocked writing to the
    dispatcher (a large result, its initializer's log records). And its arguments must not
    be in shared memory: a chunk that waits may have to run elsewhere after all (its worker
    died starting, or was killed for the chunk before it), and the table removes the
    segments of what a lost worker held."""
    return chunk.segments is None and already + pipe_bytes(chunk) <= QUEUE_MAX_BYTES


def _queueable_seconds(slot: WorkerSlot, chunk: Chunk, now: float) -> float | None:
    """The seconds ``chunk`` is expected to take, if it may be queued behind what ``slot``'s
    worker has; None if it may not. It may if it may wait in a pipe, the paces of its
    function and of the running chunk's are known, the running chunk has not overrun its
    estimate by more than QUEUE_MAX_SECONDS (a call that hangs must not hold up more work),
    and what is left of it and of the queued ones (each at its own pace) ends within
    QUEUE_MAX_SECONDS."""
    running = slot.running
    assert running is not None  # may_queue
    estimate = running.function.pace.seconds_for(running.size)
    seconds = chunk.function.pace.seconds_for(chunk.size)
    if estimate is None or seconds is None:
        return None
    elapsed = 0.0 if slot.busy_since is None else now - slot.busy_since
    if elapsed > estimate + QUEUE_MAX_SECONDS:
        return None
    if max(0.0, estimate - elapsed) + slot.queued_work > QUEUE_MAX_SECONDS:
        return None
    return seconds if _may_wait_in_pipe(chunk, slot.queued_bytes) else None
