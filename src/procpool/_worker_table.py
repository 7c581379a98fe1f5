"""The dispatcher's workers: one record per worker it started, from its start to its release.

Owns each worker's handle and what the dispatcher keeps about it: its reply stream, the mirror
of its function cache, its shared-memory account, its peak memory, whether its pipe is still
worth listening to, why it was killed, if it was, and the pool's claims on queued chunks
(procpool._claims). Starting a worker, sending it a chunk, taking queued chunks back, reading
its replies, asking it to stop, killing them all, telling how one died, and releasing one
(reap, close, remove what it left behind) each happen here, once.

Used by the dispatcher thread only. It decides nothing: the scheduler says which worker to
start, stop or kill, and when; what a reply means is the dispatcher's to act on.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Iterable, Iterator, Sequence
from multiprocessing.connection import wait

from . import _shared_memory as shared_memory
from ._backends import Backend, WorkerHandle
from ._claims import Claims
from ._framing import CorruptStream, FrameReader, new_scratch, send_to_worker
from ._log import logger
from ._messages import RunChunk, Stop, decode, encode
from ._runtime_typing import TYPE_CHECKING
from ._scheduler_events import Death
from ._task import Chunk
from ._worker import FunctionCache
from ._worker_setup import WorkerSetups

if TYPE_CHECKING:
    from typing import Any


# terminate(): how long workers get to exit after SIGTERM before SIGKILL, and how long after
# SIGKILL before the dispatcher gives up on them (only a thread worker can outlive that).
TERMINATE_GRACE = 1.0
KILL_WAIT = 5.0


class WorkerRecord:
    """What the dispatcher holds for one worker."""

    __slots__ = (
        "chunks_sent",
        "functions",
        "handle",
        "listening",
        "lost_because",
        "peak_rss",
        "reader",
        "segments",
        "unsent",
        "withdrawn_through",
        "worker_id",
    )

    def __init__(self, handle: WorkerHandle, reader: FrameReader,
                 segments: shared_memory.WorkerSegments | None = None) -> None:
        self.handle = handle
        self.reader = reader  # its replies, taken off its pipe without ever waiting
        # The dispatcher's exact mirror of the worker's function cache (same size, same order
        # of use): which functions a chunk must carry.
        self.functions = FunctionCache()
        self.segments = segments  # None: no shared memory
        self.peak_rss: int | None = None
        # False once its pipe reached its end, or carried bytes that are not replies: only
        # its sentinel can tell anything more.
        self.listening = True
        self.lost_because: str | None = None  # why the dispatcher killed it, for its death's error
        self.worker_id = handle.worker_id  # read a few times per chunk
        # Messages of queued chunks not written yet (send_chunk's ``later``), in order.
        self.unsent: list[bytes] = []
        self.chunks_sent = 0  # as the worker counts what it receives (procpool._claims)
        # Every chunk up to this number is started or taken back: the last one sent when a
        # withdrawal was last tried. Those queued since are after it.
        self.withdrawn_through = 0


class WorkerTable:
    """Every worker a dispatcher has started and not yet released: ``active`` ones (the
    scheduler's workers) and ``retiring`` ones (asked to stop, not yet exited).

    The dispatcher thread alone changes it, and only through these methods, which also
    publish ``pids``: an immutable snapshot that other threads may read at any time.
    """

    def __init__(self, backend: Backend, setups: WorkerSetups, segment_prefix: str | None,
                 parent_fds: Sequence[int]) -> None:
        self._backend = backend
        self._setups = setups
        self._segment_prefix = segment_prefix
        self._parent_fds = list(parent_fds)  # the dispatcher's own, for forked children to close
        self.active: dict[int, WorkerRecord] = {}
        self.retiring: dict[int, WorkerRecord] = {}
        self.pids: tuple[int | None, ...] = ()  # of the active workers; replaced, never changed
        self._oom_kills_seen = _oom_kill_count()
        self._read_scratch = new_scratch()  # every reader's: the dispatcher reads one at a time
        # Where queued chunks can be taken back (workers that are processes of their own)
        self._claims = Claims() if backend.own_processes else None

    def __bool__(self) -> bool:
        return bool(self.active or self.retiring)

    def records(self) -> Iterator[WorkerRecord]:
        yield from self.active.values()
        yield from self.retiring.values()

    def start(self, worker_id: int, index: int) -> WorkerRecord:
        """Start a worker in place ``index`` (raises what the backend raises, and what the
        pool's worker_env function raises)."""
        setup = self._setups.for_index(index)
        if self._claims is not None:
            setup = setup._replace(claims=self._claims.for_worker(worker_id))
        private_fds = list(self._parent_fds)
        for record in self.records():
            private_fds += record.handle.private_fds()
        try:
            handle = self._backend.start_worker(worker_id, setup, private_fds)
        except BaseException:
            if self._claims is not None:
                self._claims.forget(worker_id)
            raise
        prefix = self._segment_prefix
        record = WorkerRecord(
            handle, FrameReader(handle.connection.fileno(), self._read_scratch),
            segments=None if prefix is None else shared_memory.WorkerSegments(prefix))
        self.active[worker_id] = record
        self._publish()
        return record

    def send_chunk(self, worker_id: int, chunk: Chunk, *, later: bool = False) -> None:
        """Send ``chunk`` to an active worker, with its function's pickle unless the worker
        holds it already (the mirror of its cache says), and its segments accounted to it.
        ``later``: it is queued behind the worker's running chunk, and may go out with the
        next ``flush`` (whatever else is sent to the worker flushes first: nothing overtakes
        it), several in one write; until it starts, ``withdraw`` can take it back."""
        record = self.active.get(worker_id)
        if record is None:
            return  # the pool broke while carrying out earlier actions; the chunk failed then
        function = chunk.function
        payload: bytes | None = None
        if function.function_id in record.functions:
            record.functions.use(function.function_id)
        else:
            record.functions.add(function.function_id, None)
            payload = function.payload
        message = RunChunk(
            chunk.chunk_id, function.function_id, payload, chunk.items_payload, int(chunk.mode),
            chunk.size, chunk.policy.reports_each_item,
            () if chunk.segments is None else chunk.segments.names, self._segment_prefix,
            chunk.policy.exit_fails_task, withdrawable=later and self._claims is not None,
        )
        record.chunks_sent += 1
        if record.segments is not None:
            record.segments.sent(chunk)
        record.unsent.append(encode(message))
        if not later:
            self._write_unsent(record)

    def flush(self, record: WorkerRecord | None = None) -> None:
        """Write what was sent ``later`` to ``record``'s worker, or to every active one."""
        for each in self.active.values() if record is None else (record,):
            if each.unsent:
                self._write_unsent(each)

    def _write_unsent(self, record: WorkerRecord) -> bool:
        """Write what waits for ``record``'s worker; False if the write failed. A worker that
        is dying fails it; its sentinel then fails its chunk with the exit status, which says
        far more than a broken pipe."""
        messages, record.unsent = record.unsent, []
        try:
            send_to_worker(record.handle.connection.fileno(), *messages)
        except OSError:
            return False
        return True

    def withdraw(self, worker_id: int, count: int) -> int | None:
        """Take back those of the last ``count`` chunks sent ``later`` to an active worker that
        it has not started: how many, counted from the last (all ``count`` if it started none;
        fewer if it has gone on to the first of them, and so is done with every chunk before
        them). It never starts those, and skips each, saying so (``skipped``). None where
        nothing can be taken back: it has ended, or its backend's workers cannot give chunks
        back. A message not written yet is still written, to keep the worker's count of what
        it received in step."""
        record = self.active.get(worker_id)
        if record is None or self._claims is None:
            return None
        # The queued chunks are the last sent, but for those a withdrawal found started and
        # left queued, numbered before the ones it took back: none of those can be taken.
        last = record.chunks_sent
        first = max(last - count + 1, record.withdrawn_through + 1)
        record.withdrawn_through = last
        if first > last:
            return 0
        taken = self._claims.withdraw(worker_id, first, last)
        if taken and record.segments is not None:
            record.segments.withdrawn(taken)
        return taken

    def first_call_since(self, worker_id: int, chunk_id: int) -> float | None:
        """Since when (``time.monotonic``) an active worker has been calling the first item
        of chunk ``chunk_id``; None if it has not begun to (it is loading the function or the
        items); ``-inf`` if that cannot be told (it has ended, or this backend's workers keep
        no claims file): long enough ago."""
        if worker_id not in self.active or self._claims is None:
            return -math.inf
        return self._claims.calling_since(worker_id, chunk_id)

    def skipped(self, record: WorkerRecord, number: int) -> None:
        """``record``'s worker skipped its ``number``-th chunk, taken back by ``withdraw``."""
        if self._claims is not None:
            self._claims.release(record.worker_id, number)

    def is_listening(self, record: WorkerRecord) -> bool:
        """Whether ``record``'s replies still count: it is active and its stream is sound."""
        return record.listening and self.active.get(record.worker_id) is record

    def worth_reading(self, record: WorkerRecord) -> bool:
        """Whether ``record``'s pipe may be read now: its stream is sound, it is still one of
        this table's workers (active, or retiring), and no command closed its pipe (whose
        number may then already name another descriptor)."""
        return (record.listening and self._holds(record)
                and not record.handle.connection.closed)

    def _holds(self, record: WorkerRecord) -> bool:
        """Whether ``record`` is still one of this table's workers, active or retiring."""
        table = self.active if record.worker_id in self.active else self.retiring
        return table.get(record.worker_id) is record

    def replies(self, record: WorkerRecord) -> tuple[list[Any], str | None]:
        """The replies ``record``'s pipe holds now (one read: never waits), decoded, and why
        its stream cannot be trusted any more, if it cannot: bytes that are not procpool's
        (a task wrote into the worker's reply pipe, whose descriptor it holds), or a reply
        that cannot be read. The replies before such bytes are procpool's and count; the
        caller then loses the worker (``lose_stream``). The end of the stream stops the
        listening (its sentinel will say how it ended)."""
        try:
            payloads = record.reader.read()
        except (EOFError, OSError):
            record.listening = False
            return [], None
        except CorruptStream as exc:
            messages, _ = _decode(exc.complete)
            return messages, (f"its reply pipe was corrupted ({exc}); a task wrote to a "
                              f"descriptor it inherited")
        messages, error = _decode(payloads)
        return messages, None if error is None else f"a reply could not be read ({error!r})"

    def lose_stream(self, record: WorkerRecord, why: str) -> None:
        """Stop listening to a worker and kill it, unless it has ended already: its death
        fails (or retries) what it held, with ``why`` as the cause."""
        record.listening = False
        if not self._holds(record):
            return  # released (a reply before broke the pool): nothing left to kill
        logger().error("procpool: killing worker pid %s: %s", record.handle.pid, why)
        record.lost_because = why
        record.handle.kill(force=True)

    def lost(self, record: WorkerRecord) -> Death:
        """An active worker ended without being asked to: release it, and say how it died."""
        del self.active[record.worker_id]
        self._publish()
        handle = record.handle
        exitcode = handle.reap()
        oom_kills = _oom_kill_count()
        death = Death(handle.pid, exitcode, record.peak_rss,
                      oom_killed=exitcode == -signal.SIGKILL and oom_kills > self._oom_kills_seen,
                      cause=record.lost_because or handle.loss_cause)
        self._oom_kills_seen = oom_kills
        self.release(record)
        return death

    def _publish(self) -> None:
        self.pids = tuple(record.handle.pid for record in self.active.values())

    def close(self) -> None:
        """The pool has ended, and every worker with it: let go of what the workers shared
        (the initializer may hold Locks and Queues)."""
        self._setups.forget_init()
        if self._claims is not None:
            self._claims.close()

    def retire(self, worker_id: int) -> None:
        """Ask an active worker to exit once idle; its exit is not a death."""
        record = self.active.pop(worker_id, None)
        if record is None:
            return  # died before it could be asked
        self._publish()
        self.retiring[worker_id] = record
        record.unsent.append(encode(Stop()))  # after whatever it was sent
        if not self._write_unsent(record):
            record.handle.kill(force=True)  # it would not read its Stop: end it now

    def kill(self, worker_id: int) -> None:
        """SIGKILL a worker (and its process group): its sentinel then reports it."""
        record = self.active.get(worker_id)
        if record is None:
            record = self.retiring.get(worker_id)
            if record is None:
                return  # it has ended already
            logger().warning("worker pid %s did not exit in time after it was asked to (a "
                             "non-daemon thread left running?); killing it",
                             record.handle.pid)
        record.handle.kill(force=True)

    def waitables(self) -> list[Any]:
        """What the dispatcher's wait watches for the workers: each worker's pipe while it is
        worth listening to, and every worker's sentinel."""
        waitables: list[Any] = []
        for record in self.active.values():
            # A killed thread-backed worker (inline, Dask relay) has its pipe closed by
            # kill(): only its sentinel is left to report the end.
            if record.listening and not record.handle.connection.closed:
                waitables.append(record.handle.connection)
            waitables.append(record.handle.sentinel)
        for record in self.retiring.values():
            if record.listening and not record.handle.connection.closed:
                waitables.append(record.handle.connection)  # what it logs as it stops
            waitables.append(record.handle.sentinel)
        return waitables

    def retired(self, ready: Iterable[Any]) -> list[WorkerRecord]:
        """The retiring workers whose sentinel is in ``ready``: they have exited, and are
        no longer retiring. The caller reads what their pipes hold, then releases them."""
        ready = set(ready)
        exited = []
        for worker_id, record in list(self.retiring.items()):
            if record.handle.sentinel in ready:
                del self.retiring[worker_id]
                exited.append(record)
        return exited

    def kill_all(self, *, force: bool = False) -> None:
        """End every worker: SIGTERM (SIGKILL with ``force``), SIGKILL for those still alive
        after a grace period; then release them all."""
        records = list(self.records())
        self.active.clear()
        self.retiring.clear()
        self._publish()
        handles = [record.handle for record in records]
        for handle in handles:
            handle.kill(force=force)
        alive = _wait_for_exit(handles, TERMINATE_GRACE)
        for handle in alive:
            handle.kill(force=True)  # ignored SIGTERM
        for handle in _wait_for_exit(alive, KILL_WAIT):
            logger().error("worker pid %s did not exit after SIGKILL", handle.pid)
        for record in records:
            self.release(record)

    def release(self, record: WorkerRecord) -> None:
        """The worker has ended: reap it, close the parent's ends, and remove the segments it
        left behind."""
        record.handle.reap()
        record.handle.close()
        if record.segments is not None:
            record.segments.worker_ended()
        if self._claims is not None:
            self._claims.forget(record.worker_id)


def _wait_for_exit(handles: Iterable[WorkerHandle], timeout: float) -> list[WorkerHandle]:
    """Wait until every handle's sentinel fires or ``timeout`` passes; return the survivors."""
    pending = {handle.sentinel: handle for handle in handles}
    deadline = time.monotonic() + timeout
    while pending:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        for sentinel in wait(list(pending), remaining):
            del pending[sentinel]
    return list(pending.values())


def _oom_kill_count() -> int:
    """How many processes the kernel's OOM killer has killed since boot (Linux; else 0)."""
    try:
        with open("/proc/vmstat", "rb") as vmstat:
            counters = vmstat.read()  # one read and a search: read at every worker's exit
        start = counters.find(b"\noom_kill ") + 1
        if start:
            return int(counters[start:counters.index(b"\n", start)].split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _decode(payloads: list[bytearray]) -> tuple[list[Any], BaseException | None]:
    """The payloads decoded, up to the first that cannot be, and why that one could not."""
    messages = []
    for payload in payloads:
        try:
            messages.append(decode(payload))
        except BaseException as exc:  # unpickling runs code, even sys.exit(): contain it
            return messages, exc
    return messages, None
