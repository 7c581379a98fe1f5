"""The stream engine driven by hand: Window, Feeder and StreamJob, without a pool.

Chunks are made and "run" by the test: it plays the dispatcher, handing each submitted chunk's
outcome to the job when it chooses. No processes, no threads except where a test says so.
"""

from __future__ import annotations

import gc
import itertools
import weakref
from collections.abc import Iterator, Mapping
from concurrent.futures import CancelledError
from typing import Any

import pytest

from procpool._codec import dumps
from procpool._errors import TimeoutError
from procpool._messages import CallMode
from procpool._pace import ChunkSizer, Pace
from procpool._streams import Feeder, IMapIterator, StreamJob, Window, stream_sizes
from procpool._task import Chunk, TaskFunction

FUNCTION = TaskFunction(1, dumps(abs))


class Plain:
    """A result a test can watch being freed (ints and strings are cached)."""


class Pool:
    """What a feeder submits to: the chunks in order, answered when the test says."""

    def __init__(self) -> None:
        self.submitted: list[Chunk] = []

    def answer(self, job: StreamJob, chunk: Chunk, values: list[Any] | None = None) -> None:
        job.chunk_done(chunk, values if values is not None else list(range(
            chunk.first_index, chunk.first_index + chunk.size)), {})


def feeder_for(job: StreamJob, items: Iterator[Any], chunksize: int,
               pool: Pool) -> Feeder:
    def chunk_of(batch: list[Any], first_index: int) -> Chunk:
        return Chunk(first_index + 1, FUNCTION, dumps(batch), CallMode.ONE_ARG, first_index,
                     len(batch), job)

    return Feeder(job, items, ChunkSizer(Pace(), chunksize), chunk_of, pool.submitted.append)


def test_a_buffersize_alone_means_chunks_of_one_and_bounds_chunks() -> None:
    assert stream_sizes(None, 3, processes=2) == (1, 3)
    assert stream_sizes(5, None, processes=2) == (5, 8)  # four chunks per worker
    assert stream_sizes(None, None, processes=2) == (None, 8)


def test_a_window_without_block_takes_nothing_when_full_and_cancel_frees_every_waiter() -> None:
    window = Window(chunks=2)
    assert window.acquire(1) and window.acquire(1)
    assert not window.acquire(1, block=False)  # full: nothing taken
    window.release(1)
    assert window.acquire(1, block=False)
    window.lift()  # close(): no bound any more
    assert all(window.acquire(1, block=False) for _ in range(10))
    window.cancel()
    assert not window.acquire(1)  # never waits once cancelled


def test_a_consumer_fed_stream_is_never_more_than_its_window_ahead_of_its_reader() -> None:
    pool = Pool()
    read = itertools.count()

    def endless() -> Iterator[int]:
        while True:
            yield next(read)

    job = StreamJob(ordered=True, window=Window(chunks=3))
    feeder = feeder_for(job, endless(), chunksize=1, pool=pool)
    job.refill = feeder.top_up
    feeder.top_up()
    assert len(pool.submitted) == 3  # the window, no more
    for taken in range(20):
        chunk = pool.submitted[taken]
        pool.answer(job, chunk)
        assert job.next(timeout=0) == taken
        assert len(pool.submitted) - (taken + 1) <= 3  # in flight and not yet read
    assert next(read) <= 20 + 3 + 1


def test_the_eager_stream_gets_its_credit_back_as_chunks_are_answered_not_read() -> None:
    pool = Pool()
    job = StreamJob(ordered=True, window=Window(chunks=2), credit_on_arrival=True)
    feeder = feeder_for(job, iter(range(10)), chunksize=2, pool=pool)
    feeder.top_up()
    assert len(pool.submitted) == 2
    pool.answer(job, pool.submitted[0])  # answered, nobody reads it
    feeder.top_up()
    assert len(pool.submitted) == 3
    for chunk in pool.submitted[1:]:
        pool.answer(job, chunk)
    feeder.top_up()
    for chunk in pool.submitted[3:]:
        pool.answer(job, chunk)
    feeder.top_up()  # finds the end of the input
    assert len(pool.submitted) == 5
    assert [job.next(0) for _ in range(10)] == list(range(10))
    with pytest.raises(StopIteration):
        job.next(0)


