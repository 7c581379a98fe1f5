"""The backend contract: the same programs give the same answers on every backend.

Each test runs on three backends: ``local`` (worker processes), ``dask`` (``backend="dask"``: a
LocalCluster on loopback that the pool starts and stops, as a user gets it), and
``dask-external`` (a ``dask scheduler`` and two ``dask worker`` processes started once for the
module, reached through a scheduler file, and stopped by pid). Those that threads can meet (the
``any_backend`` fixture) also run on ``inline``: worker threads in the test process, which
cannot be killed and share its interpreter; each test left on ``backend`` says why. Tests
synchronise on FIFOs the tasks write to; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import procpool
from support import Fifos

import misbehaving as mb
from conftest import SERVICE_PIDS

BACKENDS = ["local", "dask", "dask-external"]


class ExternalCluster:
    """A ``dask scheduler`` and single-threaded ``dask worker`` processes on loopback, run as a
    user would run them. No nannies: a worker a test kills stays dead (a nanny would restart
    it, and leaves the dead worker's semaphores in /dev/shm), and ``replenish`` starts another.
    """

    WORKERS = 2

    def __init__(self, directory: Path) -> None:
        self.scheduler_file = str(directory / "scheduler.json")
        # As procpool's own cluster: a task that kills its worker fails, is not retried.
        self._env = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
        self._dask = str(Path(sys.executable).parent / "dask")
        # Their HTTP servers listen on every interface unless told otherwise, even with
        # --no-dashboard: loopback only, like everything else here.
        self._scheduler = self._start("scheduler", "--host", "127.0.0.1", "--port", "0",
                                      "--dashboard-address", "127.0.0.1:0",
                                      "--scheduler-file", self.scheduler_file)
        self._workers: list[subprocess.Popen[bytes]] = []
        self.replenish()

    def _start(self, *arguments: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen([self._dask, *arguments], env=self._env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        SERVICE_PIDS.add(process.pid)
        return process

    def replenish(self) -> None:
        """Bring the cluster back to WORKERS live workers, and wait until they have joined."""
        self._workers = [w for w in self._workers if w.poll() is None]
        while len(self._workers) < self.WORKERS:
            self._workers.append(self._start(
                "worker", "--scheduler-file", self.scheduler_file, "--no-nanny", "--nthreads",
                "1", "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0"))
        import distributed

        # Waits for the scheduler file, then for the workers: no sleeping here.
        with distributed.Client(scheduler_file=self.scheduler_file, timeout=60) as client:
            client.wait_for_workers(self.WORKERS, timeout=60)

    def stop(self) -> None:
        # Workers first: a worker whose scheduler is gone keeps trying to reconnect.
        for process in [*self._workers, self._scheduler]:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            SERVICE_PIDS.discard(process.pid)


@pytest.fixture(scope="module")
def external_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExternalCluster]:
    cluster = ExternalCluster(tmp_path_factory.mktemp("dask"))
    try:
        yield cluster
    finally:
        cluster.stop()


def _backend_named(request: pytest.FixtureRequest, name: str) -> Any:
    if name in ("local", "dask", "inline"):
        return name
    cluster: ExternalCluster = request.getfixturevalue("external_cluster")
    cluster.replenish()  # a test before may have killed a worker
    return procpool.DaskBackend(scheduler_file=cluster.scheduler_file)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Any:
    """The backends whose workers are processes: for the points threads cannot meet."""
    return _backend_named(request, request.param)


@pytest.fixture(params=["inline", *BACKENDS])
def any_backend(request: pytest.FixtureRequest) -> Any:
    """Every backend, ``inline`` (worker threads in this process) included."""
    return _backend_named(request, request.param)


def is_dask(backend: Any) -> bool:
    return backend not in ("local", "inline")


# ---- the Pool face -------------------------------------------------------------------------------


def test_every_pool_call_gives_the_local_answers(any_backend: Any) -> None:
    with procpool.Pool(2, backend=any_backend) as pool:
        assert pool.map(mb.square, range(50), chunksize=7) == [x * x for x in range(50)]
        assert pool.starmap(mb.add, [(i, i) for i in range(10)]) == [2 * i for i in range(10)]
        assert list(pool.imap(mb.square, iter(range(30)), chunksize=4)) == [
            x * x for x in range(30)]
        assert sorted(pool.imap_unordered(mb.square, range(30), chunksize=3)) == [
            x * x for x in range(30)]
        assert pool.apply_async(mb.add, (2, 3)).get(timeout=60) == 5
        assert pool.apply(mb.add, (4,), {"y": 1}) == 5
        assert pool.map(lambda x: x + 1, [1, 2]) == [2, 3]  # a lambda travels by value


def test_the_executor_face_and_asyncio(any_backend: Any) -> None:
    with procpool.ProcessPoolExecutor(2, backend=any_backend) as executor:
        futures = {executor.submit(mb.square, i): i for i in range(10)}
        done = {futures[f]: f.result() for f in concurrent.futures.as_completed(futures, 60)}
        assert done == {i: i * i for i in range(10)}
        assert list(executor.map(mb.add, range(5), range(5), chunksize=2)) == [0, 2, 4, 6, 8]

        async def main() -> tuple[int, list[int]]:
            one = await executor.run(mb.square, 9)
            many = [value async for value in executor.amap(mb.square, range(6))]
            return one, many

        assert asyncio.run(main()) == (81, [0, 1, 4, 9, 16, 25])


# ---- failures ------------------------------------------------------------------------------------


def test_every_task_knows_the_place_of_its_worker(any_backend: Any) -> None:
    # On Dask, the place is that of the pool's relay that sent the chunk to the cluster.
    with procpool.Pool(2, backend=any_backend) as pool:
        assert set(pool.map(mb.current_worker_index, range(8), chunksize=1)) <= {0, 1}
        assert pool.apply(mb.current_worker_index) in (0, 1)
    assert mb.current_worker_index() is None


def test_a_task_exception_arrives_as_itself_with_its_traceback(any_backend: Any) -> None:
    with procpool.Pool(2, backend=any_backend) as pool:
        with pytest.raises(ValueError, match="bad value 3") as info:
            pool.apply(mb.raise_value_error, (3,))
        assert "raise_value_error" in str(info.value.__cause__)  # the remote traceback
        outcomes = pool.map_async(mb.raise_if, range(6), chunksize=2)
        with pytest.raises(ValueError, match="item 3 is bad"):
            outcomes.get(timeout=60)
        assert pool.map(mb.square, range(4)) == [0, 1, 4, 9]


def test_a_dying_task_fails_alone_and_the_pool_goes_on(backend: Any) -> None:
    # Not inline: os._exit() in a worker thread ends this whole process, the caller with it.
    with procpool.Pool(2, backend=backend) as pool:
        doomed = pool.apply_async(mb.exit_with_code, (7,))
        others = [pool.apply_async(mb.square, (i,)) for i in range(6)]
        with pytest.raises(procpool.WorkerDied) as info:
            doomed.get(timeout=60)
        assert "running exit_with_code():" in str(info.value)  # a single call: no "item 0"
        if is_dask(backend):
            assert "Dask worker running it died" in str(info.value)
        assert [r.get(timeout=60) for r in others] == [i * i for i in range(6)]
        assert pool.map(mb.square, range(3)) == [0, 1, 4]
        assert pool.stats().respawns == 1


def test_sys_exit_in_a_task_is_a_death_with_its_code(any_backend: Any) -> None:
    with procpool.Pool(1, backend=any_backend) as pool:
        with pytest.raises(procpool.WorkerDied, match="exit code 4"):
            pool.apply(mb.sys_exit, (4,))
        assert pool.apply(mb.square, (5,)) == 25


@pytest.mark.parametrize("options", [{}, {"retries": 1}, {"task_timeout": 60}],
                         ids=["whole-chunks", "retries", "task_timeout"])
def test_sys_exit_in_an_executor_task_is_its_futures_exception(
    any_backend: Any, options: dict[str, Any]
) -> None:
    # As in concurrent.futures: the future's exception is the SystemExit, the worker goes on
    # (and SystemExit is no failure the default retry_on retries).
    with procpool.ProcessPoolExecutor(1, backend=any_backend, **options) as executor:
        with pytest.raises(SystemExit) as exited:
            executor.submit(mb.sys_exit, 4).result(timeout=60)
        assert exited.value.code == 4
        with pytest.raises(SystemExit) as exited:
            executor.submit(mb.return_exits_when_pickled).result(timeout=60)
        assert exited.value.code == 3
        results = executor.map(mb.sys_exit_if, range(5), chunksize=2)
        assert [next(results), next(results)] == [0, 1]
        with pytest.raises(SystemExit):
            next(results)

        async def awaited() -> None:
            await executor.run(mb.sys_exit, 5)

        with pytest.raises(SystemExit):
            asyncio.run(awaited())
        assert executor.submit(mb.square, 5).result(timeout=60) == 25
        # No worker ended for an exit (the map's last chunk may have been cancelled running).
        assert set(executor.stats().respawn_causes) <= {"task cancelled"}


def test_a_task_timeout_fails_the_task(any_backend: Any, fifos: Fifos) -> None:
    with procpool.Pool(2, backend=any_backend) as pool:
        slow = pool.apply_async(mb.announce_then_block, (fifos.started, fifos.release),
                                task_timeout=1)
        fifos.wait_started()
        with pytest.raises(procpool.TaskTimeout):
            slow.get(timeout=60)
        # Dask and inline cannot stop the function: let it return so its worker thread is
        # free again (a killed local worker no longer reads: ENXIO).
        with contextlib.suppress(OSError):
            fd = os.open(fifos.release, os.O_WRONLY | os.O_NONBLOCK)
            os.write(fd, b"released")
            os.close(fd)
        assert pool.map(mb.square, range(4)) == [0, 1, 4, 9]


def test_a_function_the_workers_cannot_import_fails_its_items_clearly(
    backend: Any, tmp_path: Path
) -> None:
    # Not inline: worker threads share this process's sys.path and modules, so they see it.
    with procpool.Pool(2, backend=backend) as pool:
        (tmp_path / "only_here.py").write_text("def double(x):\n    return 2 * x\n")
        sys.path.insert(0, str(tmp_path))  # after the workers started: they do not see it
        try:
            import only_here

            with pytest.raises(procpool.SerializationError, match="could not unpickle"):
                pool.map(only_here.double, [1, 2])
        finally:
            sys.path.remove(str(tmp_path))
            sys.modules.pop("only_here", None)
        assert pool.map(mb.square, [3]) == [9]  # no worker was harmed


MAIN_FUNCTION_SCRIPT = """
import sys
import procpool

def triple(x):  # defined in the user's script: a cluster's workers never ran it
    return 3 * x

if __name__ == "__main__":
    where = sys.argv[1]
    named = ("local", "inline", "dask")
    backend = where if where in named else procpool.DaskBackend(scheduler_file=where)
    with procpool.Pool(2, backend=backend) as pool:
        print(pool.map(triple, range(4)))
    with procpool.ProcessPoolExecutor(2, backend=backend) as executor:
        print(list(executor.map(triple, range(4))))
"""


def test_a_function_of_the_users_script_reaches_every_backend(
    any_backend: Any, tmp_path: Path
) -> None:
    # On a cluster started elsewhere, a function of __main__ looked up by reference fails
    # (Can't get attribute 'triple' on <module '__mp_main__'>): it travels by value there,
    # as Dask's own client sends it.
    script = tmp_path / "users_script.py"
    script.write_text(MAIN_FUNCTION_SCRIPT)
    where = any_backend if isinstance(any_backend, str) else any_backend.scheduler_file
    done = subprocess.run([sys.executable, str(script), where], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[:2] == ["[0, 3, 6, 9]"] * 2


# ---- what travels, and how much -----------------------------------------------------------------


def test_identical_calls_all_run(any_backend: Any, tmp_path: Path) -> None:
    counter = str(tmp_path / "calls")
    with procpool.Pool(2, backend=any_backend) as pool:
        pool.starmap(mb.fail_until_attempt, [(counter, 0)] * 4, chunksize=1)
        assert [pool.apply(mb.fail_until_attempt, (counter, 0)) for _ in range(2)] == [5, 6]
    assert os.path.getsize(counter) == 6  # never deduplicated


def test_imap_reads_its_input_lazily_and_stops_when_dropped(any_backend: Any) -> None:
    read = itertools.count()

    def endless() -> Iterator[int]:
        for n in itertools.count():
            next(read)
            yield n

    with procpool.Pool(2, backend=any_backend) as pool:
        results = pool.imap(mb.square, endless(), chunksize=2, buffersize=3)
        assert [next(results) for _ in range(10)] == [x * x for x in range(10)]
        del results
        # At most the window ahead of the consumer (3 chunks of 2), plus a chunk in hand.
        assert next(read) <= 10 + 3 * 2 + 2


def test_initializer_runs_where_the_tasks_run(
    any_backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Inline, the initializer sets this process's module: unset before (forked workers would
    # inherit a leftover), restored after.
    monkeypatch.setattr(mb, "_initialized_value", None)
    with procpool.Pool(2, mb.initializer_sets, ("ready",), backend=any_backend) as pool:
        assert set(pool.map(mb.read_initialized, range(8), chunksize=1)) == {"ready"}


@pytest.mark.parametrize("options", [{}, {"task_timeout": 30}])
def test_a_failing_initializer_breaks_the_pool(any_backend: Any, options: dict[str, Any]) -> None:
    with procpool.Pool(2, mb.initializer_that_raises, ("no database",), backend=any_backend,
                       **options) as pool:
        with pytest.raises(procpool.InitializerFailed, match="no database"):
            pool.map(mb.square, range(4))
        with pytest.raises(procpool.InitializerFailed):
            pool.apply(mb.square, (1,))


def test_progress_and_stats_work_the_same(any_backend: Any) -> None:
    snapshots: list[procpool.Progress] = []
    with procpool.Pool(2, backend=any_backend) as pool:
        assert pool.map(mb.square, range(20), chunksize=3, progress=snapshots.append) == [
            x * x for x in range(20)]
        stats = pool.stats()
    assert snapshots[-1].finished and snapshots[-1].completed == 20
    assert stats.tasks_done == 20 and sum(w.tasks_done for w in stats.workers) == 20


# ---- Dask only ----------------------------------------------------------------------------------


def _listening(pids: list[int]) -> list[str]:
    addresses = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            for connection in psutil.Process(pid).net_connections("inet"):
                if connection.status == psutil.CONN_LISTEN:
                    addresses.append(connection.laddr.ip)
    return addresses


def test_the_cluster_procpool_starts_listens_on_loopback_only() -> None:
    with procpool.Pool(backend="dask") as pool:
        assert pool.apply(mb.square, (3,)) == 9
        me = psutil.Process()
        pids = [me.pid] + [child.pid for child in me.children(recursive=True)
                           if child.pid not in SERVICE_PIDS]  # the module's other cluster
        addresses = _listening(pids)
    assert addresses and set(addresses) == {"127.0.0.1"}, addresses


def test_a_client_passed_in_is_used_and_never_closed() -> None:
    import distributed

    # Threads in this process, no dashboard: nothing listens at all.
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster, set_as_default=False) as client:
            with procpool.Pool(backend=procpool.DaskBackend(client=client)) as pool:
                assert pool._processes == 2  # the cluster's threads
                assert pool.map(mb.square, range(5)) == [0, 1, 4, 9, 16]
            assert client.status == "running"
            assert client.submit(mb.square, 4).result() == 16


def test_dask_backend_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="one of client, address, scheduler_file"):
        procpool.DaskBackend(address="tcp://127.0.0.1:1", scheduler_file="x.json")
    with pytest.raises(ValueError, match="unknown backend 'ray'"):
        procpool.Pool(backend="ray")


def test_the_dask_backend_costs_no_import_until_used() -> None:
    code = textwrap.dedent("""
        import sys, procpool
        procpool.DaskBackend()
        assert "distributed" not in sys.modules and "dask" not in sys.modules
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
