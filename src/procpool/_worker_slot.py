"""One worker as the scheduler sees it: ``WorkerSlot``, and ``KillReason`` (why it was killed).

Owns a slot's own bookkeeping (the chunk it runs, the few queued behind it, how far it got,
its deadline, when what is queued is to be taken back, whether its kill was ordered and why,
its statistics) and the rules that need nothing but the slot and the worker policy (may a
chunk be queued on it, is it due for recycling). Must not know about the pending queue, the
other workers or the pool, nor answer with actions: the scheduler (procpool._scheduler) acts
on what a slot records and says.
"""

from __future__ import annotations

import enum
from collections import deque

from ._options import WorkerPolicy
from ._scheduler_events import SlotStats
from ._task import Chunk


class KillReason(enum.Enum):
    """Why the scheduler ordered a worker killed (the values name the replacement's cause)."""

    TIMEOUT = "task timeout"
    CANCEL = "task cancelled"
    LOST = "lost"  # its reply stream was corrupted (as a death whose cause the table knows)


# At most this many chunks wait in a worker's pipe behind the one it runs. The scheduler's
# bounds (20 ms of work, 32 KiB) are what keep a queue short; this one binds only on chunks
# under 0.6 ms, of which 8 (tens of microseconds of work) left a worker running dry whenever
# the dispatcher was busy for a moment with other workers' replies or a burst of
# submissions. From 8 to 32, a loop of apply_async of x*x took 0.81-0.92x the time, of
# submit 0.78-0.89x (docs/performance.md, 2026-12-08).
QUEUE_MAX_CHUNKS = 32
# Chunks queued behind a running one that has overrun its estimate by this much (it may hang:
# nothing says when it ends) are taken back, to run elsewhere. A chunk is queued only where
# it would start within 20 ms (the scheduler's QUEUE_MAX_SECONDS): an overrun of five times
# that is no measuring error, and costs the queued chunks little against waiting for ever.
WITHDRAW_AFTER = 0.1
# A chunk's first item may take this long to load (its function's module imported by a fresh
# worker, its arguments unpickled) before its timeout counts the loading too (or as long as
# the timeout, if longer): an import that hangs must not hang the call. While it loads, the
# worker is asked again this often (or at its timeout, if sooner).
LOADING_ALLOWANCE = 60.0
LOADING_POLL = 0.1


