"""The messages on a worker's pipe: what a worker is asked to run and what it answers.

Plain data only, as named tuples: quick to define and compact to pickle. A spawned worker
imports this module first thing, so it imports neither dataclasses nor typing (together about
25 ms of a worker's start here; the stdlib's worker imports neither): ``_Message`` is
``NamedTuple`` from procpool._runtime_typing.

At start:         WorkerSetup (an argument of the worker process, not a message on the pipe)
Parent -> worker:  RunChunk, Stop
Worker -> parent:  Ready (initializer done), InitFailed, ItemDone (only when the chunk asks for
                   each item to be reported), ChunkDone, Skipped (a chunk the parent took
                   back); and at any time, from any thread of a worker that forwards
                   them, Logged and Printed

On the pipe a message is ``encode``d as a plain tuple, its kind's number first, and
``decode``d back: a named tuple pickles by its class's name, which the reader looks up again
for every message, at about five times the cost of the tuple (two messages per chunk each way).
"""

from __future__ import annotations

import enum

from ._codec import dumps, loads
from ._runtime_typing import TYPE_CHECKING
from ._runtime_typing import NamedTuple as _Message

if TYPE_CHECKING:
    from typing import Any

    from ._claims import WorkerClaims


class CallMode(enum.IntEnum):
    """How a worker calls the function on each item of a chunk."""

    ONE_ARG = 0  # fn(item)                         map, imap, imap_unordered
    STAR_ARGS = 1  # fn(*item)                       starmap
    ARGS_KWARGS = 2  # fn(*item[0], **item[1])      apply, apply_async, submit


class WorkerInit(_Message):
    """The initializer as it travels to a new worker, as an argument of the worker process.

    The function is pickled by procpool (so lambdas and closures work); the arguments are left
    to multiprocessing, which passes them when it starts the process, the only way it lets a
    Queue, Lock or shared Value travel (the stdlib pools pass ``initargs`` the same way).
    """

    function_payload: bytes
    initargs: tuple[Any, ...]


class LogLevels(_Message):
    """The parent's logging levels, for a worker that forwards its log records: it ships only
    what the parent's loggers would handle."""

    root: int
    # (logger name, level) of every logger the parent set a level on
    named: tuple[tuple[str, int], ...]
    disabled_up_to: int  # logging.disable()'s level in the parent


class WorkerSetup(_Message):
    """What a new worker is told about itself before it runs anything of the user's."""

    # 0 .. processes-1; a replacement takes the index of the worker it replaces
    worker_index: int
    # Environment variables set (a None value: removed) before the initializer runs
    env: tuple[tuple[str, str | None], ...] = ()
    # Forward log records to the parent at these levels; None: leave logging alone
    log_levels: LogLevels | None = None
    # Take the initializer's own logging set-up, if it makes one, over forwarding (the default
    # forwarding steps aside for a program that configures its workers' logging itself)
    logs_yield_to_initializer: bool = False
    forward_output: bool = False  # send sys.stdout / sys.stderr to the parent, line by line
    init: WorkerInit | None = None
    # Measure the resident memory after each chunk (max_memory_per_child replaces a worker on
    # it). Reading it costs more than a tiny task, so it is done only when asked.
    reports_rss: bool = False
    # Its region of the pool's claims file (procpool._claims); None where chunks queued on it
    # are never taken back (workers that are threads, or Dask relays)
    claims: WorkerClaims | None = None


# ---- parent -> worker -------------------------------------------------------------------


class RunChunk(_Message):
    chunk_id: int
    function_id: int
    function_payload: bytes | None  # None: the worker has it cached already
    items_payload: bytes
    mode: int  # a CallMode's value (an enum member costs a lookup by name to unpickle)
    size: int  # number of items, so a reply can be complete even if they fail to unpickle
    report_each_item: bool  # send ItemDone after every item (timeouts, retries)
    # Shared-memory segments holding the items' large buffers (_shared_memory); the worker
    # maps them, then removes their names.
    items_segments: tuple[str, ...] = ()
    # Where the worker may put its results' large buffers: segments named after the parent's
    # pid (this prefix) and the chunk. None: everything travels in the pickle.
    segment_prefix: str | None = None
    # A SystemExit in the task, or while its result is pickled, is the item's failure (the
    # executor's rule) instead of the end of the worker (TaskPolicy.exit_fails_task).
    exit_fails_task: bool = False
    # Queued behind the worker's running chunk: the parent may take it back before it starts
    # (the worker claims it first, procpool._claims)
    withdrawable: bool = False


class Stop(_Message):
    """Finish up and exit with code 0 (recycling, close, shutdown)."""


# ---- worker -> parent -------------------------------------------------------------------


class Ready(_Message):
    pid: int


class InitFailed(_Message):
    error: BaseException  # already made portable in the worker
    traceback_text: str


class ItemFailure(_Message):
    """One item of a chunk raised; carried inside a ChunkDone payload."""

    error: BaseException
    traceback_text: str


class ItemDone(_Message):
    """One item finished (chunks that report each item); the next one starts now."""

    chunk_id: int
    position: int
    result_payload: bytes  # pickle of a one-element list, as in ChunkDone
    result_segments: tuple[str, ...] = ()  # its large buffers (_shared_memory)


class Logged(_Message):
    """A log record a worker's code emitted, as ``logging.makeLogRecord`` takes it: message
    merged with its arguments, exception as text, worker index added."""

    record: dict[str, Any]


class Printed(_Message):
    """Whole lines (or a task's last, unfinished one) written to a worker's sys.stdout (1) or
    sys.stderr (2)."""

    stream: int
    text: str


class ChunkDone(_Message):
    chunk_id: int
    # pickle of a list with one entry per item: the value, or an ItemFailure; empty when
    # every item was reported by an ItemDone already
    results_payload: bytes
    # the positions in that list that hold an ItemFailure (so the parent never scans it)
    failed_positions: tuple[int, ...]
    # resident set size now (0 unless the setup asked for it) and at its peak so far, in
    # bytes: for recycling on memory, and to explain a later death
    rss: int
    peak_rss: int
    # how long the chunk took in the worker (unpickling, running, pickling), for Pace
    seconds: float = 0.0
    result_segments: tuple[str, ...] = ()  # the results' large buffers (_shared_memory)


class Skipped(_Message):
    """The worker skipped its ``number``-th chunk, which the parent had taken back
    (procpool._claims): the parent's claim on it has done its work."""

    number: int


# ---- on the pipe ------------------------------------------------------------------------

# A message's kind travels as its place here: append new kinds, never reorder (a worker and
# its parent always run the same procpool, but the numbers are easier to read when they last).
_KINDS: tuple[type[Any], ...] = (RunChunk, Stop, Ready, InitFailed, ItemDone, Logged, Printed,
                                 ChunkDone, Skipped)
_NUMBER_OF_KIND = {kind: number for number, kind in enumerate(_KINDS)}


def encode(message: Any) -> bytes:
    """The bytes of one message on a worker's pipe (either way)."""
    return dumps((_NUMBER_OF_KIND[type(message)], *message))


def decode(payload: bytes | bytearray) -> Any:
    """The message ``encode`` made ``payload`` of. Raises what unpickling raises, and
    IndexError or TypeError for bytes that are no message."""
    fields = loads(payload)
    return _KINDS[fields[0]]._make(fields[1:])
