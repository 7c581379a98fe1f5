"""The scheduler's decisions, driven directly: no processes, no threads, no clock."""

from __future__ import annotations

from typing import Any

from procpool._scheduler import FailChunk, Scheduler, SendChunk, StartWorker, StopWorker
from procpool._task import CallMode, Chunk, TaskFunction

FUNCTION = TaskFunction(0, b"")


class _NullSink:
    def chunk_done(self, *args: Any) -> None:
        pass

    def chunk_failed(self, *args: Any) -> None:
        pass


def chunk(n: int) -> Chunk:
    return Chunk(n, FUNCTION, b"", CallMode.ONE_ARG, n, 1, _NullSink(), f"chunk {n}")


def sends(actions: list[Any]) -> list[tuple[int, int]]:
    return [(a.worker_id, a.chunk.chunk_id) for a in actions if isinstance(a, SendChunk)]


def test_start_asks_for_one_worker_per_process() -> None:
    assert Scheduler(3).start() == [StartWorker(0), StartWorker(1), StartWorker(2)]


def test_chunks_go_out_in_order_one_per_worker() -> None:
    scheduler = Scheduler(2)
    scheduler.start()
    actions = scheduler.submit([chunk(i) for i in range(5)])
    assert sends(actions) == [(0, 0), (1, 1)]
    done, actions = scheduler.chunk_done(1)
    assert done.chunk_id == 1
    assert sends(actions) == [(1, 2)]
    assert len(scheduler.pending) == 2


def test_a_lost_worker_fails_exactly_its_chunk_and_is_replaced() -> None:
    scheduler = Scheduler(2)
    scheduler.start()
    chunks = [chunk(i) for i in range(3)]
    scheduler.submit(chunks)
    error = RuntimeError("died")
    actions = scheduler.worker_lost(0, error)
    assert actions[0] == FailChunk(chunks[0], error)
    assert actions[1] == StartWorker(2)
    assert sends(actions) == [(2, 2)]  # the replacement picks up the queue
    assert scheduler.running == {1: chunks[1], 2: chunks[2]}


def test_an_idle_worker_lost_is_replaced_without_failures() -> None:
    scheduler = Scheduler(1)
    scheduler.start()
    assert scheduler.worker_lost(0, RuntimeError()) == [StartWorker(1)]


def test_max_tasks_per_worker_retires_and_replaces() -> None:
    scheduler = Scheduler(1, max_tasks_per_worker=2)
    scheduler.start()
    scheduler.submit([chunk(i) for i in range(3)])
    _, actions = scheduler.chunk_done(0)
    assert sends(actions) == [(0, 1)]
    _, actions = scheduler.chunk_done(0)
    assert actions[:2] == [StopWorker(0), StartWorker(1)]
    assert sends(actions) == [(1, 2)]


def test_close_stops_workers_only_when_all_work_and_streams_are_done() -> None:
    scheduler = Scheduler(2)
    scheduler.start()
    scheduler.submit([chunk(0)])
    scheduler.stream_opened()
    assert scheduler.close() == []
    _, actions = scheduler.chunk_done(0)
    assert actions == []  # a stream may still submit
    assert not scheduler.is_drained()
    actions = scheduler.stream_closed()
    assert sorted(a.worker_id for a in actions if isinstance(a, StopWorker)) == [0, 1]
    assert scheduler.is_drained()


def test_a_death_while_closing_with_no_work_is_not_replaced() -> None:
    scheduler = Scheduler(2)
    scheduler.start()
    scheduler.submit([chunk(0)])
    scheduler.stream_opened()
    scheduler.close()
    scheduler.stream_closed()
    error = RuntimeError()
    actions = scheduler.worker_lost(0, error)
    assert FailChunk(scheduler_chunk := actions[0].chunk, error) == actions[0]
    assert scheduler_chunk.chunk_id == 0
    assert not any(isinstance(a, StartWorker) for a in actions)


def test_break_pool_fails_everything_now_and_later() -> None:
    scheduler = Scheduler(1)
    scheduler.start()
    chunks = [chunk(i) for i in range(3)]
    scheduler.submit(chunks)
    error = RuntimeError("broken")
    actions = scheduler.break_pool(error)
    failed = [a.chunk.chunk_id for a in actions if isinstance(a, FailChunk)]
    assert sorted(failed) == [0, 1, 2]
    assert StopWorker(0) in actions
    late = chunk(9)
    assert scheduler.submit([late]) == [FailChunk(late, error)]
    assert scheduler.worker_lost(0, error) == []  # already retired


def test_terminate_abandons_open_streams() -> None:
    scheduler = Scheduler(1)
    scheduler.start()
    scheduler.stream_opened()
    scheduler.break_pool(RuntimeError())
    scheduler.close(abandon_streams=True)
    assert scheduler.is_drained()


def test_work_arriving_after_the_workers_stopped_starts_new_ones() -> None:
    scheduler = Scheduler(2)
    scheduler.start()
    stops = scheduler.close()
    assert sorted(a.worker_id for a in stops if isinstance(a, StopWorker)) == [0, 1]
    late = chunk(7)
    actions = scheduler.submit([late])
    assert actions[:2] == [StartWorker(2), StartWorker(3)]
    assert sends(actions) == [(2, 7)]
    assert not scheduler.is_drained()
    _, actions = scheduler.chunk_done(2)
    assert sorted(a.worker_id for a in actions if isinstance(a, StopWorker)) == [2, 3]
    assert scheduler.is_drained()
