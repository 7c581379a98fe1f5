"""Regressions for the ways a task could go unanswered, or answered twice, found under faults.

Each test is named after what it guards; each failed (hung or lost results) before its fix.
The fault matrix (test_fault_matrix.py) crosses faces, options and faults systematically;
these are the specific cases that broke it, kept small so a failure points at one mechanism.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import multiprocessing
import multiprocessing.connection
import os
import resource
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import psutil
import pytest

import procpool
from procpool import _inbox
from support import Fifos, still_alive

import misbehaving as mb

WAIT = 30  # seconds: a bound on every wait, so a lost answer fails instead of hanging


# ---- 1. per-item replies of an executor map ----------------------------------------------


@pytest.mark.parametrize("options", [{"retries": 1}, {"task_timeout": 30}],
                         ids=["retries", "task_timeout"])
@pytest.mark.parametrize("chunksize", [None, 3])
def test_executor_map_with_per_item_replies_returns_every_result(
        options: dict[str, Any], chunksize: int | None) -> None:
    with procpool.ProcessPoolExecutor(2, **options) as executor:
        assert list(executor.map(mb.square, range(4))) == [0, 1, 4, 9]  # the pace is known
        assert list(executor.map(mb.square, range(10), chunksize=chunksize)) == [
            x * x for x in range(10)]


def test_amap_with_retries_returns_every_result() -> None:
    import asyncio

    async def collect(executor: procpool.ProcessPoolExecutor) -> list[int]:
        return [value async for value in executor.amap(mb.square, range(10), chunksize=3)]

    with procpool.ProcessPoolExecutor(2, retries=1) as executor:
        assert asyncio.run(collect(executor)) == [x * x for x in range(10)]


def test_executor_map_batch_with_a_death_and_a_retry_is_answered_in_full(
        tmp_path: Path) -> None:
    # Item 2 of a batch of 5 dies on its first attempt: items 0-1 were answered one by one,
    # 3-4 were split off and run elsewhere, 2 is retried. The batch's future settles once.
    counter = str(tmp_path / "attempts")
    with procpool.ProcessPoolExecutor(1, retries=1) as executor:
        results = executor.map(_die_once_on_two, range(5), [counter] * 5, chunksize=5)
        assert list(results) == [0, 1, 2, 3, 4]


def _die_once_on_two(x: int, counter: str) -> int:
    if x == 2:
        mb.fail_until_attempt(counter, 2, how="exit")
    return x


# ---- 2. a death during start-up --------------------------------------------------------------


def test_an_initializer_that_exits_fails_the_task_waiting_in_its_worker(
        any_start_method: str, fifos: Fifos) -> None:
    # The initializer exits only once the task waits in its worker's pipe (an initializer
    # that exited at once could break the pool before the call, which then raises itself).
    initializer = (mb.exit_when_released, (fifos.release, 3))
    with procpool.Pool(1, *initializer, context=any_start_method) as pool:
        result = pool.apply_async(mb.square, (3,))
        fifos.release_task()
        with pytest.raises(procpool.InitializerFailed, match="exit code 3"):
            result.get(timeout=WAIT)
    with procpool.ProcessPoolExecutor(1, mp_context=any_start_method,
                                      initializer=initializer[0],
                                      initargs=initializer[1]) as executor:
        future = executor.submit(mb.square, 3)
        fifos.release_task()
        with pytest.raises(procpool.InitializerFailed):
            future.result(timeout=WAIT)


def test_a_worker_killed_while_starting_is_replaced_and_its_task_runs(
        any_start_method: str, tmp_path: Path) -> None:
    marker = str(tmp_path / "first-start")
    with procpool.Pool(1, mb.kill_self_on_first_start, (marker,),
                       context=any_start_method) as pool:
        assert pool.apply_async(mb.square, (3,)).get(timeout=WAIT) == 9
        assert pool.stats().respawn_causes == {"killed by SIGKILL": 1}


BROKEN_MAIN = """
import sys
import procpool

if __name__ == "__mp_main__":  # a spawned worker importing this script
    raise RuntimeError("this script cannot be imported by a worker")


