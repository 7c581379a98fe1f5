"""The scheduler's decisions, driven directly: no processes, no threads, no clock.

Every test tells the scheduler what happened through ``Scheduler.handle`` (the helpers below
spell the common events, and ask ``running_on`` first as the dispatcher does) and checks the
actions it answers."""

from __future__ import annotations

import math
import sys
from typing import Any

import pytest

from procpool._errors import InitializerFailed, TaskTimeout, WorkerDied, WorkerStartFailed
from procpool._messages import CallMode, Ready
from procpool._options import TaskPolicy, WorkerPolicy
from procpool._recovery import startup_deaths_allowed
from procpool._scheduler import QUEUE_MAX_BYTES, Scheduler
from procpool._scheduler_events import (
    Action,
    Break,
    BreakPool,
    Cancel,
    ChunkFinished,
    Close,
    Death,
    DropChunk,
    FailChunk,
    FirstCallBegan,
    ItemFailed,
    ItemFinished,
    KillSpared,
    KillWorker,
    QueuedWithdrawn,
    SendChunk,
    Started,
    StartWorker,
    StopWorker,
    StreamClosed,
    StreamLost,
    StreamOpened,
    Submitted,
    Tick,
    WithdrawQueued,
    WorkerLost,
    WorkerReady,
)
from procpool._shared_memory import SharedSegments
from procpool._task import Chunk, TaskFunction
from procpool._worker_slot import LOADING_ALLOWANCE, LOADING_POLL, QUEUE_MAX_CHUNKS, WITHDRAW_AFTER

FUNCTION = TaskFunction(0, b"")


class _NullSink:
    def chunk_starting(self, chunk: Chunk) -> bool:
        return True

    def chunk_done(self, *args: Any) -> None:
        pass

    def chunk_failed(self, *args: Any) -> None:
        pass


def chunk(n: int, size: int = 1, policy: TaskPolicy | None = None) -> Chunk:
    return Chunk(n, FUNCTION, b"", CallMode.ONE_ARG, n, size, _NullSink(), f"chunk{n}",
                 policy or TaskPolicy())


def with_payload(chunk: Chunk, items_payload: bytes) -> Chunk:
    """``chunk`` with other items' pickle."""
    return Chunk(chunk.chunk_id, chunk.function, items_payload, chunk.mode, chunk.first_index,
                 chunk.size, chunk.sink, chunk.name, chunk.policy)


def with_shared_items(chunk: Chunk) -> Chunk:
    """``chunk`` with its items' buffers in shared memory."""
    return Chunk(chunk.chunk_id, chunk.function, chunk.items_payload, chunk.mode,
                 chunk.first_index, chunk.size, chunk.sink, chunk.name, chunk.policy,
                 segments=SharedSegments((f"/procpool-test-{chunk.chunk_id}",), 1 << 20))


DEATH = Death(pid=99, exitcode=-9)


def started(scheduler: Scheduler, now: float = 0.0) -> Scheduler:
    """Start the scheduler's workers and mark them all ready (their initializers ran)."""
    scheduler.handle(Started(), now)
    for worker_id in list(scheduler.workers):
        scheduler.handle(WorkerReady(worker_id), now)
    return scheduler


def submit(scheduler: Scheduler, *chunks: Chunk, now: float = 0.0) -> list[Action]:
    return scheduler.handle(Submitted(chunks), now)


def item_done(scheduler: Scheduler, worker_id: int, now: float = 0.0) -> tuple[Chunk, int]:
    """A worker's ItemDone, as the dispatcher tells it: the chunk and the position of the item
    it answers, asked first. The next item starts at once: nothing to do."""
    chunk_, position = scheduler.running_on(worker_id)
    assert scheduler.handle(ItemFinished(worker_id), now) == []
    return chunk_, position


def chunk_done(scheduler: Scheduler, worker_id: int, rss: int = 0, now: float = 0.0,
               seconds: float | None = None) -> tuple[Chunk, list[Action]]:
    """A worker's ChunkDone, as the dispatcher tells it: the chunk it answers, asked first,
    and the actions."""
    done, _ = scheduler.running_on(worker_id)
    return done, scheduler.handle(ChunkFinished(worker_id, rss, seconds), now)


def lost(scheduler: Scheduler, worker_id: int, death: Death, now: float = 0.0) -> list[Action]:
    return scheduler.handle(WorkerLost(worker_id, death), now)


def sends(actions: list[Any]) -> list[tuple[int, int]]:
    return [(a.worker_id, a.chunk.chunk_id) for a in actions if isinstance(a, SendChunk)]


def test_start_asks_for_one_worker_per_process() -> None:
    assert Scheduler(3).handle(Started(), 0.0) == [
        StartWorker(0, place=0), StartWorker(1, place=1), StartWorker(2, place=2)]


def test_a_replacement_takes_the_place_of_the_worker_it_replaces() -> None:
    scheduler = Scheduler(3)
    scheduler.handle(Started(), 0.0)
    assert StartWorker(3, place=1) in lost(scheduler, 1, DEATH)
    assert StartWorker(4, place=0) in lost(scheduler, 0, DEATH)


def test_a_chunk_too_large_for_a_pipe_waits_until_its_worker_is_ready() -> None:
    # A starting worker reads nothing until its initializer ends: the dispatcher must not
    # block writing a large chunk to it (the initializer may be blocked writing log records).
    scheduler = Scheduler(1)
    scheduler.handle(Started(), 0.0)
    small, large = chunk(1), with_payload(chunk(2), b"x" * (QUEUE_MAX_BYTES + 1))
    assert sends(submit(scheduler, small)) == [(0, 1)]  # fits: it waits in the pipe
    scheduler = Scheduler(1)
    scheduler.handle(Started(), 0.0)
    assert sends(submit(scheduler, large)) == []
    assert sends(scheduler.handle(WorkerReady(0), 0.0)) == [(0, 2)]


def test_a_chunk_with_shared_arguments_waits_until_its_worker_is_ready() -> None:
    # A worker killed while it starts has its chunk run elsewhere, and the table removes the
    # segments of what a lost worker held: such a chunk goes only to a worker that will
    # start it at once.
    scheduler = Scheduler(1)
    scheduler.handle(Started(), 0.0)
    shared = with_shared_items(chunk(1))
    assert sends(submit(scheduler, shared)) == []
    assert sends(scheduler.handle(WorkerReady(0), 0.0)) == [(0, 1)]


def test_short_chunks_queue_on_a_ready_worker_before_they_wait_for_a_starting_one() -> None:
    # Worker 0 is ready and runs chunks of 0.9 ms; worker 1 is still starting (a spawned one
    # takes 40-50 ms). Chunks that start within 20 ms behind worker 0 go there, as the
    # stdlib's shared queue would let them; only what is left over waits in the starting
    # worker's pipe.
    scheduler = Scheduler(2)
    scheduler.handle(Started(), 0.0)
    scheduler.handle(WorkerReady(0), 0.0)
    chunks = quick_chunks(30, seconds_per_item=0.0009)
    actions = submit(scheduler, *chunks)
    on_ready = len(scheduler.workers[0].queued) + 1
    assert on_ready == 23  # the running one, and 22 that start within 20 ms behind it
    assert sends(actions) == [(0, n) for n in range(on_ready)] + [(1, on_ready)]
    # Of unknown pace (a pool's first call), nothing is queued: a starting worker gets it.
    scheduler = Scheduler(2)
    scheduler.handle(Started(), 0.0)
    scheduler.handle(WorkerReady(0), 0.0)
    assert sends(submit(scheduler, chunk(1), chunk(2))) == [(0, 1), (1, 2)]


