"""The stream engine: every call that maps a function over an input without taking it whole.

One engine serves every face: the Pool's ``imap``/``imap_unordered`` (and the batch runner's
``_imap_outcomes``), the executor's ``map`` (eager, and lazy with ``buffersize``) and its
``amap``. It owns:

- ``Window``: the stream's credit, in items (how many may be submitted and not yet consumed,
  or not yet answered);
- ``Feeder``: reading the input in batches sized by a ``ChunkSizer``, making each a chunk and
  submitting it as credit allows, and ending the stream (with the input's own exception, at its
  position, if it raised). A feeder thread runs it to the end (``run``), or the consumer tops it
  up as it takes results (``top_up``);
- ``StreamJob``: the chunks' sink and the consumer's side: outcomes put back in input order (or
  not), handed out item by item, with an abandoned stream's work dropped;
- the consumers: ``ChainedResults``, which hands out a piece's values in C (the executor's
  ``map`` returns one), ``IMapIterator`` (the Pool's iterators, also ``async for``) and
  ``next_async`` (``amap``).

The faces choose, and nothing else: ordered or not; a feeder thread or the consumer feeding;
credit returned when results are consumed (a bounded stream) or answered (the executor's eager
map, which runs everything whether or not it is read); what abandoning does to chunks already
running (the Pool lets them finish, the executor kills them); and whether a failure raises or
is handed out as an ``Outcome``. Never blocks the dispatcher thread: it only stores outcomes.
"""

from __future__ import annotations

import functools
import itertools
import threading
import weakref
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from multiprocessing import TimeoutError

from . import _threads as threads
from ._log import logger
from ._pace import CHUNKS_PER_WORKER, ChunkSizer
from ._results import _wait_or_interrupt
from ._runtime_typing import TYPE_CHECKING, Generic, TypeVar
from ._task import Chunk

if TYPE_CHECKING:
    import asyncio
    from typing import Any

    from ._progress import ProgressTracker

T = TypeVar("T")


def _cancellation() -> BaseException:
    """The answer of work that was cancelled: concurrent.futures' ``CancelledError``, imported
    only now (a program's import of the faces must not import concurrent.futures; _log.py)."""
    from concurrent.futures import CancelledError

    return CancelledError()


def stream_sizes(chunksize: int | None, buffersize: int | None,
                 processes: int) -> tuple[int | None, int]:
    """A stream's chunk size (None: sized from the pace) and its bound in chunks. A
    ``buffersize`` given alone means chunks of one item, as in the stdlib: it then bounds
    items."""
    if chunksize is None and buffersize is not None:
        chunksize = 1
    return chunksize, buffersize or CHUNKS_PER_WORKER * processes


class RangeInput:
    """A ``range`` read as consecutive sub-ranges: each batch travels to its worker as its
    bounds, and the worker makes the ints (the seed's ``map(task, range(1_000_000))``)."""

    def __init__(self, items: range) -> None:
        self._rest = items

    def take(self, size: int) -> range:
        batch, self._rest = self._rest[:size], self._rest[size:]
        return batch


def stream_input(iterable: Iterable[Any]) -> Iterator[Any] | RangeInput:
    """What a stream's feeder reads ``iterable`` through."""
    return RangeInput(iterable) if type(iterable) is range else iter(iterable)


def read_batch(iterator: Iterator[Any], size: int) -> tuple[list[Any], Exception | None]:
    """Up to ``size`` items from ``iterator``, and the exception it raised, if it did.

    The items read before the exception are kept (``list.extend`` keeps what it appended),
    so a stream delivers every item before a failing input and the error at its position.
    """
    batch: list[Any] = []
    try:
        batch.extend(itertools.islice(iterator, size))
    except Exception as exc:
        return batch, exc
    return batch, None


