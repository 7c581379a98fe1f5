"""Timeouts that kill, retries, recycling, orphan-proof workers, Ctrl-C and shutdown.

Real processes on fork and spawn; tasks and tests synchronise through FIFOs. Waits that must end
on their own (a process exiting) are bounded with psutil's wait, never with sleep.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import procpool
import slow_import
from procpool import _scheduler, _threads
from support import Fifos, still_alive

import misbehaving as mb

TESTS = Path(__file__).parent


def _read_pid(fifo: str) -> int:
    with open(fifo) as pipe:
        return int(pipe.read())


# ---- task timeouts -----------------------------------------------------------------------------


SLOW_IMPORT_TIMEOUT = 0.3


@pytest.mark.parametrize("task", ["returns", "hangs"])
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_task_timeout_counts_from_the_call_not_from_the_workers_import_of_its_module(
        method: str, task: str, fifos: Fifos) -> None:
    # A fresh worker imports the task's module as it unpickles the function: a second or more
    # for torch. That is the pool's start-up, not the task's run; counted as the task's, a
    # task_timeout shorter than the import failed every task of every fresh worker.
    # (worker_env, not this process's environment: a forkserver keeps the one it started with.)
    slow = {"PROCPOOL_TEST_SLOW_IMPORT": os.pathsep.join([fifos.started, fifos.release])}
    with procpool.Pool(1, context=method, worker_env=slow) as pool:
        function = slow_import.double if task == "returns" else slow_import.hang
        result = pool.apply_async(function, (21,), task_timeout=SLOW_IMPORT_TIMEOUT)
        assert fifos.wait_started() == "importing"
        time.sleep(3 * SLOW_IMPORT_TIMEOUT)  # not to synchronise: for the deadline to pass
        try:
            release = os.open(fifos.release, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:  # ENXIO: nobody holds it, the worker was killed as it imported
            pytest.fail(f"the worker was killed while it imported the task's module ({exc})")
        os.write(release, b"go")
        os.close(release)
        if task == "returns":
            assert result.get(timeout=30) == 42
        else:  # past its timeout counted from the call: killed as ever
            with pytest.raises(procpool.TaskTimeout, match=r"task_timeout of 0\.3 s"):
                result.get(timeout=30)


def test_task_timeout_kills_the_task_and_everything_it_started(
    start_method: str, tmp_path: Path
) -> None:
    pid_fifo = str(tmp_path / "grandchild")
    os.mkfifo(pid_fifo)
    with procpool.Pool(2, context=start_method) as pool:
        hung = pool.apply_async(mb.spawn_grandchild_then_hang, (pid_fifo,), task_timeout=0.5)
        grandchild = _read_pid(pid_fifo)
        other = pool.map_async(mb.square, range(20))
        with pytest.raises(procpool.TaskTimeout) as info:
            hung.get(timeout=30)
        error = info.value
        assert error.timeout == 0.5
        assert str(error).startswith("spawn_grandchild_then_hang() ran longer")  # no "item 0"
        assert not isinstance(error, procpool.TimeoutError)  # not a *waiting* timeout
        assert still_alive([error.pid, grandchild]) == []
        assert other.get(timeout=30) == [x * x for x in range(20)]
        assert pool.map(mb.square, range(5)) == [0, 1, 4, 9, 16]  # replaced, still serving


def test_timeout_counts_from_when_the_task_starts(start_method: str, fifos: Any) -> None:
    with procpool.Pool(1, context=start_method, task_timeout=0.3) as pool:
        blocker = pool.apply_async(mb.announce_then_block, (fifos.started, fifos.release),
                                   task_timeout=None)
        queued = pool.apply_async(mb.square, (4,))
        fifos.wait_started()
        # The queued task waits longer than its timeout (proven by this waiting timeout)...
        with pytest.raises(procpool.TimeoutError):
            queued.get(timeout=0.6)
        fifos.release_task()
        # ...and still runs, because only running time counts.
        assert blocker.get(timeout=30) == "released"
        assert queued.get(timeout=30) == 16


def _answer_short_calls_while_one_hangs(face: str, method: str, tmp_path: Path,
                                        options: dict[str, Any]) -> None:
    """Two workers. One runs a call of a function of unknown pace (nothing is queued behind
    it) while block_on_first is called on items 0..8 through ``face``: item 0 blocks on the
    other worker, and the eight short calls (of a known pace: the function is importable, so
    every call of it shares one measure) are queued behind it. Once the first worker is free,
    they must all be answered before item 0 is released."""
    (tmp_path / "first").mkdir()
    (tmp_path / "hang").mkdir()
    first, hang = Fifos(tmp_path / "first"), Fifos(tmp_path / "hang")
    fifos = (hang.started, hang.release)
    short = list(range(1, 9))
    if face in ("imap_unordered", "apply_async"):
        with procpool.Pool(2, context=method, **options) as pool:
            assert pool.starmap(mb.block_on_first, [(x, *fifos) for x in short]) == short
            busy = pool.apply_async(mb.announce_then_block, (first.started, first.release))
            first.wait_started()
            if face == "imap_unordered":
                results = pool.imap_unordered(
                    functools.partial(mb.block_on_first, started_fifo=hang.started,
                                      release_fifo=hang.release), range(9))
                hang.wait_started()
                first.release_task()
                assert sorted(results.next(timeout=30) for _ in short) == short
                hang.release_task()
                assert list(results) == [0]
            else:
                calls = [pool.apply_async(mb.block_on_first, (x, *fifos)) for x in range(9)]
                hang.wait_started()
                first.release_task()
                assert [call.get(timeout=30) for call in calls[1:]] == short
                hang.release_task()
                assert calls[0].get(timeout=30) == 0
            assert busy.get(timeout=30) == "released"
        return
    with procpool.ProcessPoolExecutor(2, mp_context=method, **options) as executor:
        assert [executor.submit(mb.block_on_first, x, *fifos).result(timeout=30)
                for x in short] == short
        busy = executor.submit(mb.announce_then_block, first.started, first.release)
        first.wait_started()
        if face == "submit":
            futures = [executor.submit(mb.block_on_first, x, *fifos) for x in range(9)]
            hang.wait_started()
            first.release_task()
            assert [future.result(timeout=30) for future in futures[1:]] == short
            hang.release_task()
            assert futures[0].result(timeout=30) == 0
        else:
            async def run_all() -> None:
                calls = [asyncio.ensure_future(executor.run(mb.block_on_first, x, *fifos))
                         for x in range(9)]
                await asyncio.get_running_loop().run_in_executor(None, hang.wait_started)
                first.release_task()
                assert await asyncio.wait_for(asyncio.gather(*calls[1:]), 30) == short
                hang.release_task()
                assert await asyncio.wait_for(calls[0], 30) == 0
            asyncio.run(run_all())
        assert busy.result(timeout=30) == "released"


@pytest.mark.parametrize("options", [{}, {"retries": 1, "task_timeout": 60}],
                         ids=["plain", "per-item"])
@pytest.mark.parametrize("face", ["imap_unordered", "apply_async", "submit", "asyncio-run"])
def test_short_calls_queued_behind_a_call_that_hangs_run_on_the_free_worker(
        any_start_method: str, tmp_path: Path, face: str, options: dict[str, Any]) -> None:
    # A worker may hold short calls queued behind the one it runs; if that one hangs, they
    # are taken back and run on the other worker, as the stdlib's shared queue would.
    _answer_short_calls_while_one_hangs(face, any_start_method, tmp_path, options)


def test_a_timeout_in_a_chunk_fails_only_that_item(start_method: str) -> None:
    with procpool.Pool(2, context=start_method) as pool:
        outcomes = _values_or_timeouts(
            pool.imap(mb.hang_if, range(8), chunksize=4, task_timeout=0.5), 8)
    assert [o for o in outcomes if not isinstance(o, Exception)] == [0, 1, 3, 4, 5, 6, 7]
    assert isinstance(outcomes[2], procpool.TaskTimeout)
    assert "hang_if() item 2" in str(outcomes[2])


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_a_first_item_that_hangs_times_out_though_what_was_queued_behind_it_was_taken_back(
        method: str) -> None:
    # Its pace known, each one-item chunk has the next queued behind it; behind the one that
    # hangs, they are taken back once it overruns (WITHDRAW_AFTER), before its timeout. The
    # timeout, of its chunk's first item, then asks since when the item has been called, by
    # the chunk's id: by the worker's count of chunks, which taking back leaves ahead of the
    # running chunk, it never answered, and the item hung for LOADING_ALLOWANCE.
    with procpool.Pool(2, context=method) as pool:
        pool.map(mb.hang_if, [0, 1, 3, 4], chunksize=1)
        outcomes = _values_or_timeouts(
            pool.imap(mb.hang_if, range(8), chunksize=1, task_timeout=0.5), 8)
    assert [o for o in outcomes if not isinstance(o, Exception)] == [0, 1, 3, 4, 5, 6, 7]
    assert isinstance(outcomes[2], procpool.TaskTimeout)


def _values_or_timeouts(iterator: Any, count: int) -> list[Any]:
    """The next ``count`` outcomes of an imap: values, or the TaskTimeout raised in place."""
    outcomes = []
    for _ in range(count):
        try:
            outcomes.append(iterator.next(timeout=30))
        except procpool.TaskTimeout as error:
            outcomes.append(error)
    return outcomes


def test_terminate_kills_tasks_that_ignore_sigterm(start_method: str, fifos: Any) -> None:
    pool = procpool.Pool(1, context=start_method)
    result = pool.apply_async(mb.ignore_sigterm_then_block, (fifos.started, fifos.release))
    fifos.wait_started()
    pids = [w.pid for w in pool._pool]
    pool.terminate()  # SIGTERM is ignored; SIGKILL follows after the grace period
    with pytest.raises(procpool.PoolTerminated):
        result.get(timeout=30)
    assert still_alive(pids) == []


# ---- retries -----------------------------------------------------------------------------------


def test_retries_recover_from_worker_deaths(start_method: str, tmp_path: Path) -> None:
    counter = str(tmp_path / "attempts")
    with procpool.Pool(2, context=start_method, retries=2) as pool:
        assert pool.apply(mb.fail_until_attempt, (counter, 3)) == 3


def test_the_final_error_says_how_many_attempts_were_made(
    start_method: str, tmp_path: Path
) -> None:
    counter = str(tmp_path / "attempts")
    with procpool.Pool(2, context=start_method) as pool:
        with pytest.raises(procpool.WorkerDied, match="tried 2 times") as info:
            pool.apply(mb.fail_until_attempt, (counter, 99), retries=1)
    assert info.value.attempts == 2
    assert os.path.getsize(counter) == 2


def test_ordinary_exceptions_are_retried_only_when_asked(
    start_method: str, tmp_path: Path
) -> None:
    once, many = str(tmp_path / "once"), str(tmp_path / "many")
    with procpool.Pool(2, context=start_method) as pool:
        with pytest.raises(ValueError, match="attempt 1 failed"):
            pool.apply(mb.fail_until_attempt, (once, 99, "raise"), retries=3)
        assert os.path.getsize(once) == 1
        with pytest.raises(ValueError, match="attempt 4 failed") as info:
            pool.apply(mb.fail_until_attempt, (many, 99, "raise"), retries=3,
                       retry_on=ValueError)
        assert os.path.getsize(many) == 4
        if sys.version_info >= (3, 11):
            assert "failed on each of 4 attempts" in " ".join(info.value.__notes__)
        counter = str(tmp_path / "map")
        task = functools.partial(mb.fail_until_attempt, counter, 3)
        assert pool.map(task, ["raise"], retries=2, retry_on=ValueError) == [3]


# ---- memory ------------------------------------------------------------------------------------


def test_a_worker_over_its_memory_limit_is_replaced(start_method: str) -> None:
    # A forked worker's resident memory starts at what it shares with this process (a test
    # process that imported numpy and scikit-learn is well over 150 MiB): the limit is set
    # that far above where a worker starts.
    with procpool.Pool(1, context=start_method) as probe:
        start = probe.apply(mb.resident_bytes)
    limit = start + 150 * 2**20
    with procpool.Pool(1, context=start_method, max_memory_per_child=limit) as pool:
        small = pool.apply(mb.allocate_and_hold, (1,))
        assert pool.apply(mb.allocate_and_hold, (1,)) == small  # under the limit: same worker
        big = pool.apply(mb.allocate_and_hold, (200,))
        assert big == small  # the limit is checked after a task...
        assert pool.apply(mb.pid_of_worker) != big  # ...and the next one gets a fresh worker
        assert still_alive([big]) == []


def test_a_killed_worker_reports_its_peak_memory(start_method: str) -> None:
    with procpool.Pool(1, context=start_method) as pool:
        pool.apply(mb.allocate_and_hold, (120,))
        with pytest.raises(procpool.WorkerDied) as info:
            pool.apply(mb.kill_self)
    assert info.value.peak_rss is not None and info.value.peak_rss >= 120 * 2**20
    assert "peak resident memory" in str(info.value)


# ---- start-up and exit ---------------------------------------------------------------------------


def test_a_hung_initializer_breaks_the_pool_after_its_timeout(start_method: str) -> None:
    with procpool.Pool(2, mb.initializer_that_hangs, context=start_method,
                       initializer_timeout=0.5) as pool:
        with pytest.raises(procpool.InitializerFailed, match=r"initializer_timeout=0\.5"):
            pool.map(mb.square, range(4))


def test_a_worker_that_will_not_exit_is_killed_on_close(
    start_method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_scheduler, "RETIRE_TIMEOUT", 0.3)
    pool = procpool.Pool(1, context=start_method)
    assert pool.apply(mb.leave_a_thread_running) == "left a thread running"
    pids = [w.pid for w in pool._pool]
    pool.close()
    pool.join()  # the worker waits for its thread at exit; it is killed after RETIRE_TIMEOUT
    assert still_alive(pids) == []


# ---- the parent dies, or is interrupted ----------------------------------------------------------

PARENT_SCRIPT = textwrap.dedent("""
    import json, sys, threading
    import misbehaving as mb
    import procpool

    if __name__ == "__main__":
        pool = procpool.Pool(2, context=sys.argv[1])
        busy = pool.apply_async(mb.spawn_grandchild_then_hang, (sys.argv[2],))
        print(json.dumps([w.pid for w in pool._pool]), flush=True)
        threading.Event().wait()