def test_a_worker_whose_stream_is_lost_gets_no_more_work() -> None:
    scheduler = started(Scheduler(2))
    assert scheduler.handle(StreamLost(0), 0.0) == []  # the table kills it
    assert sends(submit(scheduler, chunk(1), chunk(2))) == [(1, 1)]
    # Lost while it started (its initializer wrote into its pipe): a start-up death like any
    # other; the chunk waiting in its pipe never started, and runs on the replacement.
    scheduler = Scheduler(1)
    scheduler.handle(Started(), 0.0)
    assert sends(submit(scheduler, chunk(3))) == [(0, 3)]
    scheduler.handle(StreamLost(0), 0.0)
    actions = lost(scheduler, 0, Death(pid=99, exitcode=-9, cause="its reply pipe was corrupted"))
    assert not any(isinstance(a, (FailChunk, BreakPool)) for a in actions)
    assert sends(actions) == [(1, 3)]


def test_handle_refuses_anything_but_an_event() -> None:
    """``handle`` raises TypeError for an object that is none of the scheduler's events (here
    a worker's own Ready reply, passed by mistake) rather than ignoring it, and changes
    nothing."""
    scheduler = Scheduler(1)
    scheduler.handle(Started(), 0.0)
    with pytest.raises(TypeError, match=r"not Ready\(pid=1\)"):
        scheduler.handle(Ready(pid=1), 0.0)  # type: ignore[arg-type]
    assert not scheduler.workers[0].ready


def test_chunks_go_out_in_order_one_per_worker() -> None:
    scheduler = started(Scheduler(2))
    actions = submit(scheduler, *(chunk(i) for i in range(5)))
    assert sends(actions) == [(0, 0), (1, 1)]
    done, actions = chunk_done(scheduler, 1, 0, 0.0)
    assert done.chunk_id == 1
    assert sends(actions) == [(1, 2)]
    assert len(scheduler.pending) == 2


def test_a_lost_worker_fails_exactly_its_chunk_and_is_replaced() -> None:
    scheduler = started(Scheduler(2))
    chunks = [chunk(i) for i in range(3)]
    submit(scheduler, *chunks)
    actions = lost(scheduler, 0, DEATH, 0.0)
    assert isinstance(actions[0], FailChunk) and actions[0].chunk is chunks[0]
    error = actions[0].error
    assert isinstance(error, WorkerDied) and error.pid == 99 and error.signal_name == "SIGKILL"
    assert actions[1] == StartWorker(2)
    assert sends(actions) == [(2, 2)]  # the replacement picks up the queue
    assert scheduler.running == {1: chunks[1], 2: chunks[2]}


def test_an_idle_worker_lost_is_replaced_without_failures() -> None:
    scheduler = started(Scheduler(1))
    assert lost(scheduler, 0, DEATH, 0.0) == [StartWorker(1)]


def test_max_tasks_per_worker_retires_and_replaces() -> None:
    scheduler = started(Scheduler(1, WorkerPolicy(max_tasks=2)))
    submit(scheduler, *(chunk(i) for i in range(3)))
    _, actions = chunk_done(scheduler, 0, 0, 0.0)
    assert sends(actions) == [(0, 1)]
    _, actions = chunk_done(scheduler, 0, 0, 0.0)
    assert actions[:2] == [StopWorker(0), StartWorker(1)]
    assert sends(actions) == [(1, 2)]


def test_close_stops_workers_only_when_all_work_and_streams_are_done() -> None:
    scheduler = started(Scheduler(2))
    submit(scheduler, chunk(0))
    scheduler.handle(StreamOpened(), 0.0)
    assert scheduler.handle(Close(), 0.0) == []
    _, actions = chunk_done(scheduler, 0, 0, 0.0)
    assert actions == []  # a stream may still submit
    assert not scheduler.is_drained()
    actions = scheduler.handle(StreamClosed(), 0.0)
    assert sorted(a.worker_id for a in actions if isinstance(a, StopWorker)) == [0, 1]
    assert scheduler.is_drained()


def test_a_death_while_closing_with_no_work_is_not_replaced() -> None:
    scheduler = started(Scheduler(2))
    submit(scheduler, chunk(0))
    scheduler.handle(StreamOpened(), 0.0)
    scheduler.handle(Close(), 0.0)
    scheduler.handle(StreamClosed(), 0.0)
    actions = lost(scheduler, 0, DEATH, 0.0)
    assert isinstance(actions[0], FailChunk) and actions[0].chunk.chunk_id == 0
    assert not any(isinstance(a, StartWorker) for a in actions)


def test_break_pool_fails_everything_now_and_later() -> None:
    scheduler = started(Scheduler(1))
    chunks = [chunk(i) for i in range(3)]
    submit(scheduler, *chunks)
    error = RuntimeError("broken")
    actions = scheduler.handle(Break(error), 0.0)
    failed = [a.chunk.chunk_id for a in actions if isinstance(a, FailChunk)]
    assert sorted(failed) == [0, 1, 2]
    assert not scheduler.workers
    late = chunk(9)
    assert submit(scheduler, late) == [FailChunk(late, error)]
    assert lost(scheduler, 0, DEATH, 0.0) == []  # forgotten already


def test_terminate_abandons_open_streams() -> None:
    scheduler = started(Scheduler(1))
    scheduler.handle(StreamOpened(), 0.0)
    scheduler.handle(Break(RuntimeError()), 0.0)
    scheduler.handle(Close(abandon_streams=True), 0.0)
    assert scheduler.is_drained()


def test_work_arriving_after_the_workers_stopped_starts_new_ones() -> None:
    scheduler = started(Scheduler(2))
    stops = scheduler.handle(Close(), 0.0)
    assert sorted(a.worker_id for a in stops if isinstance(a, StopWorker)) == [0, 1]
    late = chunk(7)
    actions = submit(scheduler, late)
    assert actions[:2] == [StartWorker(2, place=0), StartWorker(3, place=1)]
    assert sends(actions) == [(2, 7)]
    assert not scheduler.is_drained()
    _, actions = chunk_done(scheduler, 2, 0, 0.0)
    assert sorted(a.worker_id for a in actions if isinstance(a, StopWorker)) == [2, 3]
    assert scheduler.is_drained()


# ---- deadlines, per-item progress, retries, recycling ------------------------------------------


def _split(chunk_: Chunk, position: int, size: int, attempt: int) -> Chunk:
    return chunk_.part(position, size, b"payload", attempt)


def test_timeout_counts_from_when_the_worker_starts_the_item() -> None:
    scheduler = Scheduler(1, split=_split)
    scheduler.handle(Started(), 0.0)
    submit(scheduler, chunk(0, policy=TaskPolicy(timeout=5.0)), now=1.0)
    assert scheduler.next_deadline() is None  # the worker is still starting up
    scheduler.handle(WorkerReady(0), 10.0)
    assert scheduler.next_deadline() == 15.0
    assert scheduler.handle(Tick(), 14.9) == []
    # The first item: since when has the worker been calling it?
    assert scheduler.handle(Tick(), 15.0) == [KillWorker(0, first_call_of=0)]
    assert scheduler.handle(FirstCallBegan(0, 10.0), 15.0) == [KillWorker(0)]
    assert scheduler.next_deadline() is None  # killed once, not again
    actions = lost(scheduler, 0, Death(99, -9), 15.1)
    failure = actions[0]
    assert isinstance(failure, FailChunk) and isinstance(failure.error, TaskTimeout)
    assert failure.error.timeout == 5.0 and "chunk0() item 0" in str(failure.error)