class Window:
    """Credit for a stream: how many items may be submitted and not yet given back.

    The bound is ``chunks`` chunks of the largest size the stream has used so far (chunk sizes
    change when they are sized automatically). Every way out of a blocking ``acquire`` is
    explicit: credit comes back (``release``), the pool closes (``lift``: join() must be able
    to finish the input), or the stream is abandoned or stopped (``cancel``).
    """

    def __init__(self, chunks: int) -> None:
        self._chunks: int | None = chunks
        self._largest_chunk = 1
        self._in_use = 0
        self.cancelled = False
        self._condition = threading.Condition()

    def acquire(self, count: int, *, block: bool = True) -> bool:
        """Take ``count`` credits (one chunk's items); False if the stream was cancelled, or,
        without ``block``, if they are not free now (nothing is taken then)."""
        with self._condition:
            self._largest_chunk = max(self._largest_chunk, count)
            while not self.cancelled and not self._has_room(count):
                if not block:
                    return False
                self._condition.wait()
            if self.cancelled:
                return False
            self._in_use += count
            return True

    def _has_room(self, count: int) -> bool:
        return (self._chunks is None or self._in_use == 0
                or self._in_use + count <= self._chunks * self._largest_chunk)

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
            self.cancelled = True
            self._condition.notify_all()


class Outcome:
    """One item's outcome with where it came from: what ``detailed`` streams yield.

    ``index`` is the item's position in the input; ``attempt`` the run that produced the
    outcome (1 unless the item was retried); ``ok`` says whether ``value`` is the result or
    the error.
    """

    __slots__ = ("attempt", "index", "ok", "value")

    def __init__(self, index: int, attempt: int, ok: bool, value: Any) -> None:
        self.index = index
        self.attempt = attempt
        self.ok = ok
        self.value = value

    def __repr__(self) -> str:
        return (f"Outcome(index={self.index}, attempt={self.attempt}, ok={self.ok}, "
                f"value={self.value!r:.80})")


class _Piece:
    """Consecutive outcomes that arrived together (a chunk, or the part of one a retry or a
    death split off), kept as delivered: the consumer reads them item by item, so the
    dispatcher does no per-item work for a stream."""

    __slots__ = ("attempt", "clean", "credited", "error", "failures", "first_index", "size",
                 "values")

    def __init__(self, first_index: int, attempt: int, size: int, values: Sequence[Any] = (),
                 failures: Mapping[int, BaseException] | None = None,
                 error: BaseException | None = None, *, credited: bool = True) -> None:
        self.credited = credited  # its items took credit (the input's own error did not)
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


class WaitTimedOut(TimeoutError):
    """Nothing to hand out within the wait (``procpool.TimeoutError``, as the stdlib's imap
    raises). Its own class, so that a task's own ``TimeoutError`` is never taken for it."""


def popping(values: Sequence[Any]) -> Iterator[Any]:
    """An iterator over ``values`` (in C, as fast as a list's) that lets go of each value as it
    hands it out: a result the consumer has dropped is freed at once (gh-14406). A list is
    taken over, reversed in place (a reversed copy cost about 9 ns an item)."""
    if type(values) is list:
        stack = values
        stack.reverse()
    else:
        stack = list(reversed(values))
    # Not iter(stack.pop, sentinel): that compares every value with the sentinel (a numpy
    # array refuses to say whether it equals one).
    return map(stack.pop, itertools.repeat(-1, len(stack)))