""")


def test_workers_and_their_children_die_with_a_killed_parent(
    start_method: str, tmp_path: Path
) -> None:
    script = tmp_path / "parent.py"
    script.write_text(PARENT_SCRIPT)
    pid_fifo = str(tmp_path / "grandchild")
    os.mkfifo(pid_fifo)
    parent = subprocess.Popen(
        [sys.executable, str(script), start_method, pid_fifo], stdout=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONPATH": str(TESTS)},
    )
    try:
        assert parent.stdout is not None
        workers = json.loads(parent.stdout.readline())
        grandchild = _read_pid(pid_fifo)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        # One busy worker, one idle, and the busy one's child: all gone, none left to init.
        assert still_alive([*workers, grandchild], timeout=5) == []
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout:
            parent.stdout.close()


INTERRUPT_SCRIPTS = {
    "pool": textwrap.dedent("""
        import json, sys
        import misbehaving as mb
        import procpool

        if __name__ == "__main__":
            import faulthandler  # a hang prints every thread's stack, then ends the script
            faulthandler.dump_traceback_later(20, exit=True)
            pool = procpool.Pool(2, context=sys.argv[1])
            print(json.dumps([w.pid for w in pool._pool]), flush=True)
            try:
                fifos = (sys.argv[2], sys.argv[3])  # nobody ever writes to the second one
                pool.starmap(mb.announce_then_block, [fifos, fifos], chunksize=1)
            except KeyboardInterrupt:
                print("interrupted", repr(pool), flush=True)
                sys.exit(130)
    """),
    "executor": textwrap.dedent("""
        import json, sys
        import misbehaving as mb
        import procpool

        if __name__ == "__main__":
            import faulthandler  # a hang prints every thread's stack, then ends the script
            faulthandler.dump_traceback_later(20, exit=True)
            executor = procpool.ProcessPoolExecutor(2, mp_context=sys.argv[1])
            futures = [executor.submit(mb.announce_then_block, sys.argv[2], sys.argv[3])
                       for _ in range(3)]
            try:
                print(json.dumps(list(executor._processes)), flush=True)
                futures[0].result()
            except KeyboardInterrupt:
                if not executor._engine.finished:
                    # It landed before result() began waiting: a race of this script, not
                    # the executor's. Stop, and let the test run the script again.
                    executor.kill_workers()
                    print("early", flush=True)
                    sys.exit(3)
                print("interrupted", repr(executor), futures[2].cancelled(), flush=True)
                sys.exit(130)
    """),
    "imap": textwrap.dedent("""
        import functools, json, sys
        import misbehaving as mb
        import procpool

        if __name__ == "__main__":
            import faulthandler  # a hang prints every thread's stack, then ends the script
            faulthandler.dump_traceback_later(20, exit=True)
            # Left by `with`: the test cannot know that the interrupt lands while next()
            # waits (the task may announce itself first), and either way nothing may hang.
            try:
                with procpool.Pool(2, context=sys.argv[1]) as pool:
                    print(json.dumps([w.pid for w in pool._pool]), flush=True)
                    # nobody ever writes to the release FIFO
                    task = functools.partial(mb.announce_then_block, sys.argv[2])
                    for _ in pool.imap(task, [sys.argv[3]] * 2):
                        pass
            except KeyboardInterrupt:
                print("interrupted", repr(pool), flush=True)
                sys.exit(130)
    """),
    "asyncio": textwrap.dedent("""
        import asyncio, json, sys
        import misbehaving as mb
        import procpool

        async def main(executor):
            calls = [asyncio.ensure_future(
                         executor.run(mb.announce_then_block, sys.argv[2], sys.argv[3]))
                     for _ in range(3)]
            await asyncio.sleep(0)  # each call has run up to its await: all are submitted
            print(json.dumps(list(executor._processes)), flush=True)
            # No wake-up descriptor: a Ctrl-C that lands just before the loop sleeps is handled
            # at procpool's next wake of the loop (_threads.await_in_slices), on every version.
            await asyncio.gather(*calls)

        if __name__ == "__main__":
            import faulthandler  # a hang prints every thread's stack, then ends the script
            faulthandler.dump_traceback_later(20, exit=True)
            executor = procpool.ProcessPoolExecutor(2, mp_context=sys.argv[1])
            try:
                asyncio.run(main(executor))
            except KeyboardInterrupt:
                executor.shutdown(wait=True)  # the running calls were cancelled: no waiting
                print("interrupted", repr(executor), flush=True)
                sys.exit(130)
    """),
}

# What CPython 3.10's asyncio prints when a KeyboardInterrupt lands inside a task's step
# (the task keeps the exception, and nobody retrieves it); 3.11 cancels the main task instead.
ASYNCIO_310_REPORT = re.compile(
    r"Task exception was never retrieved\n.*?\nKeyboardInterrupt\n", re.DOTALL)


@pytest.mark.parametrize("face", ["pool", "imap", "executor", "asyncio"])
def test_one_ctrl_c_stops_everything_and_leaves_nothing(
    face: str, start_method: str, tmp_path: Path
) -> None:
    script = tmp_path / "interrupt.py"
    script.write_text(INTERRUPT_SCRIPTS[face])
    started, release = str(tmp_path / "started"), str(tmp_path / "release")
    os.mkfifo(started)
    os.mkfifo(release)
    for _ in range(5):  # a script that reports "early" is run again (see its comment)
        parent = subprocess.Popen(
            [sys.executable, str(script), start_method, started, release],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(TESTS)},
        )
        try:
            assert parent.stdout is not None
            workers = json.loads(parent.stdout.readline())
            with open(started) as fifo:  # both tasks are running: map is waiting
                fifo.read()
            parent.send_signal(signal.SIGINT)  # what Ctrl-C sends to the terminal's foreground
            stdout, stderr = parent.communicate(timeout=30)
        finally:
            parent.kill()
            parent.wait()
            for pipe in (parent.stdout, parent.stderr):  # also after a timeout
                if pipe is not None:
                    pipe.close()
        if not (parent.returncode == 3 and stdout.startswith("early")):
            break
    assert parent.returncode == 130, stderr
    if face == "asyncio" and sys.version_info < (3, 11):
        stderr = ASYNCIO_310_REPORT.sub("", stderr)
    expected = {"pool": "interrupted <procpool.Pool state=TERMINATE processes=2 workers=0",
                "imap": "interrupted <procpool.Pool state=TERMINATE processes=2 workers=0",
                "executor": "interrupted <procpool.ProcessPoolExecutor shutdown max_workers=2 "
                            "workers=0",
                "asyncio": "interrupted <procpool.ProcessPoolExecutor shutdown max_workers=2 "
                           "workers=0"}
    assert expected[face] in stdout
    if face == "executor":
        assert stdout.rstrip().endswith("True")
    assert "Traceback" not in stderr  # nothing from the workers either
    assert still_alive(workers, timeout=5) == []


SIGINT_BIT = 1 << (signal.SIGINT - 1)  # in the signal masks /proc/<pid>/status shows


def _signal_mask(status: str, field: str) -> int:
    with open(status) as lines:
        for line in lines:
            if line.startswith(field + ":"):
                return int(line.split()[1], 16)
    raise AssertionError(f"no {field} in {status}")


def test_procpools_threads_leave_a_ctrl_c_to_the_main_thread(start_method: str) -> None:
    # The kernel may hand a process-directed SIGINT to any thread that does not block it, and
    # a main thread waiting on a lock wakes for it only if it got the signal itself: one
    # Ctrl-C in a few hundred used to hang the Ctrl-C tests above. Every procpool thread
    # blocks SIGINT; the workers, even those its dispatcher thread starts, do not inherit it.
    release = threading.Event()

    def input_that_waits() -> Any:
        yield 1
        release.wait(60)  # holds the feeder thread in the input until the end of the test

    with procpool.Pool(1, context=start_method, maxtasksperchild=2) as pool:
        called = threading.Event()
        pool.apply_async(mb.square, (2,), callback=lambda _: called.set())
        assert called.wait(30)
        results = pool.imap(mb.square, input_that_waits(), chunksize=1)
        try:
            assert next(results) == 1
            threads = {t.name: t for t in threading.enumerate()
                       if t.name.startswith("procpool-")}
            assert {"procpool-dispatcher", "procpool-callbacks", "procpool-feeder"} <= set(threads)
            for name, thread in threads.items():
                status = f"/proc/self/task/{thread.native_id}/status"
                assert _signal_mask(status, "SigBlk") & SIGINT_BIT, name
            main = f"/proc/self/task/{threading.main_thread().native_id}/status"
            assert not _signal_mask(main, "SigBlk") & SIGINT_BIT
            # The first worker was recycled after two chunks: its replacement, which runs
            # this call, was started by the dispatcher thread.
            worker = pool.apply(os.getpid)
            assert not _signal_mask(f"/proc/{worker}/status", "SigBlk") & SIGINT_BIT
            assert _signal_mask(f"/proc/{worker}/status", "SigIgn") & SIGINT_BIT
        finally:
            release.set()


def test_the_main_threads_waits_come_in_slices_others_do_not() -> None:
    slice_ = _threads.SIGNAL_CHECK_SECONDS
    calls: list[float | None] = []

    def third_time_lucky(timeout: float | None) -> bool:
        calls.append(timeout)
        return len(calls) == 3

    assert _threads.wait_in_slices(third_time_lucky, None)
    assert calls == [slice_] * 3
    calls.clear()
    assert not _threads.wait_in_slices(lambda t: bool(calls.append(t)), 0)
    assert calls == [0]  # what is left of a timeout shorter than a slice, once
    calls.clear()
    other = threading.Thread(target=_threads.wait_in_slices, args=(third_time_lucky, 60))
    other.start()
    other.join(30)
    assert calls == [60]  # off the main thread: the wait as asked for


class _LoopClock:
    """What _threads._LoopWaker uses of an event loop, with a clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[tuple[float, Any, tuple[Any, ...]]] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Any, *args: Any) -> None:
        self.timers.append((when, callback, args))

    def run_due(self) -> None:
        due = [timer for timer in self.timers if timer[0] <= self.now]
        self.timers = [timer for timer in self.timers if timer[0] > self.now]
        for _, callback, args in due:
            callback(*args)

    def due_times(self) -> list[float]:
        return [round(when, 6) for when, _, _ in self.timers]