def test_a_first_items_timeout_counts_from_its_call_not_from_loading_its_function() -> None:
    # A fresh worker imports the function's module (a second or more is common) before the
    # first item is called: the pool's start-up, not the task's run.
    scheduler = started(Scheduler(1, split=_split))
    submit(scheduler, chunk(0, size=2, policy=TaskPolicy(timeout=5.0)), now=0.0)
    assert scheduler.handle(Tick(), 5.0) == [KillWorker(0, first_call_of=0)]
    # Still loading: asked again in LOADING_POLL, and never killed for it...
    assert scheduler.handle(FirstCallBegan(0, None), 5.0) == []
    assert not scheduler.workers[0].doomed and scheduler.next_deadline() == 5.0 + LOADING_POLL
    assert scheduler.handle(Tick(), 5.0 + LOADING_POLL) == [KillWorker(0, first_call_of=0)]
    # ...then called at 7.0: the timeout counts from there.
    assert scheduler.handle(FirstCallBegan(0, 7.0), 7.5) == []
    assert scheduler.next_deadline() == 12.0
    assert scheduler.handle(Tick(), 12.0) == [KillWorker(0)]  # no second question
    failure = lost(scheduler, 0, DEATH, 12.1)[0]
    assert isinstance(failure, FailChunk) and isinstance(failure.error, TaskTimeout)


def test_loading_longer_than_its_allowance_counts_against_the_first_items_timeout() -> None:
    # An import that hangs must not hang the call: loading may take LOADING_ALLOWANCE (or
    # the timeout, if longer), then the kill stands.
    for timeout in (5.0, LOADING_ALLOWANCE + 30):
        scheduler = started(Scheduler(1))
        submit(scheduler, chunk(0, policy=TaskPolicy(timeout=timeout)), now=0.0)
        allowance = max(timeout, LOADING_ALLOWANCE)
        scheduler.handle(Tick(), timeout)
        assert scheduler.handle(FirstCallBegan(0, None), allowance - 0.01) == []
        deadline = scheduler.next_deadline()
        assert deadline is not None and deadline > allowance
        assert scheduler.handle(Tick(), deadline) == [KillWorker(0, first_call_of=0)]
        assert scheduler.handle(FirstCallBegan(0, None), deadline) == [KillWorker(0)]
        failure = lost(scheduler, 0, DEATH, deadline)[0]
        assert isinstance(failure, FailChunk) and isinstance(failure.error, TaskTimeout)
        if sys.version_info >= (3, 11):  # the error says the task never ran
            assert f"after {allowance:g} s its worker was still loading" in "".join(
                failure.error.__notes__)


def test_where_the_first_call_cannot_be_told_the_timeout_counts_from_the_chunks_start(
) -> None:
    scheduler = started(Scheduler(1))
    submit(scheduler, chunk(0, policy=TaskPolicy(timeout=5.0)), now=0.0)
    scheduler.handle(Tick(), 5.0)
    assert scheduler.handle(FirstCallBegan(0, -math.inf), 5.0) == [KillWorker(0)]


def test_each_item_gets_its_own_deadline() -> None:
    scheduler = started(Scheduler(1, split=_split))
    submit(scheduler, chunk(0, size=3, policy=TaskPolicy(timeout=2.0)))
    assert scheduler.next_deadline() == 2.0
    assert item_done(scheduler, 0, 1.5)[1] == 0
    assert scheduler.next_deadline() == 3.5
    assert item_done(scheduler, 0, 3.0)[1] == 1
    assert scheduler.next_deadline() == 5.0


def test_a_death_mid_chunk_loses_one_item_and_requeues_the_rest() -> None:
    scheduler = started(Scheduler(1, split=_split))
    big = chunk(0, size=5, policy=TaskPolicy(timeout=60.0))
    submit(scheduler, big)
    item_done(scheduler, 0, 1.0)
    item_done(scheduler, 0, 2.0)  # items 0 and 1 delivered; item 2 is running
    actions = lost(scheduler, 0, DEATH, 3.0)
    failure = actions[0]
    assert isinstance(failure, FailChunk)
    assert (failure.chunk.first_index, failure.chunk.size) == (2, 1)
    requeued = [a.chunk for a in actions if isinstance(a, SendChunk)]
    assert [(c.first_index, c.size, c.attempt) for c in requeued] == [(3, 2, 1)]


@pytest.mark.parametrize("policy", [TaskPolicy(timeout=60.0), TaskPolicy(retries=1)],
                         ids=["timeout", "retries"])
def test_a_death_after_the_last_item_before_the_chunk_ends_loses_nothing(
    policy: TaskPolicy,
) -> None:
    # Every item has its answer; the worker dies before it says the chunk is over (a kill
    # storm hit this window): nothing is lost, and no phantom item past the chunk's end is
    # failed or run again.
    scheduler = started(Scheduler(1, split=_split))
    submit(scheduler, chunk(0, size=2, policy=policy))
    item_done(scheduler, 0, 1.0)
    item_done(scheduler, 0, 2.0)
    actions = lost(scheduler, 0, DEATH, 3.0)
    assert not [a for a in actions if isinstance(a, (FailChunk, DropChunk, SendChunk))]
    assert not scheduler.pending and scheduler.counts.retried == 0
    assert [a for a in actions if isinstance(a, StartWorker)]  # the worker is replaced


def test_retries_rerun_only_the_lost_item_and_count_attempts() -> None:
    scheduler = started(Scheduler(1, split=_split))
    policy = TaskPolicy(retries=1)
    submit(scheduler, chunk(0, size=2, policy=policy))
    actions = lost(scheduler, 0, DEATH, 1.0)
    resent = [a.chunk for a in actions if isinstance(a, SendChunk)]
    assert [(c.first_index, c.size, c.attempt) for c in resent] == [(0, 1, 2)]
    assert not any(isinstance(a, FailChunk) for a in actions)
    scheduler.handle(WorkerReady(1), 1.5)
    actions = lost(scheduler, 1, DEATH, 2.0)  # the retry dies too: no retries left
    failure = next(a for a in actions if isinstance(a, FailChunk))
    assert isinstance(failure.error, WorkerDied) and failure.error.attempts == 2


def test_ordinary_exceptions_are_retried_only_when_asked() -> None:
    scheduler = Scheduler(1)
    default = chunk(0, policy=TaskPolicy(retries=3))
    assert not scheduler.should_retry(default, ValueError())
    assert scheduler.should_retry(default, WorkerDied(1, -9))
    opted_in = chunk(1, policy=TaskPolicy(retries=3, retry_on=(ValueError,)))
    assert scheduler.should_retry(opted_in, ValueError())
    assert not scheduler.should_retry(opted_in, WorkerDied(1, -9))


def test_a_worker_over_its_memory_limit_is_replaced() -> None:
    scheduler = started(Scheduler(1, WorkerPolicy(max_memory=100)))
    submit(scheduler, chunk(0), chunk(1))
    _, actions = chunk_done(scheduler, 0, 99, 1.0)
    assert sends(actions) == [(0, 1)]
    _, actions = chunk_done(scheduler, 0, 101, 2.0)
    assert actions[:2] == [StopWorker(0), StartWorker(1)]