def square(x):
    return x * x


if __name__ == "__main__":
    with procpool.ProcessPoolExecutor(1, mp_context=sys.argv[1]) as executor:
        future = executor.submit(square, 3)
        try:
            future.result(timeout=30)
        except procpool.InitializerFailed as error:
            print("answered:", type(error).__name__)
"""


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_main_module_workers_cannot_import_fails_the_waiting_future(
        method: str, tmp_path: Path) -> None:
    script = tmp_path / "broken_main.py"
    script.write_text(BROKEN_MAIN)
    done = subprocess.run([sys.executable, str(script), method], capture_output=True,
                          text=True, timeout=WAIT * 2)
    assert done.stdout.strip() == "answered: WorkerStartFailed", done.stderr[-2000:]
    assert done.returncode == 0


# ---- 3. a task's child must not hide its worker's death --------------------------------------


@pytest.mark.parametrize("new_session", [False, True], ids=["same-group", "setsid"])
def test_a_worker_killed_while_its_childs_child_lives_is_seen_dead(
        start_method: str, new_session: bool, tmp_path: Path) -> None:
    pid_fifo = str(tmp_path / "pids")
    os.mkfifo(pid_fifo)
    with procpool.Pool(1, context=start_method) as pool:
        result = pool.apply_async(mb.fork_child_then_hang, (pid_fifo, new_session))
        with open(pid_fifo) as fifo:
            worker, child = map(int, fifo.read().split())
        try:
            os.kill(worker, signal.SIGKILL)
            with pytest.raises(procpool.WorkerDied, match="SIGKILL"):
                result.get(timeout=WAIT)
            assert pool.apply_async(mb.square, (4,)).get(timeout=WAIT) == 16
        finally:
            os.kill(child, signal.SIGKILL)  # no longer ours once its parent died


def test_close_and_join_do_not_wait_for_a_child_a_task_left_behind(
        start_method: str, fifos: Any) -> None:
    pool = procpool.Pool(1, context=start_method)
    assert pool.apply(mb.fork_child_that_waits_then_return, (fifos.release, 5)) == 5
    pool.close()
    joined = threading.Thread(target=pool.join)
    joined.start()
    joined.join(WAIT)
    finished = not joined.is_alive()
    fifos.release_task()  # the child may go now
    joined.join()
    assert finished, "join() waited for a task's child, not for the worker"


# ---- 4. bytes a task writes into the worker's own pipe --------------------------------------


@pytest.mark.parametrize("options", [{}, {"retries": 1}], ids=["plain", "retries"])
def test_a_task_writing_to_inherited_descriptors_costs_only_its_worker(
        start_method: str, options: dict[str, Any]) -> None:
    runners_own = frozenset(mb.pipes_and_sockets())  # before the pool makes any
    with procpool.Pool(2, context=start_method, **options) as pool:
        result = pool.apply_async(mb.write_to_every_descriptor, (7, runners_own))
        others = [pool.apply_async(mb.square, (x,)) for x in range(6)]
        with pytest.raises(procpool.WorkerDied, match="reply pipe was corrupted"):
            result.get(timeout=WAIT)  # with retries it fails again: it writes every time
        assert [other.get(timeout=WAIT) for other in others] == [x * x for x in range(6)]
        assert pool.map(mb.square, range(8)) == [x * x for x in range(8)]
        assert "lost" in pool.stats().respawn_causes


# ---- 5, 6. callbacks -------------------------------------------------------------------------


def test_a_callback_raising_system_exit_does_not_stop_later_callbacks() -> None:
    seen: list[int] = []
    with procpool.Pool(1) as pool:
        pool.apply_async(mb.square, (1,), callback=_exit).get(timeout=WAIT)
        pool.apply_async(mb.square, (2,), callback=seen.append).get(timeout=WAIT)
        pool.map_async(mb.square, [3], error_callback=_exit).get(timeout=WAIT)
        pool.map_async(mb.square, [5], callback=seen.extend).get(timeout=WAIT)
    assert seen == [4, 25]


def _exit(_: object) -> None:
    sys.exit(3)


def test_an_executor_done_callback_may_wait_for_another_future() -> None:
    waited: list[int] = []
    with procpool.ProcessPoolExecutor(1) as executor:
        later: list[Any] = []
        first = executor.submit(mb.square, 2)
        first.add_done_callback(lambda _: waited.append(later[0].result(WAIT)))
        later.append(executor.submit(mb.square, 3))
        assert first.result(WAIT) == 4 and later[0].result(WAIT) == 9
    assert waited == [9]


def test_a_done_callback_may_wait_for_a_future_that_has_done_callbacks_too(
    fifos: Any,
) -> None:
    # Every future of tqdm's process_map has a done-callback. The future waited for must be
    # settled even while the callback thread is busy with the callback that waits for it.
    waited: list[str] = []
    counted: list[int] = []
    with procpool.ProcessPoolExecutor(2, mp_context="fork") as executor:
        later = executor.submit(mb.announce_then_block, fifos.started, fifos.release)
        later.add_done_callback(lambda _: counted.append(1))
        fifos.wait_started()  # one worker holds it; the other takes the next
        first = executor.submit(mb.square, 2)
        first.add_done_callback(lambda _: waited.append(later.result(WAIT)))
        assert first.result(WAIT) == 4  # its callback now waits for `later`
        fifos.release_task()
        assert later.result(WAIT) == "released"
    assert waited == ["released"] and counted == [1]


# ---- 7, 9. the parent is SIGKILLed ---------------------------------------------------------

KILLED_PARENT = """
import sys
import numpy
import procpool
import misbehaving as mb


