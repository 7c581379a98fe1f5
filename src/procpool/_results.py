"""Result objects of the Pool face, and the credit its streams need.

Owns: ApplyResult / MapResult (the stdlib's AsyncResult API), IMapIterator and
IMapUnorderedIterator (streaming), and the Window (how many items a stream may have submitted
but not yet handed to its consumer). Chunk outcomes arrive from the dispatcher thread; user
callbacks run on the pool's callback thread (_callbacks.py); waiting happens in caller threads.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ._callbacks import CallbackRunner
from ._errors import TimeoutError
from ._progress import ProgressTracker
from ._task import Chunk

T = TypeVar("T")
W = TypeVar("W")
logger = logging.getLogger("procpool")


def _call_user_callback(callback: Callable[[Any], object], argument: Any) -> None:
    try:
        callback(argument)
    except BaseException:  # even SystemExit: the callback thread serves every later result
        logger.exception("a result callback raised; the pool carries on")


def _wait_or_interrupt(wait: Callable[[], W], on_interrupt: Callable[[], None] | None) -> W:
    """Run a blocking wait; on Ctrl-C, stop the pool's work first, then let it propagate."""
    try:
        return wait()
    except KeyboardInterrupt:
        if on_interrupt is not None:
            on_interrupt()
        raise


class _AsyncResultBase(Generic[T]):
    """The stdlib's AsyncResult API: get, wait, ready, successful, and callbacks."""

    def __init__(
        self,
        callbacks: CallbackRunner,
        callback: Callable[[T], object] | None,
        error_callback: Callable[[BaseException], object] | None,
        on_interrupt: Callable[[], None] | None = None,
        progress: ProgressTracker | None = None,
    ) -> None:
        self._on_interrupt = on_interrupt
        self._progress = progress
        self._event = threading.Event()
        self._callbacks = callbacks
        self._callback = callback
        self._error_callback = error_callback
        self._lock = threading.Lock()
        self._settled = False
        self._success = False
        self._value: Any = None

    def ready(self) -> bool:
        return self._event.is_set()

    def successful(self) -> bool:
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._success

    def wait(self, timeout: float | None = None) -> None:
        _wait_or_interrupt(lambda: self._event.wait(timeout), self._on_interrupt)

    def get(self, timeout: float | None = None) -> T:
        if not _wait_or_interrupt(lambda: self._event.wait(timeout), self._on_interrupt):
            raise TimeoutError(f"the result was not ready within {timeout} s")
        if self._success:
            return self._value  # type: ignore[no-any-return]
        raise self._value

    def chunk_starting(self, chunk: Chunk) -> bool:
        return True

    def fail(self, error: BaseException) -> None:
        """Fail the whole result before anything was submitted (e.g. unpicklable function)."""
        self._settle(False, error)

    def _settle(self, success: bool, value: Any) -> None:
        """Record the outcome once; later outcomes (other chunks of a failed map) are ignored."""
        with self._lock:
            if self._settled:
                return
            self._settled = True
            self._success, self._value = success, value
        if self._progress is not None:
            self._progress.finish()  # its last drawing is queued on the callback thread
        callback = self._callback if success else self._error_callback
        if callback is None and self._progress is None:
            self._event.set()
            return

        def run_callback_then_release() -> None:
            # The stdlib runs the callback before get() returns; so do we. A progress bar is
            # closed by then too (same thread, queued first), so map()'s caller never sees it
            # drawn after map() returned.
            try:
                if callback is not None:
                    _call_user_callback(callback, value)
            finally:
                self._event.set()

        self._callbacks.post(run_callback_then_release)

    def __repr__(self) -> str:
        state = "pending" if not self.ready() else ("ok" if self._success else "failed")
        return f"<procpool.{type(self).__name__} {state}>"


class ApplyResult(_AsyncResultBase[T]):
    """The result of ``apply_async``: one item."""

    __module__ = "procpool"

    def chunk_done(
        self, chunk: Chunk, values: Sequence[Any], failures: Mapping[int, BaseException]
    ) -> None:
        if failures:
            self._settle(False, failures[0])
        else:
            self._settle(True, values[0])

    def chunk_failed(self, chunk: Chunk, error: BaseException) -> None:
        self._settle(False, error)


