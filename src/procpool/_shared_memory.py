"""Large buffers across the process boundary through POSIX shared memory.

Owns the out-of-band path of pickle protocol 5. While a chunk's arguments or results are
pickled, every contiguous buffer of MIN_SHARED_BYTES or more that an object exposes (a numpy
array's data, a ``pickle.PickleBuffer``) is written to a shared-memory segment of its own
instead of into the pickle. The receiver maps the segments and unpickles with them: the data
crosses once, instead of through a pipe with a copy on each side, and the receiver's arrays
use the mapping itself. Payloads that expose no large buffer are plain pickles, as before.

Who removes a segment's name (its memory lives on while something maps it):

- Arguments are created by the parent for one chunk. The worker that runs the chunk maps them
  (``ChunkArguments``) and, once it has written the chunk's results, removes them, or renames
  one that nothing maps any more to a result's name and writes that result over its pages
  (reused pages cost half as much to write as fresh ones, which the kernel must zero: the
  caller keeps every result, so a result always needs pages of its own, but an argument's
  need not be fresh). A chunk that never reaches a worker (failed, cancelled, abandoned) has its
  segments removed by the parent (``SharedSegments.release``, at the latest when the chunk is
  garbage-collected or the interpreter exits). When the worker running it dies, the parent
  removes them too.
- Results are created by a worker, numbered per chunk (written fresh, or renamed from an
  argument's segment, in the order of their numbers). The parent maps and removes them as it
  reads each reply. When the worker dies first, the parent removes the rest of that chunk's
  numbers in turn until one is missing (``remove_numbered``).
- When the parent itself is killed, its workers remove every segment named after it before
  they exit (``remove_all_of``; Linux, where /dev/shm can be listed), and the janitor
  (``_janitor.py``) removes them again once every worker has exited: a worker that was stuck
  in C, or still creating a segment as it swept, leaves nothing behind.

Segments are opened with ``_posixshmem``, as ``multiprocessing.shared_memory`` does, but with
none of its resource-tracker registration: on Python 3.10-3.12 that registration makes every
process that merely attaches a segment remove it when it exits (``track=False`` only arrived
in 3.13). Where ``_posixshmem`` is missing, or a segment cannot be written (/dev/shm full),
buffers simply stay in the pickle.
"""

from __future__ import annotations

import collections
import contextlib
import mmap
import os
import pickle
import weakref
from collections.abc import Iterable

from . import _codec

TYPE_CHECKING = False  # not typing's: a worker must not import typing to start (_messages.py)
if TYPE_CHECKING:
    from typing import Any

    from ._task import Chunk

try:
    import _posixshmem  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - not on POSIX
    _posixshmem = None

# Buffers smaller than this stay in the pickle: a segment costs a few system calls and fresh
# pages, which only pays for itself on large data.
MIN_SHARED_BYTES = 256 * 1024
PROTOCOL = _codec.PROTOCOL
_SHM_DIR = "/dev/shm"
# Segments can be renamed where they are files of a listable directory (Linux): only there is
# an argument's segment reused for a result.
_RENAMES = os.path.isdir(_SHM_DIR)


def available() -> bool:
    return _posixshmem is not None


def parent_prefix(parent_pid: int) -> str:
    """The start of every segment name of the pool processes of ``parent_pid``."""
    return f"/procpool-{parent_pid}-"


