"""Large buffers through shared memory: both ways, zero-copy on receipt, and never a leaked
segment, whoever dies (the autouse ``no_leaks`` fixture checks /dev/shm after every test)."""

from __future__ import annotations

import functools
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

import procpool
from procpool import _shared_memory as shared_memory
from support import still_alive

import misbehaving as mb

BIG = shared_memory.MIN_SHARED_BYTES // 8  # float64 elements in the smallest shared buffer


def arrays(count: int, size: int = BIG) -> list[Any]:
    return [np.full(size, float(i)) for i in range(count)]


def ours() -> set[str]:
    prefix = shared_memory.parent_prefix(os.getpid()).lstrip("/")
    return {name for name in os.listdir("/dev/shm") if name.startswith(prefix)}


def test_large_arrays_travel_through_shared_memory_both_ways(any_start_method: str) -> None:
    with procpool.Pool(2, context=any_start_method) as pool:
        results = pool.map(mb.double_and_say_where, arrays(6), chunksize=1)
    for i, (doubled, worker_saw) in enumerate(results):
        assert worker_saw == "mmap"  # the worker's input was the segment, mapped
        assert mb._mapping_of(doubled) == "mmap"  # and so is the parent's result: no copy
        assert doubled.flags.writeable
        np.testing.assert_array_equal(doubled, np.full(BIG, 2.0 * i))
    assert ours() == set()  # every name was removed once mapped


