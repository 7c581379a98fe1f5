"""The parent's records of work: the Chunk, the unit the scheduler places on one worker, and
the TaskFunction it runs (``name_of`` names its function in messages and progress bars).

Plain data only: no threads, pipes or clocks. The messages on a worker's pipe are in
_messages.py, which the worker imports instead of this module. Classes with slots, not
dataclasses: the first import of a program's first pool would pay for dataclasses.
"""

from __future__ import annotations

import functools
import itertools
import os

from ._messages import CallMode
from ._options import TaskPolicy
from ._pace import Pace
from ._runtime_typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

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


class TaskFunction:
    """A task's function, pickled once per call site.

    ``function_id`` names it in each worker's cache, so the payload travels to a worker once and
    later chunks only name it. ``pace`` is how long its items take, for chunk sizing.
    """

    __slots__ = ("function_id", "pace", "payload")

    def __init__(self, function_id: int, payload: bytes, pace: Pace | None = None) -> None:
        self.function_id = function_id
        self.payload = payload
        self.pace = Pace() if pace is None else pace

    def __repr__(self) -> str:
        return f"TaskFunction(function_id={self.function_id}, payload={self.payload!r:.40})"


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


class Chunk:
    """Consecutive items of one job, placed on one worker as a whole.

    ``first_index`` is the job-wide index of the first item; ``size`` items follow it.
    Identity (equality is the object's) is what the scheduler and dispatcher track. ``attempt``
    counts runs: a retried item comes back as a new chunk with ``attempt + 1``. Never changed
    once made: a part or a retry is a new chunk (``part``).
    """

    __slots__ = (
        "attempt",
        "chunk_id",
        "first_index",
        "function",
        "items_payload",
        "mode",
        "name",
        "policy",
        "segments",
        "sink",
        "size",
        "ticket",
    )

    def __init__(self, chunk_id: int, function: TaskFunction, items_payload: bytes,
                 mode: CallMode, first_index: int, size: int, sink: ChunkSink,
                 name: str = "task", policy: TaskPolicy = DEFAULT_POLICY, attempt: int = 1,
                 segments: SharedSegments | None = None, ticket: QueueTicket | None = None,
                 ) -> None:
        self.chunk_id = chunk_id
        self.function = function
        self.items_payload = items_payload
        self.mode = mode
        self.first_index = first_index
        self.size = size
        self.sink = sink
        self.name = name  # the function's name, for error messages
        self.policy = policy
        self.attempt = attempt
        # The shared-memory segments of the items' large buffers, held until a worker takes
        # them.
        self.segments = segments
        # A single call's place among the queued calls of a pool with max_queued
        # (_queue_bound.py)
        self.ticket = ticket

    def __repr__(self) -> str:
        return (f"Chunk(chunk_id={self.chunk_id}, name={self.name!r}, "
                f"first_index={self.first_index}, size={self.size}, attempt={self.attempt})")

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
        return Chunk(next_id(), self.function, items_payload, self.mode,
                     self.first_index + position, size, self.sink, self.name, self.policy,
                     self.attempt if attempt is None else attempt, None, self.ticket)


def name_of(func: Callable[..., Any]) -> str:
    """The name error messages and progress bars give a task's function."""
    while isinstance(func, functools.partial):
        func = func.func
    return getattr(func, "__qualname__", None) or type(func).__qualname__
