"""The joblib backend (procpool.joblib): joblib's and scikit-learn's n_jobs work on procpool.

What it must do that loky does not: a batch whose worker dies fails with procpool.WorkerDied
(or runs again, with retries), a batch that runs too long is killed with procpool.TaskTimeout,
and the next Parallel call on the same backend works. Results equal loky's. Every pool a call
starts is gone when the call ends (the leak guard in conftest.py checks processes and threads
after every test; test_a_parallel_config_block_leaves_no_descriptor_behind checks descriptors).
Tasks live in joblib_tasks.py, importable by spawn and forkserver workers.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import joblib
import psutil
import pytest
from joblib import Parallel, delayed, parallel_config

import joblib_tasks
import procpool
import support
from support import Fifos

import misbehaving


@pytest.fixture(scope="module")
def procpool_joblib() -> Iterator[ModuleType]:
    """The backend's module, imported (which registers the backend) by the tests that use
    it."""
    yield importlib.import_module("procpool.joblib")


# loky's results, computed once in a process of their own: loky keeps its reusable executor and
# its resource tracker until the interpreter exits, and in this process the leak guard would
# rightly count them as a test's leftovers.
LOKY_REFERENCE = """
import json
import joblib
import joblib_tasks
with joblib.parallel_config(backend="loky"):
    print(json.dumps({"cross_val_scores": joblib_tasks.cross_val_scores(),
                      "grid_search_scores": joblib_tasks.grid_search_scores()}))
