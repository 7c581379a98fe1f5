"""Who starts a queued chunk, the worker or the parent that takes it back (procpool._claims):
a real second process claims chunks while this one withdraws them, and the kernel decides
each chunk for exactly one side; and a real worker, whose claims spare it a needless kill."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import time
from multiprocessing.connection import Connection, wait
from pathlib import Path

import pytest

from procpool._backends.local import LocalBackend
from procpool._claims import Claims, WorkerClaims
from procpool._codec import dumps, loads
from procpool._dispatcher import Dispatcher
from procpool._framing import FrameReader, new_scratch
from procpool._messages import (
    CallMode,
    ChunkDone,
    Ready,
    RunChunk,
    Skipped,
    Stop,
    WorkerSetup,
    decode,
    encode,
)
from procpool._options import TaskPolicy
from procpool._task import Chunk, TaskFunction
from procpool._worker import worker_main
from support import WAIT, Fifos, HeldOutcome, Outcome

import misbehaving as mb


def claim_what_is_asked(claims: WorkerClaims, conn: Connection) -> None:
    """In the second process: claim each chunk number the test sends, answer whether it was
    ours; end at None."""
    while (number := conn.recv()) is not None:
        conn.send(claims.take(number))


class Worker:
    """A process holding one worker's claims, driven over a pipe."""

    def __init__(self, method: str, claims: Claims, worker_id: int) -> None:
        context = multiprocessing.get_context(method)
        self._conn, theirs = context.Pipe()
        self._process = context.Process(target=claim_what_is_asked,
                                        args=(claims.for_worker(worker_id), theirs))
        self._process.start()
        theirs.close()

    def take(self, number: int) -> bool:
        self._conn.send(number)
        assert self._conn.poll(30), "the claiming process did not answer"
        return bool(self._conn.recv())

    def end(self) -> None:
        self._conn.send(None)
        self._process.join(30)
        assert self._process.exitcode == 0
        self._conn.close()


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_each_queued_chunk_is_started_by_the_worker_or_taken_back_never_both(
        method: str) -> None:
    claims = Claims()
    try:
        worker = Worker(method, claims, worker_id=5)
        assert worker.take(1)  # it started its first queued chunk
        assert claims.withdraw(5, 1, 1) == 0
        # Chunk 1 is the worker's: of 1 .. 3, the two after it are taken back.
        assert claims.withdraw(5, 1, 3) == 2
        assert not worker.take(2) and not worker.take(3)  # so it skips them
        claims.release(5, 2)
        claims.release(5, 3)
        assert worker.take(4)
        assert claims.withdraw(5, 5, 6) == 2  # taken back before the worker got to them
        assert not worker.take(5) and not worker.take(6)
        # Another worker's chunks are its own, with the same numbers; starting it (which
        # passes it the file) lets go of none of the parent's.
        other = Worker(method, claims, worker_id=6)
        assert not worker.take(6)
        assert other.take(5)
        other.end()
        assert worker.take(7)
        # A worker that started a chunk and then died still says so: its locks died with
        # it, its mark did not.
        worker.end()
        assert claims.withdraw(5, 7, 7) == 0
        assert claims.withdraw(5, 8, 8) == 1
        # Its region goes to the next worker, reset, without the parent's bytes in it.
        claims.forget(5)
        successor = Worker(method, claims, worker_id=7)
        assert claims.withdraw(7, 2, 2) == 1
        assert successor.take(1) and not successor.take(2) and successor.take(4)
        claims.release(7, 2)
        successor.end()
    finally:
        claims.close()


def test_a_chunk_the_worker_skips_while_the_parent_decides_is_taken_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Chunks 2 and 3 wait behind chunk 1; the worker has started 1 and 2 when the parent
    # takes back 2 .. 3. The worker goes on to 3 while the parent holds the bytes and has
    # yet to read the mark (played here by a hook on that read): it cannot claim 3, so it
    # skips it. The mark then says 2 was started: 3 must count as taken back. A version
    # that let go of both bytes and said "started" left 3 run by nobody.
    claims = Claims()
    worker = Worker("fork", claims, worker_id=1)
    try:
        assert worker.take(1) and worker.take(2)
        skipped = []
        read = os.pread

        def worker_goes_on_meanwhile(fd: int, length: int, offset: int) -> bytes:
            if not skipped:
                skipped.append(not worker.take(3))
            return read(fd, length, offset)

        monkeypatch.setattr(os, "pread", worker_goes_on_meanwhile)
        taken = claims.withdraw(1, 2, 3)
        monkeypatch.undo()
        assert skipped == [True]
        assert taken == 1  # chunk 3, which the worker skipped; not chunk 2, which it runs
        claims.release(1, 3)
        assert worker.take(4)
        assert _locks_on(claims._fd) == 0
    finally:
        worker.end()
        claims.close()


