"""asyncio on procpool: executor.run, executor.amap, and async for over Pool.imap."""

from __future__ import annotations

import asyncio
import functools
import itertools
import threading
from typing import Any

import pytest

import procpool
from support import still_alive

import misbehaving as mb


def test_run_awaits_a_call(start_method: str) -> None:
    async def main(executor: procpool.ProcessPoolExecutor) -> tuple[int, int]:
        squares = await asyncio.gather(*(executor.run(mb.square, i) for i in range(4)))
        return sum(squares), await executor.run(pow, 2, exp=10)

    with procpool.ProcessPoolExecutor(2, mp_context=start_method) as executor:
        assert asyncio.run(main(executor)) == (14, 1024)


def test_run_raises_the_task_exception() -> None:
    async def main(executor: procpool.ProcessPoolExecutor) -> None:
        await executor.run(mb.raise_value_error, 4)

    with procpool.ProcessPoolExecutor(1) as executor:
        with pytest.raises(ValueError, match="bad value 4"):
            asyncio.run(main(executor))


def test_cancelling_the_awaiting_task_kills_the_running_call(fifos: Any) -> None:
    async def main(executor: procpool.ProcessPoolExecutor) -> int:
        call = asyncio.ensure_future(
            executor.run(mb.announce_then_block, fifos.started, fifos.release))
        # Wait (off the event loop) until the task is running in the worker.
        await asyncio.get_running_loop().run_in_executor(None, fifos.wait_started)
        (pid,) = executor._processes
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        return pid

    with procpool.ProcessPoolExecutor(1) as executor:
        pid = asyncio.run(main(executor))
        assert still_alive([pid]) == []
        assert executor.submit(mb.square, 3).result(30) == 9


@pytest.mark.parametrize("ordered", [True, False])
def test_amap_streams_results(ordered: bool) -> None:
    async def main(executor: procpool.ProcessPoolExecutor) -> list[int]:
        return [x async for x in executor.amap(mb.square, range(30), chunksize=4,
                                                ordered=ordered)]

    with procpool.ProcessPoolExecutor(2) as executor:
        results = asyncio.run(main(executor))
    if ordered:
        assert results == [x * x for x in range(30)]
    else:
        assert sorted(results) == [x * x for x in range(30)]


def test_amap_reads_lazily_and_stops_when_the_consumer_leaves() -> None:
    pulled = itertools.count()
    lock = threading.Lock()

    def endless() -> Any:
        while True:
            with lock:
                yield next(pulled)

    async def main(executor: procpool.ProcessPoolExecutor) -> list[int]:
        taken = []
        async for value in executor.amap(mb.square, endless(), buffersize=3):
            taken.append(value)
            if len(taken) == 10:
                break
        return taken

    with procpool.ProcessPoolExecutor(2) as executor:
        assert asyncio.run(main(executor)) == [x * x for x in range(10)]
        assert next(pulled) <= 10 + 3 + 1


def test_amap_raises_at_the_failing_item() -> None:
    async def main(executor: procpool.ProcessPoolExecutor) -> list[int]:
        seen = []
        async for value in executor.amap(mb.raise_if, range(6)):
            seen.append(value)
        return seen

    with procpool.ProcessPoolExecutor(2) as executor:
        with pytest.raises(ValueError, match="item 3 is bad"):
            asyncio.run(main(executor))


def test_amap_delivers_every_item_before_the_input_raised() -> None:
    def numbers() -> Any:
        yield from range(5)
        raise OSError("input broke")

    async def main(executor: procpool.ProcessPoolExecutor, seen: list[int]) -> None:
        async for value in executor.amap(mb.square, numbers(), chunksize=2, buffersize=2):
            seen.append(value)

    seen: list[int] = []
    with procpool.ProcessPoolExecutor(2) as executor:
        with pytest.raises(OSError, match="input broke"):
            asyncio.run(main(executor, seen))
    assert seen == [0, 1, 4, 9, 16]


@pytest.mark.parametrize("ordered", [True, False])
def test_pool_imap_iterators_support_async_for(ordered: bool, start_method: str) -> None:
    async def main(pool: procpool.Pool) -> list[int]:
        call = pool.imap if ordered else pool.imap_unordered
        return [x async for x in call(mb.square, range(25), chunksize=2)]

    with procpool.Pool(2, context=start_method) as pool:
        results = asyncio.run(main(pool))
    assert (results if ordered else sorted(results)) == [x * x for x in range(25)]


def test_async_for_over_imap_does_not_block_the_loop(fifos: Any) -> None:
    # While the only result is held back, other coroutines keep running.
    async def main(pool: procpool.Pool) -> list[str]:
        events: list[str] = []
        task = functools.partial(mb.announce_then_block, release_fifo=fifos.release)

        async def consume() -> None:
            async for value in pool.imap(task, [fifos.started]):
                events.append(value)

        async def meanwhile() -> None:
            await asyncio.get_running_loop().run_in_executor(None, fifos.wait_started)
            events.append("loop still running")
            await asyncio.get_running_loop().run_in_executor(None, fifos.release_task)

        await asyncio.gather(consume(), meanwhile())
        return events

    with procpool.Pool(1) as pool:
        assert asyncio.run(main(pool)) == ["loop still running", "released"]


def test_async_for_over_imap_raises_task_errors() -> None:
    async def main(pool: procpool.Pool) -> list[int]:
        return [x async for x in pool.imap(mb.raise_if, range(6))]

    with procpool.Pool(2) as pool:
        with pytest.raises(ValueError, match="item 3 is bad"):
            asyncio.run(main(pool))