def test_a_worker_that_never_gets_ready_breaks_the_pool() -> None:
    scheduler = Scheduler(2, WorkerPolicy(initializer_timeout=3.0))
    scheduler.handle(Started(), 0.0)
    scheduler.handle(WorkerReady(0), 1.0)
    assert scheduler.next_deadline() == 3.0
    (action,) = scheduler.handle(Tick(), 3.0)
    assert isinstance(action, BreakPool) and isinstance(action.error, InitializerFailed)
    assert "initializer_timeout=3" in str(action.error)


@pytest.mark.parametrize("policy, error, text", [
    (WorkerPolicy(has_initializer=True), InitializerFailed, "died during start-up, exit code 3"),
    (WorkerPolicy(imports_main=True), WorkerStartFailed, 'under `if __name__ == "__main__":`'),
    (WorkerPolicy(), WorkerStartFailed, "ended (exit code 3) while starting"),
], ids=["initializer", "spawned-main", "neither"])
def test_an_exit_before_ready_breaks_the_pool_and_fails_the_chunk_it_held(
    policy: WorkerPolicy, error: type[BaseException], text: str
) -> None:
    # The initializer (or a spawned child's import of __main__) exited: nothing will ever
    # run. The chunk waiting in the dead worker's pipe must be failed with the rest, and the
    # error blames the initializer only if there is one.
    scheduler = Scheduler(1, policy)
    scheduler.handle(Started(), 0.0)
    held = chunk(0)
    assert sends(submit(scheduler, held)) == [(0, 0)]
    (action,) = lost(scheduler, 0, Death(5, 3), 1.0)
    assert isinstance(action, BreakPool) and type(action.error) is error
    assert text in str(action.error)
    assert scheduler.handle(Break(action.error), 0.0) == [FailChunk(held, action.error)]


def test_a_worker_killed_while_starting_is_replaced_and_its_chunk_runs_elsewhere() -> None:
    scheduler = Scheduler(1)
    scheduler.handle(Started(), 0.0)
    held = chunk(0)
    submit(scheduler, held)
    actions = lost(scheduler, 0, Death(5, -9), 1.0)
    assert actions == [StartWorker(1), SendChunk(1, held)]  # no attempt spent: it never ran
    assert held.attempt == 1 and scheduler.broken is None
    assert scheduler.counts.replacements == {"killed by SIGKILL": 1}


@pytest.mark.parametrize("policy, error, blames_the_initializer", [
    (WorkerPolicy(has_initializer=True), InitializerFailed, True),
    (WorkerPolicy(), WorkerStartFailed, False),
], ids=["initializer", "none"])
def test_only_a_run_of_deaths_while_starting_breaks_the_pool(
    policy: WorkerPolicy, error: type[BaseException], blames_the_initializer: bool
) -> None:
    scheduler = Scheduler(1, policy)
    scheduler.handle(Started(), 0.0)
    allowed = startup_deaths_allowed(1)
    for worker_id in range(allowed):
        actions = lost(scheduler, worker_id, Death(5, -9), 1.0)
        assert actions == [StartWorker(worker_id + 1)]
    scheduler.handle(WorkerReady(allowed), 2.0)  # a start that succeeds ends the run
    lost(scheduler, allowed, Death(5, -9), 3.0)  # a death of a ready worker
    for worker_id in range(allowed + 1, 2 * allowed + 1):
        assert lost(scheduler, worker_id, Death(5, -9), 4.0) == [StartWorker(worker_id + 1)]
    (action,) = lost(scheduler, 2 * allowed + 1, Death(6, -9), 5.0)
    assert isinstance(action, BreakPool) and type(action.error) is error
    assert f"{allowed + 1} workers in a row died during start-up" in str(action.error)
    assert "pid 6" in str(action.error) and "SIGKILL" in str(action.error)
    # Without an initializer, none is blamed (the message used to say it had failed).
    assert ("initializer failed" in str(action.error)) is blames_the_initializer


def test_breaking_the_pool_fails_only_the_unanswered_items_of_a_reporting_chunk() -> None:
    # Items 0 and 1 were delivered as they finished; failing the whole chunk would answer
    # them twice.
    scheduler = started(Scheduler(1))
    running = chunk(0, size=4, policy=TaskPolicy(retries=1))
    submit(scheduler, running)
    item_done(scheduler, 0, 1.0)
    item_done(scheduler, 0, 2.0)
    error = RuntimeError("broken")
    (action,) = scheduler.handle(Break(error), 0.0)
    assert isinstance(action, FailChunk) and action.error is error
    assert (action.chunk.first_index, action.chunk.size) == (2, 2)


def test_a_worker_sentenced_to_die_gets_no_new_work() -> None:
    # The kill is ordered, but the worker's reply for the chunk it just finished arrives
    # first: it must not be handed the next chunk, which the kill would then take down.
    scheduler = started(Scheduler(1))
    first, second = chunk(0), chunk(1)
    submit(scheduler, first, second)
    assert scheduler.handle(Cancel(first), 0.0) == [KillWorker(0)]
    done, actions = chunk_done(scheduler, 0, 0, 1.0)
    assert done is first and sends(actions) == []
    actions = lost(scheduler, 0, DEATH, 1.1)
    assert not any(isinstance(a, FailChunk) for a in actions)  # the cancel was expected
    assert actions[0] == StartWorker(1) and sends(actions) == [(1, 1)]


def test_cancel_drops_a_pending_chunk_without_killing() -> None:
    scheduler = started(Scheduler(1))
    first, second = chunk(0), chunk(1)
    submit(scheduler, first, second)
    assert scheduler.handle(Cancel(second), 0.0) == [DropChunk(second)]
    _, actions = chunk_done(scheduler, 0, 0, 1.0)
    assert sends(actions) == []


def test_cancelling_work_on_a_worker_still_starting_does_not_break_the_pool() -> None:
    # A chunk may wait in a starting worker's pipe; killing that worker for a cancel is not
    # an initializer failure.
    scheduler = Scheduler(1)
    scheduler.handle(Started(), 0.0)
    queued = chunk(0)
    submit(scheduler, queued)
    assert scheduler.handle(Cancel(queued), 0.0) == [KillWorker(0)]
    actions = lost(scheduler, 0, DEATH, 1.0)
    assert not any(isinstance(a, BreakPool) for a in actions)
    assert actions == [DropChunk(queued), StartWorker(1)]
    assert scheduler.broken is None


# ---- a few short chunks queued on a busy worker ---------------------------------------------


def quick_chunks(count: int, *, seconds_per_item: float = 0.001, payload: bytes = b"",
                 size: int = 1) -> list[Chunk]:
    """Chunks of a function whose measured pace is ``seconds_per_item``."""
    function = TaskFunction(1, b"")
    function.pace.observe(1, seconds_per_item)
    return [Chunk(n, function, payload, CallMode.ONE_ARG, n * size, size, _NullSink(),
                  f"chunk{n}") for n in range(count)]