def main(method, started, what):
    with procpool.Pool(2, context=method) as pool:
        if what == "gil":  # each task says its pid on a FIFO of its own, then holds the GIL
            results = [pool.apply_async(mb.announce_then_hold_the_gil, (f"{started}{n}", 60))
                       for n in range(2)]
            for result in results:
                result.get()
        else:  # large arrays in flight both ways, through shared memory, until killed
            arrays = (numpy.full(2**16, x, dtype=numpy.float64) for x in range(10**6))
            for done, _ in enumerate(pool.imap(mb.double_and_say_where, arrays)):
                if done == 20:
                    print("flowing", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
"""


def _run_and_kill_a_parent(tmp_path: Path, method: str,
                           what: str) -> tuple[int, list[int], list[psutil.Process]]:
    """Start a parent running KILLED_PARENT, SIGKILL it once its work runs; return its pid,
    its workers' pids, and its janitor."""
    script = tmp_path / "parent.py"
    script.write_text(KILLED_PARENT)
    started = tmp_path / "started"
    for n in range(2):
        os.mkfifo(f"{started}{n}")
    with subprocess.Popen([sys.executable, str(script), method, str(started), what],
                          stdout=subprocess.PIPE, text=True) as parent:
        try:
            if what == "gil":
                workers = []
                for n in range(2):
                    with open(f"{started}{n}") as fifo:
                        workers.append(int(fifo.read()))
            else:
                assert parent.stdout is not None
                assert parent.stdout.readline() == "flowing\n"
                workers = [child.pid for child in psutil.Process(parent.pid).children()]
            janitor = [child for child in psutil.Process(parent.pid).children()
                       if any("_janitor" in part for part in child.cmdline())]
        finally:
            parent.kill()  # SIGKILL: nothing of the parent runs after this
    return parent.pid, workers, janitor


def test_a_task_holding_the_gil_dies_with_a_killed_parent(
        any_start_method: str, tmp_path: Path) -> None:
    _, workers, _ = _run_and_kill_a_parent(tmp_path, any_start_method, "gil")
    # A worker may exit between any two looks at it; still_alive tolerates that.
    assert not still_alive(list(workers), timeout=WAIT), (
        "workers stuck in C outlived their killed parent")


@pytest.mark.parametrize("attempt", range(3))
def test_no_segment_outlives_a_parent_killed_with_arrays_in_flight(
        start_method: str, tmp_path: Path, attempt: int) -> None:
    pytest.importorskip("numpy")
    parent, _, janitor = _run_and_kill_a_parent(tmp_path, start_method, "arrays")
    assert janitor, "the parent had no janitor"
    # The janitor kills the workers, waits for them, removes what is left, then exits.
    _, alive = psutil.wait_procs(janitor, timeout=WAIT)
    assert not alive
    assert not _segments_of(parent)


def _segments_of(pid: int) -> list[str]:
    return [name for name in os.listdir("/dev/shm") if name.startswith(f"procpool-{pid}-")]


# ---- 10. procpool's own threads cannot be started --------------------------------------------


def test_no_new_threads_fails_the_map_instead_of_hanging(monkeypatch: pytest.MonkeyPatch) -> None:
    # CPython's test_python_finalization_error: during interpreter finalization, starting a
    # thread raises RuntimeError. The executor's own thread exists; a map's feeder cannot.
    executor = procpool.ProcessPoolExecutor(2)
    name = "_start_joinable_thread" if hasattr(threading, "_start_joinable_thread") \
        else "_start_new_thread"

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    with executor:
        monkeypatch.setattr(threading, name, refuse)
        with pytest.raises(procpool.PoolBroken, match="could not start"):
            list(executor.map(mb.square, [2, 3] * 5))
        monkeypatch.undo()
        assert executor.submit(mb.square, 3).result(WAIT) == 9


# ---- 11. a start that fails for want of descriptors ------------------------------------------


def _open_descriptors() -> dict[int, str]:
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return fds


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc (Linux)")
def test_a_pool_that_cannot_get_descriptors_fails_to_start_and_leaves_none_open() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Fill the holes below the highest descriptor: a new one must then be above it, where
    # the limit bites.
    top = max(_open_descriptors())
    fillers = [os.open(os.devnull, os.O_RDONLY)
               for _ in range(top + 1 - len(_open_descriptors()))]
    before = _open_descriptors()
    failures = 0
    try:
        for spare in range(0, 14):
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(before) + 1 + spare, hard))
            try:
                pool = procpool.Pool(2, context="fork")
            except OSError:
                failures += 1
                pool = None
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            if pool is not None:  # a pool that started serves: never a broken one
                with pool:
                    assert pool.apply(mb.square, (3,)) == 9
            # A worker that did start holds its sentinel pipes until multiprocessing forgets
            # its Process object.
            multiprocessing.active_children()
            gc.collect()
            left = {fd: target for fd, target in _open_descriptors().items()
                    if fd not in before}
            # CPython's popen_fork leaks one pipe (both ends) when its second os.pipe()
            # fails; everything procpool opened must be closed.
            leaked_pipes = set(left.values())
            assert not left or (len(left) == 2 and len(leaked_pipes) == 1
                                and leaked_pipes.pop().startswith("pipe:")), (spare, left)
            for fd in left:
                os.close(fd)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for fd in fillers:
            os.close(fd)
    assert failures > 0, "the limit never stopped a start: the test tested nothing"


