"""The scheduler's vocabulary: what it is told, what it answers, what it reports.

Owns the records that cross ``Scheduler.handle``: the events (``Started``, ``Submitted``,
``StreamOpened``, ``StreamClosed``, ``WorkerReady``, ``ItemFinished``, ``ItemFailed``,
``ChunkFinished``, ``WorkerLost`` with its ``Death``, ``Cancel``, ``QueuedWithdrawn``,
``KillSpared``, ``FirstCallBegan``, ``Close``, ``Break``, ``Tick``: the ``Event`` union), the
actions it answers with (``StartWorker``, ``SendChunk``, ``StopWorker``, ``KillWorker``,
``WithdrawQueued``, ``FailChunk``, ``DropChunk``, ``BreakPool``: the ``Action`` union), what
it reports for ``stats()`` (``SchedulerCounts``, ``SlotStats``, ``SchedulerStats``), and the
shape of the ``Splitter`` it is given.

Records only: nothing here decides or remembers anything (``SchedulerCounts`` is mutable, but
the scheduler owns the one instance and its recovery adds to it). The decisions are made in
procpool._scheduler and procpool._recovery.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from ._runtime_typing import TYPE_CHECKING, NamedTuple, TypeVar
from ._task import Chunk

if TYPE_CHECKING:
    from typing import Any

# The records are named tuples (SchedulerCounts, which changes, a class with slots), made by
# procpool._runtime_typing: about 15 us each to define, where a frozen dataclass took about
# 700 and typing's NamedTuple 170, and no import of dataclasses (with inspect, ast and dis) or
# typing. Those cost the first pool of a process about 60 ms in all.

# ---- actions --------------------------------------------------------------------------------

_A = TypeVar("_A")


def _action(cls: type[_A]) -> type[_A]:
    """An action equals only an action of its own kind with the same fields. (Plain tuples
    would not tell ``StartWorker(0, 2)`` from ``KillWorker(0, 2)``: the scheduler's tests
    compare actions, where the scheduler itself matches them by class.)"""
    cls.__eq__ = _same_action  # type: ignore[method-assign,assignment]
    cls.__ne__ = _other_action  # type: ignore[method-assign,assignment]
    cls.__hash__ = tuple.__hash__  # type: ignore[method-assign,assignment]
    return cls


def _same_action(self: tuple[Any, ...], other: object) -> bool:
    return type(self) is type(other) and tuple.__eq__(self, other)


def _other_action(self: tuple[Any, ...], other: object) -> bool:
    return not _same_action(self, other)


@_action
class StartWorker(NamedTuple):
    worker_id: int
    place: int = 0  # the lowest no other worker of the pool holds (WorkerSlot.index)


@_action
class SendChunk(NamedTuple):
    worker_id: int
    chunk: Chunk
    # To wait behind what the worker has (it is busy): the dispatcher may write several of
    # these in one go, at the end of its round, as long as nothing overtakes them.
    queued: bool = False


@_action
class StopWorker(NamedTuple):
    """Ask a worker to exit once idle (recycling or shutdown); its exit is not a death."""

    worker_id: int


@_action
class KillWorker(NamedTuple):
    """Kill a worker (and its process group) now: its task ran past its timeout or was
    cancelled, or it did not exit when asked to.

    ``queued``: how many chunks wait in its pipe behind the one the kill is for. They are
    taken back first, so that none runs twice: answered with ``QueuedWithdrawn``, then the
    kill. If the worker has started one of them, the chunk the kill was for is done, and the
    kill is not carried out: answered with ``QueuedWithdrawn`` for those after it, if any,
    then ``KillSpared``.

    ``first_call_of``: the kill is for the timeout of the first item of the chunk with this id,
    which counts from when the worker began to call it, after loading the function and the
    items. Nothing is done but to ask since when (answered with ``FirstCallBegan``): the
    scheduler orders the kill again if it stands."""

    worker_id: int
    queued: int = 0
    first_call_of: int | None = None


@_action
class WithdrawQueued(NamedTuple):
    """Take back the ``queued`` chunks queued on a worker, those it has not started: the one
    it runs has overrun its estimate (it may hang), and they would wait behind it; or one of
    them was cancelled. Answered with ``QueuedWithdrawn`` if any was taken back."""

    worker_id: int
    queued: int  # how many (tuple's own ``count`` is taken)


@_action
class FailChunk(NamedTuple):
    chunk: Chunk
    error: BaseException


@_action
class DropChunk(NamedTuple):
    """Nobody wants ``chunk`` any more (its future was cancelled, its stream abandoned): it
    will not run, or not to its end, and no outcome of it is delivered. The cancellation was
    its answer."""

    chunk: Chunk


@_action
class BreakPool(NamedTuple):
    """Nothing can run any more (the initializer failed): fail everything, end every worker."""

    error: BaseException


# ---- events ---------------------------------------------------------------------------------
# What happened, told to Scheduler.handle. Not the worker's replies (procpool._messages: Ready,
# ItemDone, ChunkDone): the dispatcher reads those and tells the scheduler in these terms.
# Being tuples, two events of different kinds can compare equal: the scheduler matches them
# by class, never compares them.


class Started(NamedTuple):
    """The pool starts: its first workers are wanted."""


class Submitted(NamedTuple):
    """New chunks to run, in order (once the pool is broken, they fail at once)."""

    chunks: tuple[Chunk, ...]


class StreamOpened(NamedTuple):
    """A job will keep submitting (imap's input is being read): closing must wait for it."""


class StreamClosed(NamedTuple):
    """A stream has submitted its last chunk."""


class WorkerReady(NamedTuple):
    """A worker finished starting (its initializer ran)."""

    worker_id: int


class StreamLost(NamedTuple):
    """A worker's reply stream holds bytes that are not procpool's: the worker is being
    killed, and gets no more work even from the replies that came before them."""

    worker_id: int


class ItemFinished(NamedTuple):
    """A worker reported one more item of its running chunk (one that reports each item);
    ``running_on`` says which, asked before this is handled."""

    worker_id: int


class ItemFailed(NamedTuple):
    """Item ``position`` of ``chunk`` (one that reports each item) raised ``error``."""

    chunk: Chunk
    position: int
    error: BaseException


class ChunkFinished(NamedTuple):
    """A worker reported its running chunk done; ``running_on`` says which, asked before this
    is handled. ``rss``: its memory now; ``seconds``: how long it took over the chunk (for
    its function's Pace)."""

    worker_id: int
    rss: int
    seconds: float | None = None


class Death(NamedTuple):
    """What the dispatcher learned about a worker that ended without being asked to."""

    pid: int | None
    exitcode: int | None
    peak_rss: int | None = None
    oom_killed: bool = False
    cause: str | None = None  # the backend's account of a loss (Dask: the worker was lost)


class WorkerLost(NamedTuple):
    """A worker ended without being asked to."""

    worker_id: int
    death: Death


class Cancel(NamedTuple):
    """Nobody wants ``chunk`` (or the parts split off it) any more."""

    chunk: Chunk


class Close(NamedTuple):
    """Stop once the work is done; with ``abandon_streams``, open streams no longer count
    (terminate: whatever they still submit fails at once)."""

    abandon_streams: bool = False


class Break(NamedTuple):
    """Nothing can run any more (or the pool was terminated): fail everything, now and
    later."""

    error: BaseException


class WorkerExited(NamedTuple):
    """A worker asked to stop (``StopWorker``) has exited: its deadline to do so is void."""

    worker_id: int


class QueuedWithdrawn(NamedTuple):
    """The last ``taken`` chunks queued on a worker were taken back before it started them
    (``WithdrawQueued``, ``KillWorker``): they are to run elsewhere. Those before them, if
    any, the worker has started or will."""

    worker_id: int
    taken: int


class KillSpared(NamedTuple):
    """A kill ordered for a worker's running chunk (``KillWorker`` with ``queued``) was not
    carried out: the worker had gone on to a chunk queued behind it, so the one the kill was
    for is done (its answer is in the pipe, to be read next)."""

    worker_id: int


class FirstCallBegan(NamedTuple):
    """Since when (``time.monotonic``) a worker has been calling its running chunk's first
    item (``KillWorker.first_call_of``): None while it is still loading the function or the
    items; ``-inf`` where that cannot be told (the backend's workers keep no claims file)."""

    worker_id: int
    since: float | None


class Tick(NamedTuple):
    """Time has passed: act on every deadline due by ``now``."""


Action = (StartWorker | SendChunk | StopWorker | KillWorker | WithdrawQueued | FailChunk
          | DropChunk | BreakPool)
Event = (Started | Submitted | StreamOpened | StreamClosed | WorkerReady | StreamLost
         | ItemFinished | ItemFailed | ChunkFinished | WorkerLost | WorkerExited | Cancel
         | QueuedWithdrawn | KillSpared | FirstCallBegan | Close | Break | Tick)


# ---- statistics -------------------------------------------------------------------------------


class SchedulerCounts:
    """What the scheduler has seen happen, for ``stats()``: retries, timeouts and why workers
    were replaced."""

    __slots__ = ("replacements", "retried", "timed_out")

    def __init__(self) -> None:
        self.retried = 0
        self.timed_out = 0
        self.replacements: Counter[str] = Counter()


class SlotStats(NamedTuple):
    """One worker's work as the scheduler sees it (the dispatcher adds its pid and memory)."""

    worker_id: int
    unanswered: int  # items of its running chunk without an answer: busy while above 0
    tasks_done: int
    busy_seconds: float
    idle_seconds: float


class SchedulerStats(NamedTuple):
    """The scheduler's share of a ``PoolStats`` snapshot, taken at one instant."""

    tasks_queued: int
    tasks_retried: int
    tasks_timed_out: int
    respawn_causes: dict[str, int]
    workers: tuple[SlotStats, ...]


# Makes a runnable chunk of ``size`` items of ``chunk`` from ``position`` on, for ``attempt``.
Splitter = Callable[[Chunk, int, int, int], Chunk]
