"""A ``range`` given to a map travels to the workers as bounds, and arrives as the same ints.

``pool.map(task, range(1_000_000))`` is the seed's example: its chunks are sub-ranges, pickled
as three numbers each, and the worker makes the ints (docs/performance.md). Every face that
reads one iterable of items takes that path: Pool ``map``/``map_async``/``imap``/
``imap_unordered``, the executor's ``map`` (eager and with ``buffersize``) and ``amap``. The
fault matrix runs those faces over ranges under every fault; this file checks that the range is
really what travels, that what a task receives is exactly the range's ints (big, negative,
stepped, empty), and that a death in a range chunk with retries re-sends the right sub-range.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

import faulty_tasks as ft
import procpool
from procpool import _engine


def received(x: Any) -> tuple[str, Any]:
    """What the task was given: its exact type's name, and the value."""
    return type(x).__name__, x


def _pool_map(pool: Any, items: range, **call: Any) -> list[Any]:
    return pool.map(received, items, **call)


def _pool_map_async(pool: Any, items: range, **call: Any) -> list[Any]:
    return pool.map_async(received, items, **call).get(30)


def _pool_imap(pool: Any, items: range, **call: Any) -> list[Any]:
    return list(pool.imap(received, items, **call))


def _pool_imap_unordered(pool: Any, items: range, **call: Any) -> list[Any]:
    return sorted(pool.imap_unordered(received, items, **call), key=lambda r: items.index(r[1]))


def _executor_map(executor: Any, items: range, **call: Any) -> list[Any]:
    return list(executor.map(received, items, timeout=30, **call))


def _executor_map_buffered(executor: Any, items: range, **call: Any) -> list[Any]:
    return list(executor.map(received, items, timeout=30, buffersize=3, **call))


def _amap(executor: Any, items: range, **call: Any) -> list[Any]:
    async def collect() -> list[Any]:
        return [value async for value in executor.amap(received, items, **call)]

    return asyncio.run(asyncio.wait_for(collect(), 30))


POOL_FACES: dict[str, Callable[..., list[Any]]] = {
    "map": _pool_map, "map_async": _pool_map_async, "imap": _pool_imap,
    "imap_unordered": _pool_imap_unordered,
}
EXECUTOR_FACES: dict[str, Callable[..., list[Any]]] = {
    "ex_map": _executor_map, "ex_map_buffered": _executor_map_buffered, "amap": _amap,
}
FACES = {**POOL_FACES, **EXECUTOR_FACES}
RANGES = [range(0, 50), range(2**70, 2**70 + 9), range(10, -31, -3), range(-5, 5, 4), range(0)]


@pytest.fixture
def chunk_items(monkeypatch: pytest.MonkeyPatch) -> list[type]:
    """The type of each chunk's items as the parent pickles them."""
    seen: list[type] = []
    original = _engine.Engine.make_chunk

    def recording(self: Any, function: Any, items: Sequence[Any], *args: Any,
                  **kwargs: Any) -> Any:
        seen.append(type(items))
        return original(self, function, items, *args, **kwargs)

    monkeypatch.setattr(_engine.Engine, "make_chunk", recording)
    return seen


def _expected(items: range) -> list[tuple[str, int]]:
    return [("int", x) for x in items]


def _open(face: str, start_method: str) -> Any:
    if face in POOL_FACES:
        return procpool.Pool(2, context=start_method)
    return procpool.ProcessPoolExecutor(2, mp_context=start_method)


@pytest.mark.parametrize("face", sorted(FACES))
def test_every_face_sends_a_range_as_sub_ranges_and_tasks_get_its_ints(
        face: str, any_start_method: str, chunk_items: list[type]) -> None:
    with _open(face, any_start_method) as pool:
        for items in RANGES:
            assert FACES[face](pool, items, chunksize=4) == _expected(items), items
        assert FACES[face](pool, range(3, 300, 7)) == _expected(range(3, 300, 7))
    assert chunk_items and set(chunk_items) == {range}


def test_other_iterables_keep_their_items_and_several_ranges_zip_as_arguments(
        chunk_items: list[type]) -> None:
    with procpool.ProcessPoolExecutor(2) as executor:
        assert list(executor.map(pow, range(5), range(5))) == [x**x for x in range(5)]
    with procpool.Pool(2) as pool:
        assert pool.map(received, [1, 2]) == [("int", 1), ("int", 2)]
        assert pool.starmap(pow, [(2, 3)]) == [8]
    assert range not in chunk_items


@pytest.mark.parametrize("face", ["map", "imap", "ex_map"])
def test_a_death_in_a_range_chunk_is_retried_with_the_items_it_lost(face: str,
                                                                    tmp_path: Path) -> None:
    # task_timeout makes the chunk report each item, so the retry re-sends the sub-range of
    # the items not answered yet (the dispatcher slices the chunk's range).
    task = ft.FaultyTask("kill", 5, str(tmp_path))
    items = range(12)
    options = {"retries": 1, "task_timeout": 30}
    if face == "ex_map":
        with procpool.ProcessPoolExecutor(2, **options) as executor:
            values = list(executor.map(task, items, chunksize=4, timeout=30))
    else:
        with procpool.Pool(2, **options) as pool:
            call = pool.map if face == "map" else lambda f, i, **c: list(pool.imap(f, i, **c))
            values = call(task, items, chunksize=4)
    assert values == [ft.value_of(x) for x in items]
    assert [ft.runs_of(tmp_path, x) for x in items] == [2 if x == 5 else 1 for x in items]


def test_a_range_too_long_for_len_streams_lazily_as_in_the_stdlib() -> None:
    # len(range(10**20)) raises OverflowError; the stdlib's imap never asks.
    endless = range(10**20)
    with procpool.Pool(2) as pool:
        assert list(itertools.islice(pool.imap(received, endless), 3)) == _expected(range(3))
    with procpool.ProcessPoolExecutor(2) as executor:
        results = executor.map(received, endless, buffersize=2)
        assert list(itertools.islice(results, 3)) == _expected(range(3))