class SegmentNames:
    """Hands out the names of one chunk's argument or result segments: base0, base1, ...;
    ``nbytes`` counts what was written to them (a stream sizes its chunks by it)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.count = 0
        self.nbytes = 0

    def next(self) -> str:
        name = f"{self.base}{self.count}"
        self.count += 1
        return name


class SharedSegments:
    """The parent's hold on one chunk's argument segments (``nbytes`` in all): removed by
    ``release()``, or when this object is garbage-collected, or at interpreter exit, whichever
    comes first."""

    def __init__(self, names: tuple[str, ...], nbytes: int) -> None:
        self.names = names
        self.nbytes = nbytes
        self._finalizer = weakref.finalize(self, remove, names)

    def release(self) -> None:
        self._finalizer()


def dumps(obj: Any, names: SegmentNames,
          reusable: list[str] | None = None) -> tuple[bytes, tuple[str, ...]]:
    """Pickle ``obj`` with its large buffers in segments; the pickle and the segments' names.
    ``reusable``: segments nothing maps any more (a worker's idle argument segments), taken
    from the list one per buffer while it lasts and renamed, instead of new ones.

    Falls back to cloudpickle as ``_codec.dumps`` does, and to buffers in the pickle when a
    segment cannot be written. Raises what the picklers raise.
    """
    large: list[pickle.PickleBuffer] = []

    def out_of_band(buffer: pickle.PickleBuffer) -> bool:
        view = memoryview(buffer)
        if view.nbytes < MIN_SHARED_BYTES or not view.contiguous:
            return True  # in the pickle
        large.append(buffer)
        return False

    try:
        data = pickle.dumps(obj, PROTOCOL, buffer_callback=out_of_band)
    except Exception:  # what plain pickle cannot carry, cloudpickle may (functions, classes)
        large.clear()
        data = _codec.dumps_by_value(obj, buffer_callback=out_of_band)
    if not large:
        return data, ()
    created: list[str] = []
    try:
        for buffer in large:
            name = names.next()
            created.append(name)
            raw = buffer.raw()
            if reusable:
                _write_over(reusable.pop(), name, raw)
            else:
                _write(name, raw)
            names.nbytes += raw.nbytes
    except OSError:  # no room in /dev/shm, say: the buffers travel in the pickle instead
        remove(created)
        return _codec.dumps(obj), ()
    except BaseException:
        remove(created)
        raise
    return data, tuple(created)


def loads(data: bytes, names: Iterable[str] = ()) -> Any:
    """Unpickle ``data`` with the buffers in segments ``names``, which are removed here (the
    mappings keep the memory)."""
    names = tuple(names)
    if not names:
        return pickle.loads(data)
    views = []
    try:
        for name in names:
            views.append(_view(_map(name, private=False)))
    finally:
        remove(names)
    return pickle.loads(data, buffers=views)


class ChunkArguments:
    """A worker's hold on the argument segments of the chunk it runs (see the rules above).

    ``load`` maps them copy-on-write, so a task that writes to its input never changes what a
    rerun of it sees. Their names stay until the chunk's results are written: ``idle`` then
    names those that nothing maps any more (closing a mapping succeeds only then), which
    ``dumps`` may reuse; ``release`` removes every name that is left.
    """

    def __init__(self, names: tuple[str, ...]) -> None:
        self._names = names
        self._mappings: list[mmap.mmap | None] = []

    def load(self, data: bytes) -> Any:
        if not self._names:
            return pickle.loads(data)
        views = []
        for name in self._names:
            mapping = _map(name, private=True)
            self._mappings.append(mapping)
            views.append(_view(mapping))
        return pickle.loads(data, buffers=views)

    def idle(self) -> list[str]:
        """The segments whose mappings could be closed: nothing of the task holds them."""
        if not _RENAMES:
            return []
        idle = []
        for name, mapping in zip(self._names, self._mappings, strict=False):  # a load cut short
            if mapping is None or mapping.closed:
                continue
            try:
                mapping.close()
            except BufferError:  # a result, or the task, still holds (part of) it
                continue
            idle.append(name)
        return idle

    def release(self) -> None:
        """Remove the names not reused (a renamed one is gone already: skipped)."""
        remove(self._names)


def remove(names: Iterable[str]) -> None:
    """Remove these segments' names; ones already gone are skipped."""
    if _posixshmem is None:
        return
    for name in names:
        with contextlib.suppress(OSError):
            _posixshmem.shm_unlink(name)


def remove_numbered(base: str, start: int = 0) -> None:
    """Remove base<start>, base<start+1>, ... up to the first that does not exist: the
    segments a dead worker created for a chunk's results and nobody read."""
    if _posixshmem is None:
        return
    number = start
    while True:
        try:
            _posixshmem.shm_unlink(f"{base}{number}")
        except FileNotFoundError:
            return
        except OSError:
            pass
        number += 1


class WorkerSegments:
    """The parent's account of one worker's segments: the chunks sent to it and not yet
    reported done, and how many result segments of each it has read. When the worker ends,
    ``worker_ended`` removes what it left: the argument segments of the chunk it was running
    (a chunk queued behind that one never started, and keeps its own: it runs elsewhere), and
    the result segments of its unfinished chunks that nobody will read."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._sent: collections.deque[Chunk] = collections.deque()
        self._results_read: dict[int, int] = {}  # chunk id -> result segments read

    def sent(self, chunk: Chunk) -> None:
        self._sent.append(chunk)

    def withdrawn(self, count: int) -> None:
        """The last ``count`` chunks sent were taken back before the worker started them
        (procpool._claims): they run elsewhere, and are no longer this worker's. (None
        ran, so none has results read.)"""
        for _ in range(count):
            self._sent.pop()

    def results_read(self, chunk: Chunk, count: int) -> None:
        """A reply of ``chunk`` (one of its items) brought ``count`` result segments, which
        the parent has mapped and removed."""
        if count:
            self._results_read[chunk.chunk_id] = self._results_read.get(chunk.chunk_id, 0) + count

    def chunk_done(self, chunk: Chunk) -> None:
        """``chunk`` is done: its worker has taken its argument segments, and we its
        results'."""
        if self._sent:
            self._sent.popleft()
        self._results_read.pop(chunk.chunk_id, None)
        if chunk.segments is not None:
            chunk.segments.release()  # removed by the worker already; this makes sure

    def worker_ended(self) -> None:
        if not self._sent:
            return
        running = self._sent[0]
        if running.segments is not None:
            running.segments.release()
        for chunk in self._sent:
            read = self._results_read.pop(chunk.chunk_id, 0)
            remove_numbered(f"{self._prefix}{chunk.chunk_id}-r", read)
        self._sent.clear()


