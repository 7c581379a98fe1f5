"""``progress=`` on every map-like call, and ``stats()`` / ``repr()`` on both faces.

Progress snapshots are checked for what must hold whatever the timing: counts only grow, the
last snapshot is final and complete, failures are counted, and the bar is closed before a
blocking map returns. Statistics are checked at moments the test controls (a task blocked on a
FIFO, a pool that has finished its work).
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
import subprocess
import sys
import textwrap
from typing import Any

import pytest

import procpool
from support import Fifos

import misbehaving as mb


def _check_snapshots(snapshots: list[procpool.Progress], total: int, failed: int = 0) -> None:
    assert snapshots, "no progress was reported"
    completed = [s.completed for s in snapshots]
    assert completed == sorted(completed), "progress went backwards"
    last = snapshots[-1]
    assert last.finished and sum(s.finished for s in snapshots) == 1
    assert (last.completed, last.failed, last.total) == (total, failed, total)
    assert last.rate > 0 and last.eta == 0


# ---- progress ----------------------------------------------------------------------------------


def test_map_progress_counts_items_and_is_final_before_map_returns(start_method: str) -> None:
    snapshots: list[procpool.Progress] = []
    with procpool.Pool(2, context=start_method) as pool:
        assert pool.map(mb.square, range(100), chunksize=7,
                        progress=snapshots.append) == [x * x for x in range(100)]
        _check_snapshots(snapshots, 100)  # no waiting: drawn before map() returned


def test_starmap_and_map_async_report_progress() -> None:
    with procpool.Pool(2) as pool:
        star: list[procpool.Progress] = []
        assert pool.starmap(mb.add, [(i, i) for i in range(30)], progress=star.append) == [
            2 * i for i in range(30)]
        _check_snapshots(star, 30)
        async_snapshots: list[procpool.Progress] = []
        result = pool.map_async(mb.square, range(40), progress=async_snapshots.append)
        assert result.get(timeout=30) == [x * x for x in range(40)]
        _check_snapshots(async_snapshots, 40)


def test_a_failing_map_ends_its_progress_when_it_raises() -> None:
    snapshots: list[procpool.Progress] = []
    with procpool.Pool(1) as pool:
        with pytest.raises(ValueError):
            pool.map(mb.raise_if, range(10), chunksize=1, progress=snapshots.append)
        last = snapshots[-1]
        assert last.finished and last.failed == 1 and last.total == 10
        assert pool.map(mb.square, range(3)) == [0, 1, 4]


def test_imap_over_a_generator_learns_its_total_at_the_end(start_method: str) -> None:
    snapshots: list[procpool.Progress] = []
    with procpool.Pool(2, context=start_method) as pool:
        results = pool.imap(mb.square, (x for x in range(25)), progress=snapshots.append)
        assert list(results) == [x * x for x in range(25)]
    assert all(s.total is None for s in snapshots[:-1])
    _check_snapshots(snapshots, 25)


def test_imap_unordered_counts_failures_and_goes_on() -> None:
    snapshots: list[procpool.Progress] = []
    outcomes = []
    with procpool.Pool(2) as pool:
        iterator = pool.imap_unordered(mb.raise_if, range(12), progress=snapshots.append)
        for _ in range(12):
            try:
                outcomes.append(next(iterator))
            except ValueError:
                outcomes.append("failed")
        with pytest.raises(StopIteration):
            next(iterator)
    assert outcomes.count("failed") == 1
    _check_snapshots(snapshots, 12, failed=1)


def test_executor_map_reports_progress(start_method: str) -> None:
    snapshots: list[procpool.Progress] = []
    with procpool.ProcessPoolExecutor(2, mp_context=start_method) as executor:
        results = executor.map(mb.add, range(20), range(20), chunksize=3,
                               progress=snapshots.append)
        assert list(results) == [2 * i for i in range(20)]
    _check_snapshots(snapshots, 20)


def test_executor_map_progress_closed_early_cancels_and_finishes() -> None:
    snapshots: list[procpool.Progress] = []
    with procpool.ProcessPoolExecutor(1) as executor:
        results = executor.map(mb.square, range(50), progress=snapshots.append)
        assert next(results) == 0
        results.close()  # type: ignore[attr-defined]
    assert snapshots[-1].finished and snapshots[-1].completed == 1


def test_progress_true_draws_a_tqdm_bar(capsys: pytest.CaptureFixture[str]) -> None:
    with procpool.Pool(2) as pool:
        pool.map(mb.square, range(64), progress=True)
        list(pool.imap(mb.square, range(10), progress=True))
    err = capsys.readouterr().err
    assert "100%" in err and "64/64" in err and "10/10" in err and "item/s" in err


def test_bad_progress_is_refused_and_the_pool_carries_on() -> None:
    with procpool.Pool(1) as pool:
        with pytest.raises(TypeError, match="progress must be True"):
            pool.map(mb.square, range(3), progress="yes")
        with pytest.raises(TypeError, match="progress must be True"):
            pool.imap(mb.square, range(3), progress=1)
        assert pool.map(mb.square, range(3)) == [0, 1, 4]


def test_a_progress_callable_that_raises_is_logged_and_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = []

    def broken(progress: procpool.Progress) -> None:
        calls.append(progress)
        raise RuntimeError("display failed")

    with procpool.Pool(1) as pool, caplog.at_level(logging.ERROR, logger="procpool"):
        assert pool.map(mb.square, range(10), chunksize=1, progress=broken) == [
            x * x for x in range(10)]
    assert len(calls) == 1
    assert "progress callable raised" in caplog.text


def test_progress_off_costs_no_tqdm_import() -> None:
    code = textwrap.dedent("""
        import sys, procpool
        if __name__ == "__main__":
            with procpool.Pool(1) as pool:
                assert pool.map(abs, [-1, -2]) == [1, 2]
                assert list(pool.imap(abs, [-3])) == [3]
            assert "tqdm" not in sys.modules, "tqdm imported without progress="
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---- stats -------------------------------------------------------------------------------------