def test_small_arrays_stay_in_the_pickle() -> None:
    with procpool.Pool(1) as pool:
        ((doubled, worker_saw),) = pool.map(mb.double_and_say_where, arrays(1, BIG // 4))
    assert worker_saw != "mmap" and mb._mapping_of(doubled) != "mmap"


def test_every_call_shares_large_buffers(tmp_path: Path) -> None:
    data = arrays(3)
    with procpool.Pool(2) as pool:
        assert pool.apply(mb.double_and_say_where, (data[1],))[1] == "mmap"
        assert [w for _, w in pool.imap(mb.double_and_say_where, data)] == ["mmap"] * 3
        assert {w for _, w in pool.imap_unordered(mb.double_and_say_where, data)} == {"mmap"}
    with procpool.ProcessPoolExecutor(2) as executor:
        assert executor.submit(mb.double_and_say_where, data[0]).result()[1] == "mmap"
        assert [w for _, w in executor.map(mb.double_and_say_where, data)] == ["mmap"] * 3


def test_a_task_writing_to_its_input_changes_only_its_own_copy() -> None:
    # The worker maps the arguments copy-on-write: a chunk run again (after a death) must
    # see the arguments as they were sent.
    with procpool.Pool(1) as pool:
        source = np.zeros(BIG)
        result = pool.apply(np.negative, (source,))
        assert pool.apply(_add_one_in_place, (source,)) == 1.0
    assert not source.any() and not result.any()


def _add_one_in_place(array: Any) -> float:
    array += 1
    return float(array[0])


def test_a_death_fails_its_chunk_the_queued_one_still_runs_and_nothing_leaks() -> None:
    # One worker: once the pace is known, each chunk waits queued behind the running one,
    # its segments already written. Item 2 kills the worker; item 3, queued, reruns on the
    # replacement from the same segments.
    data = arrays(6)
    data[2][0] = -1
    with procpool.Pool(1) as pool:
        iterator = pool.imap(mb.double_or_crash, data)
        outcomes = []
        for _ in range(6):
            try:
                outcomes.append(iterator.next(timeout=30))
            except procpool.WorkerDied as error:
                outcomes.append(error)
    assert isinstance(outcomes[2], procpool.WorkerDied)
    for i in (0, 1, 3, 4, 5):
        np.testing.assert_array_equal(outcomes[i], data[i] * 2)
    assert ours() == set()


def test_timeouts_and_retries_share_results_and_leak_nothing(fifos: Any) -> None:
    # Chunks that report each item keep their arguments in the pickle (a retry needs them);
    # their results still come through shared memory.
    data = arrays(4)
    data[1][0] = -1
    task = functools.partial(mb.double_or_block, started_fifo=fifos.started,
                             release_fifo=fifos.release)
    with procpool.Pool(2, task_timeout=2) as pool:
        results = [pool.apply_async(task, (array,)) for array in data]
        with pytest.raises(procpool.TaskTimeout):
            results[1].get(timeout=30)
        for i in (0, 2, 3):
            doubled = results[i].get(timeout=30)
            assert mb._mapping_of(doubled) == "mmap"
            np.testing.assert_array_equal(doubled, data[i] * 2)


def test_terminate_with_shared_arguments_queued_leaks_nothing(fifos: Any) -> None:
    data = arrays(5)
    data[0][0] = -1
    task = functools.partial(mb.double_or_block, started_fifo=fifos.started,
                             release_fifo=fifos.release)
    pool = procpool.Pool(1)
    result = pool.map_async(task, data, chunksize=1)
    fifos.wait_started()
    assert ours()  # the waiting chunks' arguments are in shared memory
    pool.terminate()
    pool.join()
    with pytest.raises(procpool.PoolTerminated):
        result.get(timeout=30)
    assert ours() == set()


def test_the_workers_remove_the_segments_of_a_killed_parent(tmp_path: Path, fifos: Any) -> None:
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        import functools, os, sys
        import numpy as np
        import procpool
        import misbehaving as mb

        if __name__ == "__main__":
            data = [np.full(1 << 16, float(i)) for i in range(5)]
            data[0][0] = -1
            task = functools.partial(mb.double_or_block, started_fifo=sys.argv[1],
                                     release_fifo=sys.argv[2])
            pool = procpool.Pool(1)
            print(pool._pool[0].pid, flush=True)
            result = pool.map_async(task, data, chunksize=1)
            print("submitted", flush=True)  # every chunk is pickled by now
            result.get()
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    parent = subprocess.Popen([sys.executable, str(script), fifos.started, fifos.release],
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert parent.stdout is not None
        worker_pid = int(parent.stdout.readline())
        # The first chunk runs while the others are pickled (Engine.submit_all): look once
        # they all are.
        assert parent.stdout.readline() == "submitted\n"
        fifos.wait_started()
        prefix = shared_memory.parent_prefix(parent.pid).lstrip("/")
        left = [name for name in os.listdir("/dev/shm") if name.startswith(prefix)]
        assert left  # the queued chunks' arguments
        parent.send_signal(signal.SIGKILL)
        parent.wait(30)
        assert still_alive([worker_pid]) == []
        assert [name for name in os.listdir("/dev/shm") if name.startswith(prefix)] == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
        with_children = [p for p in psutil.process_iter(["cmdline"])
                         if str(script) in " ".join(p.info["cmdline"] or [])]
        for process in with_children:
            process.kill()


def test_results_a_dead_worker_left_unread_are_removed_by_number() -> None:
    base = f"{shared_memory.parent_prefix(os.getpid())}test-r"
    names = shared_memory.SegmentNames(base)
    _, created = shared_memory.dumps(arrays(3), names)
    assert len(created) == 3 and len(ours()) == 3
    shared_memory.remove_numbered(base, 1)  # the first was read (and removed) already
    assert ours() == {created[0].lstrip("/")}
    shared_memory.remove(created)
    assert ours() == set()


def test_without_room_for_a_segment_buffers_stay_in_the_pickle(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_room(name: str, data: memoryview) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shared_memory, "_write", no_room)
    payload, names = shared_memory.dumps(arrays(2), shared_memory.SegmentNames("/procpool-x-"))
    assert names == ()
    np.testing.assert_array_equal(pickle.loads(payload)[1], arrays(2)[1])
    # What only cloudpickle carries (a lambda) still falls back to it.
    payload, names = shared_memory.dumps([arrays(1)[0], lambda: 7],
                                         shared_memory.SegmentNames("/procpool-x-"))
    assert names == () and pickle.loads(payload)[1]() == 7


def test_streams_of_large_arrays_keep_one_array_per_chunk() -> None:
    # Chunk sizes count the bytes sent through shared memory too, so a stream of large arrays
    # and a quick task does not grow its chunks (and its memory in flight) with the pace.
    data = arrays(24)
    data[16][0] = -1
    with procpool.Pool(1) as pool:
        iterator = pool.imap(mb.double_or_crash, data)
        with pytest.raises(procpool.WorkerDied, match="item 16:"):
            for _ in range(24):
                iterator.next(timeout=30)


# ---- an argument's segment reused for a result ---------------------------------------------


def _inode(name: str) -> int:
    return os.stat(f"/dev/shm{name}").st_ino


def test_a_result_is_written_over_an_argument_segment_nothing_maps_any_more() -> None:
    # The worker's side, step by step: its pages are written over (no fresh ones), and its
    # name becomes the result's.
    prefix = f"{shared_memory.parent_prefix(os.getpid())}reuse-"
    sent, names = shared_memory.dumps([np.ones(BIG)], shared_memory.SegmentNames(prefix + "a"))
    argument_inode = _inode(names[0])
    arguments = shared_memory.ChunkArguments(names)
    try:
        (argument,) = arguments.load(sent)
        result = np.negative(argument)
        assert arguments.idle() == []  # the task's input is still held
        del argument
        reusable = arguments.idle()
        assert reusable == [names[0]]
        payload, result_names = shared_memory.dumps(
            [result, np.zeros(BIG)], shared_memory.SegmentNames(prefix + "r"), reusable)
    finally:
        arguments.release()
    assert result_names == (prefix + "r0", prefix + "r1")
    assert _inode(result_names[0]) == argument_inode  # the argument's segment, renamed
    assert ours() == {name.lstrip("/") for name in result_names}
    (again, zeros) = shared_memory.loads(payload, result_names)
    np.testing.assert_array_equal(again, -np.ones(BIG))
    assert not zeros.any()
    assert ours() == set()


@pytest.mark.parametrize("task", ["new", "same", "kept", "in_place", "larger", "smaller"])
def test_results_are_right_whatever_the_task_does_with_its_shared_input(task: str) -> None:
    # Reused only when nothing of the task holds the argument any more: a result that is the
    # argument itself, or a task that keeps it, leaves its segment alone.
    data = arrays(4)
    with procpool.Pool(1) as pool:
        results = pool.map(functools.partial(mb.use_input, task), data, chunksize=2)
        again = pool.map(functools.partial(mb.use_input, task), data, chunksize=2)
    expected = {"new": lambda a: -a, "same": lambda a: a, "kept": lambda a: -a,
                "in_place": lambda a: a + 1, "larger": lambda a: np.concatenate([a, a]),
                "smaller": lambda a: a[: BIG // 2].copy()}[task]
    for source, result, second in zip(data, results, again, strict=True):
        np.testing.assert_array_equal(result, expected(source))
        np.testing.assert_array_equal(second, expected(source))
    assert not any(array.any() for array in data[:1])  # the caller's inputs: unchanged
    assert ours() == set()
