"""Delivery: the one path by which an outcome leaves the dispatcher for its result object.

Owns turning a worker's reply into what the caller gets (unpickling results, rebuilding each
failed item's error with its remote traceback and its name), handing it to the chunk's sink,
and counting it: the done/failed counts of ``stats()`` and the exactly-once ledger
(``_accounting``) see every answer here and nowhere else.

Runs on the dispatcher thread only. It decides nothing about retries or workers: an item that
failed is handed back to the dispatcher, whose scheduler chooses between running it again and
failing it. It never runs user code beyond unpickling (sinks hand callbacks to another thread).
"""

from __future__ import annotations

import types
from collections.abc import Iterable, Mapping, Sequence
from multiprocessing.pool import RemoteTraceback  # type: ignore[attr-defined]
from types import TracebackType

from . import _accounting as accounting
from . import _shared_memory as shared_memory
from ._codec import describe_pickle_failure, short_repr
from ._errors import (
    PoolBroken,
    ResultSerializationError,
    ResultUnpicklingError,
    SerializationError,
    TaskUnpicklingError,
)
from ._log import logger
from ._messages import ItemFailure
from ._runtime_typing import TYPE_CHECKING
from ._task import Chunk

if TYPE_CHECKING:
    from typing import Any


class Delivery:
    """Hands outcomes to sinks, counting each one once."""

    def __init__(self) -> None:
        self.items_done = 0  # items delivered with a value
        self.items_failed = 0  # items delivered with an error
        # The debug check that every accepted item is answered exactly once (_accounting).
        self._ledger = accounting.Ledger() if accounting.enabled() else None

    def accepting(self, chunks: Iterable[Chunk]) -> Any:
        """What to run, on the submitting thread, once ``chunks`` are in the dispatcher's
        inbox and before it can answer any of them (None when the ledger is off)."""
        if self._ledger is None:
            return None
        ledger, chunks = self._ledger, tuple(chunks)

        def accept() -> None:
            for chunk in chunks:
                ledger.accepted(chunk)

        return accept

    def close(self) -> None:
        """The pool has ended: the ledger reports any item never answered."""
        if self._ledger is not None:
            self._ledger.close()

    # ---- outcomes --------------------------------------------------------------------------

    def done(self, chunk: Chunk, values: Sequence[Any],
             failures: Mapping[int, BaseException]) -> None:
        self.items_done += chunk.size - len(failures)
        self.items_failed += len(failures)
        if self._ledger is not None:
            self._ledger.answered(chunk, "done")
        chunk.sink.chunk_done(chunk, values, failures)

    def failed(self, chunk: Chunk, error: BaseException) -> None:
        chunk.left_queue()  # if it was still waiting
        if chunk.segments is not None:
            chunk.segments.release()  # it will not run (again): nobody else removes them
        self.items_failed += chunk.size
        if self._ledger is not None:
            self._ledger.answered(chunk, "failed")
        chunk.sink.chunk_failed(chunk, error)

    def dropped(self, chunk: Chunk) -> None:
        """A cancelled chunk: its caller asked for no answer (its sink knows already)."""
        chunk.left_queue()
        if chunk.segments is not None:
            chunk.segments.release()
        if self._ledger is not None:
            self._ledger.answered(chunk, "dropped")

    # ---- replies ---------------------------------------------------------------------------

    def chunk_reply(self, chunk: Chunk, results_payload: bytes,
                    failed_positions: tuple[int, ...], segments: tuple[str, ...] = ()) -> None:
        """A whole chunk's results: its values, and an error for each failed position."""
        values = self._decode(chunk, results_payload, segments)
        if values is None:
            return
        failures = {position: item_error(chunk, position, values[position])
                    for position in failed_positions} if failed_positions else _NONE_FAILED
        self.done(chunk, values, failures)

    def item_reply(self, chunk: Chunk, position: int, payload: bytes,
                   segments: tuple[str, ...]) -> BaseException | None:
        """One item of a chunk that reports each item: deliver its value, or return the
        error it failed with (which the scheduler may retry; nothing is delivered then)."""
        part = chunk.part(position, 1)
        values = self._decode(part, payload, segments)
        if values is None:
            return None  # it could not be unpickled; the item has failed with that
        outcome = values[0]
        if type(outcome) is ItemFailure:
            return item_error(chunk, position, outcome)
        self.done(part, [outcome], {})
        return None

    def failing_on_error(self, chunk: Chunk) -> _FailingOnError:
        """Deliver a chunk the scheduler has already let go of: if delivery itself fails, fail
        the chunk with that error. Past this point no other path (not even the dispatcher's
        crash handler) knows the chunk, so an escaping error would leave its waiters waiting
        forever."""
        return _FailingOnError(self, chunk)

    def _failed_to_deliver(self, chunk: Chunk, exc: BaseException) -> None:
        logger().error("procpool could not deliver the results of %s", chunk.description,
                       exc_info=exc)
        error = PoolBroken(f"internal error while delivering {chunk.description}: {exc!r}")
        error.__cause__ = exc
        self.failed(chunk, error)

    def _decode(self, chunk: Chunk, results_payload: bytes,
                segments: tuple[str, ...]) -> list[Any] | None:
        """Unpickle a reply's results (removing their segments); on failure, fail ``chunk``
        with the reason and return None."""
        try:
            values = shared_memory.loads(results_payload, segments)
        except BaseException as exc:  # unpickling runs the result's code, even sys.exit()
            error = ResultUnpicklingError(
                "(unreadable)",
                f"the parent could not unpickle it ({describe_pickle_failure(exc)})",
                task=chunk.description,
            )
            error.__cause__ = exc
            self.failed(chunk, error)
            return None
        if type(values) is not list or len(values) != chunk.size:
            # Not what a worker of this procpool sends (one of another version, say): the
            # chunk fails, where a None here would have left its items unanswered.
            self.failed(chunk, ResultUnpicklingError(
                "(unreadable)", f"the worker's reply held {short_repr(values, 60)} for "
                f"{chunk.size} item(s); is the worker running another version of procpool?",
                task=chunk.description))
            return None
        return values


