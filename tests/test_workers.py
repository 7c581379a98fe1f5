"""A worker's identity and environment: ``procpool.current_worker()`` and ``worker_env``.

Each worker knows its place (0 .. processes-1, kept by a replacement) and pid, from its
initializer on; ``worker_env`` is set before the initializer, and under spawn and forkserver
before the worker imports the parent's main module. Workers record what they saw in files
(``worker_tasks.initializer_records_place``); nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import procpool
import worker_tasks as wt

ENV_NAMES = ("PROCPOOL_TEST_PLACE", "PROCPOOL_TEST_FIXED", "HOME")


def test_current_worker_is_none_outside_a_worker() -> None:
    assert procpool.current_worker() is None


def test_each_worker_knows_its_place_from_its_initializer_on(
        any_start_method: str, tmp_path: Path) -> None:
    with procpool.Pool(2, wt.initializer_records_place, (str(tmp_path),),
                       context=any_start_method) as pool:
        seen = set(pool.map(wt.where, range(20), chunksize=1))
        pool.close()
        pool.join()
    places = wt.places(str(tmp_path))
    assert sorted(places.values()) == [0, 1]
    assert seen <= {(index, pid) for pid, index in places.items()}  # the tasks agree
    assert os.getpid() not in places
    assert procpool.current_worker() is None


def test_a_replacement_takes_the_place_of_the_worker_it_replaces(
        start_method: str, tmp_path: Path) -> None:
    places_dir = tmp_path / "places"
    places_dir.mkdir()
    with procpool.Pool(2, wt.initializer_records_place, (str(places_dir),),
                       context=start_method, retries=2) as pool:
        marker = str(tmp_path / "exited")
        indices = pool.starmap(wt.index_then_exit_if, [(i, marker) for i in range(10)],
                               chunksize=1)
        pool.close()
        pool.join()
    assert set(indices) <= {0, 1}
    assert sorted(wt.places(str(places_dir)).values()) == [0, 1, 1]  # worker 1 came back


def test_recycled_workers_keep_the_places(tmp_path: Path) -> None:
    with procpool.Pool(2, wt.initializer_records_place, (str(tmp_path),),
                       maxtasksperchild=1) as pool:
        assert set(pool.map(wt.where, range(6), chunksize=1)) <= {
            (i, p) for p, i in wt.places(str(tmp_path)).items()}
        pool.close()
        pool.join()
    places = wt.places(str(tmp_path))
    assert len(places) >= 6 and set(places.values()) == {0, 1}


def test_executor_and_asyncio_tasks_see_their_worker() -> None:
    async def run_one(executor: procpool.ProcessPoolExecutor) -> tuple[int, int]:
        return await executor.run(wt.where)

    with procpool.ProcessPoolExecutor(2) as executor:
        pids = set(executor.map(wt.where, range(4)))
        index, pid = asyncio.run(run_one(executor))
        assert index in (0, 1) and pid != os.getpid()
        assert {i for i, _ in pids} <= {0, 1}


def test_inline_workers_are_threads_of_this_process() -> None:
    with procpool.Pool(2, backend="inline") as pool:
        seen = set(pool.map(wt.where, range(6), chunksize=1))
    assert {pid for _, pid in seen} == {os.getpid()}
    assert {index for index, _ in seen} <= {0, 1}
    assert procpool.current_worker() is None  # the calling thread is no worker


def test_worker_env_is_set_before_the_initializer(any_start_method: str) -> None:
    before = dict(os.environ)
    with procpool.Pool(1, wt.initializer_records_env, ("PROCPOOL_TEST_FIXED",),
                       context=any_start_method,
                       worker_env={"PROCPOOL_TEST_FIXED": "yes", "HOME": None}) as pool:
        assert pool.apply(wt.what_initializer_saw) == {"PROCPOOL_TEST_FIXED": "yes"}
        assert pool.apply(wt.env, (ENV_NAMES,)) == {
            "PROCPOOL_TEST_PLACE": None, "PROCPOOL_TEST_FIXED": "yes", "HOME": None}
    assert dict(os.environ) == before  # the parent's own environment is untouched


def test_worker_env_function_gives_each_place_its_own(any_start_method: str,
                                                     tmp_path: Path) -> None:
    def gpu_of(index: int) -> dict[str, str]:
        return {"PROCPOOL_TEST_PLACE": f"gpu{index}"}

    with procpool.ProcessPoolExecutor(2, mp_context=any_start_method,
                                      worker_env=gpu_of) as executor:
        seen = set(executor.map(wt.index_and_env, ["PROCPOOL_TEST_PLACE"] * 8))
    assert seen and all(value == f"gpu{index}" for index, value in seen), seen


SCRIPT = """
import os, sys
import procpool

SEEN_AT_IMPORT = os.environ.get("PROCPOOL_TEST_PLACE")
IMPORTED_BY = os.getpid()

def seen(_):
    return (procpool.current_worker().index, SEEN_AT_IMPORT, IMPORTED_BY == os.getpid(),
            os.environ.get("PROCPOOL_TEST_PLACE"))