def test_one_timer_wakes_a_loop_while_anything_awaits_on_it() -> None:
    loop, waker = _LoopClock(), _threads._LoopWaker()
    slice_ = _threads.SIGNAL_CHECK_SECONDS
    waker.enter(loop)  # type: ignore[arg-type]
    waker.enter(loop)  # type: ignore[arg-type]
    assert loop.due_times() == [slice_]  # one timer, however many awaits
    loop.now = slice_
    loop.run_due()
    assert loop.due_times() == [2 * slice_]  # still awaited: armed again
    waker.leave()
    waker.leave()
    loop.now = 2 * slice_
    loop.run_due()
    assert loop.timers == []  # nothing awaits: the timers end
    waker.enter(loop)  # type: ignore[arg-type]
    assert loop.due_times() == [3 * slice_]


def test_a_late_or_lost_wake_up_timer_is_replaced_and_never_doubled() -> None:
    loop, waker = _LoopClock(), _threads._LoopWaker()
    slice_ = _threads.SIGNAL_CHECK_SECONDS
    waker.enter(loop)  # type: ignore[arg-type]
    loop.timers.clear()  # lost: a KeyboardInterrupt raised in its callback
    loop.now = 3 * slice_
    waker.enter(loop)  # type: ignore[arg-type]
    assert loop.due_times() == [4 * slice_]
    loop.now = 5 * slice_  # late: the loop was busy past the timer's time
    waker.enter(loop)  # type: ignore[arg-type]
    assert loop.due_times() == [4 * slice_, 6 * slice_]
    loop.run_due()  # the late one runs, finds itself replaced, and ends
    assert loop.due_times() == [6 * slice_]
    loop.now = 6 * slice_
    loop.run_due()
    assert loop.due_times() == [7 * slice_]