def test_short_chunks_are_queued_behind_running_ones_in_turn_and_start_when_it_is_done() -> None:
    scheduler = started(Scheduler(2))
    chunks = quick_chunks(8)
    actions = submit(scheduler, *chunks)
    assert sends(actions) == [(0, 0), (1, 1), (0, 2), (1, 3), (0, 4), (1, 5), (0, 6), (1, 7)]
    assert [a.queued for a in actions if isinstance(a, SendChunk)] == [False] * 2 + [True] * 6
    assert list(scheduler.workers[0].queued) == [chunks[2], chunks[4], chunks[6]]
    more = quick_chunks(1)[0]
    done, actions = chunk_done(scheduler, 0, 0, 1.0, seconds=0.001)
    assert done is chunks[0]
    # Chunk 2 was waiting in worker 0's pipe: it runs now.
    assert scheduler.running[0] is chunks[2]
    assert sends(actions) == []
    actions = submit(scheduler, more, now=1.0)
    assert [(a.worker_id, a.chunk, a.queued) for a in actions] == [(0, more, True)]


def test_queued_chunks_are_about_the_queue_time_and_the_pipe_bytes_at_most() -> None:
    # A chunk waits only where it starts within 20 ms, 32 KiB in all, QUEUE_MAX_CHUNKS at
    # most: of chunks of 0.1 ms, 32 wait; of 0.9 ms, 22 (the 22nd starts after 19.8 ms); of
    # 5 ms, 4; of 10 KiB, 3.
    for chunks, queued in ((quick_chunks(50, seconds_per_item=0.0001), QUEUE_MAX_CHUNKS),
                           (quick_chunks(50, seconds_per_item=0.0009), 22),
                           (quick_chunks(50, seconds_per_item=0.005), 4),
                           (quick_chunks(50, payload=b"x" * 10_000), 3)):
        scheduler = started(Scheduler(1))
        submit(scheduler, *chunks)
        assert len(scheduler.workers[0].queued) == queued
        assert len(scheduler.pending) == 50 - 1 - queued


def test_a_chunk_of_unknown_pace_long_large_or_with_shared_arguments_is_not_queued() -> None:
    unknown = [chunk(i) for i in range(3)]
    long = quick_chunks(3, seconds_per_item=1.0)
    large = quick_chunks(3, payload=b"x" * 100_000)
    # A queued chunk may start on a worker killed for the one before it, and must then run
    # again elsewhere: its arguments must still be there.
    shared = [with_shared_items(c) for c in quick_chunks(3)]
    for chunks in (unknown, long, large, shared):
        scheduler = started(Scheduler(2))
        assert sends(submit(scheduler, *chunks)) == [(0, 0), (1, 1)]


def test_nothing_is_queued_behind_a_long_chunk_or_one_of_unknown_pace() -> None:
    # One long call among short ones: the short ones must not wait behind it while the other
    # worker runs through the rest, as they would never wait in the stdlib's shared queue.
    for first in (quick_chunks(1, seconds_per_item=1.0)[0], chunk(100)):
        scheduler = started(Scheduler(2))
        short = quick_chunks(6)
        assert sends(submit(scheduler, first, *short)) == [
            (0, first.chunk_id), (1, 0), (1, 1), (1, 2), (1, 3), (1, 4), (1, 5)]
    # Behind a running chunk of 16 ms, one chunk of 5 ms starts within 20 ms, a second not.
    scheduler = started(Scheduler(1))
    running = quick_chunks(1, seconds_per_item=0.016)[0]
    submit(scheduler, running, *quick_chunks(3, seconds_per_item=0.005))
    assert len(scheduler.workers[0].queued) == 1


def test_each_queued_chunk_counts_at_its_own_pace() -> None:
    # Two chunks of 9 ms wait behind one of 9 ms: a chunk of 0.1 ms would start at 27 ms.
    scheduler = started(Scheduler(1))
    slow = quick_chunks(3, seconds_per_item=0.009)
    quick = quick_chunks(1, seconds_per_item=0.0001)[0]
    submit(scheduler, *slow, quick)
    assert list(scheduler.workers[0].queued) == slow[1:]
    assert list(scheduler.pending) == [quick]


def test_nothing_more_is_queued_behind_a_chunk_that_overran_its_estimate() -> None:
    # A 1 ms call still running after a second (it may never end): what comes now waits
    # for a worker that is free, not behind it.
    scheduler = started(Scheduler(2))
    first, second = quick_chunks(2)
    submit(scheduler, first, second)
    chunk_done(scheduler, 1, now=0.001, seconds=0.001)
    later = quick_chunks(3)
    assert sends(submit(scheduler, *later, now=1.0)) == [(1, 0), (1, 1), (1, 2)]
    assert not scheduler.workers[0].queued


def test_chunks_queued_behind_a_call_that_overruns_are_taken_back_and_run_elsewhere() -> None:
    # A 1 ms call still running WITHDRAW_AFTER past its estimate (it may never end): the
    # chunks queued behind it are taken back, once, and run on the worker that is free, in
    # their order.
    scheduler = started(Scheduler(2))
    chunks = quick_chunks(6)
    submit(scheduler, *chunks)
    assert list(scheduler.workers[0].queued) == [chunks[2], chunks[4]]
    overrun = 0.001 + WITHDRAW_AFTER
    assert scheduler.next_deadline() == pytest.approx(overrun)
    for now in (0.001, 0.002, 0.003):  # worker 1 runs through its own
        chunk_done(scheduler, 1, now=now, seconds=0.001)
    assert scheduler.handle(Tick(), overrun - 0.001) == []
    assert scheduler.handle(Tick(), overrun) == [WithdrawQueued(0, 2)]
    assert scheduler.next_deadline() is None  # one try
    assert scheduler.handle(Tick(), 10.0) == []
    actions = scheduler.handle(QueuedWithdrawn(0, 2), overrun)
    assert [(a.worker_id, a.chunk, a.queued) for a in actions] == [
        (1, chunks[2], False), (1, chunks[4], True)]
    assert not scheduler.workers[0].queued and not scheduler.pending
    # The overrunning call still ends one day: its worker is idle then.
    done, actions = chunk_done(scheduler, 0, now=20.0, seconds=20.0)
    assert done is chunks[0] and actions == []
    assert scheduler.running == {1: chunks[2]}


def test_a_chunk_cancelled_while_queued_is_taken_back_and_dropped_without_a_kill() -> None:
    # Its worker is spared: only what waits in its pipe is taken back, the cancelled chunk
    # dropped, the others run as usual.
    scheduler = started(Scheduler(1))
    chunks = quick_chunks(3)
    submit(scheduler, *chunks)
    assert scheduler.handle(Cancel(chunks[1]), 0.0) == [WithdrawQueued(0, 2)]
    assert scheduler.handle(QueuedWithdrawn(0, 2), 0.0) == [DropChunk(chunks[1])]
    # Nothing is queued again behind the running chunk (its pipe still holds what was taken
    # back), and nothing is left to watch for an overrun.
    assert list(scheduler.pending) == [chunks[2]]
    assert scheduler.next_deadline() is None
    _, actions = chunk_done(scheduler, 0, now=0.001, seconds=0.001)
    assert sends(actions) == [(0, 2)]
    assert not [a for a in actions if isinstance(a, KillWorker)]


def test_cancels_while_a_queue_is_being_taken_back_ask_for_nothing_more() -> None:
    # One taking back per queue: a second would be told a count the first has changed.
    scheduler = started(Scheduler(1))
    *chunks, later = quick_chunks(5)
    submit(scheduler, *chunks)
    assert scheduler.handle(Cancel(chunks[1]), 0.0) == [WithdrawQueued(0, 3)]
    assert scheduler.handle(Cancel(chunks[2]), 0.0) == []
    assert submit(scheduler, later) == []  # the queue is closed: it waits
    actions = scheduler.handle(QueuedWithdrawn(0, 3), 0.0)
    assert actions == [DropChunk(chunks[1]), DropChunk(chunks[2])]
    assert list(scheduler.pending) == [chunks[3], later]


