"""Who starts a chunk queued on a worker: the worker, or the parent, which took it back.

A chunk queued behind a worker's running one waits in the worker's pipe, and a pipe cannot
give it back. When the running call overruns its estimate (it hangs, say), the parent takes
the queued chunks back to run them elsewhere: that is safe only if the worker has not
started one of them and never will. Both sides settle this with POSIX record locks on one
anonymous file per pool, a byte per chunk, so the kernel decides each chunk for exactly one
side:

- the worker locks the byte of its n-th chunk before it starts a chunk that was queued, and
  skips the chunk if the byte is taken (``WorkerClaims.take``); it holds the byte of the
  last chunk it claimed until it claims the next;
- the parent locks the bytes of all of a worker's queued chunks in one call, which succeeds
  only if the worker holds none of them (``Claims.withdraw``): since those are the last
  chunks sent, the worker holds one of them if it started any. The parent holds each byte
  until the worker says it skipped that chunk (``Claims.release``).

So the answer for a chunk never changes, and only a few locks exist at any time. A worker's
locks end with its process: a death frees them, and a stopped worker blocks nothing (the
parent never waits for a lock). Each worker has a region of the file of its own, from its
worker id times ``REGION``; its n-th chunk is byte n of it. The file has no name, so nothing
is left behind, even by a killed parent.

Record locks belong to a process, not a thread: only workers that are processes of their
own may take part (the local backend). Owns the file and the byte arithmetic; knows nothing
of chunks, schedules or pipes.
"""

from __future__ import annotations

import errno
import fcntl
import os
from multiprocessing import context, reduction
from typing import Any

# Bytes per worker: more chunks than a worker can run (10^12). Worker ids wrap around far
# beyond the few workers alive at once.
REGION = 1 << 40
_WORKER_IDS = 1 << 22  # REGION * _WORKER_IDS stays below 2**63, the largest offset


def _anonymous_file() -> int:
    """A descriptor of a new file with no name, open for reading and writing."""
    if hasattr(os, "memfd_create"):  # Linux: no directory, and no tempfile import at start
        return os.memfd_create("procpool-claims")
    import tempfile

    with tempfile.TemporaryFile() as file:  # created, then unlinked at once
        return os.dup(file.fileno())


def _region(worker_id: int) -> int:
    return (worker_id % _WORKER_IDS) * REGION


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


class Claims:
    """The parent's side: one per pool, used by the dispatcher thread alone."""

    def __init__(self) -> None:
        self._fd = _anonymous_file()

    def for_worker(self, worker_id: int) -> WorkerClaims:
        """What a new worker needs to claim its chunks (part of its setup)."""
        return WorkerClaims(self._fd, _region(worker_id))

    def withdraw(self, worker_id: int, first: int, last: int) -> bool:
        """Take chunks ``first`` .. ``last`` (counted from 1 in the order they were sent) back
        from worker ``worker_id``: True if it has started none of them, and then it never
        will; False if it has started one already."""
        if last < first:  # a length of 0 would lock to the end of the file: every worker's
            raise ValueError(f"no chunks to withdraw between {first} and {last}")
        return _lock(self._fd, _region(worker_id) + first, last - first + 1)

    def release(self, worker_id: int, number: int) -> None:
        """Worker ``worker_id`` skipped its ``number``-th chunk, taken back: the byte can
        go (the worker never comes back to it)."""
        fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, _region(worker_id) + number)

    def forget(self, worker_id: int) -> None:
        """The worker has ended: the parent's bytes in its region can go."""
        fcntl.lockf(self._fd, fcntl.LOCK_UN, REGION, _region(worker_id))

    def close(self) -> None:
        """The pool has ended, and every worker with it."""
        os.close(self._fd)


class WorkerClaims:
    """A worker's side: its region of the pool's claims file. Travels to the worker in its
    setup: inherited as it is under fork, the descriptor passed along by multiprocessing
    under spawn and forkserver."""

    __slots__ = ("_fd", "_held", "_region")

    def __init__(self, fd: int, region: int) -> None:
        self._fd = fd
        self._region = region
        self._held = 0  # the number of the last chunk it claimed (0: none yet)

    def take(self, number: int) -> bool:
        """Claim the worker's ``number``-th chunk, which was queued: False if the parent
        took it back (it runs elsewhere, and must be skipped).

        Only the byte of the last chunk claimed is held: the parent takes back the chunks
        queued last, so if the worker started one of them, the last it claimed is one of
        them. One lock per worker, then, where a lock per chunk would pile up thousands, which
        the kernel walks on every lock call."""
        if not _lock(self._fd, self._region + number, 1):
            return False
        if self._held:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, self._region + self._held)
        self._held = number
        return True

    def __reduce__(self) -> tuple[Any, ...]:
        if context.get_spawning_popen() is None:
            raise TypeError("a worker's claims travel only to the worker as it starts")
        return _rebuild, (reduction.DupFd(self._fd), self._region)


def _rebuild(duplicate: Any, region: int) -> WorkerClaims:
    fd = duplicate.detach()
    os.set_inheritable(fd, False)  # passed to the worker inheritable: not on to what it runs
    return WorkerClaims(fd, region)

