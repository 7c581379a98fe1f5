"""The records that cross boundaries: what a worker is asked to run and what it answers.

Owns the message types on a worker's pipe and the Chunk, the unit of work the scheduler places
on one worker. Plain data only: no threads, pipes or clocks. The worker imports this module, so
it stays small.

Parent -> worker:  RunChunk, Stop
Worker -> parent:  Ready (initializer done), InitFailed, ItemDone (only when the chunk asks for
                   each item to be reported), ChunkDone
"""

from __future__ import annotations

import enum
import itertools
import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from ._options import TaskPolicy
from ._pace import Pace

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ._shared_memory import SharedSegments


DEFAULT_POLICY = TaskPolicy()

_ids = itertools.count()


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask), at least 1."""
    if hasattr(os, "process_cpu_count"):  # 3.13+
        return os.process_cpu_count() or 1
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def next_id() -> int:
    """Process-wide unique ids for chunks and task functions (next() on count is atomic)."""
    return next(_ids)


class CallMode(enum.IntEnum):
    """How a worker calls the function on each item of a chunk."""

    ONE_ARG = 0  # fn(item)                         map, imap, imap_unordered
    STAR_ARGS = 1  # fn(*item)                       starmap
    ARGS_KWARGS = 2  # fn(*item[0], **item[1])      apply, apply_async, submit


@dataclass(frozen=True, slots=True)
class WorkerInit:
    """The initializer as it travels to a new worker, as an argument of the worker process.

    The function is pickled by procpool (so lambdas and closures work); the arguments are left
    to multiprocessing, which passes them when it starts the process, the only way it lets a
    Queue, Lock or shared Value travel (the stdlib pools pass ``initargs`` the same way).
    """

    function_payload: bytes
    initargs: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class TaskFunction:
    """A task's function, pickled once per call site.

    ``function_id`` names it in each worker's cache, so the payload travels to a worker once and
    later chunks only name it. ``pace`` is how long its items take, for chunk sizing.
    """

    function_id: int
    payload: bytes
    pace: Pace = field(default_factory=Pace, compare=False, repr=False)


# ---- parent -> worker -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunChunk:
    chunk_id: int
    function_id: int
    function_payload: bytes | None  # None: the worker has it cached already
    items_payload: bytes
    mode: CallMode
    size: int  # number of items, so a reply can be complete even if they fail to unpickle
    report_each_item: bool  # send ItemDone after every item (timeouts, retries)
    # Shared-memory segments holding the items' large buffers (_shared_memory); the worker
    # maps them, then removes their names.
    items_segments: tuple[str, ...] = ()
    # Where the worker may put its results' large buffers: segments named after the parent's
    # pid (this prefix) and the chunk. None: everything travels in the pickle.
    segment_prefix: str | None = None


@dataclass(frozen=True, slots=True)
class Stop:
    """Finish up and exit with code 0 (recycling, close, shutdown)."""


# ---- worker -> parent -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ready:
    pid: int


@dataclass(frozen=True, slots=True)
class InitFailed:
    error: BaseException  # already made portable in the worker
    traceback_text: str


@dataclass(frozen=True, slots=True)
class ItemFailure:
    """One item of a chunk raised; carried inside a ChunkDone payload."""

    error: BaseException
    traceback_text: str


@dataclass(frozen=True, slots=True)
class ItemDone:
    """One item finished (chunks that report each item); the next one starts now."""

    chunk_id: int
    position: int
    result_payload: bytes  # pickle of a one-element list, as in ChunkDone
    result_segments: tuple[str, ...] = ()  # its large buffers (_shared_memory)


@dataclass(frozen=True, slots=True)
class ChunkDone:
    chunk_id: int
    # pickle of a list with one entry per item: the value, or an ItemFailure; empty when
    # every item was reported by an ItemDone already
    results_payload: bytes
    # the positions in that list that hold an ItemFailure (so the parent never scans it)
    failed_positions: tuple[int, ...]
    # resident set size now and at its peak so far, in bytes: for recycling on memory, and to
    # explain a later death
    rss: int
    peak_rss: int
    # how long the chunk took in the worker (unpickling, running, pickling), for Pace
    seconds: float = 0.0
    result_segments: tuple[str, ...] = ()  # the results' large buffers (_shared_memory)


# ---- the unit of scheduling -------------------------------------------------------------


class ChunkSink(Protocol):
    """Who receives a chunk's outcome: a result object of the Pool or executor face."""

    def chunk_starting(self, chunk: Chunk) -> bool:
        """The chunk is about to be sent to a worker; False if nobody wants it any more
        (its futures were cancelled, its stream abandoned), and then it is skipped."""

    def chunk_done(
        self, chunk: Chunk, values: Sequence[Any], failures: Mapping[int, BaseException]
    ) -> None:
        """``values[i]`` is item i's result unless ``failures`` has i (position in the chunk)."""

    def chunk_failed(self, chunk: Chunk, error: BaseException) -> None:
        """The whole chunk failed (worker death, pickling, broken pool, terminate)."""


@dataclass(frozen=True, slots=True, eq=False)
class Chunk:
    """Consecutive items of one job, placed on one worker as a whole.

    ``first_index`` is the job-wide index of the first item; ``size`` items follow it.
    Identity (``eq=False``) is what the scheduler and dispatcher track. ``attempt`` counts
    runs: a retried item comes back as a new chunk with ``attempt + 1``.
    """

    chunk_id: int
    function: TaskFunction
    items_payload: bytes
    mode: CallMode
    first_index: int
    size: int
    sink: ChunkSink = field(repr=False)
    name: str = "task"  # the function's name, for error messages
    policy: TaskPolicy = DEFAULT_POLICY
    attempt: int = 1
    # The shared-memory segments of the items' large buffers, held until a worker takes them.
    segments: SharedSegments | None = field(default=None, repr=False)

    @property
    def description(self) -> str:
        """What error messages call it: "work() item 7" or "work() items 16-23"."""
        if self.size == 1:
            return f"{self.name}() item {self.first_index}"
        return f"{self.name}() items {self.first_index}-{self.first_index + self.size - 1}"

    def part(self, position: int, size: int, items_payload: bytes = b"",
             attempt: int | None = None) -> Chunk:
        """``size`` items starting at ``position`` of this chunk, as a chunk of their own.

        Without a payload it can only be delivered to the sink (results, failures); with one
        it can run again.
        """
        return replace(self, chunk_id=next_id(), items_payload=items_payload,
                       first_index=self.first_index + position, size=size,
                       attempt=self.attempt if attempt is None else attempt, segments=None)