def test_a_chunk_cancelled_while_queued_behind_a_call_that_overran_is_dropped() -> None:
    # The overrun's taking back came first: the cancel then finds the queue closed.
    scheduler = started(Scheduler(1))
    chunks = quick_chunks(3)
    submit(scheduler, *chunks)
    assert scheduler.handle(Tick(), 1.0) == [WithdrawQueued(0, 2)]
    assert scheduler.handle(Cancel(chunks[1]), 1.0) == []
    assert scheduler.handle(QueuedWithdrawn(0, 2), 1.0) == [DropChunk(chunks[1])]
    # Nothing is queued again behind the call that overran: it waits for a free worker.
    assert list(scheduler.pending) == [chunks[2]]
    _, actions = chunk_done(scheduler, 0, now=2.0, seconds=2.0)
    assert sends(actions) == [(0, 2)]


def test_a_queue_not_taken_back_is_watched_again_behind_each_chunk_that_starts() -> None:
    # The worker started the first queued chunk as the parent tried: nothing was taken back
    # (no QueuedWithdrawn). The rest is watched behind the chunk that now runs.
    scheduler = started(Scheduler(1))
    chunks = quick_chunks(3)
    submit(scheduler, *chunks)
    assert scheduler.handle(Tick(), 1.0) == [WithdrawQueued(0, 2)]
    chunk_done(scheduler, 0, now=1.0, seconds=1.0)
    assert scheduler.running == {0: chunks[1]}
    assert scheduler.next_deadline() == pytest.approx(1.0 + 0.001 + WITHDRAW_AFTER)
    chunk_done(scheduler, 0, now=1.001, seconds=0.001)
    assert scheduler.next_deadline() is None  # nothing waits behind the last one


def test_nothing_is_queued_behind_a_chunk_that_overran_even_if_its_pace_now_allows_it() -> None:
    # Two workers overrun at once, and the function's pace has since grown (another call of
    # it was slow): the chunks taken back from the first may not be queued on the second
    # before it is taken back in turn (the table would then take back the wrong ones), nor
    # on the first again.
    scheduler = started(Scheduler(2))
    chunks = quick_chunks(6)
    submit(scheduler, *chunks)
    chunks[0].function.pace.observe(1, 0.2)
    overrun = 0.001 + WITHDRAW_AFTER
    assert scheduler.handle(Tick(), overrun) == [WithdrawQueued(0, 2), WithdrawQueued(1, 2)]
    assert sends(scheduler.handle(QueuedWithdrawn(0, 2), overrun)) == []
    assert [c.chunk_id for c in scheduler.workers[1].queued] == [3, 5]
    assert sends(scheduler.handle(QueuedWithdrawn(1, 2), overrun)) == []
    # Each worker's in their order, at the front of the queue (as requeued work goes).
    assert [c.chunk_id for c in scheduler.pending] == [3, 5, 2, 4]


def test_nothing_more_is_taken_back_from_a_worker_whose_kill_is_ordered() -> None:
    # The kill takes back what is queued on it first (KillWorker.queued): no overrun of
    # the running chunk is watched any more.
    scheduler = started(Scheduler(1))
    chunks = quick_chunks(3)
    submit(scheduler, *chunks)
    assert scheduler.handle(Cancel(chunks[0]), 0.0) == [KillWorker(0, queued=2)]
    assert scheduler.next_deadline() is None
    assert scheduler.handle(Tick(), 1.0) == []


def test_the_workers_pace_is_measured_from_finished_chunks() -> None:
    scheduler = started(Scheduler(1))
    chunks = quick_chunks(2, size=10)
    chunks[0].function.pace.seconds_per_item = None
    submit(scheduler, *chunks)
    chunk_done(scheduler, 0, 0, 1.0, seconds=0.05)
    assert chunks[0].function.pace.seconds_per_item == 0.005


def test_a_death_fails_the_running_chunk_and_requeues_the_queued_ones_in_order() -> None:
    scheduler = started(Scheduler(2))
    chunks = quick_chunks(6)
    submit(scheduler, *chunks)
    assert list(scheduler.workers[0].queued) == [chunks[2], chunks[4]]
    actions = lost(scheduler, 0, DEATH, 1.0)
    failed = [a.chunk for a in actions if isinstance(a, FailChunk)]
    assert failed == [chunks[0]]
    assert StartWorker(2) in actions
    # The queued chunks never started: they run again, first of all.
    assert sends(actions)[0] == (2, 2)
    assert scheduler.running == {1: chunks[1], 2: chunks[2]}
    everything = [c for slot in scheduler.workers.values() for c in slot.queued]
    assert sorted(c.chunk_id for c in [*everything, *scheduler.pending]) == [3, 4, 5]


def test_a_cancelled_queued_chunk_that_started_before_it_was_taken_back_kills_its_worker(
) -> None:
    # The worker went on to the chunk as the parent tried to take the queue back (no
    # QueuedWithdrawn, or a backend that cannot): it is killed as the chunk starts, and
    # nothing fails.
    scheduler = started(Scheduler(1))
    chunks = quick_chunks(3)
    submit(scheduler, *chunks)
    assert list(scheduler.workers[0].queued) == chunks[1:]
    assert scheduler.handle(Cancel(chunks[1]), 0.0) == [WithdrawQueued(0, 2)]
    _, actions = chunk_done(scheduler, 0, 0, 1.0)
    assert actions == [KillWorker(0, queued=1)]  # chunk 2 is taken back first
    actions = lost(scheduler, 0, DEATH, 1.0)
    assert not [a for a in actions if isinstance(a, FailChunk)]
    assert sends(actions) == [(1, 2)]


def test_a_cancelled_chunk_queued_behind_others_is_dropped_when_its_worker_dies() -> None:
    scheduler = started(Scheduler(1))
    chunks = quick_chunks(4)
    submit(scheduler, *chunks)
    assert scheduler.handle(Cancel(chunks[2]), 0.0) == [WithdrawQueued(0, 3)]
    actions = lost(scheduler, 0, DEATH, 1.0)  # before the queue was taken back
    assert DropChunk(chunks[2]) in actions
    assert [a.chunk for a in actions if isinstance(a, FailChunk)] == [chunks[0]]
    assert sends(actions)[0] == (1, 1)  # the first queued one runs again, first
    assert chunks[2] not in [*scheduler.pending, *scheduler.workers[1].queued]


def test_nothing_is_queued_on_a_worker_that_will_be_recycled() -> None:
    scheduler = started(Scheduler(1, WorkerPolicy(max_tasks=1)))
    assert sends(submit(scheduler, *quick_chunks(3))) == [(0, 0)]
    scheduler = started(Scheduler(1, WorkerPolicy(max_memory=10**9)))
    assert sends(submit(scheduler, *quick_chunks(3))) == [(0, 0)]
    scheduler = started(Scheduler(1, WorkerPolicy(max_tasks=2)))
    assert sends(submit(scheduler, *quick_chunks(3))) == [(0, 0), (0, 1)]
    scheduler = started(Scheduler(1, WorkerPolicy(max_tasks=4)))  # up to the recycling
    assert sends(submit(scheduler, *quick_chunks(6))) == [(0, 0), (0, 1), (0, 2), (0, 3)]


