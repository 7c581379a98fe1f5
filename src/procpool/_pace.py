"""How long tasks take, and the chunk sizes that follow from it.

Owns ``Pace`` (one per task function: the seconds an item takes, as the workers measure each
chunk) and ``ChunkSizer`` (one per stream: the size of its next chunk). Chunks sized this way
carry about ``TARGET_CHUNK_SECONDS`` of work: long enough that the per-chunk cost in the parent
(pickling, a message each way, a wake-up per thread) is a small fraction of it, short enough
that a stream's results come out steadily and, at its end, no worker waits long on another.
Nobody has to tune ``chunksize`` for that; an explicit one is always obeyed.
"""

from __future__ import annotations

# The work one automatically sized chunk should carry. The scheduler queues a chunk behind a
# running one only if it would start within QUEUE_MAX_SECONDS (20 ms): this lets one or two
# wait behind each running chunk.
TARGET_CHUNK_SECONDS = 0.01
# A chunk's pickled arguments should stay under this, so it can be queued (QUEUE_MAX_BYTES)
# and a stream's memory stays small when its items are large.
TARGET_CHUNK_BYTES = 24 * 1024
# However fast the items, a chunk holds at most this many (bounds a stream's memory).
MAX_CHUNK_ITEMS = 4096
# How many chunks a stream (imap, executor map and amap) keeps submitted ahead of its
# consumer by default, per worker: enough to keep every worker busy while results are taken.
CHUNKS_PER_WORKER = 4
# Pool.map's chunks carry at most about this many bytes of arguments, their buffers counted
# (map_chunksize): large items (arrays) then flow through a few at a time, while the parent
# writes the next ones and reads results, instead of a quarter of the input per worker at
# once. 200 arrays of 8 MB through numpy.sin: 1.6x the serial loop's time with the stdlib's
# chunks of 25, 1.0x with one array a chunk (docs/performance.md).
MAP_CHUNK_MAX_BYTES = 4 * 1024 * 1024
# How many chunks per worker Pool.map cuts its input into: four times the stdlib's four. The
# parent takes the first results in while the workers compute, and the last chunk leaves a
# shorter tail (a million tiny tasks: docs/performance.md).
MAP_CHUNKS_PER_WORKER = 16
STDLIB_MAP_CHUNKS_PER_WORKER = 4


def stdlib_map_chunksize(count: int, processes: int) -> int:
    """The stdlib Pool.map's chunk size (0 for an empty input). procpool keeps it where chunks
    are counted (maxtasksperchild)."""
    chunksize, extra = divmod(count, processes * STDLIB_MAP_CHUNKS_PER_WORKER)
    return chunksize + bool(extra)


def map_chunksize(count: int, processes: int, item_bytes: int) -> int:
    """Pool.map's chunk size for ``count`` items of about ``item_bytes`` each.

    About MAP_CHUNKS_PER_WORKER chunks per worker, of at most MAP_CHUNK_MAX_BYTES; then, from
    that size down to half of it, the largest that leaves the busiest worker the fewest items
    if every item took as long (stopping at the first within 0.5% of an even share). Rounding
    up alone can leave an odd chunk out: 400 items on 2 workers in chunks of 13 make 31
    chunks, and one worker runs 205 items while the other runs 195; chunks of 10 give each
    200 (as the stdlib's 50 happen to)."""
    if count <= 0:
        return 0
    largest = -(-count // (processes * MAP_CHUNKS_PER_WORKER))
    largest = max(1, min(largest, MAP_CHUNK_MAX_BYTES // max(1, item_bytes)))
    enough = -(-count // processes) * 201 // 200  # the fair share, give or take 0.5%
    best, fewest = largest, _busiest_workers_items(count, largest, processes)
    for size in range(largest - 1, largest // 2, -1):
        if fewest <= enough:
            break
        items = _busiest_workers_items(count, size, processes)
        if items < fewest:
            best, fewest = size, items
    return best


def _busiest_workers_items(count: int, chunksize: int, processes: int) -> int:
    """How many items the busiest worker runs when ``count`` items of equal duration go out
    in chunks of ``chunksize``, each chunk to the first worker free."""
    chunks = -(-count // chunksize)
    rounds = -(-chunks // processes)
    if chunks % processes == 1:  # the last round is the last chunk alone, maybe a short one
        return (rounds - 1) * chunksize + count - (chunks - 1) * chunksize
    return rounds * chunksize


class Pace:
    """How long one item of a task function takes to run, as its workers measure it.

    The dispatcher thread records each finished chunk; feeder threads read it to size the next
    chunk of a stream, and the scheduler to decide whether a chunk is short enough to queue
    behind another. One float, replaced whole (atomic under the GIL), so it needs no lock.
    """

    __slots__ = ("seconds_per_item",)

    def __init__(self) -> None:
        self.seconds_per_item: float | None = None  # None until a chunk has finished

    def observe(self, items: int, seconds: float) -> None:
        if items <= 0 or seconds < 0:
            return
        sample = seconds / items
        previous = self.seconds_per_item
        # Half the weight to the newest chunk: follows a change within a few chunks, yet one
        # odd item does not swing it far.
        self.seconds_per_item = sample if previous is None else (previous + sample) / 2

    def seconds_for(self, items: int) -> float | None:
        """How long ``items`` items are expected to take; None before any measurement."""
        per_item = self.seconds_per_item
        return None if per_item is None else per_item * items


class ChunkSizer:
    """The size of a stream's next chunk: the caller's ``chunksize`` when given, else sized
    from the function's pace.

    Starts at one item, so the first result comes as soon as the first task is done; then
    follows the pace towards TARGET_CHUNK_SECONDS of work per chunk, at most doubling from
    one chunk to the next (a first quick item must not buy a huge chunk of slow ones), and
    shrinking at once when items turn out slower or larger.
    """

    def __init__(self, pace: Pace, chunksize: int | None = None) -> None:
        self._pace = pace
        self._fixed = chunksize
        self._size = 1
        self._bytes_per_item: float | None = None

    def next_size(self) -> int:
        if self._fixed is not None:
            return self._fixed
        ideal = MAX_CHUNK_ITEMS
        seconds = self._pace.seconds_per_item
        if seconds is None:
            return self._size  # nothing measured yet: stay at one item
        if seconds > 0:
            ideal = min(ideal, int(TARGET_CHUNK_SECONDS / seconds))
        if self._bytes_per_item:
            ideal = min(ideal, int(TARGET_CHUNK_BYTES / self._bytes_per_item))
        self._size = max(1, min(ideal, self._size * 2))
        return self._size

    def sent(self, items: int, payload_bytes: int) -> None:
        """A chunk of ``items`` items was pickled to ``payload_bytes`` bytes."""
        if items > 0:
            self._bytes_per_item = payload_bytes / items
