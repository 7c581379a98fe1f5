"""Who starts a chunk queued on a worker: the worker, or the parent, which took it back.

A chunk queued behind a worker's running one waits in the worker's pipe, and a pipe cannot
give it back. When the running call overruns its estimate (it hangs, say), the parent takes
the queued chunks back to run them elsewhere: that is safe only if the worker has not
started one of them and never will. Both sides settle this on one anonymous file per pool,
a region of it per live worker, numbering a worker's chunks from 1 in the order they were
sent:

- the worker, before it starts its n-th chunk, which was queued, takes a POSIX record lock
  on byte n of its region, skips the chunk if it cannot, and else writes n as the region's
  *mark* (the highest number it has started) and lets go of the byte
  (``WorkerClaims.take``);
- the parent takes back chunks ``first`` .. ``last`` by locking their bytes in one call
  (which fails while the worker is between its lock and its mark), then reading the mark:
  the chunks above it are the parent's now, and it lets go at once of the bytes of those at
  or below it, which the worker has started (``Claims.withdraw``). It holds the others until
  the worker says it skipped those chunks (``Claims.release``).

The kernel orders the two lock calls, so each chunk is started by the worker or taken back by
the parent, never both, and never neither: a byte the parent locks it keeps, unless the worker
has passed it. (Letting go of the whole range when the worker had started one of them, as a
first version did, left a moment in which the worker, going on to the next chunk, found its
byte locked and skipped it, while the parent counted on it to run: an answer lost, found by a
loop of cancels in 2026-12.) So a withdrawal takes back the chunks the worker has not reached,
all of them or the last few. The mark outlives the worker: a worker that started a chunk and then
died (its locks died with it) still says so. The parent never waits for a lock, so a stuck
worker blocks nothing. Few locks exist at any time, which matters: the kernel walks a file's
locks on every lock call. A region is used again once its worker has ended (its mark reset),
so the file holds a page per live worker. The file has no name, so nothing is left behind,
even by a killed parent.

The region also says since when the worker has been calling the first item of a chunk that
reports each item: the chunk's id (the pool's: the worker's numbers skip what was taken back)
and the time (``time.monotonic``, one clock for every process of the machine), written once
the function and the items are loaded (``WorkerClaims.calling``, ``Claims.calling_since``).
A task's timeout counts from then, not from loading: importing the function's module in a
fresh worker (a second of imports is common) is the pool's start-up, not the task's run.

Record locks belong to a process, not a thread: only workers that are processes of their
own may take part (the local backend). Owns the file, its regions and the byte arithmetic;
knows nothing of chunks, schedules or pipes.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import time
from multiprocessing import context, reduction

from ._runtime_typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

# Bytes per worker's region: more chunks than a worker can run (10^12). The first bytes hold
# data (where the chunks' bytes are locks: the two never interfere): its mark (8 bytes), then
# the chunk whose first item it calls and since when (_CALLING).
REGION = 1 << 40
_MARK = 8
_CALLING = struct.Struct("<qd")  # a chunk's id, the time.monotonic() its first call began
_NO_CHUNK = -1  # what a new region says it calls (chunk ids start at 0)


def _anonymous_file() -> int:
    """A descriptor of a new file with no name, open for reading and writing."""
    if hasattr(os, "memfd_create"):  # Linux: no directory, and no tempfile import at start
        return os.memfd_create("procpool-claims")
    import tempfile

    with tempfile.TemporaryFile() as file:  # created, then unlinked at once
        return os.dup(file.fileno())


def _lock(fd: int, start: int, length: int) -> bool:
    """Take bytes ``start`` .. ``start + length - 1`` for this process, without waiting;
    False if another process holds any of them (then none is taken)."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, length, start)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):  # EACCES: what POSIX also allows
            return False
        raise
    return True


def _unlock(fd: int, start: int, length: int) -> None:
    """Let go of bytes ``start`` .. ``start + length - 1`` (only this process's own locks)."""
    fcntl.lockf(fd, fcntl.LOCK_UN, length, start)