def test_breaking_the_pool_fails_queued_chunks_too_and_drops_the_cancelled_ones() -> None:
    scheduler = started(Scheduler(1))
    chunks = quick_chunks(4)
    submit(scheduler, *chunks)
    scheduler.handle(Cancel(chunks[2]), 0.0)
    actions = scheduler.handle(Break(RuntimeError("x")), 0.0)
    failed = [a.chunk for a in actions if isinstance(a, FailChunk)]
    assert sorted(c.chunk_id for c in failed) == [0, 1, 3]
    assert DropChunk(chunks[2]) in actions


def test_a_cancelled_chunk_is_skipped_and_the_next_one_queued_in_its_place() -> None:
    class _Cancelled(_NullSink):
        def chunk_starting(self, chunk: Chunk) -> bool:
            return False

    scheduler = started(Scheduler(1))
    chunks = quick_chunks(3)
    chunks[1] = Chunk(1, chunks[1].function, b"", CallMode.ONE_ARG, 1, 1, _Cancelled(), "c1")
    actions = submit(scheduler, *chunks)
    assert sends(actions) == [(0, 0), (0, 2)] and DropChunk(chunks[1]) in actions


def went_on_after_a_cancelled_chunk(count: int) -> tuple[Scheduler, list[Chunk]]:
    """One worker, ``count`` short chunks: the kill ordered for chunk 1 (cancelled) lands only
    after the worker has reported it done and gone on to chunk 2, which waited in its pipe,
    and could not be taken back first (neither QueuedWithdrawn nor KillSpared is told: a
    backend whose workers cannot give chunks back). Chunk 2 runs on the doomed worker now,
    and its answer, or its rerun elsewhere, must be the only one."""
    scheduler = started(Scheduler(1))
    chunks = quick_chunks(count)
    submit(scheduler, *chunks[:1])
    chunk_done(scheduler, 0, 0, 0.5, seconds=0.001)  # the pace is known: later chunks queue
    submit(scheduler, *chunks[1:], now=1.0)
    assert list(scheduler.workers[0].queued) == chunks[2:]
    assert scheduler.handle(Cancel(chunks[1]), 1.0) == [KillWorker(0, queued=count - 2)]
    done, actions = chunk_done(scheduler, 0, 0, 1.1, seconds=0.001)
    assert done is chunks[1] and sends(actions) == []
    assert scheduler.running[0] is chunks[2]  # no "reported a chunk it was not given" later
    return scheduler, chunks


def test_a_chunk_queued_on_a_doomed_worker_may_run_there_and_reruns_if_the_kill_took_it() -> None:
    scheduler, chunks = went_on_after_a_cancelled_chunk(4)
    actions = lost(scheduler, 0, DEATH, 1.2)
    assert not any(isinstance(a, (FailChunk, DropChunk)) for a in actions)
    assert sends(actions)[0] == (1, 2)  # it runs again on the replacement, then chunk 3
    assert chunks[3] in [*scheduler.pending, *scheduler.workers[1].queued]


def test_breaking_the_pool_fails_a_chunk_that_went_on_after_a_cancelled_one() -> None:
    # Chunk 2 was not cancelled: its caller must get the error, not be forgotten.
    scheduler, chunks = went_on_after_a_cancelled_chunk(3)
    error = RuntimeError("broken")
    assert scheduler.handle(Break(error), 1.2) == [FailChunk(chunks[2], error)]


def test_a_chunk_cancelled_while_queued_on_a_doomed_worker_is_dropped_by_a_break() -> None:
    scheduler = started(Scheduler(1))
    chunks = quick_chunks(4)
    submit(scheduler, *chunks[:1])
    chunk_done(scheduler, 0, 0, 0.5, seconds=0.001)
    submit(scheduler, *chunks[1:], now=1.0)
    assert scheduler.handle(Cancel(chunks[1]), 1.0) == [KillWorker(0, queued=2)]
    assert scheduler.handle(Cancel(chunks[2]), 1.0) == []  # queued; the kill is coming
    chunk_done(scheduler, 0, 0, 1.1, seconds=0.001)
    assert scheduler.running[0] is chunks[2]
    error = RuntimeError("broken")
    assert scheduler.handle(Break(error), 1.2) == [DropChunk(chunks[2]),
                                                    FailChunk(chunks[3], error)]


def test_a_chunk_queued_on_a_doomed_worker_that_finishes_there_is_answered_once() -> None:
    scheduler, chunks = went_on_after_a_cancelled_chunk(3)
    done, _ = chunk_done(scheduler, 0, 0, 1.2, seconds=0.001)
    assert done is chunks[2]
    actions = lost(scheduler, 0, DEATH, 1.3)
    assert sends(actions) == [] and not scheduler.pending


def test_a_kill_for_a_cancel_takes_back_the_queued_chunks_and_they_run_elsewhere_as_new(
) -> None:
    scheduler = started(Scheduler(1))
    chunks = quick_chunks(3)
    submit(scheduler, *chunks)
    assert scheduler.handle(Cancel(chunks[0]), 0.0) == [KillWorker(0, queued=2)]
    assert sends(scheduler.handle(QueuedWithdrawn(0, 2), 0.0)) == []  # its worker is doomed
    assert list(scheduler.pending) == chunks[1:]
    actions = lost(scheduler, 0, DEATH, 0.1)
    assert [a for a in actions if isinstance(a, (FailChunk, DropChunk))] == [
        DropChunk(chunks[0])]
    assert sends(actions) == [(1, 1)] and list(scheduler.pending) == [chunks[2]]
    assert [c.attempt for c in chunks[1:]] == [1, 1]


def test_a_kill_is_spared_when_the_worker_went_on_to_a_queued_chunk_and_that_one_is_its_own(
) -> None:
    # The worker had started chunk 1 when the kill was to take it back: chunk 0 was done.
    # Nothing is killed; chunk 1 is the worker's own work, not a bystander of a kill that
    # would run again elsewhere: a death now fails it as any death does.
    scheduler = started(Scheduler(1))
    chunks = quick_chunks(3)
    submit(scheduler, *chunks)
    assert scheduler.handle(Cancel(chunks[0]), 0.0) == [KillWorker(0, queued=2)]
    assert scheduler.handle(KillSpared(0), 0.0) == []
    assert not scheduler.workers[0].doomed
    done, actions = chunk_done(scheduler, 0, now=0.001, seconds=0.001)
    assert done is chunks[0] and actions == []  # its answer, which its sink drops
    assert scheduler.running[0] is chunks[1]
    assert sends(submit(scheduler, *quick_chunks(1), now=0.001)) == [(0, 0)]  # queued again
    actions = lost(scheduler, 0, DEATH, 0.002)
    failed = [a.chunk for a in actions if isinstance(a, FailChunk)]
    assert failed == [chunks[1]] and isinstance(actions[0].error, WorkerDied)


