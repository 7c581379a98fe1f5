"""Automatic chunk sizes: the pace a function's workers measure, and the sizes it leads to.

Pure arithmetic, driven directly; no processes.
"""

from __future__ import annotations

import pytest

from procpool._pace import (
    MAX_CHUNK_ITEMS,
    TARGET_CHUNK_BYTES,
    TARGET_CHUNK_SECONDS,
    ChunkSizer,
    Pace,
)


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