class Claims:
    """The parent's side: one per pool, used by the dispatcher thread alone."""

    def __init__(self) -> None:
        self._fd = _anonymous_file()
        self._regions: dict[int, int] = {}  # worker id -> offset of its region
        self._free: list[int] = []  # regions of workers that have ended
        self._allocated = 0

    def for_worker(self, worker_id: int) -> WorkerClaims:
        """A region for a new worker, its mark reset: what it needs to claim its chunks
        (part of its setup)."""
        if self._free:
            region = self._free.pop()
        else:
            region, self._allocated = self._allocated * REGION, self._allocated + 1
        os.pwrite(self._fd, bytes(_MARK) + _CALLING.pack(_NO_CHUNK, 0.0), region)
        self._regions[worker_id] = region
        return WorkerClaims(self._fd, region)

    def withdraw(self, worker_id: int, first: int, last: int) -> int:
        """Take chunks ``first`` .. ``last`` back from worker ``worker_id``, those it has not
        started: how many, counted from ``last`` (all of them, the last few, or none). The
        worker never starts those. ``last`` is the last chunk sent to it, so that it cannot
        have gone past them: one it skipped while the parent held the bytes is above the
        mark, and counted as taken back."""
        if last < first:  # a length of 0 would lock to the end of the file: every region
            raise ValueError(f"no chunks to withdraw between {first} and {last}")
        region = self._regions[worker_id]
        if not _lock(self._fd, region + first, last - first + 1):
            return 0  # it is claiming one of them right now: it goes on from there
        mark = int.from_bytes(os.pread(self._fd, _MARK, region), "little")
        if mark >= first:  # it has started chunks up to the mark: those bytes are its
            _unlock(self._fd, region + first, min(mark, last) - first + 1)
        return max(0, last - max(mark, first - 1))

    def calling_since(self, worker_id: int, chunk_id: int) -> float | None:
        """Since when (``time.monotonic``) worker ``worker_id`` has been calling the first item
        of chunk ``chunk_id``; None if it has not begun to (it is still loading the function
        or the items)."""
        region = self._regions[worker_id]
        calling, since = _CALLING.unpack(os.pread(self._fd, _CALLING.size, region + _MARK))
        return since if calling == chunk_id else None

    def release(self, worker_id: int, number: int) -> None:
        """Worker ``worker_id`` skipped its ``number``-th chunk, taken back: the byte can
        go (the worker never comes back to it)."""
        region = self._regions.get(worker_id)
        if region is not None:  # else forgotten already, and every byte of it let go
            _unlock(self._fd, region + number, 1)

    def forget(self, worker_id: int) -> None:
        """The worker has ended: its region is free for another, the parent's bytes in it
        let go."""
        region = self._regions.pop(worker_id, None)
        if region is not None:
            _unlock(self._fd, region, REGION)
            self._free.append(region)

    def close(self) -> None:
        """The pool has ended, and every worker with it."""
        os.close(self._fd)


class WorkerClaims:
    """A worker's side: its region of the pool's claims file. Travels to the worker in its
    setup: inherited as it is under fork, the descriptor passed along by multiprocessing
    under spawn and forkserver."""

    __slots__ = ("_fd", "_region")

    def __init__(self, fd: int, region: int) -> None:
        self._fd = fd
        self._region = region

    def take(self, number: int) -> bool:
        """Claim the worker's ``number``-th chunk, which was queued: False if the parent
        took it back (it runs elsewhere, and must be skipped). Numbers only rise."""
        byte = self._region + number
        if not _lock(self._fd, byte, 1):
            return False
        os.pwrite(self._fd, number.to_bytes(_MARK, "little"), self._region)
        _unlock(self._fd, byte, 1)  # the mark says it from now on
        return True

    def calling(self, chunk_id: int) -> None:
        """The worker begins to call the first item of chunk ``chunk_id``, now."""
        os.pwrite(self._fd, _CALLING.pack(chunk_id, time.monotonic()), self._region + _MARK)

    def __reduce__(self) -> tuple[Any, ...]:
        if context.get_spawning_popen() is None:
            raise TypeError("a worker's claims travel only to the worker as it starts")
        return _rebuild, (reduction.DupFd(self._fd), self._region)


def _rebuild(duplicate: Any, region: int) -> WorkerClaims:
    fd = duplicate.detach()
    os.set_inheritable(fd, False)  # passed to the worker inheritable: not on to what it runs
    return WorkerClaims(fd, region)