def test_a_kill_spared_takes_back_the_queued_chunks_the_worker_had_not_reached() -> None:
    # The worker had started chunk 1 (so chunk 0 was done) but not chunk 2 when the kill was
    # to take them back: chunk 2 is taken back (QueuedWithdrawn for 1 of 2), the kill spared.
    scheduler = started(Scheduler(1))
    chunks = quick_chunks(3)
    submit(scheduler, *chunks)
    assert scheduler.handle(Cancel(chunks[0]), 0.0) == [KillWorker(0, queued=2)]
    assert sends(scheduler.handle(QueuedWithdrawn(0, 1), 0.0)) == []  # it is doomed still
    assert scheduler.handle(KillSpared(0), 0.0) == []
    assert list(scheduler.workers[0].queued) == [chunks[1]]
    assert list(scheduler.pending) == [chunks[2]]
    done, actions = chunk_done(scheduler, 0, now=0.001, seconds=0.001)
    assert done is chunks[0] and scheduler.running[0] is chunks[1]
    assert sends(actions) == [(0, 2)]  # queued again, behind chunk 1
    assert not [a for a in actions if isinstance(a, (KillWorker, FailChunk, DropChunk))]


def test_a_queue_taken_back_in_part_keeps_on_its_worker_what_it_has_started() -> None:
    # The overrun's taking back found the worker past the running chunk and on the first
    # queued one: the two after it come back, in their order; the first stays, and runs.
    scheduler = started(Scheduler(1))
    chunks = quick_chunks(4)
    submit(scheduler, *chunks)
    overrun = 0.001 + WITHDRAW_AFTER
    assert scheduler.handle(Tick(), overrun) == [WithdrawQueued(0, 3)]
    assert scheduler.handle(QueuedWithdrawn(0, 2), overrun) == []
    assert list(scheduler.workers[0].queued) == [chunks[1]]
    assert list(scheduler.pending) == [chunks[2], chunks[3]]
    done, actions = chunk_done(scheduler, 0, now=overrun, seconds=overrun)
    assert done is chunks[0] and scheduler.running[0] is chunks[1]
    assert not [a for a in actions if isinstance(a, (KillWorker, FailChunk, DropChunk))]
    done, actions = chunk_done(scheduler, 0, now=overrun + 0.001, seconds=0.001)
    assert done is chunks[1] and sends(actions)[0] == (0, 2)


def _one_running_two_queued(timeout: float) -> tuple[Scheduler, list[Chunk]]:
    """One worker running a 1 ms call with ``timeout``, two more queued behind it."""
    scheduler = started(Scheduler(1))
    function = TaskFunction(1, b"")
    function.pace.observe(1, 0.001)
    chunks = [Chunk(n, function, b"", CallMode.ONE_ARG, n, 1, _NullSink(), f"chunk{n}",
                    TaskPolicy(timeout=timeout)) for n in range(3)]
    submit(scheduler, *chunks)
    assert len(scheduler.workers[0].queued) == 2
    return scheduler, chunks


def test_a_timeout_kill_takes_back_the_queued_chunks_and_a_spared_one_answers_in_time(
) -> None:
    scheduler, chunks = _one_running_two_queued(timeout=0.5)
    # Its overrun is due too: the kill's own taking back is the only one.
    assert scheduler.handle(Tick(), 1.0) == [KillWorker(0, queued=2, first_call_of=0)]
    assert scheduler.handle(FirstCallBegan(0, 0.0), 1.0) == [KillWorker(0, queued=2)]
    scheduler.handle(KillSpared(0), 1.0)
    item_done(scheduler, 0, 1.0)
    done, actions = chunk_done(scheduler, 0, now=1.0, seconds=1.0)
    assert done is chunks[0] and actions == []  # answered, not failed with TaskTimeout
    assert scheduler.running[0] is chunks[1] and scheduler.workers[0].deadline == 1.5


def test_chunks_queued_behind_a_first_item_that_is_loading_are_still_watched_for_overrun(
) -> None:
    # The timeout's kill waits while the worker loads the first item's function (a slow
    # import): the chunks queued behind it are taken back at the overrun, as they would be
    # without a timeout, and do not wait for the import.
    scheduler, _ = _one_running_two_queued(timeout=0.05)
    for now in (0.05, 0.1):
        assert scheduler.handle(Tick(), now) == [KillWorker(0, queued=2, first_call_of=0)]
        assert scheduler.handle(FirstCallBegan(0, None), now) == []  # still loading
    overrun = 0.001 + WITHDRAW_AFTER
    assert scheduler.next_deadline() == pytest.approx(overrun)
    assert scheduler.handle(Tick(), overrun) == [WithdrawQueued(0, 2)]


def test_an_item_that_raises_is_retried_by_its_policy_then_failed_with_the_attempts_noted(
) -> None:
    scheduler = started(Scheduler(1, split=_split))
    policy = TaskPolicy(retries=1, retry_on=(ValueError,))
    running = chunk(0, size=3, policy=policy)
    submit(scheduler, running)
    item_done(scheduler, 0, 1.0)
    retry = scheduler.handle(ItemFailed(running, 1, ValueError("first")), 2.0)
    assert retry == [] and scheduler.counts.retried == 1  # queued; the worker is busy
    again = scheduler.pending[0]
    assert (again.first_index, again.size, again.attempt) == (1, 1, 2)
    error = ValueError("second")
    (failure,) = scheduler.handle(ItemFailed(again, 0, error), 3.0)
    assert isinstance(failure, FailChunk) and failure.error is error
    assert (failure.chunk.first_index, failure.chunk.size) == (1, 1)
    if hasattr(error, "__notes__"):
        assert "each of 2 attempts" in error.__notes__[0]
    other = scheduler.handle(ItemFailed(running, 2, TypeError("not retried")), 3.0)
    assert [type(a) for a in other] == [FailChunk]


def test_the_scheduler_builds_its_share_of_the_stats() -> None:
    scheduler = started(Scheduler(1, split=_split))
    policy = TaskPolicy(retries=1)
    submit(scheduler, chunk(0, size=3, policy=policy), chunk(1, size=2))
    item_done(scheduler, 0, 1.0)
    share = scheduler.stats(2.0)
    assert share.tasks_queued == 2 and share.tasks_retried == 0
    (slot,) = share.workers
    assert (slot.worker_id, slot.unanswered, slot.tasks_done) == (0, 2, 1)
    assert slot.busy_seconds == 2.0 and slot.idle_seconds == 0.0
    item_done(scheduler, 0, 3.0)
    item_done(scheduler, 0, 4.0)  # every item answered, the chunk's end still to come
    assert scheduler.stats(4.0).workers[0].unanswered == 0


def test_a_worker_asked_to_stop_has_a_deadline_to_exit_and_is_killed_after_it() -> None:
    # Every deadline of the pool is the scheduler's: the time a recycled or closing worker
    # has to exit too (a task may leave a non-daemon thread that keeps it alive).
    from procpool._scheduler import RETIRE_TIMEOUT
    from procpool._scheduler_events import Tick, WorkerExited

    scheduler = started(Scheduler(2, WorkerPolicy()))
    scheduler.handle(Close(), 10.0)
    assert scheduler.next_deadline() == 10.0 + RETIRE_TIMEOUT
    scheduler.handle(WorkerExited(0), 11.0)  # one exits in time: no deadline of its own left
    assert scheduler.next_deadline() == 10.0 + RETIRE_TIMEOUT
    assert scheduler.handle(Tick(), 10.0 + RETIRE_TIMEOUT - 0.1) == []
    assert scheduler.handle(Tick(), 10.0 + RETIRE_TIMEOUT) == [KillWorker(1)]
    assert scheduler.next_deadline() is None
    assert scheduler.handle(Tick(), 100.0) == []  # killed once, not again
