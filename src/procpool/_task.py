"""The parent's records of work: the Chunk, the unit the scheduler places on one worker, and
the TaskFunction it runs.

Plain data only: no threads, pipes or clocks. The messages on a worker's pipe are in
_messages.py, which the worker imports instead of this module.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from ._messages import CallMode
from ._options import TaskPolicy
from ._pace import Pace

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ._queue_bound import QueueTicket
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


@dataclass(frozen=True, slots=True)
class TaskFunction:
    """A task's function, pickled once per call site.

    ``function_id`` names it in each worker's cache, so the payload travels to a worker once and
    later chunks only name it. ``pace`` is how long its items take, for chunk sizing.
    """

    function_id: int
    payload: bytes
    pace: Pace = field(default_factory=Pace, compare=False, repr=False)


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


class OneCallSink:
    """The sink of a single call (``apply_async``, ``submit``): its chunk holds one item,
    which answers the call with its value or its error. Subclasses say how to ``_settle``
    (a result class that has one already lists it before this one)."""

    def chunk_done(
        self, chunk: Chunk, values: Sequence[Any], failures: Mapping[int, BaseException]
    ) -> None:
        if failures:
            self._settle(False, failures[0])
        else:
            self._settle(True, values[0])

    def chunk_failed(self, chunk: Chunk, error: BaseException) -> None:
        self._settle(False, error)

    def _settle(self, success: bool, value: Any) -> None:
        raise NotImplementedError


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
    # A single call's place among the queued calls of a pool with max_queued (_queue_bound.py)
    ticket: QueueTicket | None = field(default=None, repr=False)

    def left_queue(self) -> None:
        """It was sent to a worker, dropped, or failed without running: its place in the
        count of queued calls (max_queued) is free."""
        if self.ticket is not None:
            self.ticket.give_back()

    @property
    def payload_bytes(self) -> int:
        """The items' size as sent: the pickle, and their buffers in shared memory."""
        return len(self.items_payload) + (0 if self.segments is None else self.segments.nbytes)

    @property
    def description(self) -> str:
        """What error messages call it: "work() item 7" or "work() items 16-23"."""
        if self.size == 1:
            return self.describe_item(0)
        return f"{self.name}() items {self.first_index}-{self.first_index + self.size - 1}"

    def describe_item(self, position: int) -> str:
        """What error messages call the item at ``position``: "work() item 7" of a map, or
        "work()" for a single call (``apply_async``, ``submit``), which is no map's item."""
        if self.mode is CallMode.ARGS_KWARGS:
            return f"{self.name}()"
        return f"{self.name}() item {self.first_index + position}"

    def part(self, position: int, size: int, items_payload: bytes = b"",
             attempt: int | None = None) -> Chunk:
        """``size`` items starting at ``position`` of this chunk, as a chunk of their own.

        Without a payload it can only be delivered to the sink (results, failures); with one
        it can run again.
        """
        return replace(self, chunk_id=next_id(), items_payload=items_payload,
                       first_index=self.first_index + position, size=size,
                       attempt=self.attempt if attempt is None else attempt, segments=None)