if __name__ == "__main__":
    with procpool.Pool(2, context=sys.argv[1],
                       worker_env=lambda i: {"PROCPOOL_TEST_PLACE": f"gpu{i}"}) as pool:
        print(sorted(set(pool.map(seen, range(2), chunksize=1)) |
                     set(pool.map(seen, range(8), chunksize=1))))
"""


# From 3.14 (and 3.13.8) a forkserver imports the main module once, in the server, and its
# workers no longer import it again (CPython gh-126631): the script's top-level code runs with
# the parent's environment there, whatever the worker is given (docs/workers.md).
MAIN_IMPORTED_IN_EACH_WORKER = {"spawn": True, "forkserver": sys.version_info < (3, 13, 8)}


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_worker_env_is_set_before_the_main_module_is_imported(
        method: str, tmp_path: Path) -> None:
    # A script's top-level `import torch` reads CUDA_VISIBLE_DEVICES as the worker imports
    # the script: the variable must be there before that.
    script = tmp_path / "uses_env_at_import.py"
    script.write_text(textwrap.dedent(SCRIPT))
    done = subprocess.run([sys.executable, str(script), method], capture_output=True,
                          text=True, timeout=50, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # (index, value seen at the script's import, imported by this worker, value now)
    seen = eval(done.stdout)
    assert all(now == f"gpu{index}" for index, _, _, now in seen), seen
    assert all(imported == MAIN_IMPORTED_IN_EACH_WORKER[method] for _, _, imported, _ in seen)
    assert all(at_import == f"gpu{index}" for index, at_import, imported, _ in seen
               if imported), seen


@pytest.mark.parametrize("bad, error, words", [
    ([("A", "1")], TypeError, "worker_env must be a mapping"),
    ({"A": 1}, TypeError, "worker_env['A'] must be a str"),
    ({"A=B": "1"}, ValueError, "not an environment variable name"),
    (lambda index: ["nope"], TypeError, "worker_env(0) must be a mapping"),
])
def test_bad_worker_env_is_refused_naming_the_problem(
        bad: object, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=_escaped(words)):
        procpool.Pool(1, worker_env=bad)  # type: ignore[arg-type]


def test_a_worker_env_function_that_raises_fails_the_constructor() -> None:
    def broken(index: int) -> dict[str, str]:
        raise RuntimeError(f"no GPU for {index}")

    with pytest.raises(RuntimeError, match="no GPU for 0"):
        procpool.ProcessPoolExecutor(1, worker_env=broken)


@pytest.mark.parametrize("backend, advice", [
    ("inline", "set os.environ yourself"), ("dask", "LocalCluster(env=...)")])
def test_worker_env_is_refused_where_workers_are_not_the_pools_processes(
        backend: str, advice: str) -> None:
    # Before a Dask cluster is started for nothing.
    with pytest.raises(ValueError, match=_escaped(f"not supported on the '{backend}' backend")
                       ) as refused:
        procpool.Pool(1, backend=backend, worker_env={"A": "1"})
    assert advice in str(refused.value)


def _escaped(text: str) -> str:
    import re

    return re.escape(text)


INSERTED_PATH = """
import sys
sys.path.insert(0, sys.argv[2])  # procpool is found only through this (python -S)
import procpool

def seen(_):
    import os
    return os.environ.get("PROCPOOL_TEST_PLACE")

if __name__ == "__main__":
    with procpool.Pool(1, context=sys.argv[1],
                       worker_env={"PROCPOOL_TEST_PLACE": "set"}) as pool:
        print(pool.apply(seen, (0,)))
"""


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_worker_env_needs_nothing_the_child_cannot_import_yet(
        method: str, tmp_path: Path) -> None:
    # The environment is set before the child takes the parent's sys.path: what sets it must
    # not need procpool, which a program may find only through a path it inserted.
    script = tmp_path / "inserted_path.py"
    script.write_text(textwrap.dedent(INSERTED_PATH))
    source = str(Path(procpool.__file__).parent.parent)
    done = subprocess.run([sys.executable, "-S", str(script), method, source],
                          capture_output=True, text=True, timeout=50, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "set"


def test_short_calls_do_not_wait_for_a_worker_still_starting(
        any_start_method: str, fifos: Any) -> None:
    # Worker 1's initializer blocks until the test releases it, so it stays "starting". Once
    # worker 0 has answered a call, the function's pace is known, and short calls queue
    # behind worker 0 instead of waiting in worker 1's pipe for its start (which, for a
    # spawned worker, takes 40-50 ms on its own; here, until released).
    with procpool.Pool(2, wt.initializer_blocks_at_place, (1, fifos.release),
                       context=any_start_method) as pool:
        first = pool.apply(wt.where)  # a pool's first call goes to worker 0
        assert first[0] == 0
        # More calls, so that one slow measurement (a busy machine) cannot make the pace
        # look long: each halves what is left of it.
        assert [pool.apply_async(wt.where).get(timeout=10) for _ in range(8)] == [first] * 8
        calls = pool.map_async(wt.where, range(8), chunksize=1)
        assert calls.get(timeout=10) == [first] * 8
        fifos.release_task()
        pool.close()
        pool.join()  # nothing waits in worker 1's pipe: it starts, and exits
