"""The multiprocessing.Pool API and its semantics, as code written for the stdlib expects them."""

from __future__ import annotations

import functools
import itertools
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest

import procpool
from support import still_alive

import misbehaving as mb


@pytest.fixture
def pool() -> Any:
    with procpool.Pool(2) as pool:
        yield pool


# ---- results ---------------------------------------------------------------------------------


def test_every_call_returns_what_the_builtin_would(pool: procpool.Pool) -> None:
    data = list(range(-50, 50))
    assert pool.map(abs, data) == [abs(x) for x in data]
    assert pool.map_async(abs, data).get(30) == [abs(x) for x in data]
    assert list(pool.imap(abs, data)) == [abs(x) for x in data]
    assert sorted(pool.imap_unordered(abs, data)) == sorted(abs(x) for x in data)
    pairs = [(x, 2) for x in range(10)]
    assert pool.starmap(pow, pairs) == [x**2 for x in range(10)]
    assert pool.starmap_async(pow, pairs).get(30) == [x**2 for x in range(10)]
    assert pool.apply(pow, (2, 8)) == 256
    assert pool.apply(int, ("ff",), {"base": 16}) == 255
    assert pool.apply_async(divmod, (17, 5)).get(30) == (3, 2)


@pytest.mark.parametrize("chunksize", [None, 1, 2, 7, 1000])
def test_chunksizes_keep_order(pool: procpool.Pool, chunksize: int | None) -> None:
    data = list(range(103))
    assert pool.map(mb.square, data, chunksize=chunksize) == [x * x for x in data]
    if chunksize is not None:
        assert list(pool.imap(mb.square, data, chunksize)) == [x * x for x in data]
        assert sorted(pool.imap_unordered(mb.square, data, chunksize)) == [x * x for x in data]


def test_empty_inputs(pool: procpool.Pool) -> None:
    assert pool.map(mb.square, []) == []
    assert pool.starmap(mb.add, []) == []
    assert list(pool.imap(mb.square, [])) == []
    assert list(pool.imap_unordered(mb.square, iter([]))) == []
    assert pool.map_async(mb.square, []).get(1) == []


def test_map_accepts_any_iterable(pool: procpool.Pool) -> None:
    assert pool.map(mb.square, (x for x in range(5))) == [0, 1, 4, 9, 16]
    assert pool.map(mb.square, range(5)) == [0, 1, 4, 9, 16]


def test_lambdas_and_closures_work_on_every_start_method(any_start_method: str) -> None:
    offset = 10
    with procpool.Pool(2, context=any_start_method) as pool:
        assert pool.map(lambda x: x + offset, range(3)) == [10, 11, 12]
        assert pool.apply(lambda: offset) == 10
        assert list(pool.imap_unordered(lambda x: -x, [1])) == [-1]


def test_user_exception_is_reraised_as_itself_with_remote_traceback(pool: procpool.Pool) -> None:
    with pytest.raises(ValueError, match="bad value 5") as info:
        pool.apply(mb.raise_value_error, (5,))
    cause = info.value.__cause__
    assert isinstance(cause, multiprocessing.pool.RemoteTraceback)
    assert "raise_value_error" in str(cause)
    with pytest.raises(ValueError, match="item 3 is bad"):
        pool.map(mb.raise_if, range(6))


def test_imap_raises_at_the_failing_item_and_goes_on(pool: procpool.Pool) -> None:
    iterator = pool.imap(mb.raise_if, range(6))
    assert [next(iterator) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="item 3 is bad"):
        next(iterator)
    assert list(iterator) == [4, 5]


@pytest.mark.parametrize("chunksize", [None, 1, 2, 5])
def test_an_exception_from_the_input_surfaces_at_its_position(
        pool: procpool.Pool, chunksize: int | None) -> None:
    # Whatever the chunk size, the items read before the input raised are all delivered.
    def numbers() -> Any:
        yield from range(3)
        raise OSError("input broke")

    iterator = pool.imap(mb.square, numbers(), chunksize)
    assert [next(iterator) for _ in range(3)] == [0, 1, 4]
    with pytest.raises(OSError, match="input broke"):
        next(iterator)
    assert list(iterator) == []
    with pytest.raises(OSError, match="input broke"):
        pool.map(mb.square, numbers())


# ---- waiting -----------------------------------------------------------------------------------