def test_a_keyboard_interrupt_inside_a_post_does_not_silence_the_inbox(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A Ctrl-C lands between two bytecodes of whatever the main thread runs, also inside
    # Inbox.post. Whatever the post left behind, the next post must still wake the
    # dispatcher, or shutdown(wait=True) after the Ctrl-C waits forever (seen on 3.10).
    inbox: _inbox.Inbox[str] = _inbox.Inbox()
    real_write = os.write

    def interrupted_write(fd: int, data: bytes) -> int:
        monkeypatch.setattr(_inbox.os, "write", real_write)
        raise KeyboardInterrupt

    monkeypatch.setattr(_inbox.os, "write", interrupted_write)
    try:
        with pytest.raises(KeyboardInterrupt):
            inbox.post("submit")
        assert inbox.post("close")
        ready = multiprocessing.connection.wait([inbox.waitable], timeout=10)
        assert ready == [inbox.waitable], "the dispatcher would never wake"
        assert list(inbox.take()) == ["submit", "close"]
    finally:
        inbox.close()


def test_an_interrupted_run_cancels_the_call_it_submitted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A Ctrl-C between executor.run's submit and its await: the call must not run on
    # unseen, with nobody able to cancel it and shutdown(wait=True) waiting for it.
    import asyncio

    submitted: list[Any] = []
    executor = procpool.ProcessPoolExecutor(1, mp_context="fork")
    try:
        real_submit = executor.submit

        def spying_submit(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            submitted.append(real_submit(fn, *args, **kwargs))
            return submitted[-1]

        def interrupted_wrap(future: Any, **kwargs: Any) -> Any:
            raise KeyboardInterrupt

        monkeypatch.setattr(executor, "submit", spying_submit)
        monkeypatch.setattr(asyncio, "wrap_future", interrupted_wrap)
        with pytest.raises(KeyboardInterrupt):
            asyncio.run(executor.run(mb.hang))
        monkeypatch.undo()
        assert len(submitted) == 1 and submitted[0].cancelled()
        assert executor.submit(mb.square, 4).result(timeout=30) == 16
    finally:
        executor.kill_workers()  # a hanging call left behind must not hang the test


@pytest.mark.parametrize("call", ["apply", "map", "starmap"])
def test_a_ctrl_c_before_a_blocking_call_waits_still_stops_the_pool(
    call: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Ctrl-C can land after the call has submitted (its task may already run) and before
    # its wait begins. The caller cannot tell that from one inside the wait, so the pool
    # must do the same: terminate, and leave no task running on unseen (seen on 3.11 CI).
    pool = procpool.Pool(1, context="fork")
    try:
        dispatcher = pool._engine._dispatcher  # where every face's submission ends up
        real_submit = dispatcher.submit

        def submit_then_interrupted(chunks: Any) -> None:
            real_submit(chunks)
            raise KeyboardInterrupt

        monkeypatch.setattr(dispatcher, "submit", submit_then_interrupted)
        with pytest.raises(KeyboardInterrupt):
            if call == "apply":
                pool.apply(mb.hang)
            elif call == "map":
                pool.map(mb.hang, [1, 2])
            else:
                pool.starmap(mb.hang, [(1,), (2,)])
        assert "state=TERMINATE" in repr(pool) and pool._pool == []
    finally:
        pool.terminate()


def test_an_imap_racing_terminate_reads_no_more_of_its_input(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # terminate() lands after imap() was accepted and before its stream is registered: the
    # stream must not be lifted (close's rule) and read its endless input for ever.
    pool = procpool.Pool(1, context="fork")
    read = itertools.count()

    def endless() -> Any:
        while True:
            yield next(read)

    real_stream_feeder = pool._engine.stream_feeder

    def terminate_first(*args: Any, **kwargs: Any) -> Any:
        pool.terminate()
        return real_stream_feeder(*args, **kwargs)

    monkeypatch.setattr(pool._engine, "stream_feeder", terminate_first)
    results = pool.imap(mb.square, endless())
    assert list(results) == []  # ends at once: nothing was submitted
    assert next(read) <= 1


@pytest.mark.parametrize("results", [None, [1], [1, 2, 3], (1, 2)],
                         ids=["none", "too-few", "too-many", "not-a-list"])
def test_a_reply_that_is_not_the_chunks_results_fails_the_chunk(results: Any) -> None:
    # What a worker of another procpool version might send: its chunk is answered with an
    # error that names it, never left unanswered (a reply of None used to be skipped).
    import pickle

    from procpool._codec import dumps
    from procpool._delivery import Delivery
    from procpool._messages import CallMode
    from procpool._task import Chunk, TaskFunction
    from support import Outcome

    sink = Outcome(2)
    chunk = Chunk(1, TaskFunction(1, dumps(abs)), b"", CallMode.ONE_ARG, 0, 2, sink, "abs")
    Delivery().chunk_reply(chunk, pickle.dumps(results), ())
    error = sink.result()
    assert isinstance(error, procpool.ResultUnpicklingError)
    assert "another version of procpool" in str(error) and "abs" in str(error)
    good = Outcome(2)
    Delivery().chunk_reply(Chunk(2, chunk.function, b"", CallMode.ONE_ARG, 0, 2, good, "abs"),
                           pickle.dumps([4, 5]), ())
    assert good.result() == [4, 5]
