"""Automatic chunk sizes: the pace a function's workers measure, and the sizes it leads to.

Pure arithmetic, driven directly; no processes.
"""

from __future__ import annotations

import pytest

from procpool._pace import (
    MAP_CHUNK_MAX_BYTES,
    MAP_CHUNKS_PER_WORKER,
    MAX_CHUNK_ITEMS,
    TARGET_CHUNK_BYTES,
    TARGET_CHUNK_SECONDS,
    ChunkSizer,
    Pace,
    _busiest_workers_items,
    map_chunksize,
    stdlib_map_chunksize,
)


@pytest.mark.parametrize(("count", "item_bytes", "expected"), [
    (0, 0, 0),  # nothing to cut
    (1, 0, 1),
    (1_000_000, 0, 31_250),  # 1,000,000 / (2 workers x 16)
    (1_000_001, 0, 31_251),  # rounded up: one worker runs 15 items more, 0.003%
    (400, 0, 10),  # 13 would leave one worker 205 items and the other 195
    (1_000, MAP_CHUNK_MAX_BYTES // 3, 3),  # 32 would be 10 MiB: the bytes decide
    (1_000, MAP_CHUNK_MAX_BYTES * 2, 1),  # at least one item, however large
])
def test_map_chunks_are_sixteen_per_worker_spread_evenly_unless_their_bytes_are_too_many(
        count: int, item_bytes: int, expected: int) -> None:
    assert map_chunksize(count, 2, item_bytes) == expected


@pytest.mark.parametrize("processes", [1, 2, 3, 8])
def test_map_chunks_never_leave_a_worker_more_than_rounding_up_would(processes: int) -> None:
    for count in range(1, 2_000):
        rounded_up = max(1, -(-count // (processes * MAP_CHUNKS_PER_WORKER)))
        chosen = map_chunksize(count, processes, 0)
        assert rounded_up // 2 < chosen <= rounded_up
        assert (_busiest_workers_items(count, chosen, processes)
                <= _busiest_workers_items(count, rounded_up, processes))


def test_the_busiest_worker_is_counted_with_the_short_last_chunk() -> None:
    assert _busiest_workers_items(400, 13, 2) == 205  # 15 chunks of 13, then the 10 left
    assert _busiest_workers_items(400, 10, 2) == 200
    assert _busiest_workers_items(401, 50, 2) == 201  # the 9th chunk, one item, runs alone
    assert _busiest_workers_items(10, 4, 3) == 4  # 4, 4, 2 at once


@pytest.mark.parametrize(("count", "expected"), [(0, 0), (7, 1), (400, 50), (401, 51)])
def test_with_recycling_map_chunks_are_the_stdlibs(count: int, expected: int) -> None:
    assert stdlib_map_chunksize(count, 2) == expected


def test_the_pace_is_unknown_until_a_chunk_finishes_then_follows_the_newest() -> None:
    pace = Pace()
    assert pace.seconds_for(10) is None
    pace.observe(10, 0.1)
    assert pace.seconds_for(10) == pytest.approx(0.1)
    pace.observe(1, 0.03)  # half the weight to the newest chunk
    assert pace.seconds_per_item == pytest.approx(0.02)
    pace.observe(0, 5.0)  # an empty chunk says nothing
    assert pace.seconds_per_item == pytest.approx(0.02)


def test_a_stream_starts_with_one_item_until_something_is_measured() -> None:
    sizer = ChunkSizer(Pace())
    assert [sizer.next_size() for _ in range(3)] == [1, 1, 1]


def test_sizes_grow_at_most_twofold_towards_the_target_duration() -> None:
    pace = Pace()
    pace.observe(1, TARGET_CHUNK_SECONDS / 10)  # ten items make one target chunk
    sizer = ChunkSizer(pace)
    assert [sizer.next_size() for _ in range(6)] == [2, 4, 8, 10, 10, 10]


def test_sizes_shrink_at_once_when_items_turn_slow() -> None:
    pace = Pace()
    pace.observe(1, 1e-6)
    sizer = ChunkSizer(pace)
    for _ in range(20):
        sizer.next_size()
    assert sizer.next_size() == MAX_CHUNK_ITEMS  # however fast, never more than this
    pace.seconds_per_item = TARGET_CHUNK_SECONDS * 2  # one item is already two targets
    assert sizer.next_size() == 1


def test_large_items_keep_chunks_small_in_bytes() -> None:
    pace = Pace()
    pace.observe(1, 1e-6)
    sizer = ChunkSizer(pace)
    sizer.sent(1, TARGET_CHUNK_BYTES // 4)  # four items fill a chunk's byte budget
    assert [sizer.next_size() for _ in range(4)] == [2, 4, 4, 4]