def test_the_inputs_exception_comes_at_its_position_after_every_item_read_before_it() -> None:
    pool = Pool()

    def broken() -> Iterator[int]:
        yield from range(5)
        raise OSError("input broke")

    job = StreamJob(ordered=True, window=Window(chunks=100))
    feeder_for(job, broken(), chunksize=2, pool=pool).top_up()
    assert [chunk.size for chunk in pool.submitted] == [2, 2, 1]
    for chunk in reversed(pool.submitted):  # answered out of order: handed out in order
        pool.answer(job, chunk)
    assert [job.next(0) for _ in range(5)] == [0, 1, 2, 3, 4]
    with pytest.raises(OSError, match="input broke"):
        job.next(0)


def test_a_raised_input_error_is_raised_by_the_top_up_when_asked() -> None:
    def broken() -> Iterator[int]:
        yield 1
        raise OSError("at once")

    job = StreamJob(ordered=True, window=Window(chunks=4))
    with pytest.raises(OSError, match="at once"):
        feeder_for(job, broken(), chunksize=1, pool=Pool()).top_up(raise_input_error=True)


def test_unordered_streams_hand_out_pieces_as_they_arrive() -> None:
    pool = Pool()
    job = StreamJob(ordered=False, window=Window(chunks=10))
    feeder_for(job, iter(range(6)), chunksize=2, pool=pool).top_up()
    first, second, third = pool.submitted
    pool.answer(job, third)
    assert [job.next(0), job.next(0)] == [4, 5]
    with pytest.raises(TimeoutError):
        job.next(0)
    pool.answer(job, first)
    pool.answer(job, second)
    assert sorted(job.next(0) for _ in range(4)) == [0, 1, 2, 3]


def test_a_stopped_feeder_ends_the_stream_with_cancelled_error_where_it_stopped() -> None:
    pool = Pool()
    job = StreamJob(ordered=True, window=Window(chunks=2))
    feeder = feeder_for(job, iter(range(100)), chunksize=1, pool=pool)
    job.refill = feeder.top_up
    feeder.top_up()
    feeder.stop()  # a shutdown that cancels futures
    job.cancel_waiting()
    pool.answer(job, pool.submitted[0])  # it ran already
    assert not job.chunk_starting(pool.submitted[1])  # it had not started: cancelled
    assert job.next(0) == 0
    with pytest.raises(CancelledError):
        job.next(0)


def test_abandoning_drops_what_arrives_and_calls_its_hook_only_while_work_is_left() -> None:
    pool = Pool()
    calls: list[str] = []
    job = StreamJob(ordered=True, window=Window(chunks=4),
                    on_abandon=lambda: calls.append("cancel the rest"))
    feeder = feeder_for(job, iter(range(8)), chunksize=2, pool=pool)
    feeder.top_up()
    job.abandon()
    assert calls == ["cancel the rest"]
    assert not job.chunk_starting(pool.submitted[0])  # nobody reads it: it does not run
    pool.answer(job, pool.submitted[1])  # dropped
    job.abandon()
    assert calls == ["cancel the rest"]  # once

    ended = StreamJob(ordered=True, window=Window(chunks=4),
                      on_abandon=lambda: calls.append("nothing left to cancel"))
    ended.input_finished(0)
    with pytest.raises(StopIteration):
        ended.next(0)
    ended.abandon()
    assert calls == ["cancel the rest"]


def test_values_already_handed_out_are_not_kept_by_the_stream() -> None:
    job = StreamJob(ordered=True, window=Window(chunks=4))
    values = [Plain() for _ in range(4)]
    refs = [weakref.ref(value) for value in values]
    chunk = Chunk(1, FUNCTION, b"", CallMode.ONE_ARG, 0, 4, job)
    job.chunk_done(chunk, values, {})
    del values
    first = job.next(0)
    assert first is refs[0]()
    del first
    gc.collect()
    assert refs[0]() is None  # handed out and dropped: freed, though its piece is not done
    assert refs[1]() is not None


def test_credit_comes_back_as_the_reader_starts_on_a_piece_not_when_it_takes_several() -> None:
    # Taking every piece that has arrived at once is cheap; giving their credit back at once
    # let a lazy map read buffersize pieces more than its reader had started on.
    pool = Pool()
    job = StreamJob(ordered=True, window=Window(chunks=3))
    feeder = feeder_for(job, iter(range(100)), chunksize=1, pool=pool)
    job.refill = feeder.top_up
    feeder.top_up()
    for chunk in pool.submitted[:3]:
        pool.answer(job, chunk)
    assert job.next(0) == 0
    assert len(pool.submitted) == 4  # one piece begun: one more chunk, not three
    assert job.next(0) == 1
    assert len(pool.submitted) == 5