def _locks_on(fd: int) -> int:
    """How many record locks the kernel keeps on the file of ``fd`` (Linux's /proc/locks)."""
    stat = os.fstat(fd)
    inode = f":{stat.st_ino} "
    with open("/proc/locks") as locks:
        return sum(1 for line in locks if "POSIX" in line and inode in line)


def test_no_lock_is_left_however_many_chunks_are_claimed_or_taken_back() -> None:
    # Every lock call walks the file's locks: a lock left per chunk made a pool slower with
    # every chunk (a worker's 5,000th claim took 50 us, its 20,000th 360 us).
    claims = Claims()
    try:
        worker = Worker("fork", claims, worker_id=1)
        for number in range(1, 601):
            if number % 10 == 0:  # taken back, then skipped
                assert claims.withdraw(1, number, number) == 1
                assert not worker.take(number)
                claims.release(1, number)
            else:
                assert worker.take(number)
        assert _locks_on(claims._fd) == 0
        worker.end()
    finally:
        claims.close()


def test_a_workers_claims_travel_only_as_it_starts_and_nothing_withdraws_all() -> None:
    claims = Claims()
    try:
        with pytest.raises(TypeError, match="only to the worker as it starts"):
            pickle.dumps(claims.for_worker(0))
        claims.forget(0)
        # The file holds a region per live worker: an ended worker's is used again.
        for worker_id in range(100):
            claims.for_worker(worker_id)
            claims.forget(worker_id)
        assert claims._allocated == 1
        # A lock of no length reaches to the end of the file, over every worker's chunks.
        with pytest.raises(ValueError, match="no chunks to withdraw"):
            claims.withdraw(0, 3, 2)
    finally:
        claims.close()


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_worker_skips_a_chunk_taken_back_and_keeps_its_function_as_the_parent_counts(
        method: str) -> None:
    # The parent's mirror of the worker's function cache counted the function a withdrawn
    # chunk carried as sent: the worker must hold it after the skip, or the next chunk of it,
    # sent without its pickle, could not run.
    claims = Claims()
    context = multiprocessing.get_context(method)
    conn, theirs = context.Pipe()
    worker = context.Process(target=worker_main,
                             args=(theirs, WorkerSetup(0, claims=claims.for_worker(1))))
    try:
        worker.start()
        theirs.close()

        def send(chunk_id: int, function_id: int, function: object, x: object) -> None:
            payload = None if function is None else dumps(function)
            conn.send_bytes(encode(RunChunk(
                chunk_id, function_id, payload, dumps([x]), CallMode.ONE_ARG.value, 1, False,
                withdrawable=chunk_id > 1)))

        send(1, 1, mb.square, 3)
        assert claims.withdraw(1, 2, 2)
        send(2, 2, mb.identity, "taken back")
        send(3, 2, None, "ran")  # mb.identity, cached by the skipped chunk
        conn.send_bytes(encode(Stop()))
        ready, first, skipped, third = _replies_until_the_end(conn)
        assert isinstance(ready, Ready) and skipped == Skipped(2)
        assert isinstance(first, ChunkDone) and isinstance(third, ChunkDone)
        assert [(r.chunk_id, loads(r.results_payload), r.failed_positions)
                for r in (first, third)] == [(1, [9], ()), (3, ["ran"], ())]
        worker.join(30)
        assert worker.exitcode == 0
    finally:
        conn.close()
        claims.close()


def _replies_until_the_end(conn: Connection) -> list[object]:
    """What a worker replied (procpool's frames) until its pipe's end."""
    reader = FrameReader(conn.fileno(), new_scratch())
    replies: list[object] = []
    while True:
        assert wait([conn], 30), "the worker neither replied nor ended"
        try:
            replies += [decode(payload) for payload in reader.read()]
        except EOFError:
            return replies