def remove_all_of(prefix: str) -> None:
    """Remove every segment whose name starts with ``prefix`` (Linux: lists /dev/shm)."""
    try:
        entries = os.listdir(_SHM_DIR)
    except OSError:
        return
    stem = prefix.lstrip("/")
    remove("/" + entry for entry in entries if entry.startswith(stem))


def _write(name: str, data: memoryview) -> None:
    assert _posixshmem is not None
    fd = _posixshmem.shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        data = data.cast("B")
        written = 0
        while written < len(data):  # a write into tmpfs copies once, with no page faults here
            written += os.write(fd, data[written:])
    finally:
        os.close(fd)


def _write_over(old: str, name: str, data: memoryview) -> None:
    """Write ``data`` over segment ``old``'s pages, then give it the name ``name``."""
    assert _posixshmem is not None
    fd = _posixshmem.shm_open(old, os.O_RDWR, 0o600)
    try:
        data = data.cast("B")
        os.ftruncate(fd, len(data))  # a size that differs frees or adds pages at the end
        written = 0
        while written < len(data):
            written += os.pwrite(fd, data[written:], written)
    finally:
        os.close(fd)
    os.rename(f"{_SHM_DIR}{old}", f"{_SHM_DIR}{name}")


def _view(mapping: mmap.mmap | None) -> memoryview:
    """What pickle reads a buffer from: the mapping, or nothing for an empty segment."""
    return memoryview(bytearray() if mapping is None else mapping)


def _map(name: str, private: bool) -> mmap.mmap | None:
    """Segment ``name`` mapped (None when it is empty: mmap refuses a size of 0)."""
    assert _posixshmem is not None
    fd = _posixshmem.shm_open(name, os.O_RDONLY if private else os.O_RDWR, 0o600)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return None
        if private:
            return mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE,
                             prot=mmap.PROT_READ | mmap.PROT_WRITE)
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)