def _thread_state(native_id: int) -> tuple[str, str]:
    """A thread's scheduler state (R, S...) and its count of voluntary switches."""
    with open(f"/proc/self/task/{native_id}/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return fields["State"].split()[0], fields["voluntary_ctxt_switches"].strip()


def _ctrl_c_that_does_not_wake_the_main_thread() -> threading.Thread:
    """What CPython does with a Ctrl-C that lands just as the main thread begins a lock wait
    (python/cpython#85300): the signal is handled, in C, but the wait goes on sleeping, and
    the KeyboardInterrupt is raised only once the main thread runs Python again. Here the C
    handler runs in a helper thread (it does not block SIGINT) once the main thread sleeps."""
    main = threading.main_thread().native_id

    def send() -> None:
        seen = None
        while True:  # asleep, and still asleep at the next look: in the wait under test
            state = _thread_state(main)
            if state[0] == "S" and state == seen:
                break
            seen = state
            os.sched_yield()
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)

    helper = threading.Thread(target=send, name="ctrl-c", daemon=True)
    helper.start()
    return helper


@pytest.mark.parametrize("face", ["get", "imap", "result"])
def test_a_ctrl_c_whose_wake_up_was_lost_still_stops_the_wait(face: str) -> None:
    # Before waits came in slices, one Ctrl-C in a few hundred hung the Ctrl-C tests above.
    if face == "result":
        pool: Any = procpool.ProcessPoolExecutor(1, mp_context="fork")
        wait = pool.submit(time.sleep, 60).result
    else:
        pool = procpool.Pool(1, context="fork")
        wait = (pool.apply_async(time.sleep, (60,)).get if face == "get" else
                functools.partial(next, pool.imap(time.sleep, [60])))
    try:
        helper = _ctrl_c_that_does_not_wake_the_main_thread()
        with pytest.raises(KeyboardInterrupt):
            wait()
        helper.join(30)
    finally:
        if face == "result":
            pool.kill_workers()
        else:
            pool.terminate()
            pool.join()