def test_timeouts_raise_the_stdlib_timeout_error(pool: procpool.Pool, fifos: Any) -> None:
    assert procpool.TimeoutError is multiprocessing.TimeoutError
    result = pool.apply_async(mb.announce_then_block, (fifos.started, fifos.release))
    fifos.wait_started()
    with pytest.raises(multiprocessing.TimeoutError):
        result.get(timeout=0.01)
    assert not result.ready()
    with pytest.raises(ValueError, match="not ready"):
        result.successful()
    result.wait(0.01)
    fifos.release_task("done")
    assert result.get(timeout=30) == "done"
    assert result.ready() and result.successful()


def test_imap_next_timeout_leaves_the_iterator_usable(pool: procpool.Pool, fifos: Any) -> None:
    task = functools.partial(mb.announce_then_block, release_fifo=fifos.release)
    iterator = pool.imap(task, [fifos.started], 1)
    with pytest.raises(procpool.TimeoutError):
        # The task cannot finish before the test releases it.
        iterator.next(timeout=0.01)
    fifos.wait_started()
    fifos.release_task("late")
    assert iterator.next(timeout=30) == "late"
    with pytest.raises(StopIteration):
        iterator.next(timeout=30)


# ---- callbacks ---------------------------------------------------------------------------------


def test_callbacks_run_before_get_returns(pool: procpool.Pool) -> None:
    seen: list[Any] = []
    assert pool.apply_async(mb.square, (3,), callback=seen.append).get(30) == 9
    assert seen == [9]
    assert pool.map_async(mb.square, [1, 2], callback=seen.append).get(30) == [1, 4]
    assert seen[-1] == [1, 4]
    errors: list[BaseException] = []
    result = pool.apply_async(mb.raise_value_error, (1,), error_callback=errors.append)
    with pytest.raises(ValueError):
        result.get(30)
    assert isinstance(errors[0], ValueError)
    result = pool.map_async(mb.raise_if, range(5), error_callback=errors.append)
    with pytest.raises(ValueError):
        result.get(30)
    assert isinstance(errors[1], ValueError)


