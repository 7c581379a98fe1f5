"""The dispatcher driven by hand: a scripted backend plays the workers, a fake clock the time.

No process starts and no test waits for time to pass. Each test says what a worker sends, when
it dies and how far the clock moves, then checks what the dispatcher did: what it sent, whom it
killed, what each caller got. These are the deadline and death paths the fault matrix can only
reach through real processes and real seconds.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator, Sequence
from multiprocessing import Pipe
from typing import Any

import pytest

from procpool._claims import WorkerClaims
from procpool._codec import dumps
from procpool._dispatcher import Dispatcher
from procpool._errors import InitializerFailed, TaskTimeout, WorkerDied
from procpool._framing import _HEADER, MAGIC, FrameWriter
from procpool._messages import (
    CallMode,
    ChunkDone,
    ItemDone,
    Ready,
    RunChunk,
    Skipped,
    Stop,
    WorkerSetup,
    decode,
    encode,
)
from procpool._options import TaskPolicy, WorkerPolicy
from procpool._scheduler import RETIRE_TIMEOUT
from procpool._task import Chunk, TaskFunction
from support import WAIT, HeldOutcome, Outcome


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScriptedWorker:
    """The parent's side of a worker that the test plays: ``send`` is the worker speaking,
    ``receive`` what the dispatcher sent it, ``die`` its end."""

    def __init__(self, worker_id: int, claims: WorkerClaims | None = None) -> None:
        self.worker_id = worker_id
        # Its region of the pool's claims file, if chunks queued on it can be taken back.
        # Claimed from this process, which the parent is too: a claim writes the mark the
        # parent reads, but its lock never contends with the parent's (test_claims.py
        # races real processes).
        self.claims = claims
        self.pid: int | None = 40_000 + worker_id  # never signalled: kill() is scripted
        self.loss_cause: str | None = None
        self.connection, self._worker_end = Pipe(duplex=True)
        self._replies = FrameWriter(self._worker_end)  # how a real worker replies
        self.sentinel, self._alive = os.pipe()  # readable once the write end closes
        self.exitcode: int | None = None
        self.kills: list[bool] = []  # the ``force`` of each kill() call

    def send(self, message: Any) -> None:
        self._replies.send_bytes(encode(message))

    def send_raw(self, data: bytes) -> None:
        os.write(self._worker_end.fileno(), data)

    def receive(self) -> Any:
        assert self._worker_end.poll(WAIT), "the dispatcher sent this worker nothing"
        return decode(self._worker_end.recv_bytes())

    def has_been_sent(self) -> bool:
        """Whether a message from the dispatcher waits to be received now."""
        return self._worker_end.poll(0)

    def die(self, exitcode: int) -> None:
        if self.exitcode is None:
            self.exitcode = exitcode
            os.close(self._alive)

    # The WorkerHandle protocol.
    def kill(self, *, force: bool) -> None:
        self.kills.append(force)
        self.die(-signal.SIGKILL if force else -signal.SIGTERM)

    def private_fds(self) -> list[int]:
        return []

    def reap(self) -> int | None:
        return self.exitcode

    def close(self) -> None:
        self.connection.close()
        self._worker_end.close()
        os.close(self.sentinel)


class ScriptedBackend:
    name = "scripted"
    inherits_memory = True
    imports_main = False
    shares_memory = False
    def __init__(self, own_processes: bool = False) -> None:
        # Whether queued chunks can be taken back (procpool._claims): the workers then
        # get their region of the claims file, and claim a queued chunk by ``claims.take``.
        self.own_processes = own_processes
        self.workers: list[ScriptedWorker] = []
        self._started = threading.Condition()

    def default_processes(self) -> int:
        return 1

    def close(self) -> None:
        pass

    def start_worker(self, worker_id: int, setup: WorkerSetup,
                     parent_fds: Sequence[int]) -> ScriptedWorker:
        worker = ScriptedWorker(worker_id, setup.claims)
        with self._started:
            self.workers.append(worker)
            self._started.notify_all()
        return worker

    def worker(self, n: int) -> ScriptedWorker:
        """The n-th worker started (0: the first), once it has been started."""
        with self._started:
            assert self._started.wait_for(lambda: len(self.workers) > n, WAIT), (
                f"worker {n} was never started")
            return self.workers[n]


FUNCTION = TaskFunction(1, dumps(abs))
_chunk_ids = iter(range(1, 1_000_000))


def a_chunk(items: list[Any], policy: TaskPolicy | None = None) -> tuple[Chunk, Outcome]:
    outcome = Outcome(len(items))
    chunk = Chunk(next(_chunk_ids), FUNCTION, dumps(items), CallMode.ONE_ARG, 0, len(items),
                  outcome, "work", policy or TaskPolicy())
    return chunk, outcome


def chunk_done(chunk: Chunk, values: list[Any]) -> ChunkDone:
    return ChunkDone(chunk.chunk_id, dumps(values), (), rss=0, peak_rss=0)


class Harness:
    def __init__(self, processes: int = 1, policy: WorkerPolicy | None = None, *,
                 own_processes: bool = False) -> None:
        self.clock = FakeClock()
        self.backend = ScriptedBackend(own_processes)
        self.dispatcher = Dispatcher(self.backend, processes, worker_policy=policy,
                                     clock=self.clock)

    def advance(self, seconds: float) -> None:
        """Move the clock, and return once the dispatcher has acted on the new time: the first
        round trip wakes it and its deadlines are checked after that command; the second
        returns after that check."""
        self.clock.now += seconds
        self.dispatcher.sync()
        self.dispatcher.sync()

    def ready_worker(self, n: int) -> ScriptedWorker:
        worker = self.backend.worker(n)
        worker.send(Ready(worker.pid))
        self.settle()
        return worker

    def settle(self) -> None:
        """Return once the dispatcher has handled everything sent to it before this call."""
        self.advance(0)


@pytest.fixture
def harness() -> Iterator[Harness]:
    made: list[Harness] = []

    def make(*args: Any, **kwargs: Any) -> Harness:
        made.append(Harness(*args, **kwargs))
        return made[-1]

    yield make  # type: ignore[misc]
    for each in made:
        each.dispatcher.terminate()
        assert each.dispatcher.join(WAIT)


def test_a_task_times_out_on_the_dispatchers_clock_and_not_before(harness: Any) -> None:
    h = harness()
    worker = h.ready_worker(0)
    slow, outcome = a_chunk([1], TaskPolicy(timeout=30))
    h.dispatcher.submit([slow])
    sent = worker.receive()
    assert type(sent) is RunChunk and sent.chunk_id == slow.chunk_id and sent.report_each_item
    h.advance(29.9)
    assert worker.kills == [] and not outcome.settled.is_set()
    h.advance(0.2)
    assert worker.kills == [True]  # SIGKILL: a task past its timeout gets no grace
    assert isinstance(outcome.result(), TaskTimeout)
    # Replaced, and the replacement serves the next task.
    replacement = h.ready_worker(1)
    quick, answer = a_chunk([2])
    h.dispatcher.submit([quick])
    assert replacement.receive().chunk_id == quick.chunk_id
    replacement.send(chunk_done(quick, [2]))
    assert answer.result() == [2]


def test_each_item_of_a_reporting_chunk_gets_its_own_timeout(harness: Any) -> None:
    h = harness()
    worker = h.ready_worker(0)
    chunk, outcome = a_chunk([1, 2], TaskPolicy(timeout=10))
    h.dispatcher.submit([chunk])
    worker.receive()
    h.advance(9)
    worker.send(ItemDone(chunk.chunk_id, 0, dumps([1])))
    h.settle()  # handled at 9 s: the second item's own timeout starts then
    h.advance(9)  # 18 s into the chunk, 9 s into its second item
    assert worker.kills == []
    h.advance(2)
    assert worker.kills == [True]
    error = outcome.result()
    assert isinstance(error, TaskTimeout) and outcome.values == [1]
    assert "work() item 1" in str(error)


def test_a_death_fails_exactly_the_chunk_its_worker_held(harness: Any) -> None:
    h = harness(2)
    first, second = h.ready_worker(0), h.ready_worker(1)
    doomed, lost = a_chunk([1, 2])
    fine, kept = a_chunk([3, 4])
    h.dispatcher.submit([doomed, fine])
    assert first.receive().chunk_id == doomed.chunk_id
    assert second.receive().chunk_id == fine.chunk_id
    first.die(-signal.SIGKILL)
    error = lost.result()
    assert isinstance(error, WorkerDied) and "SIGKILL" in str(error)
    second.send(chunk_done(fine, [3, 4]))
    assert kept.result() == [3, 4]
    h.backend.worker(2)  # the dead one was replaced
    assert h.dispatcher.stats().respawns == 1


def test_a_reply_sent_just_before_a_death_still_counts(harness: Any) -> None:
    h = harness()
    worker = h.ready_worker(0)
    chunk, outcome = a_chunk([5])
    h.dispatcher.submit([chunk])
    worker.receive()
    worker.send(chunk_done(chunk, [5]))
    worker.die(-signal.SIGKILL)  # both are waiting when the dispatcher next wakes
    assert outcome.result() == [5]


def test_a_corrupt_reply_stream_costs_that_worker_only(harness: Any) -> None:
    h = harness()
    worker = h.ready_worker(0)
    chunk, outcome = a_chunk([1])
    h.dispatcher.submit([chunk])
    worker.receive()
    worker.send_raw(b"log: hello\n")  # what a task writing to an inherited pipe leaves
    error = outcome.result()
    assert isinstance(error, WorkerDied) and "reply pipe was corrupted" in str(error)
    assert worker.kills == [True]
    replacement = h.ready_worker(1)
    again, answer = a_chunk([2])
    h.dispatcher.submit([again])
    replacement.receive()
    replacement.send(chunk_done(again, [2]))
    assert answer.result() == [2]


def test_a_queued_chunk_reaches_its_worker_before_the_results_of_the_one_before_it_are_read(
    harness: Any,
) -> None:
    # Chunk `queued` is queued on the busy worker, and written at the end of the dispatcher's
    # round; in the same round the worker reports the chunk before it done. `queued` runs
    # from then on: it must be written at once, not after that chunk's results are decoded
    # and delivered (here: held until the test lets them go).
    h = harness()
    worker = h.ready_worker(0)
    function = TaskFunction(2, dumps(abs))
    chunks = [Chunk(next(_chunk_ids), function, dumps([n]), CallMode.ONE_ARG, 0, 1,
                    HeldOutcome(1), "work") for n in range(3)]
    first, running, queued = chunks
    outcomes: list[HeldOutcome] = [c.sink for c in chunks]  # type: ignore[misc]
    try:
        h.dispatcher.submit([first])
        assert worker.receive().chunk_id == first.chunk_id
        worker.send(ChunkDone(first.chunk_id, dumps([0]), (), 0, 0, seconds=0.001))
        assert outcomes[0].delivering.wait(WAIT)  # the dispatcher is held; the pace is known
        h.dispatcher.submit([running, queued])  # one round takes both: `queued` waits behind
        worker.send(ChunkDone(running.chunk_id, dumps([1]), (), 0, 0, seconds=0.001))
        outcomes[0].let_go.set()
        assert outcomes[1].delivering.wait(WAIT)  # the dispatcher is held in the same round
        assert worker.receive().chunk_id == running.chunk_id
        assert worker.has_been_sent() and worker.receive().chunk_id == queued.chunk_id
    finally:
        for outcome in outcomes:
            outcome.let_go.set()
    worker.send(chunk_done(queued, [2]))
    assert [outcome.result() for outcome in outcomes] == [[0], [1], [2]]


def queued_behind(harness: Any) -> tuple[Harness, ScriptedWorker, Chunk, Chunk]:
    """A pool whose worker can give queued chunks back, that worker, a short chunk running on
    it (its 2nd) and one queued behind it (its 3rd)."""
    h = harness(own_processes=True)
    worker = h.ready_worker(0)
    function = TaskFunction(4, dumps(abs))
    first, running, queued = (Chunk(next(_chunk_ids), function, dumps([n]), CallMode.ONE_ARG,
                                    0, 1, Outcome(1), "work") for n in range(3))
    h.dispatcher.submit([first])
    worker.receive()
    worker.send(ChunkDone(first.chunk_id, dumps([0]), (), 0, 0, seconds=0.001))
    assert first.sink.result() == [0]  # type: ignore[attr-defined]  # its pace is known
    h.dispatcher.submit([running, queued])
    assert worker.receive().chunk_id == running.chunk_id
    message = worker.receive()
    assert message.chunk_id == queued.chunk_id and message.withdrawable
    return h, worker, running, queued


def test_a_cancel_takes_the_queued_chunk_back_before_the_kill_and_it_runs_elsewhere(
    harness: Any,
) -> None:
    h, worker, running, queued = queued_behind(harness)
    h.dispatcher.cancel(running)
    h.settle()
    assert worker.kills == [True]
    worker.die(-signal.SIGKILL)
    replacement = h.ready_worker(1)
    assert replacement.receive().chunk_id == queued.chunk_id
    replacement.send(chunk_done(queued, [2]))
    assert queued.sink.result() == [2]  # type: ignore[attr-defined]


def test_a_cancel_of_a_queued_chunk_takes_it_back_and_spares_its_worker(harness: Any) -> None:
    # The worker has not started the queued chunk: it is taken back through the claims file
    # and dropped, never answered; the worker is not killed, and goes on serving.
    # (Played from this process, the worker's claim could not see the parent's lock:
    # ScriptedWorker. It answers its running chunk and skips the queued one, as a worker
    # whose claim failed does.)
    h, worker, running, queued = queued_behind(harness)
    h.dispatcher.cancel(queued)
    h.settle()
    assert worker.kills == []
    worker.send(chunk_done(running, [1]))
    worker.send(Skipped(3))
    assert running.sink.result() == [1]  # type: ignore[attr-defined]
    h.settle()
    assert worker.kills == []  # not killed when it went on past the cancelled chunk
    later, outcome = a_chunk([5])
    h.dispatcher.submit([later])
    assert worker.receive().chunk_id == later.chunk_id
    worker.send(chunk_done(later, [5]))
    assert outcome.result() == [5]
    h.settle()
    assert not queued.sink.settled.is_set()  # type: ignore[attr-defined]
    assert worker.kills == [] and len(h.backend.workers) == 1


def test_a_cancel_spares_a_worker_that_went_on_to_the_queued_chunk_which_answers_once(
    harness: Any,
) -> None:
    # The worker finished the cancelled chunk and started the queued one before the parent
    # read that answer. Killing it would make the queued chunk run twice (here and again
    # elsewhere) for a chunk that is done.
    h, worker, running, queued = queued_behind(harness)
    assert worker.claims is not None and worker.claims.take(3)
    h.dispatcher.cancel(running)
    h.settle()
    assert worker.kills == []
    worker.send(chunk_done(running, [1]))
    worker.send(chunk_done(queued, [2]))
    assert queued.sink.result() == [2]  # type: ignore[attr-defined]
    h.settle()
    assert len(h.backend.workers) == 1 and not worker.has_been_sent()


def test_a_reply_read_together_with_stray_bytes_after_it_still_counts(harness: Any) -> None:
    # The worker reported its chunk done, then a task wrote into its reply pipe: one read
    # takes both. The reply stands; the worker is lost for the stray bytes, and that reply
    # does not earn it the next chunk, which runs on its replacement.
    h = harness()
    worker = h.ready_worker(0)
    function = TaskFunction(3, dumps(abs))  # its pace unknown: `second` waits in the pool
    first, second = (Chunk(next(_chunk_ids), function, dumps([n]), CallMode.ONE_ARG, 0, 1,
                           Outcome(1), "work") for n in (7, 8))
    h.dispatcher.submit([first, second])
    assert worker.receive().chunk_id == first.chunk_id
    reply = encode(chunk_done(first, [7]))
    worker.send_raw(_HEADER.pack(MAGIC, len(reply)) + reply + b"log: hello\n")
    assert first.sink.result() == [7]  # type: ignore[attr-defined]
    replacement = h.ready_worker(1)
    assert replacement.receive().chunk_id == second.chunk_id
    assert worker.kills == [True]
    replacement.send(chunk_done(second, [8]))
    assert second.sink.result() == [8]  # type: ignore[attr-defined]


def test_a_worker_that_does_not_exit_when_asked_is_killed_after_the_retire_timeout(
    harness: Any,
) -> None:
    h = harness(policy=WorkerPolicy(max_tasks=1))
    worker = h.ready_worker(0)
    chunk, outcome = a_chunk([1])
    h.dispatcher.submit([chunk])
    worker.receive()
    worker.send(chunk_done(chunk, [1]))
    assert outcome.result() == [1]
    assert type(worker.receive()) is Stop  # recycled after its one chunk
    h.advance(RETIRE_TIMEOUT - 0.1)
    assert worker.kills == []
    h.advance(0.2)
    assert worker.kills == [True]
    h.backend.worker(1)  # its replacement


def test_a_worker_slow_to_start_breaks_the_pool_at_the_initializer_timeout(
    harness: Any,
) -> None:
    h = harness(policy=WorkerPolicy(initializer_timeout=60, has_initializer=True))
    chunk, outcome = a_chunk([1])
    h.dispatcher.submit([chunk])
    h.advance(59.9)
    assert not outcome.settled.is_set() and h.dispatcher.broken is None
    h.advance(0.2)
    error = outcome.result()
    assert isinstance(error, InitializerFailed) and "initializer_timeout=60" in str(error)
    assert h.dispatcher.broken is not None
    late, refused = a_chunk([2])
    h.dispatcher.submit([late])
    assert isinstance(refused.result(), InitializerFailed)


def test_busy_and_idle_time_are_read_on_the_dispatchers_clock(harness: Any) -> None:
    h = harness()
    worker = h.ready_worker(0)
    h.advance(2)
    chunk, outcome = a_chunk([1])
    h.dispatcher.submit([chunk])
    worker.receive()
    h.advance(3)
    worker.send(chunk_done(chunk, [1]))
    assert outcome.result() == [1]
    [stats] = h.dispatcher.stats().workers
    assert stats.busy_seconds == pytest.approx(3)
    assert stats.idle_seconds == pytest.approx(2)