def test_since_when_a_worker_calls_a_chunks_first_item_is_told_by_the_chunks_id() -> None:
    claims = Claims()
    try:
        worker = claims.for_worker(3)
        assert claims.calling_since(3, 17) is None  # loading: nothing said yet
        assert claims.calling_since(3, 0) is None  # the first chunk's id is 0
        before = time.monotonic()
        worker.calling(17)
        since = claims.calling_since(3, 17)
        assert since is not None and before <= since <= time.monotonic()
        assert claims.calling_since(3, 16) is None  # another chunk: not this one's call
        # The next worker in the same region starts with nothing said.
        claims.forget(3)
        claims.for_worker(4)
        assert claims.calling_since(4, 17) is None
    finally:
        claims.close()


TIMEOUT = 0.2  # the `killed` chunk's task_timeout, where its kill is for a timeout


@pytest.mark.parametrize("why", ["cancel", "timeout"])
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_kill_for_a_chunk_that_is_done_is_spared_so_the_one_behind_it_runs_once(
        method: str, why: str, tmp_path: Path) -> None:
    # A real worker with chunks `killed` and `behind` queued behind `held`. The dispatcher is
    # held delivering `held`'s results (its pipe read) while the worker finishes `killed` and
    # starts `behind`; then `killed` is cancelled, or its timeout passes. To stop it, the
    # dispatcher would kill the worker, ending `behind` mid-run to run again elsewhere, for a
    # chunk already done: the claims file shows the worker has gone on, and the kill is spared.
    fifos = Fifos(tmp_path)
    go = str(tmp_path / "go")
    os.mkfifo(go)
    runs = str(tmp_path / "runs")
    dispatcher = Dispatcher(LocalBackend(multiprocessing.get_context(method)), 1)
    chunk_ids = iter(range(1, 100))
    function = TaskFunction(1, dumps(mb.queue_step))

    def step(*args: str, sink: Outcome, timeout: float | None = None) -> Chunk:
        return Chunk(next(chunk_ids), function, dumps([args]), CallMode.ONE_ARG, 0, 1, sink,
                     "queue_step", TaskPolicy(timeout=timeout))

    try:
        warm = step("quick", sink=Outcome(1))
        dispatcher.submit([warm])  # the worker is ready
        assert warm.sink.result() == ["quick"]  # type: ignore[attr-defined]
        # Short, so that chunks queue behind a running one (the measured pace of the first
        # call may include importing this module under spawn, and be too long for that).
        function.pace.seconds_per_item = 0.0001
        (pid,) = [worker.pid for worker in dispatcher.stats().workers]
        holding = HeldOutcome(1)
        held = step("quick", sink=holding)
        killed = step("wait", go, sink=Outcome(1), timeout=TIMEOUT if why == "timeout" else None)
        behind = step("block", runs, fifos.started, fifos.release, sink=Outcome(1))
        dispatcher.submit([held, killed, behind])
        assert holding.delivering.wait(WAIT)  # `killed` runs, as the dispatcher sees it
        with open(go, "w") as fifo:  # `killed` answers after the read that took `held`'s
            fifo.write("go")
        assert fifos.wait_started() == "started"  # `killed` is done, `behind` running
        if why == "cancel":
            dispatcher.cancel(killed)
        else:
            time.sleep(TIMEOUT)  # not to synchronise: for its deadline, now past, to be due
        holding.let_go.set()
        dispatcher.sync()  # the cancel, or the deadline, is handled
        try:
            release = os.open(fifos.release, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:  # ENXIO: nobody reads it, the first run is gone
            pytest.fail(f"the worker running `behind` was killed ({exc})")
        os.write(release, b"released")
        os.close(release)
        assert behind.sink.result() == ["released"]  # type: ignore[attr-defined]
        assert os.path.getsize(runs) == 1
        if why == "timeout":  # it finished: its answer is its value, not TaskTimeout
            assert killed.sink.result() == ["go"]  # type: ignore[attr-defined]
        stats = dispatcher.stats()
        assert [worker.pid for worker in stats.workers] == [pid] and stats.respawns == 0
    finally:
        dispatcher.terminate()
        assert dispatcher.join(WAIT)