def test_a_failing_callback_does_not_break_the_pool(
    pool: procpool.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    def bad_callback(_: object) -> None:
        raise RuntimeError("callback bug")

    assert pool.apply_async(mb.square, (2,), callback=bad_callback).get(30) == 4
    assert "callback raised" in caplog.text
    assert pool.map(mb.square, range(3)) == [0, 1, 4]


def test_a_callback_may_wait_on_other_results(pool: procpool.Pool) -> None:
    # The stdlib runs callbacks on its result thread, so this deadlocks there.
    inner: list[Any] = []
    outer = pool.apply_async(
        mb.square, (2,), callback=lambda _: inner.append(pool.apply(mb.square, (3,)))
    )
    assert outer.get(30) == 4
    assert inner == [9]


# ---- lifecycle ---------------------------------------------------------------------------------


def test_closed_pool_refuses_work_and_join_needs_close() -> None:
    pool = procpool.Pool(1)
    with pytest.raises(ValueError, match="still running"):
        pool.join()
    pool.close()
    for call in (
        lambda: pool.apply_async(mb.square, (1,)),
        lambda: pool.map(mb.square, [1]),
        lambda: pool.imap(mb.square, [1]),
        lambda: pool.__enter__(),
    ):
        with pytest.raises(ValueError, match="Pool not running"):
            call()
    pool.join()


def test_close_then_join_finishes_all_submitted_work() -> None:
    pool = procpool.Pool(2)
    results = [pool.apply_async(mb.square, (i,)) for i in range(50)]
    mapped = pool.map_async(mb.square, range(100), chunksize=3)
    streamed = pool.imap(mb.square, range(100))  # bounded read-ahead, not yet consumed
    pool.close()
    pool.join()
    assert [r.get(0) for r in results] == [i * i for i in range(50)]
    assert mapped.get(0) == [i * i for i in range(100)]
    assert list(streamed) == [i * i for i in range(100)]


def test_terminate_fails_unfinished_work_and_kills_workers(fifos: Any) -> None:
    pool = procpool.Pool(1)
    running = pool.apply_async(mb.announce_then_block, (fifos.started, fifos.release))
    queued = pool.apply_async(mb.square, (2,))
    fifos.wait_started()
    pids = [w.pid for w in pool._pool]
    pool.terminate()
    with pytest.raises(procpool.PoolTerminated):
        running.get(timeout=30)
    with pytest.raises(procpool.PoolTerminated):
        queued.get(timeout=30)
    assert still_alive(pids) == []
    pool.join()


def test_context_manager_terminates_like_the_stdlib() -> None:
    with procpool.Pool(2) as pool:
        assert pool.map(mb.square, [3]) == [9]
    with pytest.raises(ValueError):
        pool.apply(mb.square, (1,))


def test_unclosed_pool_warns_and_cleans_up() -> None:
    pool = procpool.Pool(1)
    pool.map(mb.square, [1])
    engine = pool._engine
    with pytest.warns(ResourceWarning, match="unclosed running multiprocessing pool"):
        del pool
        import gc

        gc.collect()
    assert engine.join(30)


def test_interpreter_exit_with_an_open_pool_does_not_hang(tmp_path: Any) -> None:
    script = tmp_path / "open_pool.py"
    script.write_text(textwrap.dedent("""
        import procpool
        pool = procpool.Pool(2)
        print(pool.map(abs, [-1, -2]))
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[1, 2]"


def test_invalid_arguments_are_rejected_clearly() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        procpool.Pool(0)
    with pytest.raises(ValueError, match="at least 1"):
        procpool.Pool(-1)
    with pytest.raises(ValueError, match="maxtasksperchild"):
        procpool.Pool(1, maxtasksperchild=0)
    with pytest.raises(TypeError, match="initializer must be a callable"):
        procpool.Pool(1, initializer=3)  # type: ignore[arg-type]
    with procpool.Pool(1) as pool:
        with pytest.raises(ValueError, match="Chunksize"):
            pool.imap(mb.square, [1], chunksize=0)
        with pytest.raises(ValueError, match="Chunksize"):
            pool.map(mb.square, [1], chunksize=0)
        with pytest.raises(ValueError, match="buffersize"):
            pool.imap(mb.square, [1], buffersize=0)
        with pytest.raises(TypeError):
            pool.map(mb.square, 5)  # type: ignore[arg-type]
        assert pool.map(mb.square, [2]) == [4]


def test_processes_defaults_to_the_cpu_count() -> None:
    with procpool.Pool() as pool:
        assert pool._processes == len(os.sched_getaffinity(0))


def test_repr_is_a_one_line_summary() -> None:
    with procpool.Pool(2) as pool:
        assert repr(pool) == ("<procpool.Pool state=RUN processes=2 workers=2 busy=0 queued=0 "
                              "running=0 done=0 failed=0>")


# ---- workers -----------------------------------------------------------------------------------


def test_initializer_runs_in_every_worker(any_start_method: str) -> None:
    with procpool.Pool(2, mb.initializer_sets, ("ready",), context=any_start_method) as pool:
        assert set(pool.map(mb.read_initialized, range(8), chunksize=1)) == {"ready"}


@pytest.mark.parametrize(
    "initializer, match",
    [(mb.initializer_that_raises, "RuntimeError: initializer failed"),
     (mb.initializer_that_crashes, "died during start-up, exit code 3")],
)
def test_a_failing_initializer_breaks_the_pool_instead_of_looping(
    start_method: str, initializer: Any, match: str
) -> None:
    with procpool.Pool(2, initializer, context=start_method) as pool:
        with pytest.raises(procpool.InitializerFailed, match=match):
            pool.map(mb.square, range(10))
        with pytest.raises(procpool.InitializerFailed):
            pool.apply_async(mb.square, (1,))


def test_maxtasksperchild_recycles_workers(start_method: str) -> None:
    with procpool.Pool(2, maxtasksperchild=2, context=start_method) as pool:
        pids = pool.map(mb.pid_of_worker, range(20), chunksize=1)
        # Each worker runs at most two chunks, so at least ten distinct workers ran them.
        assert len(set(pids)) >= 10
        assert all(pids.count(pid) <= 2 for pid in set(pids))
        assert pool.map(mb.square, range(5)) == [0, 1, 4, 9, 16]


def test_submission_is_thread_safe() -> None:
    with procpool.Pool(2) as pool:
        results: dict[int, list[int]] = {}

        def submit_many(thread_index: int) -> None:
            asyncs = [pool.apply_async(mb.add, (thread_index, i)) for i in range(50)]
            results[thread_index] = [r.get(30) for r in asyncs]
            assert pool.map(mb.square, range(thread_index)) == [i * i for i in range(thread_index)]

        threads = [threading.Thread(target=submit_many, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results == {t: [t + i for i in range(50)] for t in range(8)}


def test_inline_backend_runs_the_same_protocol_in_threads() -> None:
    with procpool.Pool(2, backend="inline") as pool:
        assert pool.map(mb.square, range(10)) == [x * x for x in range(10)]
        assert set(pool.map(mb.pid_of_worker, range(4))) == {os.getpid()}
        with pytest.raises(ValueError, match="bad value"):
            pool.apply(mb.raise_value_error, (1,))
        with pytest.raises(procpool.ResultSerializationError):
            pool.apply(mb.return_lock)
    with pytest.raises(ValueError, match="unknown backend"):
        procpool.Pool(1, backend="nope")


def test_main_module_functions_work_under_spawn_from_a_prompt() -> None:
    # `python -c` has no file for spawn to re-import: the function must travel by value.
    code = textwrap.dedent("""
        import procpool
        def triple(x):
            return 3 * x
        if __name__ == "__main__":
            with procpool.Pool(2, context="spawn") as pool:
                print(pool.map(triple, [1, 2]), pool.apply(triple, (5,)))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[3, 6] 15"


def test_main_script_globals_set_by_initializer_are_seen_by_tasks(tmp_path: Any) -> None:
    # A __main__ *file* is re-imported by spawn, so its functions go by reference and share
    # the module's globals, as with the stdlib.
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent("""
        import procpool
        value = None
        def init(v):
            global value
            value = v
        def read(_):
            return value
        if __name__ == "__main__":
            for method in ("fork", "spawn", "forkserver"):
                with procpool.Pool(2, init, ("set",), context=method) as pool:
                    print(method, set(pool.map(read, range(4))))
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["fork {'set'}", "spawn {'set'}", "forkserver {'set'}"]


# ---- streaming ---------------------------------------------------------------------------------


class _CountingInput:
    """An endless input that records how many items were pulled from it."""

    def __init__(self) -> None:
        self.pulled = 0
        self.lock = threading.Lock()

    def __iter__(self) -> _CountingInput:
        return self

    def __next__(self) -> int:
        with self.lock:
            self.pulled += 1
            return self.pulled - 1


@pytest.mark.parametrize("ordered", [True, False])
def test_imap_reads_an_endless_input_lazily(ordered: bool) -> None:
    source = _CountingInput()
    with procpool.Pool(2) as pool:
        call = pool.imap if ordered else pool.imap_unordered
        iterator = call(mb.square, source, chunksize=2, buffersize=3)
        taken = list(itertools.islice(iterator, 20))
        if ordered:
            assert taken == [x * x for x in range(20)]
        # The consumer took 20 items; at most buffersize chunks (3 x 2 items) more were read,
        # plus the one batch the feeder holds while it waits for credit.
        assert 20 <= source.pulled <= 20 + 3 * 2 + 2
        # Dropping the iterator stops the feeder, so close() + join() finish.
        del iterator
        pool.close()
        pool.join()


@pytest.mark.parametrize("ordered", [True, False])
def test_next_with_a_timeout_next_and_for_share_one_position(
        pool: procpool.Pool, ordered: bool) -> None:
    # Items of a piece that has arrived are handed out by a fast path (a C iterator); the
    # other ways of reading must go on from where it stopped, and the reverse.
    call = pool.imap if ordered else pool.imap_unordered
    iterator = call(mb.square, range(40), chunksize=4)
    taken = [iterator.next(timeout=30), next(iterator), next(iterator)]
    taken.append(iterator.next(timeout=30))
    for value in iterator:
        taken.append(value)
        if len(taken) == 10:
            break
    taken.append(iterator.next(timeout=30))
    taken.extend(iterator)
    expected = [x * x for x in range(40)]
    assert (taken if ordered else sorted(taken)) == expected


def test_imap_sizes_chunks_itself_one_item_first_then_larger() -> None:
    # Without chunksize the first chunk is one item (the first result is not held back by
    # others); once the workers have measured the pace, chunks grow. A death names its chunk,
    # which shows both sizes.
    with procpool.Pool(1) as pool:
        with pytest.raises(procpool.WorkerDied, match="item 0:"):
            next(pool.imap(functools.partial(mb.crash_if, bad=0), range(10)))
        iterator = pool.imap(functools.partial(mb.crash_if, bad=1000), range(2000))
        values = []
        with pytest.raises(procpool.WorkerDied) as died:
            values.extend(iterator)
    first, last = (int(n) for n in str(died.value).split("items ")[1].split(":")[0].split("-"))
    assert first <= 1000 <= last and last > first
    assert values == list(range(first))


def test_a_broken_pool_kills_workers_busy_with_large_results(fifos: Any, tmp_path: Any) -> None:
    # Without the kill, the busy worker would block writing a result nobody reads and join()
    # would wait for it forever.
    marker = str(tmp_path / "first-worker")
    pool = procpool.Pool(2, mb.initializer_second_fails, (marker, fifos.started))
    # One task per worker: whichever worker started normally runs its copy.
    results = [pool.apply_async(mb.announce_then_return_big, (fifos.started, fifos.release))
               for _ in range(2)]
    for result in results:
        with pytest.raises(procpool.InitializerFailed, match="refuses to start"):
            result.get(timeout=30)
    try:  # release the busy task if it is still there to release
        fd = os.open(fifos.release, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        pass  # no reader: the worker is gone already
    else:
        os.write(fd, b"go")
        os.close(fd)
    pool.close()
    pool.join()


def test_an_unpicklable_function_fails_its_result_like_the_stdlib(pool: procpool.Pool) -> None:
    lock = threading.Lock()

    def holds_a_lock(x: int) -> int:
        with lock:
            return x

    result = pool.apply_async(holds_a_lock, (1,))  # does not raise here, as with the stdlib
    with pytest.raises(TypeError, match="lock"):
        result.get(30)
    with pytest.raises(TypeError, match="lock"):
        pool.map(holds_a_lock, [1])
    with pytest.raises(TypeError, match="lock"):
        next(pool.imap(holds_a_lock, [1]))
    assert pool.map(mb.square, [3]) == [9]


def test_a_function_the_worker_cannot_import_fails_clearly() -> None:
    # The function's module exists only in this process: a spawned worker cannot import it.
    import types

    ghost = types.ModuleType("procpool_ghost_module")
    exec("def double(x):\n    return 2 * x\n", ghost.__dict__)
    sys.modules["procpool_ghost_module"] = ghost
    try:
        with procpool.Pool(1, context="spawn") as pool:
            with pytest.raises(procpool.SerializationError, match="importable in the worker"):
                pool.apply(ghost.double, (2,))
            assert pool.map(mb.square, [2]) == [4]
    finally:
        del sys.modules["procpool_ghost_module"]


def test_pools_recycling_workers_at_once_do_not_break_each_other() -> None:
    # Starting a process in one thread while another thread closes one used to crash
    # Process.start() (multiprocessing.process._cleanup races with Process.close()).
    pools = [procpool.Pool(2, maxtasksperchild=1) for _ in range(3)]
    try:
        results = [pool.map_async(mb.square, range(60), chunksize=1) for pool in pools]
        for result in results:
            assert result.get(timeout=60) == [x * x for x in range(60)]
    finally:
        for pool in pools:
            pool.terminate()


def test_initargs_may_carry_multiprocessing_queues_and_locks(any_start_method: str) -> None:
    # The common stdlib pattern: shared synchronisation objects through initargs, which
    # multiprocessing lets travel only as process arguments.
    context = multiprocessing.get_context(any_start_method)
    queue = context.Queue()
    with procpool.Pool(2, mb.initializer_keeps, (queue,), context=context) as pool:
        pids = pool.map(mb.put_pid_on_shared_queue, range(4), chunksize=1)
        # Read while the workers live: leaving `with` terminates them, and a process killed
        # right after put() can lose the item still in its queue's feeder thread.
        assert sorted(queue.get(timeout=30) for _ in range(4)) == sorted(pids)
    queue.close()
    queue.join_thread()
    lock = context.Lock()
    with procpool.ProcessPoolExecutor(1, mp_context=context, initializer=mb.initializer_keeps,
                                      initargs=(lock,)) as executor:
        assert executor.submit(mb.square, 3).result(30) == 9


def test_terminate_does_not_wait_for_a_callback_that_never_returns() -> None:
    stuck = threading.Event()
    release = threading.Event()

    def never_returns(_: object) -> None:
        stuck.set()
        release.wait()  # until the test lets go, after terminate() has returned

    pool = procpool.Pool(1)
    pool.apply_async(mb.square, (2,), callback=never_returns)
    assert stuck.wait(30)
    pool.terminate()  # must return although the callback thread is stuck
    release.set()


@pytest.mark.parametrize("options", [{}, {"retries": 1}], ids=["whole-chunks", "per-item"])
def test_map_async_shows_its_progress_where_recipes_read_it(
    fifos: Any, options: dict[str, Any]
) -> None:
    # parmap and many progress-bar recipes poll MapResult._number_left (chunks of
    # _chunksize items still to come) while waiting on map_async.
    task = functools.partial(mb.block_on_first, started_fifo=fifos.started,
                             release_fifo=fifos.release)
    with procpool.Pool(1, context="fork", **options) as pool:
        result = pool.map_async(task, range(10), chunksize=3)
        fifos.wait_started()  # item 0 runs: nothing is done yet
        assert (result._chunksize, result._number_left) == (3, 4)
        with pytest.raises(AttributeError):
            result._number_left = 0  # type: ignore[misc]
        fifos.release_task()
        assert result.get(timeout=30) == list(range(10))
        assert result._number_left == 0


@pytest.mark.parametrize("as_list", [True, False])
@pytest.mark.parametrize(("length", "chunksize"), [
    (0, 0), (1, 1), (7, 1), (10, 1),
    (100, 3),  # 32 chunks of 4 would leave one worker 52 items; of 3, 51
    (1000, 25),  # 32 of 32 would leave one worker 512; 40 of 25, 500 each
])
def test_map_cuts_four_times_finer_than_the_stdlib_unless_workers_are_recycled(
        length: int, chunksize: int, as_list: bool) -> None:
    # maxtasksperchild counts chunks, so there the stdlib's size stays.
    items = list(range(length)) if as_list else range(length)
    with multiprocessing.get_context("fork").Pool(2) as stdlib_pool, \
            procpool.Pool(2, context="fork") as pool, \
            procpool.Pool(2, context="fork", maxtasksperchild=100) as recycling:
        expected = stdlib_pool.map_async(mb.square, items)
        fine = pool.map_async(mb.square, items)
        stdlib_sized = recycling.map_async(mb.square, items)
        assert fine._chunksize == chunksize
        assert stdlib_sized._chunksize == expected._chunksize
        assert fine.get(timeout=30) == stdlib_sized.get(timeout=30) == expected.get(timeout=30)
        assert fine._number_left == 0


@pytest.mark.parametrize(("item_bytes", "chunksize"), [
    (3 << 20, 1),  # 3 MiB: one a chunk (4 MiB a chunk at most)
    ((1 << 20) - 4096, 2),  # just under 1 MiB: 4 would fit, the finer cut is smaller
    (1 << 10, 2),  # small: 40 items in 2 workers x 16 chunks, rounded up
])
def test_map_sends_large_items_a_few_at_a_time_unless_workers_are_recycled(
        item_bytes: int, chunksize: int) -> None:
    # bytearrays travel beside the pickle (protocol 5 buffers), as numpy arrays do.
    items = [bytearray(item_bytes) for _ in range(40)]
    with procpool.Pool(2, context="fork") as pool, \
            procpool.Pool(2, context="fork", maxtasksperchild=100) as recycling:
        sized = pool.map_async(len, items)
        stdlib_sized = recycling.map_async(len, items)
        assert sized._chunksize == chunksize
        assert stdlib_sized._chunksize == 5
        assert sized.get(timeout=30) == stdlib_sized.get(timeout=30) == [item_bytes] * 40


UNGUARDED_SCRIPT = """
import sys
import procpool

def square(x):
    return x * x

# No `if __name__ == "__main__":` guard: every spawned worker runs this again on import.
if sys.argv[2] == "pool":
    with procpool.Pool(1, context=sys.argv[1]) as pool:
        print(pool.map(square, range(3)))
else:
    with procpool.ProcessPoolExecutor(1, mp_context=sys.argv[1]) as executor:
        print(list(executor.map(square, range(3))))
"""


@pytest.mark.parametrize("face", ["pool", "executor"])
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_script_without_a_main_guard_is_told_what_to_write(
    method: str, face: str, tmp_path: Any
) -> None:
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED_SCRIPT)
    done = subprocess.run([sys.executable, str(script), method, face], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    last_line = done.stderr.strip().splitlines()[-1]
    assert last_line.startswith("procpool.WorkerStartFailed: worker pid "), done.stderr[-3000:]
    assert 'move that code under `if __name__ == "__main__":`' in last_line
    assert "initializer" not in last_line