def test_stats_count_items_and_describe_each_worker(start_method: str) -> None:
    with procpool.Pool(2, context=start_method) as pool:
        pool.map(mb.square, range(50), chunksize=5)
        stats = pool.stats()
    assert (stats.tasks_done, stats.tasks_failed, stats.tasks_queued, stats.tasks_running) == (
        50, 0, 0, 0)
    assert stats.workers_alive == 2 and stats.workers_busy == 0 and stats.respawns == 0
    assert sum(worker.tasks_done for worker in stats.workers) == 50
    for worker in stats.workers:
        assert worker.pid is not None and not worker.busy
        assert worker.busy_seconds >= 0 and worker.idle_seconds >= 0
        assert worker.peak_rss is None or worker.peak_rss > 1_000_000


def test_stats_while_a_task_runs(fifos: Fifos) -> None:
    with procpool.Pool(1) as pool:
        blocked = pool.apply_async(mb.announce_then_block, (fifos.started, fifos.release))
        waiting = pool.map_async(mb.square, range(6), chunksize=2)
        fifos.wait_started()
        stats = pool.stats()
        assert (stats.workers_busy, stats.tasks_running, stats.tasks_queued) == (1, 1, 6)
        assert stats.workers[0].busy
        assert "busy=1 queued=6 running=1" in repr(pool)
        fifos.release_task()
        assert blocked.get(timeout=30) == "released"
        assert waiting.get(timeout=30) == [x * x for x in range(6)]


@pytest.mark.parametrize("options", [{"task_timeout": 60}, {"retries": 1}])
def test_a_worker_that_answered_all_its_items_is_not_busy(
    fifos: Fifos, options: dict[str, Any]
) -> None:
    # With per-item replies, a chunk's last result reaches the parent before its worker says
    # the chunk is over. In between, busy workers and running tasks must agree (they said
    # (1, 0)). The first argument holds the worker there: it blocks as the worker frees it.
    with procpool.Pool(1, context="fork", **options) as pool:
        blocker = mb.BlocksWhenFreedInAWorker(fifos.started, fifos.release)
        result = pool.map_async(mb.pid_of_worker, [blocker, 1], chunksize=2)
        del blocker
        assert len(result.get(timeout=30)) == 2  # every item has its answer
        fifos.wait_started()  # and the worker is inside that window
        stats = pool.stats()
        assert (stats.workers_busy, stats.tasks_running) == (0, 0), stats
        assert not stats.workers[0].busy
        fifos.release_task()


def test_stats_name_why_workers_were_replaced(start_method: str) -> None:
    with procpool.Pool(1, context=start_method, maxtasksperchild=2) as pool:
        with pytest.raises(procpool.WorkerDied):
            pool.apply(mb.exit_with_code, (3,))
        with pytest.raises(ValueError):
            pool.apply(mb.raise_value_error)
        pool.map(mb.square, range(4), chunksize=1)
        stats = pool.stats()
    assert stats.tasks_failed == 2 and stats.tasks_done == 4
    assert stats.respawn_causes["exit code 3"] == 1
    assert stats.respawn_causes["maxtasksperchild reached"] >= 2
    assert "respawns=" in stats.summary() and "exit code 3: 1" in stats.summary()


def test_stats_count_timeouts_and_retries(tmp_path: Any) -> None:
    counter = str(tmp_path / "attempts")
    with procpool.Pool(1, task_timeout=0.5, retries=2) as pool:
        # Hangs on its first two attempts, succeeds on the third.
        assert pool.apply(mb.fail_until_attempt, (counter, 3, "hang")) == 3
        stats = pool.stats()
    assert (stats.tasks_done, stats.tasks_failed) == (1, 0)
    assert (stats.tasks_timed_out, stats.tasks_retried) == (2, 2)
    assert stats.respawn_causes == {"task timeout": 2}


def test_stats_after_terminate_and_on_the_executor() -> None:
    pool = procpool.Pool(2)
    pool.map(mb.square, range(10))
    pool.terminate()
    pool.join()
    stats = pool.stats()
    assert stats.workers_alive == 0 and stats.tasks_done == 10
    assert "state=TERMINATE" in repr(pool) and "done=10" in repr(pool)

    with procpool.ProcessPoolExecutor(2) as executor:
        assert list(executor.map(mb.square, range(8))) == [x * x for x in range(8)]
        assert executor.stats().tasks_done == 8
        assert "done=8" in repr(executor)
    assert executor.stats().workers_alive == 0


def test_a_snapshot_is_frozen_and_portable() -> None:
    with procpool.Pool(1) as pool:
        pool.map(mb.square, range(3))
        stats = pool.stats()
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.tasks_done = 0  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(stats)) == stats
    assert dataclasses.asdict(stats)["tasks_done"] == 3
