"""procpool.ProcessPoolExecutor: the concurrent.futures API and semantics, and its failures."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import functools
import io
import itertools
import os
import subprocess
import sys
import textwrap
import threading
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest
from tqdm import tqdm

import procpool
from support import still_alive

import misbehaving as mb

TESTS = Path(__file__).parent


@pytest.fixture
def executor() -> Any:
    with procpool.ProcessPoolExecutor(2) as executor:
        yield executor


def keywords(**kwargs: Any) -> dict[str, Any]:
    return kwargs


# ---- the API -----------------------------------------------------------------------------------


def test_futures_are_stdlib_futures_and_work_with_its_helpers(executor: Any) -> None:
    futures = [executor.submit(mb.square, i) for i in range(10)]
    assert all(isinstance(f, cf.Future) for f in futures)
    assert sorted(f.result() for f in cf.as_completed(futures, timeout=30)) == [
        i * i for i in range(10)]
    done, not_done = cf.wait(futures, timeout=30)
    assert len(done) == 10 and not not_done
    seen: list[Any] = []
    executor.submit(mb.square, 3).add_done_callback(lambda f: seen.append(f.result()))
    executor.shutdown(wait=True)
    assert seen == [9]


def test_submit_passes_every_keyword_to_the_function(executor: Any) -> None:
    assert executor.submit(keywords, self=1, fn=2).result(30) == {"self": 1, "fn": 2}
    assert executor.submit(pow, 2, 5).result(30) == 32


@pytest.mark.parametrize("chunksize", [None, 1, 3, 100])
def test_map_returns_results_in_order(executor: Any, chunksize: int | None) -> None:
    assert list(executor.map(mb.square, range(50), chunksize=chunksize)) == [
        x * x for x in range(50)]
    assert list(executor.map(mb.add, range(5), range(10, 100), chunksize=chunksize)) == [
        10, 12, 14, 16, 18]
    assert list(executor.map(mb.square, [])) == []


def test_map_raises_at_the_failing_item(executor: Any) -> None:
    results = executor.map(mb.raise_if, range(6), chunksize=2)
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="item 3 is bad"):
        next(results)


def test_map_timeout_ends_the_iteration_and_cancels_its_work(fifos: Any) -> None:
    with procpool.ProcessPoolExecutor(1) as executor:
        task = functools.partial(mb.announce_then_block, release_fifo=fifos.release)
        results = executor.map(task, [fifos.started], timeout=0.2)
        fifos.wait_started()
        (pid,) = executor._processes
        with pytest.raises(cf.TimeoutError):  # the builtin TimeoutError from 3.11 on
            next(results)
        # Nobody can read that result any more: like the stdlib, map cancels the future;
        # unlike it, cancelling stops the running task (its worker is killed and replaced).
        assert still_alive([pid]) == []
        assert executor.submit(mb.square, 4).result(30) == 16


def test_map_without_buffersize_reads_the_input_at_once(executor: Any) -> None:
    def numbers() -> Any:
        yield 1
        raise OSError("input broke")

    with pytest.raises(OSError, match="input broke"):
        executor.map(mb.square, numbers())  # raised by map() itself, as in the stdlib


def test_an_eager_map_runs_everything_whether_or_not_it_is_read(tmp_path: Path) -> None:
    # Its batches are cut and submitted by a feeder thread as the workers go (so their sizes
    # follow the pace), yet all of them run, as the stdlib's eager map does.
    paths = [str(tmp_path / str(i)) for i in range(300)]
    with procpool.ProcessPoolExecutor(2) as executor:
        executor.map(mb.touch, paths)
    assert sorted(int(p.name) for p in tmp_path.iterdir()) == list(range(300))


def test_shutdown_cancelling_stops_an_eager_map(fifos: Any) -> None:
    executor = procpool.ProcessPoolExecutor(1)
    task = functools.partial(mb.block_on_first, started_fifo=fifos.started,
                             release_fifo=fifos.release)
    results = executor.map(task, range(1000))
    fifos.wait_started()  # item 0 runs; the rest waits in the feeder or the queue
    threading.Thread(target=fifos.release_task).start()
    executor.shutdown(wait=True, cancel_futures=True)
    taken = []
    with pytest.raises(cf.CancelledError):
        taken.extend(results)
    assert taken == list(range(len(taken))) and len(taken) < 1000


@pytest.mark.parametrize("chunksize", [None, 2])
def test_a_lazy_map_delivers_every_item_before_the_input_raised(
        executor: Any, chunksize: int | None) -> None:
    # Raised after the first buffersize batches were read (an exception while map() reads
    # those propagates from map() itself, as in the stdlib).
    def numbers() -> Any:
        yield from range(5)
        raise OSError("input broke")

    results = executor.map(mb.square, numbers(), chunksize=chunksize, buffersize=2)
    assert [next(results) for _ in range(5)] == [0, 1, 4, 9, 16]
    with pytest.raises(OSError, match="input broke"):
        next(results)


def test_map_over_one_iterable_passes_each_item_whole(executor: Any) -> None:
    # One iterable travels without a tuple per item; a tuple item must still arrive whole.
    items = [(1, 2), (3,), (), [4], None, "ab"]
    assert list(executor.map(mb.identity, items)) == items
    assert list(executor.map(mb.identity, iter(items), chunksize=4)) == items
    assert list(executor.map(mb.identity, items, buffersize=2)) == items


def test_map_results_are_an_iterator_that_closes_like_the_stdlibs_generator(
        executor: Any) -> None:
    results = executor.map(mb.square, range(40), chunksize=10)
    assert iter(results) is results
    assert next(results) == 0
    assert list(itertools.islice(results, 12)) == [x * x for x in range(1, 13)]
    results.close()  # in the middle of a chunk: what is left of it goes too
    with pytest.raises(StopIteration):
        next(results)
    assert list(results) == []
    assert list(executor.map(mb.square, range(5))) == [0, 1, 4, 9, 16]  # the executor goes on


def test_map_with_buffersize_streams_an_endless_input(executor: Any) -> None:
    pulled = itertools.count()

    def endless() -> Any:
        while True:
            yield next(pulled)

    results = executor.map(mb.square, endless(), buffersize=4)
    assert list(itertools.islice(results, 20)) == [x * x for x in range(20)]
    assert next(pulled) <= 20 + 4 + 1  # at most buffersize ahead of the consumer
    results.close()


def test_invalid_arguments_are_rejected_like_the_stdlib() -> None:
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        procpool.ProcessPoolExecutor(0)
    with pytest.raises(TypeError, match="initializer must be a callable"):
        procpool.ProcessPoolExecutor(1, initializer=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="incompatible with the 'fork'"):
        procpool.ProcessPoolExecutor(1, mp_context="fork", max_tasks_per_child=2)
    with pytest.raises(ValueError, match="max_tasks_per_child must be >= 1"):
        procpool.ProcessPoolExecutor(1, max_tasks_per_child=0)
    with procpool.ProcessPoolExecutor(1) as executor:
        with pytest.raises(ValueError, match="chunksize must be >= 1"):
            executor.map(mb.square, [1], chunksize=0)
        with pytest.raises(ValueError, match="buffersize must be None or > 0"):
            executor.map(mb.square, [1], buffersize=0)
        with pytest.raises(TypeError, match="buffersize must be an integer or None"):
            executor.map(mb.square, [1], buffersize=2.0)  # type: ignore[arg-type]


def test_max_tasks_per_child_recycles_and_defaults_to_spawn() -> None:
    with procpool.ProcessPoolExecutor(1, max_tasks_per_child=2) as executor:
        assert executor._mp_context.get_start_method() == "spawn"
        pids = [executor.submit(mb.pid_of_worker).result(30) for _ in range(6)]
    assert len(set(pids)) == 3


def test_lambdas_work(executor: Any) -> None:
    assert executor.submit(lambda: 42).result(30) == 42
    assert list(executor.map(lambda x: -x, [1, 2])) == [-1, -2]


# ---- shutdown and cancellation ---------------------------------------------------------------


def test_shutdown_waits_and_then_refuses_work() -> None:
    executor = procpool.ProcessPoolExecutor(2)
    futures = [executor.submit(mb.square, i) for i in range(20)]
    executor.shutdown(wait=True)
    assert [f.result(0) for f in futures] == [i * i for i in range(20)]
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        executor.submit(mb.square, 1)
    for chunksize, buffersize in ((None, None), (2, None), (None, 2)):
        with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
            executor.map(mb.square, range(3), chunksize=chunksize, buffersize=buffersize)


def test_cancelling_a_pending_future_drops_it(fifos: Any, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with procpool.ProcessPoolExecutor(1) as executor:
        blocker = executor.submit(mb.announce_then_block, fifos.started, fifos.release)
        fifos.wait_started()
        pending = executor.submit(marker.touch)
        assert pending.cancel() and pending.cancelled()
        fifos.release_task()
        assert blocker.result(30) == "released"
    assert not marker.exists()


@pytest.mark.parametrize("max_queued", [None, 2])
def test_a_future_cancelled_while_it_waits_is_done_for_wait_and_as_completed(
        fifos: Any, max_queued: int | None) -> None:
    # wait() and as_completed() count a cancellation only once it is notified, which the
    # stdlib's executor does as it reaches the call in its queue. Here the only worker is
    # held, so nothing reaches it (and with max_queued it leaves the queue at once): they
    # waited until the worker was free, or for ever.
    with procpool.ProcessPoolExecutor(1, max_queued=max_queued) as executor:
        blocker = executor.submit(mb.announce_then_block, fifos.started, fifos.release)
        fifos.wait_started()
        pending = executor.submit(mb.square, 3)
        try:
            assert pending.cancel()
            assert cf.wait([pending], timeout=10).done == {pending}  # at once; 10 s bounds a bug
            assert list(cf.as_completed([pending], timeout=10)) == [pending]
        finally:
            fifos.release_task()
        assert blocker.result(30) == "released"


@pytest.mark.parametrize("max_queued", [None, 8])
def test_as_completed_sees_what_a_cancelling_shutdown_dropped(
        fifos: Any, max_queued: int | None) -> None:
    executor = procpool.ProcessPoolExecutor(1, max_queued=max_queued)
    blocker = executor.submit(mb.announce_then_block, fifos.started, fifos.release)
    fifos.wait_started()
    queued = [executor.submit(mb.square, i) for i in range(5)]
    executor.shutdown(wait=False, cancel_futures=True)
    try:
        assert set(cf.as_completed(queued, timeout=10)) == set(queued)
        assert all(f.cancelled() for f in queued)
    finally:
        fifos.release_task()
        executor.shutdown(wait=True)
    assert blocker.result(0) == "released"


def test_cancelling_a_running_future_kills_its_worker(fifos: Any) -> None:
    with procpool.ProcessPoolExecutor(1) as executor:
        running = executor.submit(mb.announce_then_block, fifos.started, fifos.release)
        fifos.wait_started()
        assert running.running()
        (pid,) = executor._processes
        assert running.cancel()
        assert running.cancelled() and running.done()
        with pytest.raises(cf.CancelledError):
            running.result(0)
        assert cf.wait([running], timeout=30).done == {running}
        assert still_alive([pid]) == []
        assert executor.submit(mb.square, 6).result(30) == 36  # a new worker took over


def test_shutdown_can_cancel_what_has_not_started(fifos: Any) -> None:
    executor = procpool.ProcessPoolExecutor(1)
    blocker = executor.submit(mb.announce_then_block, fifos.started, fifos.release)
    fifos.wait_started()
    queued = [executor.submit(mb.square, i) for i in range(5)]
    # Release the blocker only once the cancels are in: released earlier, its worker could
    # take a queued task before shutdown() reached it (a race of the test, not of the pool).
    executor.shutdown(wait=False, cancel_futures=True)
    fifos.release_task()
    executor.shutdown(wait=True)
    assert blocker.result(0) == "released"
    assert all(f.cancelled() for f in queued)


def test_shutdown_cancelling_spares_what_the_workers_took_at_once() -> None:
    # CPython's test_cancel_futures: submit many, shutdown(cancel_futures=True) at once. As
    # with the stdlib's call queue, the workers' first tasks are theirs (here: every task
    # submitted before the shutdown reaches the dispatcher first), and only the rest is
    # cancelled.
    executor = procpool.ProcessPoolExecutor(2, mp_context="fork")
    try:
        futures = [executor.submit(mb.hang) for _ in range(10)]
        executor.shutdown(wait=False, cancel_futures=True)
        taken = [future for future in futures if not future.cancelled()]
        assert len(taken) == 2 and all(future.running() for future in taken)
    finally:
        executor.kill_workers()


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_cancelling_futures_that_wait_in_the_workers_pipes_loses_no_other(method: str) -> None:
    # After the first result, cancel every future that has started (most wait in a worker's
    # pipe, behind tiny tasks racing through): each cancel takes queued chunks back, or kills
    # a worker as it reaches one. Every other future must still be answered, with its value.
    # (A withdrawal that let go of chunks it had locked made a worker skip one that nobody
    # then ran: a loop like this one hung, 2026-12-08.)
    with procpool.ProcessPoolExecutor(2, mp_context=method) as executor:
        for _ in range(10):
            futures = [executor.submit(mb.square, n) for n in range(200)]
            cf.wait(futures, return_when=cf.FIRST_COMPLETED)
            for future in futures:
                if future.running():
                    future.cancel()
            not_done = cf.wait(futures, timeout=30).not_done
            assert not not_done, f"{len(not_done)} futures were never answered"
            for n, future in enumerate(futures):
                assert future.cancelled() or future.result() == n * n


@pytest.mark.parametrize("method", ["terminate_workers", "kill_workers"])
def test_terminate_and_kill_workers_stop_everything(method: str, fifos: Any) -> None:
    executor = procpool.ProcessPoolExecutor(1)
    running = executor.submit(mb.ignore_sigterm_then_block, fifos.started, fifos.release)
    fifos.wait_started()
    queued = executor.submit(mb.square, 2)
    pids = list(executor._processes)
    getattr(executor, method)()
    with pytest.raises(BrokenProcessPool):
        running.result(30)
    assert queued.cancelled()
    assert still_alive(pids) == []
    with pytest.raises(RuntimeError):
        executor.submit(mb.square, 1)


def test_submit_after_interpreter_shutdown_is_refused_as_in_the_stdlib(tmp_path: Path) -> None:
    script = tmp_path / "late.py"
    script.write_text(textwrap.dedent("""
        import atexit, sys
        import procpool

        @atexit.register
        def run_last():  # registered first: runs after procpool's own exit handler
            try:
                executor.submit(id, None)
            except RuntimeError:
                print("runtime-error")
                raise

        if __name__ == "__main__":
            executor = procpool.ProcessPoolExecutor(2, mp_context=sys.argv[1])
            executor.submit(id, 42).result()
    """))
    done = subprocess.run([sys.executable, str(script), "fork"], capture_output=True,
                          text=True, timeout=60)
    assert done.stdout.strip() == "runtime-error"
    assert "RuntimeError: cannot schedule new futures after interpreter shutdown" in done.stderr


def test_submitted_work_finishes_at_interpreter_exit(tmp_path: Path) -> None:
    script = tmp_path / "fire_and_forget.py"
    script.write_text(textwrap.dedent("""
        import sys, pathlib
        import procpool
        if __name__ == "__main__":
            executor = procpool.ProcessPoolExecutor(2)
            for i in range(4):
                executor.submit(pathlib.Path(sys.argv[1], str(i)).touch)
            executor.map(pathlib.Path.touch, [pathlib.Path(sys.argv[1], f"m{i}")
                                              for i in range(100)])
    """))
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["0", "1", "2", "3"]
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("m")]) == 100


# ---- failures ------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["exit", "kill", "segv"])
def test_a_death_fails_only_its_future_and_the_executor_lives_on(
    how: str, start_method: str
) -> None:
    with procpool.ProcessPoolExecutor(2, mp_context=start_method) as executor:
        futures = [executor.submit(mb.crash_if, i, 3, how) for i in range(8)]
        for i, future in enumerate(futures):
            if i == 3:
                error = future.exception(30)
                assert isinstance(error, procpool.WorkerDied)
                assert isinstance(error, BrokenProcessPool)  # what stdlib handlers catch
            else:
                assert future.result(30) == i
        assert list(executor.map(mb.square, range(4))) == [0, 1, 4, 9]


def test_a_failing_initializer_breaks_the_executor(start_method: str) -> None:
    with procpool.ProcessPoolExecutor(2, mp_context=start_method,
                                      initializer=mb.initializer_that_raises) as executor:
        try:  # the first submit may already find the pool broken, as with the stdlib
            future = executor.submit(mb.square, 2)
        except BrokenProcessPool as error:
            assert "initializer failed" in str(error)
        else:
            with pytest.raises(BrokenProcessPool, match="initializer failed"):
                future.result(30)
        with pytest.raises(BrokenProcessPool):
            executor.submit(mb.square, 3)


def test_task_timeout_and_retries_apply_to_the_executor(tmp_path: Path) -> None:
    counter = str(tmp_path / "attempts")
    with procpool.ProcessPoolExecutor(2, task_timeout=0.5, retries=1) as executor:
        with pytest.raises(procpool.TaskTimeout) as info:
            executor.submit(mb.hang).result(30)
        assert info.value.attempts == 2
        assert executor.submit(mb.fail_until_attempt, counter, 2).result(30) == 2
        # Per-call options on map: item 2 hangs and times out; no retries for this call.
        results = executor.map(mb.hang_if, range(4), task_timeout=0.5, retries=0, timeout=30)
        assert [next(results), next(results)] == [0, 1]
        with pytest.raises(procpool.TaskTimeout) as info:
            next(results)
        assert info.value.attempts == 1


def test_unpicklable_arguments_fail_their_future(executor: Any) -> None:
    future = executor.submit(mb.identity, threading.Lock())
    with pytest.raises(TypeError, match="lock"):
        future.result(30)
    assert executor.submit(mb.square, 2).result(30) == 4


def test_run_in_executor_works(executor: Any) -> None:
    import asyncio

    async def main() -> int:
        return await asyncio.get_running_loop().run_in_executor(executor, mb.square, 12)

    assert asyncio.run(main()) == 144


def test_repr_and_private_views(executor: Any) -> None:
    assert repr(executor) == ("<procpool.ProcessPoolExecutor running max_workers=2 workers=2 "
                              "busy=0 queued=0 running=0 done=0 failed=0>")
    assert len(executor._processes) == 2
    assert all(os.getpid() != pid for pid in executor._processes)


def test_a_dropped_executor_finishes_its_work_and_winds_down(tmp_path: Path) -> None:
    import gc

    executor = procpool.ProcessPoolExecutor(2)
    future = executor.submit(mb.square, 7)
    engine = executor._engine
    del executor
    gc.collect()
    assert future.result(30) == 49
    assert engine.join(30)


def test_dask_can_use_it_as_its_scheduler(executor: Any) -> None:
    import dask.bag

    bag = dask.bag.from_sequence(range(100), npartitions=8).map(mb.square)
    assert bag.sum().compute(scheduler=executor) == sum(x * x for x in range(100))



class _CountingExecutor(procpool.ProcessPoolExecutor):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.submitted = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


def _wrap_submit_on_the_instance(executor: Any) -> Any:
    """What tqdm's process_map does: count submit calls through the instance's attribute."""
    executor.submitted = 0
    original = executor.submit

    def counting_submit(*args: Any, **kwargs: Any) -> Any:
        executor.submitted += 1
        return original(*args, **kwargs)

    executor.submit = counting_submit
    return executor


@pytest.mark.parametrize("buffersize", [None, 2])
@pytest.mark.parametrize("chunksize, calls", [(None, 10), (1, 10), (3, 4)])
@pytest.mark.parametrize("where", ["subclass", "instance"])
def test_map_goes_through_an_overridden_submit(
    where: str, chunksize: int | None, calls: int, buffersize: int | None
) -> None:
    # The stdlib's Executor.map calls self.submit once per chunk (chunksize 1 by default):
    # subclasses and tqdm's process_map count the work there.
    made = (_CountingExecutor(2) if where == "subclass"
            else _wrap_submit_on_the_instance(procpool.ProcessPoolExecutor(2)))
    with made as executor:
        results = executor.map(mb.add, range(10), range(10), chunksize=chunksize,
                               buffersize=buffersize)
        assert list(results) == [2 * x for x in range(10)]
        assert executor.submitted == calls


def test_a_map_through_submit_raises_at_the_failing_item_and_keeps_its_options() -> None:
    with _wrap_submit_on_the_instance(procpool.ProcessPoolExecutor(2)) as executor:
        results = executor.map(mb.raise_if, range(6))
        assert [next(results) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(ValueError, match="item 3 is bad"):
            next(results)
        # Per-call options reach the submit calls the map makes.
        with pytest.raises(procpool.WorkerDied) as died:
            list(executor.map(mb.crash_if, range(6), retries=1))
        assert died.value.attempts == 2


class _CountingBar(tqdm):  # type: ignore[type-arg]
    """A tqdm bar that keeps every count it was given, even after it was closed."""

    counted: list[int] = []

    def update(self, n: float | None = 1) -> bool | None:
        self.counted.append(int(n or 0))
        return super().update(n)  # type: ignore[no-any-return]


def test_tqdm_process_map_counts_every_item_with_procpool() -> None:
    from tqdm.contrib import concurrent as tqdm_concurrent  # the code process_map runs

    _CountingBar.counted.clear()
    drawn = io.StringIO()
    results = tqdm_concurrent._executor_map(procpool.ProcessPoolExecutor, mb.square,
                                            range(20), max_workers=2, tqdm_class=_CountingBar,
                                            file=drawn)
    assert results == [x * x for x in range(20)]
    assert sum(_CountingBar.counted) == 20
    # As with the stdlib's map, each batch's callbacks have run before its values are
    # delivered, so the bar was full before it closed.
    assert "20/20" in drawn.getvalue()


def test_map_keeps_no_reference_to_results_already_yielded(executor: Any) -> None:
    import gc
    import weakref

    for chunksize in (1, 4):
        for obj in executor.map(mb.make_plain, range(8), chunksize=chunksize):
            ref = weakref.ref(obj)
            del obj
            gc.collect()
            assert ref() is None


@pytest.mark.parametrize("buffersize", [None, 2])
def test_a_tasks_own_timeout_error_is_its_error_not_the_maps_deadline(
    executor: Any, buffersize: int | None
) -> None:
    # procpool.TimeoutError is multiprocessing's, which a task may raise itself: map must
    # raise it at its item, as the stdlib does, not take it for the map's own deadline.
    results = executor.map(mb.raise_timeout_error_if, range(4), buffersize=buffersize)
    assert next(results) == 0
    with pytest.raises(procpool.TimeoutError, match="the task's own timeout at 1"):
        next(results)

    async def consume() -> list[int]:
        return [value async for value in executor.amap(mb.raise_timeout_error_if, range(4))]

    with pytest.raises(procpool.TimeoutError, match="the task's own timeout at 1"):
        asyncio.run(consume())


def test_a_map_racing_a_cancelling_shutdown_is_cancelled_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # shutdown(cancel_futures=True) lands after map() was accepted and before its stream is
    # registered: the map must be stopped like the ones registered already.
    executor = procpool.ProcessPoolExecutor(1)
    try:
        real_stream_feeder = executor._engine.stream_feeder

        def shut_down_first(*args: Any, **kwargs: Any) -> Any:
            executor.shutdown(wait=False, cancel_futures=True)
            return real_stream_feeder(*args, **kwargs)

        monkeypatch.setattr(executor._engine, "stream_feeder", shut_down_first)
        results = executor.map(mb.square, range(100_000), chunksize=1)
        taken = []
        with pytest.raises(cf.CancelledError):
            taken.extend(results)
        assert taken == [x * x for x in range(len(taken))] and len(taken) < 100_000
    finally:
        executor.shutdown(wait=True)