"""


@pytest.fixture(scope="module")
def loky_results() -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", LOKY_REFERENCE], capture_output=True,
                          text=True, timeout=50)
    assert done.returncode == 0, done.stderr
    results: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return results


_JOBLIB_VERSION = tuple(int(part) for part in joblib.__version__.split(".")[:2])


def squares(count: int) -> list[int]:
    return [x * x for x in range(count)]


# ---- results ---------------------------------------------------------------------------------

def test_results_come_back_in_order(procpool_joblib: ModuleType, any_start_method: str) -> None:
    with parallel_config(backend="procpool", n_jobs=2, mp_context=any_start_method):
        assert Parallel()(delayed(joblib_tasks.square)(x) for x in range(40)) == squares(40)


def test_cross_val_score_equals_loky(procpool_joblib: ModuleType, any_start_method: str,
                                     loky_results: dict[str, Any]) -> None:
    with parallel_config(backend="procpool", n_jobs=2, mp_context=any_start_method,
                         task_timeout=30, retries=1):
        scores = joblib_tasks.cross_val_scores()
    assert scores == loky_results["cross_val_scores"]


# forkserver is the backend's default; spawn, which cross_val_score runs on above, would only
# add a second of scikit-learn imports in each worker.
@pytest.mark.parametrize("start_method", ["fork", "forkserver"])
def test_grid_search_equals_loky(procpool_joblib: ModuleType, start_method: str,
                                 loky_results: dict[str, Any]) -> None:
    with parallel_config(backend="procpool", n_jobs=2, mp_context=start_method):
        results = joblib_tasks.grid_search_scores()
    assert results == loky_results["grid_search_scores"]


def test_large_arrays_travel_through_shared_memory(procpool_joblib: ModuleType) -> None:
    import numpy  # the dev extra's (scikit-learn needs it too); procpool itself does not
    array = numpy.arange(2**16, dtype=numpy.float64)  # 512 KiB: above procpool's threshold
    with parallel_config(backend="procpool", n_jobs=2, mp_context="fork"):
        results = Parallel()(delayed(misbehaving.double_and_say_where)(array) for _ in range(3))
    for doubled, where in results:
        assert where == "mmap"  # the worker's array is a shared-memory mapping, not a copy
        assert numpy.array_equal(doubled, array * 2)


# "generator" came in joblib 1.3, "generator_unordered" in 1.4.
RETURN_AS = ["generator", "generator_unordered"] if _JOBLIB_VERSION >= (1, 4) else ["generator"]


@pytest.mark.parametrize("return_as", RETURN_AS)
def test_return_as_a_generator_yields_every_result(procpool_joblib: ModuleType,
                                                   return_as: str) -> None:
    with parallel_config(backend="procpool", n_jobs=2, mp_context="fork"):
        results = Parallel(return_as=return_as)(
            delayed(joblib_tasks.square)(x) for x in range(20))
        assert not isinstance(results, list)
        values = list(results)
    in_order = return_as == "generator"  # "generator_unordered": as the batches finish
    assert (values if in_order else sorted(values)) == squares(20)


def test_a_generator_dropped_mid_call_stops_its_batches(procpool_joblib: ModuleType,
                                                        fifos: Fifos) -> None:
    # Left after its first result while another batch is still running: closing it cancels
    # that batch (procpool kills its worker) and ends the call.
    tasks = [delayed(joblib_tasks.square)(3),
             delayed(joblib_tasks.announce_then_block)(fifos.started, fifos.release)]
    with parallel_config(backend="procpool", n_jobs=2, mp_context="fork"):
        dropped = Parallel(return_as="generator", batch_size=1)(tasks)
        assert next(dropped) == 9
        blocked_pid = int(fifos.wait_started())
        with pytest.warns(UserWarning):  # joblib's: results computed or cancelled unread
            dropped.close()
        assert support.still_alive([blocked_pid]) == []
        assert Parallel()(delayed(joblib_tasks.square)(x) for x in range(5)) == squares(5)


# ---- failures --------------------------------------------------------------------------------

def test_a_worker_death_fails_the_call_with_worker_died_and_the_next_call_works(
        procpool_joblib: ModuleType, any_start_method: str) -> None:
    with parallel_config(backend="procpool", n_jobs=2, mp_context=any_start_method):
        with pytest.raises(procpool.WorkerDied) as died:
            Parallel()(delayed(joblib_tasks.kill_own_worker_if)(x, bad=3) for x in range(8))
        assert died.value.signal_name == "SIGKILL"
        assert "a joblib batch of" in str(died.value)
        assert "kill_own_worker_if()" in str(died.value)
        assert Parallel()(delayed(joblib_tasks.square)(x) for x in range(8)) == squares(8)


def test_with_retries_a_batch_lost_with_its_worker_runs_again_and_the_call_succeeds(
        procpool_joblib: ModuleType, any_start_method: str, tmp_path: Path) -> None:
    marker = str(tmp_path / "killed-once")
    with parallel_config(backend="procpool", n_jobs=2, mp_context=any_start_method, retries=1):
        results = Parallel()(delayed(joblib_tasks.kill_own_worker_if)(x, bad=3, marker=marker)
                             for x in range(8))
    assert results == squares(8)
    assert os.path.exists(marker)  # the first attempt did kill its worker


def test_task_timeout_kills_a_hanging_batch_and_the_next_call_works(
        procpool_joblib: ModuleType, any_start_method: str, tmp_path: Path) -> None:
    never_written = str(tmp_path / "never-written")
    os.mkfifo(never_written)
    # A batch's time includes unpickling it, which in a new spawned worker imports joblib:
    # on a loaded machine that alone has taken more than half a second.
    with parallel_config(backend="procpool", n_jobs=2, mp_context=any_start_method,
                         task_timeout=2.0):
        with pytest.raises(procpool.TaskTimeout) as timed_out:
            Parallel()(delayed(joblib_tasks.block_forever_if)(x, bad=2, fifo=never_written)
                       for x in range(6))
        assert timed_out.value.timeout == 2.0
        assert "block_forever_if()" in str(timed_out.value)
        assert support.still_alive([timed_out.value.pid]) == []
        assert Parallel()(delayed(joblib_tasks.square)(x) for x in range(6)) == squares(6)


def test_a_failed_batch_stops_the_batches_still_running(procpool_joblib: ModuleType,
                                                         fifos: Fifos) -> None:
    # The other batch is running (it said so) when the first one fails: joblib raises the
    # failure and asks the backend to abort, which kills the running batch's worker.
    tasks = [delayed(joblib_tasks.raise_once_started)(fifos.started),
             delayed(joblib_tasks.announce_then_block)(fifos.started, fifos.release)]
    with parallel_config(backend="procpool", n_jobs=2, mp_context="fork"):
        with pytest.raises(ValueError, match="while the batch in worker") as failed:
            Parallel(batch_size=1)(tasks)
    blocked = re.search(r"worker (\d+)", str(failed.value))
    assert blocked is not None
    assert support.still_alive([int(blocked[1])]) == []


def test_a_managed_parallel_keeps_serving_after_a_failed_call(procpool_joblib: ModuleType,
                                                               tmp_path: Path) -> None:
    # `with Parallel(...)` (what scikit-learn's searches use) keeps one pool for every call in
    # the block: after a call fails, joblib needs that pool ready for the next one.
    never_written = str(tmp_path / "never-written")
    os.mkfifo(never_written)
    with parallel_config(backend="procpool", n_jobs=2, mp_context="fork", task_timeout=0.5):
        with Parallel() as parallel:
            with pytest.raises(procpool.WorkerDied):
                parallel(delayed(joblib_tasks.kill_own_worker_if)(x, bad=1) for x in range(4))
            with pytest.raises(procpool.TaskTimeout):
                parallel(delayed(joblib_tasks.block_forever_if)(x, bad=1, fifo=never_written)
                         for x in range(4))
            assert parallel(delayed(joblib_tasks.square)(x) for x in range(4)) == squares(4)


def test_joblibs_own_timeout_stops_the_batch_it_gave_up_on(procpool_joblib: ModuleType,
                                                           tmp_path: Path) -> None:
    # Parallel(timeout=) is joblib's: it stops waiting and aborts the call, and procpool's
    # abort kills the batch instead of leaving it running (the leak guard sees its worker).
    never_written = str(tmp_path / "never-written")
    os.mkfifo(never_written)
    with parallel_config(backend="procpool", n_jobs=2, mp_context="fork"):
        with pytest.raises(procpool.TimeoutError):  # multiprocessing's, which joblib raises
            Parallel(timeout=0.5)(delayed(joblib_tasks.block_forever_if)(x, bad=0,
                                                                         fifo=never_written)
                                  for x in range(2))
        assert Parallel()(delayed(joblib_tasks.square)(x) for x in range(4)) == squares(4)


def test_a_failing_initializer_fails_the_call_with_initializer_failed(
        procpool_joblib: ModuleType) -> None:
    with parallel_config(backend="procpool", n_jobs=2, mp_context="fork",
                         initializer=misbehaving.initializer_that_raises):
        with pytest.raises(procpool.InitializerFailed):
            Parallel()(delayed(joblib_tasks.square)(x) for x in range(8))


# ---- options ---------------------------------------------------------------------------------

@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver", None])
def test_options_reach_the_pool(procpool_joblib: ModuleType, start_method: str | None,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(joblib_tasks, "INHERITED", "set by the test")  # what fork passes on
    options = {} if start_method is None else {"mp_context": start_method}
    with parallel_config(backend="procpool", n_jobs=2, **options,
                         initializer=joblib_tasks.remember, initargs=("from parallel_config",)):
        values = Parallel()(delayed(joblib_tasks.initialized)(x) for x in range(4))
        facts = Parallel()(delayed(joblib_tasks.worker_facts)(x) for x in range(4))
    assert values == ["from parallel_config"] * 4
    # Named none, the start method is the backend's: never fork (OpenMP hangs in a worker
    # forked from a process that ran OpenMP code), whatever Python's default.
    started_by = start_method or procpool_joblib.DEFAULT_START_METHOD
    if start_method is None:
        assert started_by in ("forkserver", "spawn")
    for fact in facts:
        assert fact["pid"] != os.getpid()
        # fork inherits this process's state, spawn and forkserver import afresh;
        # forkserver's workers are children of its server, not of this process.
        assert fact["inherited"] == ("set by the test" if started_by == "fork" else "imported")
        assert (fact["parent"] == os.getpid()) == (started_by != "forkserver")


def test_max_tasks_per_child_reaches_the_pool(procpool_joblib: ModuleType) -> None:
    with parallel_config(backend="procpool", n_jobs=2, mp_context="forkserver",
                         max_tasks_per_child=1):
        facts = Parallel(batch_size=1)(delayed(joblib_tasks.worker_facts)(x) for x in range(3))
    assert len({fact["pid"] for fact in facts}) == 3  # a fresh worker for every batch


def test_the_executors_own_checks_apply_and_say_where_the_option_came_from(
        procpool_joblib: ModuleType) -> None:
    # The stdlib's rule, which procpool's executor keeps: recycling workers refuses fork.
    with parallel_config(backend="procpool", n_jobs=2, mp_context="fork", max_tasks_per_child=1):
        with pytest.raises(ValueError, match="incompatible with the 'fork'") as refused:
            Parallel()(delayed(joblib_tasks.square)(x) for x in range(2))
    assert "options of the 'procpool' joblib backend" in str(refused.value)
    with parallel_config(backend="procpool", n_jobs=2, retries=-1):
        with pytest.raises(ValueError, match="retries must be a whole number"):
            Parallel()(delayed(joblib_tasks.square)(x) for x in range(2))


def test_an_unknown_option_is_refused_naming_it_and_the_options_there_are(
        procpool_joblib: ModuleType) -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'task_timout'") as wrong:
        parallel_config(backend="procpool", n_jobs=2, task_timout=5)
    message = str(wrong.value)
    assert "procpool.ProcessPoolExecutor" in message
    assert "task_timeout" in message and "retries" in message
    with pytest.raises(TypeError, match="pass n_jobs instead of max_workers"):
        parallel_config(backend="procpool", max_workers=2)


def test_every_keyword_of_the_executor_passes_through(procpool_joblib: ModuleType) -> None:
    # Read from the executor's signature, not from a list in the backend: an option added to
    # the executor later is accepted here with no change to the backend.
    parameters = inspect.signature(procpool.ProcessPoolExecutor).parameters
    names = [name for name, parameter in parameters.items() if name != "max_workers"
             and parameter.kind is not inspect.Parameter.VAR_KEYWORD]
    assert {"task_timeout", "retries", "mp_context", "initializer"} <= set(names)
    backend = procpool_joblib.ProcpoolBackend(**dict.fromkeys(names, "any value"))
    assert backend.executor_options == dict.fromkeys(names, "any value")


def test_options_given_to_parallel_itself_pass_through(procpool_joblib: ModuleType,
                                                       tmp_path: Path) -> None:
    if inspect.Parameter.VAR_KEYWORD not in {
            p.kind for p in inspect.signature(Parallel).parameters.values()}:
        pytest.skip("this joblib's Parallel takes no backend keywords (they came in 1.5)")
    never_written = str(tmp_path / "never-written")
    os.mkfifo(never_written)
    with pytest.raises(procpool.TaskTimeout):
        Parallel(n_jobs=2, backend="procpool", mp_context="fork", task_timeout=0.5)(
            delayed(joblib_tasks.block_forever_if)(x, bad=0, fifo=never_written)
            for x in range(2))
    with pytest.raises(TypeError, match="unexpected keyword argument 'retrys'"):
        Parallel(n_jobs=2, backend="procpool", retrys=1)(
            delayed(joblib_tasks.square)(x) for x in range(2))


# ---- nesting, n_jobs -------------------------------------------------------------------------

@pytest.mark.parametrize("start_method", ["fork", "forkserver"])
def test_a_parallel_call_inside_a_task_runs_on_threads_of_its_worker(
        procpool_joblib: ModuleType, start_method: str) -> None:
    with parallel_config(backend="procpool", n_jobs=2, mp_context=start_method):
        reports = Parallel()(delayed(joblib_tasks.nested_parallel)(2) for _ in range(2))
    for report in reports:
        assert report["pid"] != os.getpid()
        assert report["backend"] == "ThreadingBackend"
        assert report["inner_pids"] == [report["pid"]] * 4  # no process pool in the worker


def test_n_jobs_is_read_as_joblib_reads_it(procpool_joblib: ModuleType) -> None:
    backend = procpool_joblib.ProcpoolBackend()
    assert backend.effective_n_jobs(None) == 1
    assert backend.effective_n_jobs(3) == 3
    assert backend.effective_n_jobs(-1) == joblib.cpu_count()
    with pytest.raises(ValueError, match="n_jobs == 0"):
        backend.effective_n_jobs(0)


def test_one_job_runs_in_the_calling_process_as_joblib_does_for_every_backend(
        procpool_joblib: ModuleType) -> None:
    with parallel_config(backend="procpool", n_jobs=1, task_timeout=30):
        facts = Parallel()(delayed(joblib_tasks.worker_facts)(x) for x in range(2))
    assert [fact["pid"] for fact in facts] == [os.getpid()] * 2


# ---- lifetime --------------------------------------------------------------------------------

def test_a_parallel_config_block_leaves_no_descriptor_behind(procpool_joblib: ModuleType) -> None:
    # Processes and threads are the leak guard's to check (conftest.py); descriptors are not.
    def one_block() -> None:
        with parallel_config(backend="procpool", n_jobs=2, mp_context="fork"):
            with pytest.raises(procpool.WorkerDied):
                Parallel()(delayed(joblib_tasks.kill_own_worker_if)(x, bad=1)
                           for x in range(4))
            assert Parallel()(delayed(joblib_tasks.square)(x) for x in range(4)) == squares(4)

    one_block()  # procpool's janitor and joblib's first-use state are not the block's
    descriptors = psutil.Process().num_fds()
    one_block()
    assert psutil.Process().num_fds() == descriptors


def test_a_held_backend_keeps_one_pool_across_calls_until_its_block_ends(
        procpool_joblib: ModuleType) -> None:
    def worker_pids() -> set[int]:
        facts = Parallel(batch_size=1)(delayed(joblib_tasks.worker_facts)(x) for x in range(6))
        return {fact["pid"] for fact in facts}

    with procpool_joblib.ProcpoolBackend(mp_context="fork", retries=1) as backend:
        with parallel_config(backend=backend, n_jobs=2):
            # Two calls, one pool of two workers, still running between the calls.
            used = worker_pids() | worker_pids()
            assert len(used) <= 2
            assert used <= {child.pid for child in psutil.Process().children()}
            with pytest.raises(procpool.WorkerDied) as died:
                Parallel()(delayed(joblib_tasks.kill_own_worker_if)(x, bad=1)
                           for x in range(4))
            assert died.value.attempts == 2  # the held executor has the backend's retries=1
            used |= worker_pids()  # served by the same pool, its lost workers replaced
    assert support.still_alive(sorted(used)) == []  # the block's end shut the pool down


# ---- an optional extra -----------------------------------------------------------------------

def test_import_procpool_does_not_import_joblib() -> None:
    code = ("import sys, procpool; procpool.Pool; procpool.ProcessPoolExecutor; "
            "print('joblib' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False"


def test_without_joblib_the_import_says_which_extra_to_install() -> None:
    code = ("import sys; sys.modules['joblib'] = None\n"  # what a missing package looks like
            "try:\n"
            "    import procpool.joblib\n"
            "except ImportError as error:\n"
            "    print(error)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert "pip install 'procpool[joblib]'" in done.stdout