class WorkerSlot:
    """One worker as the scheduler sees it (the module docstring says what it owns)."""

    __slots__ = (
        "born",
        "busy_seconds",
        "busy_since",
        "cancelled_queued",
        "chunks_done",
        "collateral",
        "deadline",
        "first_call_seen",
        "index",
        "items_done",
        "kill_reason",
        "killed_loading",
        "overrun_at",
        "position",
        "queue_closed",
        "queued",
        "queued_bytes",
        "queued_seconds",
        "queued_work",
        "ready",
        "running",
        "running_cancelled",
    )

    def __init__(self, *, born: float = 0.0, index: int = 0) -> None:
        self.running: Chunk | None = None
        # Sent to the worker, waiting in its pipe behind ``running``, in order: none can have
        # started before the worker reports the one before it done, so a death leaves them
        # safe to rerun.
        self.queued: deque[Chunk] = deque()
        self.queued_bytes = 0  # what they take in the pipe, at most (their pipe_bytes)
        # The seconds each is expected to take, by its function's pace when it was queued,
        # in the same order, and their sum: how long the last one waits behind the running
        # one.
        self.queued_seconds: deque[float] = deque()
        self.queued_work = 0.0
        # Queued chunks cancelled while they waited: the queue is taken back, and the worker
        # is killed if one starts all the same.
        self.cancelled_queued: set[Chunk] = set()
        # While chunks are queued: when the running chunk will have overrun its estimate by
        # WITHDRAW_AFTER, and the queued ones are to be taken back (the scheduler's Tick).
        self.overrun_at: float | None = None
        # Whether the queue is being taken back, or was (the running chunk overran, or a
        # queued one was cancelled: close_queue): nothing more is queued behind the running
        # chunk, and the taking back finds the queue it was told of.
        self.queue_closed = False
        # Items of the running chunk already reported (chunks that report each).
        self.position = 0
        # Whether the worker was seen calling the running chunk's first item (its timeout
        # then counts from that call, not from the chunk's start: FirstCallBegan), and
        # whether its kill stood because it was still loading after its allowance.
        self.first_call_seen = False
        self.killed_loading = False
        self.deadline: float | None = None  # the running item's timeout, or the initializer's
        self.ready = False
        # Why a kill was ordered: its running chunk timed out, or was cancelled. The worker
        # may still report the chunk it was finishing as the signal lands, but it must never
        # be given another one; its death is expected.
        self.kill_reason: KillReason | None = None
        # The running chunk was queued behind the one the kill was ordered for, could not be
        # taken back first (KillWorker.queued: the backend's workers cannot give chunks
        # back, or the kill is for a corrupt stream), and the worker went on to it before
        # the signal landed: what it leaves unanswered is no fault of its own, and runs again
        # elsewhere.
        self.collateral = False
        # The running chunk's own caller cancelled it: what it leaves unanswered is dropped,
        # never answered (its worker is killed, or was doomed already).
        self.running_cancelled = False
        self.chunks_done = 0
        self.index = index  # the worker's place, 0 .. processes-1 (procpool.current_worker())
        # For statistics: when the slot was created, when its current chunk started, how long
        # it has spent running chunks, and how many items it finished.
        self.born = born
        self.busy_since: float | None = None
        self.busy_seconds = 0.0
        self.items_done = 0

    @property
    def doomed(self) -> bool:
        return self.kill_reason is not None

    def doom(self, reason: KillReason) -> None:
        """Its kill is ordered: no deadline of its own can matter any more."""
        self.kill_reason = reason
        self.deadline = None
        self.overrun_at = None  # what is queued runs elsewhere after the death

    def spare(self) -> None:
        """Its kill was not carried out: its running chunk turned out to be done."""
        self.kill_reason = None

    def postpone_timeout(self, deadline: float) -> None:
        """The kill for the running chunk's timeout is not carried out: its first item was
        called later than the chunk started (the worker loaded the function or the items
        first), or is not called yet. Its timeout is at ``deadline`` now, and the chunks
        queued behind it are watched again, as before the kill was ordered (unless that
        watch has had its one try)."""
        assert self.running is not None
        self.spare()
        self.deadline = deadline
        if self.queued and not self.queue_closed:
            self._watch_overrun(self.running.function.pace.seconds_for(self.running.size))

    def run(self, chunk: Chunk, now: float) -> None:
        """``chunk`` is sent to the worker: it starts now if the worker is ready, else once
        it is (``become_ready``)."""
        self.running = chunk
        self.position = 0
        if self.ready:
            self.start_chunk(now)

    def become_ready(self, now: float) -> None:
        """The worker finished starting: the initializer's deadline is over."""
        self.ready = True
        self.deadline = None
        if self.running is not None:
            self.start_chunk(now)  # its chunk was waiting in the pipe until now

    def queue(self, chunk: Chunk, seconds: float) -> None:
        """``chunk``, expected to take ``seconds``, is sent to wait in the worker's pipe
        behind what it has."""
        if not self.queued:
            assert self.running is not None
            self._watch_overrun(self.running.function.pace.seconds_for(self.running.size))
        self.queued.append(chunk)
        self.queued_bytes += pipe_bytes(chunk)
        self.queued_seconds.append(seconds)
        self.queued_work += seconds

    def start_queued(self, now: float) -> Chunk:
        """The worker has gone on to its first queued chunk: it is running from ``now`` (on
        a doomed worker without a deadline: its kill is coming), and ``running_cancelled``
        if it was cancelled while it waited."""
        chunk = self.queued.popleft()
        self.queued_bytes -= pipe_bytes(chunk)
        seconds = self.queued_seconds.popleft()
        # (Back to exactly nothing once nothing waits: no rounding error piles up.)
        self.queued_work = self.queued_work - seconds if self.queued else 0.0
        self.running, self.position = chunk, 0
        if chunk in self.cancelled_queued:
            self.cancelled_queued.discard(chunk)
            self.running_cancelled = True
        self.start_chunk(now)
        self._watch_overrun(seconds if self.queued and not self.doomed else None)
        return chunk

    def _watch_overrun(self, estimate: float | None) -> None:
        """Chunks wait behind the running one, expected to take ``estimate`` seconds (None:
        no telling, or nothing to watch): set when they are to be taken back."""
        if estimate is None or self.busy_since is None:
            self.overrun_at = None
        else:
            self.overrun_at = self.busy_since + estimate + WITHDRAW_AFTER

    def close_queue(self) -> int:
        """The chunks queued here are to be taken back (WithdrawQueued): nothing more is
        queued until the running chunk is done. Returns how many there are."""
        self.queue_closed = True
        return len(self.queued)

    def withdraw_queued(self, taken: int) -> tuple[list[Chunk], list[Chunk]]:
        """The last ``taken`` queued chunks were taken back before the worker started them;
        those before them, it has started or will. Returns the ones taken back as
        ``queued_by_fate`` does."""
        kept = len(self.queued) - taken
        assert kept >= 0, "more chunks taken back than were queued"
        fates = self.queued_by_fate(first=kept)
        for _ in range(taken):
            chunk = self.queued.pop()
            self.queued_bytes -= pipe_bytes(chunk)
            self.queued_seconds.pop()
            self.cancelled_queued.discard(chunk)
        # (Back to exactly nothing once nothing waits: no rounding error piles up.)
        self.queued_work = sum(self.queued_seconds) if self.queued else 0.0
        if not self.queued:
            self.overrun_at = None
        return fates

    def start_chunk(self, now: float) -> None:
        """The running chunk starts at ``now``: the worker is busy from here."""
        self.busy_since = now
        self.first_call_seen = self.killed_loading = False
        self.start_item(now)

    def start_item(self, now: float) -> None:
        """The next item of the running chunk starts at ``now``: its timeout runs from here."""
        assert self.running is not None
        timeout = self.running.policy.timeout
        # A doomed worker's kill is on its way: no deadline of its own can matter.
        self.deadline = None if timeout is None or self.doomed else now + timeout

    def loading_allowance(self) -> float:
        """How long the running chunk (one with a timeout) may load before its first item is
        called, and before its timeout counts the loading too."""
        assert self.running is not None and self.running.policy.timeout is not None
        return max(self.running.policy.timeout, LOADING_ALLOWANCE)

    def may_queue(self, policy: WorkerPolicy) -> bool:
        """Whether one more chunk may wait on this worker behind what it has: not on a worker
        that is starting, doomed, or to be recycled once its running chunk is done, nor on
        one that holds QUEUE_MAX_CHUNKS already, nor while its queue is closed."""
        queued = len(self.queued)
        return (self.running is not None and queued < QUEUE_MAX_CHUNKS and self.ready
                and not self.doomed and not self.queue_closed and policy.max_memory is None
                and (policy.max_tasks is None
                     or self.chunks_done + queued + 2 <= policy.max_tasks))

    def finish_item(self, now: float) -> None:
        """One more item of the running chunk (one that reports each) was answered; the next
        one starts now."""
        assert self.running is not None
        self.position += 1
        self.items_done += 1
        self.deadline = None
        if self.position < self.running.size:
            self.start_item(now)

    def finish_chunk(self, now: float) -> None:
        """The worker reported its running chunk done: it runs nothing now."""
        assert self.running is not None
        if self.busy_since is not None:
            self.busy_seconds += now - self.busy_since
        self.busy_since = None
        self.items_done += self.running.size - self.position
        self.running, self.position, self.deadline = None, 0, None
        self.overrun_at = None  # what is queued starts next (start_queued)
        self.collateral = self.running_cancelled = self.queue_closed = False
        self.chunks_done += 1

    def recycle_cause(self, policy: WorkerPolicy, rss: int) -> str | None:
        """Why the worker is to be replaced now that its chunk is done (``rss``: its memory
        now), or None if it is not. ``may_queue`` looks ahead to the same limits."""
        if policy.max_tasks is not None and self.chunks_done >= policy.max_tasks:
            return "maxtasksperchild reached"
        if policy.max_memory is not None and rss > policy.max_memory:
            return "max_memory_per_child exceeded"
        return None

    def queued_by_fate(self, first: int = 0) -> tuple[list[Chunk], list[Chunk]]:
        """The queued chunks (from the ``first``-th) still wanted, in order, and those
        cancelled while they waited (to be dropped)."""
        chunks = list(self.queued)[first:]
        wanted = [c for c in chunks if c not in self.cancelled_queued]
        return wanted, [c for c in chunks if c in self.cancelled_queued]

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


def pipe_bytes(chunk: Chunk) -> int:
    """What sending ``chunk`` puts in its worker's pipe, at most: its items, and its function
    in case the worker does not hold it yet. Buffers in shared memory do not count."""
    return len(chunk.items_payload) + len(chunk.function.payload)