class StreamJob:
    """One stream's shared state: what arrived, what was consumed, and who feeds it.

    Filled by the dispatcher thread (chunk outcomes) and the feeder (input length, input
    error); drained by the consumer through ``next``. Kept apart from the face's iterator so
    that dropping the iterator can be noticed (and the feeding stopped) while chunks still
    point here.

    ``credit_on_arrival``: credit comes back when an outcome arrives rather than when it is
    consumed (the executor's eager map runs everything, read or not). ``on_abandon``: what
    abandoning does besides dropping what arrives (the executor cancels what is running).
    """

    def __init__(self, ordered: bool, window: Window,
                 on_interrupt: Callable[[], None] | None = None,
                 progress: ProgressTracker | None = None, *, detailed: bool = False,
                 credit_on_arrival: bool = False,
                 on_abandon: Callable[[], None] | None = None) -> None:
        self.ordered = ordered
        self._progress = progress  # counted as the consumer takes results
        # Hand out an Outcome per item (never raising an item's error) instead of its value.
        self.detailed = detailed
        self._plain = not detailed and progress is None  # next() may take the short path
        self.window = window
        self._credit_on_arrival = credit_on_arrival
        self._on_interrupt = on_interrupt
        self.on_abandon = on_abandon
        # The consumer's feeder, called after each take, once credit came back (None: a
        # feeder thread of its own waits for the credit instead).
        self.refill: Callable[[], None] | None = None
        self._condition = threading.Condition()
        # --- shared, under _condition
        self._arrived: dict[int, _Piece] = {}  # ordered: first index -> piece
        self._arrival_order: deque[_Piece] = deque()  # unordered
        self._next_index = 0  # ordered: next index to hand out
        self._handed_out = 0  # items moved to the consumer
        self._length: int | None = None  # known once the input is exhausted
        self._abandoned = False
        self._cancelled = False  # cancel_waiting(): what has not started will not
        self._listeners: list[Callable[[], object]] = []  # async consumers waiting to be woken
        # --- the consumer's own: pieces taken, the one being read, and the position in it
        self._taken: deque[_Piece] = deque()
        self._reading: _Piece | None = None
        self._position = 0
        # A plain stream reads a piece without failures through a C iterator over its values:
        # a stream of tiny tasks is bound by the consumer's cost per item.
        self.values_left: Iterator[Any] = iter(())

    # ---- producers (dispatcher and feeder threads) ----

    def chunk_starting(self, chunk: Chunk) -> bool:
        if self._abandoned:
            return False  # nobody reads an abandoned stream: do not run its work
        if self._cancelled:
            self.chunk_failed(chunk, _cancellation())  # its answer: it was cancelled
            return False
        return True

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
            self._arrive(_Piece(length, 1, 1, error=error, credited=False), length + 1)

    def cancel_waiting(self) -> None:
        """Chunks that have not started will not (a shutdown that cancels futures): each is
        answered with ``CancelledError`` when the pool would have run it."""
        self._cancelled = True

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
        if piece is not None and piece.credited and self._credit_on_arrival:
            self.window.release(piece.size)
        for listener in listeners:
            _call_listener(listener)

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
                self.values_left = popping(piece.values)
                self._started_reading(piece)
                return next(self.values_left)  # a piece holds at least one item
            self._reading = piece
            self._started_reading(piece)
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

        Taking them all at once makes the lock and the wake-ups a cost per delivery rather
        than per item: a stream of tiny tasks is bound by the consumer.
        """
        with self._condition:
            if not threads.wait_in_slices(
                    lambda left: self._condition.wait_for(self._can_hand_out, left), timeout):
                raise WaitTimedOut(f"no result within {timeout} s")
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
        return count

    def _started_reading(self, piece: _Piece) -> None:
        """The consumer has begun on ``piece``: its credit comes back (so a stream is never
        more than its window ahead of its reader), and a consumer-fed stream reads on."""
        if piece.credited and not self._credit_on_arrival:
            self.window.release(piece.size)
        if self.refill is not None:
            self.refill()

    def call_when_ready(self, listener: Callable[[], object]) -> None:
        """Call ``listener`` once next() can answer without waiting (now, if it already can).

        Called from whichever thread delivers; asyncio consumers pass a thread-safe wake-up.
        """
        with self._condition:
            if not self._can_hand_out():
                self._listeners.append(listener)
                return
        _call_listener(listener)

    def forget_listener(self, listener: Callable[[], object]) -> None:
        """``listener`` no longer waits (its awaiting task was cancelled, or was woken)."""
        with self._condition:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _can_hand_out(self) -> bool:
        if self._length is not None and self._handed_out >= self._length:
            return True
        if self.ordered:
            return self._next_index in self._arrived
        return bool(self._arrival_order)

    def abandon(self) -> None:
        """Nobody will read this stream any more: stop feeding it and drop what arrives."""
        with self._condition:
            if self._abandoned:
                return
            self._abandoned = True
            ended = self._length is not None and self._handed_out >= self._length
            self._arrived.clear()
            self._arrival_order.clear()
            self._listeners.clear()
        self._taken.clear()
        self._reading = None
        self.values_left = iter(())
        self.window.cancel()
        if self.on_abandon is not None and not ended:  # nothing of an ended stream is left
            self.on_abandon()
        if self._progress is not None:
            self._progress.finish()


async def next_async(job: StreamJob) -> Any:
    """The next item of ``job`` for an ``async for``: waits without blocking the event loop
    and without a thread (the delivering thread wakes the loop). Raises StopAsyncIteration at
    the end."""
    import asyncio  # imported already where a coroutine runs: a pool never imports it

    loop = asyncio.get_running_loop()
    while True:
        try:
            return job.next(timeout=0)
        except StopIteration:
            raise StopAsyncIteration from None
        except WaitTimedOut:
            pass  # nothing yet: wait for the next delivery
        woken: asyncio.Future[None] = loop.create_future()
        listener = functools.partial(loop.call_soon_threadsafe, _wake, woken)
        job.call_when_ready(listener)
        try:
            await threads.await_in_slices(woken)
        finally:
            job.forget_listener(listener)  # cancelled: its loop may be gone when one comes


def _call_listener(listener: Callable[[], object]) -> None:
    """Wake a waiting consumer. Never raises: this runs on the thread that delivers (the
    dispatcher's), which must go on whatever a consumer's event loop has become (closed)."""
    try:
        listener()
    except Exception:
        logger().debug("procpool: a stream's waiting consumer could not be woken", exc_info=True)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Feeder:
    """Feeds one stream: reads its input in batches, makes each a chunk, submits it.

    ``chunk_of(batch, first_index)`` makes the chunk (None: it could not be pickled, and its
    sink, the job, has that error already); ``submit`` hands it to the pool. The input ends
    the stream: with its length, or with the exception it raised, at its position. ``stop``
    ends it early: the items not fed yet are answered with ``CancelledError``.
    """

    def __init__(self, job: StreamJob, items: Iterator[Any] | RangeInput, sizer: ChunkSizer,
                 chunk_of: Callable[[Sequence[Any], int], Chunk | None],
                 submit: Callable[[Chunk], object]) -> None:
        self.job = job
        self._items: Iterator[Any] | RangeInput = items
        self._sizer = sizer
        self._chunk_of = chunk_of
        self._submit = submit
        self._index = 0  # items read so far: where the next batch starts
        self._ended = False
        self._stopped = False
        self.first_chunk: Chunk | None = None  # names the stream to Dispatcher.cancel

    def run(self) -> None:
        """Feed the whole input, waiting for credit as it goes (a feeder thread's loop).
        Whatever goes wrong ends the stream with that error: its consumer never waits on a
        feeder that is gone."""
        try:
            while self._feed_one(block=True):
                pass
        except BaseException as exc:  # even SystemExit from the input: the stream says it
            if self._ended:
                logger().exception("procpool: a stream's feeder failed after its input ended")
            else:
                self._end(exc)

    def top_up(self, *, raise_input_error: bool = False) -> None:
        """Feed what the credit allows now, never waiting (the consumer's thread).
        ``raise_input_error``: an exception of the input is raised here rather than at its
        position (the stdlib's lazy map raises while it reads the first batches)."""
        while self._feed_one(block=False, raise_input_error=raise_input_error):
            pass

    def stop(self) -> None:
        """Feed nothing more: the stream ends where the feeding stopped."""
        self._stopped = True
        self.job.window.cancel()  # wakes a feeder thread waiting for credit

    def _feed_one(self, *, block: bool, raise_input_error: bool = False) -> bool:
        """Read, make and submit one batch; False once there is nothing more to do now."""
        if self._ended:
            return False
        size = self._sizer.next_size()
        if self._stopped or not self.job.window.acquire(size, block=block):
            if self._stopped or self.job.window.cancelled:
                self._end(_cancellation() if self._stopped else None)
            return False
        batch: Sequence[Any]
        if isinstance(self._items, RangeInput):
            batch, error = self._items.take(size), None
        else:
            batch, error = read_batch(self._items, size)
        if len(batch) < size:
            self.job.window.release(size - len(batch))
        if batch:
            chunk = self._chunk_of(batch, self._index)
            self._index += len(batch)
            if chunk is not None:
                self._sizer.sent(chunk.size, chunk.payload_bytes)
                if self.first_chunk is None:
                    self.first_chunk = chunk
                self._submit(chunk)
        if error is not None and raise_input_error:
            self._ended = True
            raise error
        if error is not None or len(batch) < size:  # an iterator stops short only at its end
            self._end(error)
            return False
        return True

    def _end(self, error: BaseException | None) -> None:
        self._ended = True
        self._items = iter(())  # let go of the input
        self.job.input_finished(self._index, error)


class ChainedResults(itertools.chain):  # type: ignore[type-arg]
    """An iterator over a stream's results that hands out each value in C, but the first of
    each piece: it chains the iterables its ``pieces`` generator yields (the rest of the piece
    in hand, then the next value). A ``__next__`` written in Python would cost a call per
    item, which on a stream of tiny tasks was a third of the parent's time
    (docs/performance.md, "2026-12-07 (last)")."""

    __slots__ = ("__weakref__", "_pieces")

    _pieces: Generator[Iterable[Any], None, None]

    @classmethod
    def over(cls, pieces: Generator[Iterable[Any], None, None]) -> Any:
        results: Any = cls.from_iterable(pieces)  # an instance of cls
        results._pieces = pieces
        return results


def next_piece(job: StreamJob, timeout: float | None) -> Iterator[Any]:
    """The next value as a piece of one that keeps no hold on it once handed out: no
    reference outlives the reader's (gh-14406). Raises what ``StreamJob.next`` raises."""
    return popping((job.next(timeout),))


def _imap_pieces(job: StreamJob) -> Generator[Iterable[Any], None, None]:
    """An imap's pieces: at a failed item its error is raised, and the iteration can go on
    after it, as the stdlib's imap does."""
    while True:
        yield job.values_left
        try:
            piece = next_piece(job, None)
        except StopIteration:
            return
        except Exception as error:
            piece = _raising(error)
        yield piece


def _raising(error: Exception) -> Iterator[Any]:
    raise error
    yield  # a generator: raises when first asked, then is done


class IMapIterator(ChainedResults, Generic[T]):
    """The iterator returned by ``imap`` (ordered) and ``imap_unordered``.

    ``next(timeout)`` raises ``procpool.TimeoutError`` (``multiprocessing.TimeoutError``) when no
    result arrives in time; the iterator stays usable. Dropping the iterator stops reading the
    input.
    """

    __module__ = "procpool"
    __slots__ = ("_job",)

    _job: StreamJob

    def __new__(cls, job: StreamJob) -> IMapIterator[T]:
        iterator: IMapIterator[T] = cls.over(_imap_pieces(job))
        iterator._job = job
        weakref.finalize(iterator, job.abandon)
        return iterator

    def next(self, timeout: float | None = None) -> T:
        return self._job.next(timeout)  # type: ignore[no-any-return]

    def __aiter__(self) -> IMapIterator[T]:
        return self

    async def __anext__(self) -> T:
        """``async for result in pool.imap(...)``: waits without blocking the event loop and
        without a thread: the delivering thread wakes the loop."""
        return await next_async(self._job)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        kind = "ordered" if self._job.ordered else "unordered"
        return f"<procpool.IMapIterator {kind}>"


class IMapUnorderedIterator(IMapIterator[T]):
    __module__ = "procpool"