@pytest.mark.parametrize("face", ["run", "run-waiting-for-room", "amap", "pool-imap"])
def test_a_ctrl_c_whose_wake_up_was_lost_still_stops_an_await(face: str, fifos: Fifos) -> None:
    # An event loop asleep in select has the window a lock wait has: a Ctrl-C that lands just
    # before the loop sleeps is handled only once something wakes the loop. Here nothing else
    # would, so a watchdog wakes it after 10 s and the test fails instead of hanging.
    interrupted, rescued = threading.Event(), threading.Event()
    executor = procpool.ProcessPoolExecutor(1, mp_context="fork", max_queued=1)
    pool = procpool.Pool(1, context="fork")
    helpers: list[threading.Thread] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def watchdog() -> None:
            if not interrupted.wait(10):
                rescued.set()
                loop.call_soon_threadsafe(lambda: None)

        helpers.append(threading.Thread(target=watchdog, name="watchdog", daemon=True))
        helpers[0].start()
        helpers.append(_ctrl_c_that_does_not_wake_the_main_thread())
        if face.startswith("run"):  # with "-waiting-for-room", in max_queued's queue (below)
            await executor.run(time.sleep, 60)
        elif face == "amap":
            async for _ in executor.amap(time.sleep, [60]):
                pass
        else:
            async for _ in pool.imap(time.sleep, [60]):
                pass

    try:
        if face == "run-waiting-for-room":
            executor.submit(mb.announce_then_block, fifos.started, fifos.release)
            fifos.wait_started()  # running: the next call is the one queued
            executor.submit(time.sleep, 60)
        with pytest.raises(KeyboardInterrupt):
            asyncio.run(main())
        interrupted.set()
        assert not rescued.is_set(), "the loop slept on with the Ctrl-C pending"
    finally:
        interrupted.set()
        for helper in helpers:
            helper.join(30)
        executor.kill_workers()
        executor.shutdown(wait=True, cancel_futures=True)
        pool.terminate()
        pool.join()