_NONE_FAILED: Mapping[int, BaseException] = types.MappingProxyType({})


class _FailingOnError:
    """``Delivery.failing_on_error``: a class, not a generator (entered for every chunk)."""

    __slots__ = ("_chunk", "_delivery")

    def __init__(self, delivery: Delivery, chunk: Chunk) -> None:
        self._delivery = delivery
        self._chunk = chunk

    def __enter__(self) -> None:
        pass

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> bool:
        if exc is None:
            return False
        self._delivery._failed_to_deliver(self._chunk, exc)
        return True  # the chunk has its answer: the error goes no further


def item_error(chunk: Chunk, position: int, failure: ItemFailure) -> BaseException:
    """The error an item of ``chunk`` failed with, as its waiter gets it: with the remote
    traceback, and, for a result procpool could not send, the name of the item."""
    error = failure.error
    if isinstance(error, SystemExit) and error.code is None and len(error.args) == 1:
        # tblib's exception pickling (which importing distributed installs) rebuilds a
        # SystemExit without calling its __init__, and so without its code.
        error.code = error.args[0]
    if type(error) is SerializationError:
        error = TaskUnpicklingError(error.what, error.reason)
    if isinstance(error, ResultSerializationError) and error.task is None:
        error.task = chunk.describe_item(position)
    return with_remote_traceback(error, failure.traceback_text)


def with_remote_traceback(error: BaseException, traceback_text: str) -> BaseException:
    # The stdlib's convention (multiprocessing.pool.ExceptionWithTraceback): the worker's
    # formatted traceback rides along as __cause__.
    if traceback_text:
        error.__cause__ = RemoteTraceback(traceback_text)
    return error
