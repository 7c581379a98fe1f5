"""The records that cross boundaries: what a worker is asked to run and what it answers.

Owns the message types on a worker's pipe and the Chunk, the unit of work the scheduler places
on one worker. Plain data only: no threads, pipes or clocks. The worker imports this module, so
it stays small.

Parent -> worker:  RunChunk, Stop
Worker -> parent:  Ready (initializer done), InitFailed, ChunkDone
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


class CallMode(enum.IntEnum):
    """How a worker calls the function on each item of a chunk."""

    ONE_ARG = 0  # fn(item)                         map, imap, imap_unordered
    STAR_ARGS = 1  # fn(*item)                       starmap
    ARGS_KWARGS = 2  # fn(*item[0], **item[1])      apply, apply_async, submit


@dataclass(frozen=True, slots=True)
class TaskFunction:
    """A task's function, pickled once per call site.

    ``function_id`` names it in each worker's cache, so the payload travels to a worker once and
    later chunks only name it.
    """

    function_id: int
    payload: bytes


# ---- parent -> worker -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunChunk:
    chunk_id: int
    function_id: int
    function_payload: bytes | None  # None: the worker has it cached already
    items_payload: bytes
    mode: CallMode
    size: int  # number of items, so a reply can be complete even if they fail to unpickle


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
class ChunkDone:
    chunk_id: int
    # pickle of a list with one entry per item: the value, or an ItemFailure
    results_payload: bytes
    # the worker's peak resident set size so far, in bytes, to explain a later death
    peak_rss: int


# ---- the unit of scheduling -------------------------------------------------------------


class ChunkSink(Protocol):
    """Who receives a chunk's outcome: a result object of the Pool or executor face."""

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
    Identity (``eq=False``) is what the scheduler and dispatcher track.
    """

    chunk_id: int
    function: TaskFunction
    items_payload: bytes
    mode: CallMode
    first_index: int
    size: int
    sink: ChunkSink = field(repr=False)
    description: str = ""  # for error messages: "map(work) items 16-23"