AsyncResult = ApplyResult


class MapResult(_AsyncResultBase[list[T]]):
    """The result of ``map_async`` and ``starmap_async``: a list, or the first error.

    Like the stdlib's, it shows its progress in two private attributes that progress-bar
    recipes (and parmap) read: ``_chunksize``, and ``_number_left``, the chunks of that size
    still to come (read-only here, and exact: it reaches 0 when the last item is done).
    """

    __module__ = "procpool"

    def __init__(
        self,
        length: int,
        chunksize: int,
        callbacks: CallbackRunner,
        callback: Callable[[list[T]], object] | None,
        error_callback: Callable[[BaseException], object] | None,
        on_interrupt: Callable[[], None] | None = None,
        progress: ProgressTracker | None = None,
    ) -> None:
        super().__init__(callbacks, callback, error_callback, on_interrupt, progress)
        self._values: list[Any] = [None] * length
        self._items_left = length
        self._chunk_length = chunksize if length else 0  # the stdlib's, for an empty map too
        if length == 0:
            self._settle(True, self._values)

    @property
    def _chunksize(self) -> int:
        return self._chunk_length

    @property
    def _number_left(self) -> int:
        if self._chunk_length == 0:
            return 0
        return -(-self._items_left // self._chunk_length)

    def chunk_done(
        self, chunk: Chunk, values: Sequence[Any], failures: Mapping[int, BaseException]
    ) -> None:
        if self._progress is not None:
            self._progress.advance(chunk.size, len(failures))
        if failures:
            self._settle(False, failures[min(failures)])
            return
        with self._lock:
            start = chunk.first_index
            self._values[start : start + chunk.size] = values
            self._items_left -= chunk.size
            complete = self._items_left == 0
        if complete:
            self._settle(True, self._values)

    def chunk_failed(self, chunk: Chunk, error: BaseException) -> None:
        if self._progress is not None:
            self._progress.advance(chunk.size, chunk.size)
        self._settle(False, error)


class Window:
    """Credit for a stream: how many items may be submitted but not yet consumed.

    The bound is ``chunks`` chunks of the largest size the stream has used so far (chunk sizes
    change when they are sized automatically). ``acquire`` blocks the feeding thread; every way
    out is explicit: the consumer takes items (``release``), the pool closes (``lift``: join()
    must be able to finish the input), or the stream is abandoned or terminated (``cancel``).
    """

    def __init__(self, chunks: int) -> None:
        self._chunks: int | None = chunks
        self._largest_chunk = 1
        self._in_use = 0
        self._cancelled = False
        self._condition = threading.Condition()

    def acquire(self, count: int) -> bool:
        """Wait for ``count`` credits (one chunk's items); False if the stream was cancelled
        meanwhile."""
        with self._condition:
            self._largest_chunk = max(self._largest_chunk, count)
            while not self._cancelled and self._chunks is not None and (
                self._in_use > 0 and self._in_use + count > self._chunks * self._largest_chunk
            ):
                self._condition.wait()
            self._in_use += count
            return not self._cancelled

    def release(self, count: int) -> None:
        with self._condition:
            self._in_use -= count
            self._condition.notify_all()

    def lift(self) -> None:
        with self._condition:
            self._chunks = None
            self._condition.notify_all()

    def cancel(self) -> None:
        with self._condition:
            self._cancelled = True
            self._condition.notify_all()


@dataclass(frozen=True, slots=True)
class Outcome:
    """One item's outcome with where it came from: what ``detailed`` streams yield.

    ``index`` is the item's position in the input; ``attempt`` the run that produced the
    outcome (1 unless the item was retried); ``ok`` says whether ``value`` is the result or
    the error.
    """

    index: int
    attempt: int
    ok: bool
    value: Any


class _Piece:
    """Consecutive outcomes that arrived together (a chunk, or the part of one a retry or a
    death split off), kept as delivered: the consumer reads them item by item, so the
    dispatcher does no per-item work for a stream."""

    __slots__ = ("attempt", "clean", "error", "failures", "first_index", "size", "values")

    def __init__(self, first_index: int, attempt: int, size: int, values: Sequence[Any] = (),
                 failures: Mapping[int, BaseException] | None = None,
                 error: BaseException | None = None) -> None:
        self.first_index = first_index
        self.attempt = attempt
        self.size = size
        self.values = values
        self.failures = failures  # position -> error
        self.error = error  # every item failed with this
        self.clean = error is None and not failures  # every item has a value

    def outcome(self, position: int) -> tuple[bool, Any]:
        if self.error is not None:
            return False, self.error
        if self.failures and position in self.failures:
            return False, self.failures[position]
        return True, self.values[position]


_NOTHING = object()  # "no value": results can be None


class StreamJob:
    """The shared state of one imap / imap_unordered call: what arrived, what was consumed.

    Filled by the dispatcher thread (chunk outcomes) and the feeder thread (input length, input
    error); drained by the consumer through an iterator. Kept apart from the iterator so that
    dropping the iterator can be noticed (and the feeder stopped) while chunks still point here.
    """

    def __init__(self, ordered: bool, window: Window,
                 on_interrupt: Callable[[], None] | None = None,
                 progress: ProgressTracker | None = None, *, detailed: bool = False) -> None:
        self.ordered = ordered
        self._progress = progress  # counted as the consumer takes results
        # Hand out an Outcome per item (never raising an item's error) instead of its value.
        self.detailed = detailed
        self._plain = not detailed and progress is None  # next() may take the short path
        self.window = window
        self._on_interrupt = on_interrupt
        self._condition = threading.Condition()
        # --- shared, under _condition
        self._arrived: dict[int, _Piece] = {}  # ordered: first index -> piece
        self._arrival_order: deque[_Piece] = deque()  # unordered
        self._next_index = 0  # ordered: next index to hand out
        self._handed_out = 0  # items moved to the consumer
        self._length: int | None = None  # known once the input is exhausted
        self._abandoned = False
        self._listeners: list[Callable[[], object]] = []  # async consumers waiting to be woken
        # --- the consumer's own: pieces taken, the one being read, and the position in it
        self._taken: deque[_Piece] = deque()
        self._reading: _Piece | None = None
        self._position = 0
        # A plain stream reads a piece without failures through a C iterator over its values:
        # a stream of tiny tasks is bound by the consumer's cost per item (IMapIterator).
        self.values_left: Iterator[Any] = iter(())

    # ---- producers (dispatcher and feeder threads) ----

    def chunk_starting(self, chunk: Chunk) -> bool:
        return not self._abandoned  # nobody reads an abandoned stream: do not run its work

    def chunk_done(
        self, chunk: Chunk, values: Sequence[Any], failures: Mapping[int, BaseException]
    ) -> None:
        self._arrive(_Piece(chunk.first_index, chunk.attempt, chunk.size, values, failures))

    def chunk_failed(self, chunk: Chunk, error: BaseException) -> None:
        self._arrive(_Piece(chunk.first_index, chunk.attempt, chunk.size, error=error))

    def input_finished(self, length: int, error: BaseException | None = None) -> None:
        """The feeder read ``length`` items; ``error`` is what the input iterator raised."""
        if error is None:
            self._arrive(None, length)
        else:
            # Like the stdlib: the input's exception surfaces at its position in the stream.
            self._arrive(_Piece(length, 1, 1, error=error), length + 1)

    def _arrive(self, piece: _Piece | None, length: int | None = None) -> None:
        """Store a piece (and the stream's length, once known); wake the waiting consumer,
        blocked or async."""
        with self._condition:
            if self._abandoned:
                return
            if piece is not None:
                if self.ordered:
                    self._arrived[piece.first_index] = piece
                else:
                    self._arrival_order.append(piece)
            if length is not None:
                self._length = length
            self._condition.notify_all()
            listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener()

    # ---- the consumer ----

    def next(self, timeout: float | None) -> Any:
        value = next(self.values_left, _NOTHING)
        if value is not _NOTHING:
            return value
        piece, position = self._reading, self._position
        if piece is None or position >= piece.size:
            # The Ctrl-C handler (terminate) runs only once _take has let go of the
            # condition: terminate waits for the dispatcher, which needs it to deliver.
            if not self._taken and not _wait_or_interrupt(lambda: self._take(timeout),
                                                          self._on_interrupt):
                self._reading = None
                if self._progress is not None:
                    self._progress.set_total(self._handed_out)
                    self._progress.finish()
                raise StopIteration
            piece, position = self._taken.popleft(), 0
            if self._plain and piece.clean:
                self._reading = None
                self.values_left = iter(piece.values)
                return next(self.values_left)  # a piece holds at least one item
            self._reading = piece
        self._position = position + 1
        ok, value = piece.outcome(position)
        if self._progress is not None:
            self._progress.advance(1, failed=0 if ok else 1)
        if self.detailed:
            return Outcome(piece.first_index + position, piece.attempt, ok, value)
        if ok:
            return value
        raise value

    def _take(self, timeout: float | None) -> int:
        """Wait until outcomes can be handed out, then take every piece that can be (into
        the consumer's own queue); 0 once the stream has ended.

        Taking them all at once makes the lock, the wake-ups and the credit a cost per
        delivery rather than per item: a stream of tiny tasks is bound by the consumer.
        """
        with self._condition:
            if not self._condition.wait_for(self._can_hand_out, timeout):
                raise TimeoutError(f"no result within {timeout} s")
            if self._length is not None and self._handed_out >= self._length:
                return 0
            count = 0
            if self.ordered:
                while self._next_index in self._arrived:
                    piece = self._arrived.pop(self._next_index)
                    self._taken.append(piece)
                    self._next_index += piece.size
                    count += piece.size
            else:
                for piece in self._arrival_order:
                    count += piece.size
                self._taken.extend(self._arrival_order)
                self._arrival_order.clear()
            self._handed_out += count
        self.window.release(count)  # they are the consumer's now
        return count

    def call_when_ready(self, listener: Callable[[], object]) -> None:
        """Call ``listener`` once next() can answer without waiting (now, if it already can).

        Called from whichever thread delivers; asyncio consumers pass a thread-safe wake-up.
        """
        with self._condition:
            if not self._can_hand_out():
                self._listeners.append(listener)
                return
        listener()

    def _can_hand_out(self) -> bool:
        if self._length is not None and self._handed_out >= self._length:
            return True
        if self.ordered:
            return self._next_index in self._arrived
        return bool(self._arrival_order)

    def abandon(self) -> None:
        """Nobody will read this stream any more: stop feeding it and drop what arrives."""
        with self._condition:
            self._abandoned = True
            self._arrived.clear()
            self._arrival_order.clear()
        self._taken.clear()
        self._reading = None
        self.values_left = iter(())
        self.window.cancel()
        if self._progress is not None:
            self._progress.finish()


class IMapIterator(Generic[T]):
    """The iterator returned by ``imap`` (ordered) and ``imap_unordered``.

    ``next(timeout)`` raises ``procpool.TimeoutError`` (``multiprocessing.TimeoutError``) when no
    result arrives in time; the iterator stays usable. Dropping the iterator stops reading the
    input.
    """

    __module__ = "procpool"

    def __init__(self, job: StreamJob) -> None:
        self._job = job
        weakref.finalize(self, job.abandon)

    def __iter__(self) -> IMapIterator[T]:
        return self

    def next(self, timeout: float | None = None) -> T:
        return self._job.next(timeout)  # type: ignore[no-any-return]

    def __next__(self) -> T:
        # The common case first, in C: the rest of a piece that has arrived.
        value: Any = next(self._job.values_left, _NOTHING)
        if value is not _NOTHING:
            return value  # type: ignore[no-any-return]
        return self._job.next(None)  # type: ignore[no-any-return]

    def __aiter__(self) -> IMapIterator[T]:
        return self

    async def __anext__(self) -> T:
        """``async for result in pool.imap(...)``: waits without blocking the event loop and
        without a thread: the delivering thread wakes the loop."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                return self._job.next(timeout=0)  # type: ignore[no-any-return]
            except StopIteration:
                raise StopAsyncIteration from None
            except TimeoutError:
                pass  # nothing yet: wait for the next delivery
            woken: asyncio.Future[None] = loop.create_future()
            self._job.call_when_ready(functools.partial(loop.call_soon_threadsafe, _wake, woken))
            await woken

    def __repr__(self) -> str:
        kind = "ordered" if self._job.ordered else "unordered"
        return f"<procpool.IMapIterator {kind}>"


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class IMapUnorderedIterator(IMapIterator[T]):
    __module__ = "procpool"