def test_a_tasks_own_timeout_error_is_its_outcome_for_an_async_reader() -> None:
    import asyncio
    import multiprocessing

    from procpool._streams import next_async

    job = StreamJob(ordered=True, window=Window(chunks=4))
    chunk = Chunk(1, FUNCTION, b"", CallMode.ONE_ARG, 0, 2, job)
    job.chunk_done(chunk, [None, "b"], {0: multiprocessing.TimeoutError("the task's own")})
    with pytest.raises(multiprocessing.TimeoutError, match="the task's own"):
        asyncio.run(next_async(job))  # not taken for "nothing has arrived yet", and skipped
    assert asyncio.run(next_async(job)) == "b"


def test_a_consumer_that_cannot_be_woken_costs_the_deliverer_nothing() -> None:
    import asyncio

    from procpool._streams import next_async

    job = StreamJob(ordered=True, window=Window(chunks=4))

    async def give_up_waiting() -> None:
        waiting = asyncio.ensure_future(next_async(job))
        await asyncio.sleep(0)  # it has run up to its wait: its wake-up is registered
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(give_up_waiting())  # its loop is closed now
    job.call_when_ready(lambda: 1 / 0)  # a listener that raises
    chunk = Chunk(1, FUNCTION, b"", CallMode.ONE_ARG, 0, 1, job)
    job.chunk_done(chunk, ["delivered"], {})  # the dispatcher's call: must not raise
    assert job.next(0) == "delivered"


# ---- the consumers' iterators ---------------------------------------------------------------


def job_with_pieces(*sizes: int, failures: Mapping[int, BaseException] | None = None,
                    ) -> StreamJob:
    """An ordered job whose pieces (of these sizes, in order) have all arrived; ``failures``
    by index in the whole stream."""
    job = StreamJob(ordered=True, window=Window(chunks=len(sizes)))
    first = 0
    for number, size in enumerate(sizes, start=1):
        chunk = Chunk(number, FUNCTION, b"", CallMode.ONE_ARG, first, size, job)
        failed = {index - first: error for index, error in (failures or {}).items()
                  if first <= index < first + size}
        job.chunk_done(chunk, list(range(first, first + size)), failed)
        first += size
    job.input_finished(first, None)
    return job


def test_an_imap_iterator_hands_out_in_order_however_it_is_read() -> None:
    iterator: IMapIterator[int] = IMapIterator(job_with_pieces(3, 1, 4, 2))
    assert iter(iterator) is iterator  # an iterator, as the stdlib's
    assert next(iterator) == 0
    assert iterator.next(0) == 1  # the stdlib's next(timeout), from the same piece
    for value in iterator:  # on from there, in C
        if value == 5:
            break
    assert iterator.next(0) == 6
    assert list(iterator) == [7, 8, 9]
    assert list(iterator) == []
    with pytest.raises(StopIteration):
        iterator.next(0)


def test_an_imap_iterator_raises_an_items_error_at_its_place_and_goes_on_after_it() -> None:
    bad = ValueError("item 4")
    iterator: IMapIterator[int] = IMapIterator(job_with_pieces(3, 3, 3, failures={4: bad}))
    seen: list[int] = []
    with pytest.raises(ValueError, match="item 4") as raised:
        for value in iterator:
            seen.append(value)
    assert raised.value is bad and seen == [0, 1, 2, 3]
    assert list(iterator) == [5, 6, 7, 8]  # as the stdlib's imap: the next item follows


def test_an_imap_iterator_keeps_no_value_it_has_handed_out() -> None:
    job = StreamJob(ordered=True, window=Window(chunks=2))
    for number, first in ((1, 0), (2, 3)):
        chunk = Chunk(number, FUNCTION, b"", CallMode.ONE_ARG, first, 3, job)
        job.chunk_done(chunk, [Plain() for _ in range(3)], {})
    iterator: IMapIterator[Plain] = IMapIterator(job)
    for position in range(5):  # a piece's first value, and the others
        value = next(iterator)  # the C path a for loop takes
        ref = weakref.ref(value)
        del value
        gc.collect()
        assert ref() is None, position


def test_dropping_an_imap_iterator_in_a_loop_abandons_its_stream() -> None:
    job = StreamJob(ordered=True, window=Window(chunks=1))  # its input not read to the end
    job.chunk_done(Chunk(1, FUNCTION, b"", CallMode.ONE_ARG, 0, 2, job), [0, 1], {})
    abandoned: list[str] = []
    job.on_abandon = lambda: abandoned.append("abandoned")
    for value in IMapIterator(job):
        if value == 1:
            break
    gc.collect()
    assert abandoned == ["abandoned"]