def test_interpreter_exit_does_not_wait_for_a_task_ignoring_sigterm(
    start_method: str, tmp_path: Path
) -> None:
    script = tmp_path / "exit.py"
    script.write_text(textwrap.dedent("""
        import sys
        import misbehaving as mb
        import procpool

        if __name__ == "__main__":
            pool = procpool.Pool(1, context=sys.argv[3])
            pool.apply_async(mb.ignore_sigterm_then_block, (sys.argv[1], sys.argv[2]))
            with open(sys.argv[1]) as fifo:
                fifo.read()
            print("leaving with the pool open", flush=True)
    """))
    started, release = str(tmp_path / "started"), str(tmp_path / "release")
    os.mkfifo(started)
    os.mkfifo(release)
    began = time.monotonic()
    done = subprocess.run([sys.executable, str(script), started, release, start_method],
                          capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(TESTS)})
    assert done.returncode == 0, done.stderr
    assert "leaving with the pool open" in done.stdout
    assert time.monotonic() - began < 30  # bounded: SIGKILL after the grace period


def test_a_program_ended_by_ctrl_c_does_not_wait_for_its_executor(tmp_path: Path) -> None:
    # An uncaught KeyboardInterrupt ends the program outside any wait on the executor: the
    # executor's exit handler must not finish (here: wait forever for) the submitted work.
    script = tmp_path / "ctrl_c.py"
    script.write_text(textwrap.dedent("""
        import json, sys
        import misbehaving as mb
        import procpool

        if __name__ == "__main__":
            executor = procpool.ProcessPoolExecutor(1)
            executor.submit(mb.announce_then_block, sys.argv[1], sys.argv[2])
            with open(sys.argv[1]) as fifo:  # the task is running
                fifo.read()
            print(json.dumps(list(executor._processes)), flush=True)
            raise KeyboardInterrupt  # as if Ctrl-C landed here
    """))
    started, release = str(tmp_path / "started"), str(tmp_path / "release")
    os.mkfifo(started)
    os.mkfifo(release)
    done = subprocess.run([sys.executable, str(script), started, release], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(TESTS)})
    assert "KeyboardInterrupt" in done.stderr
    assert still_alive(json.loads(done.stdout), timeout=5) == []


# ---- option checking -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, error, match",
    [
        ({"task_timeout": 0}, ValueError, "task_timeout must be a positive"),
        ({"task_timeout": "5"}, TypeError, "task_timeout must be a number"),
        ({"retries": -1}, ValueError, "retries must be a whole number"),
        ({"retry_on": "oops"}, TypeError, "retry_on must be an exception class"),
        ({"max_memory_per_child": 0}, ValueError, "max_memory_per_child must be a positive"),
        ({"initializer_timeout": float("inf")}, ValueError, "initializer_timeout must be"),
    ],
)
def test_bad_options_are_rejected_with_the_option_named(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        procpool.Pool(1, **options)
    with procpool.Pool(1) as pool:
        per_call = {k: v for k, v in options.items() if k in ("task_timeout", "retries",
                                                              "retry_on")}
        if per_call:
            with pytest.raises(error, match=match):
                pool.apply_async(mb.square, (1,), **per_call)
        assert pool.apply(mb.square, (3,)) == 9
