"""Fixtures shared by every test: start methods, and a guard against leaked resources.

Every test runs under pytest-timeout (pyproject.toml), which dumps all stacks on expiry. The
autouse ``no_leaks`` fixture fails a test that leaves a child process, a procpool thread or a
shared-memory segment behind.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from support import Fifos

START_METHODS = ["fork", "spawn"]


@pytest.fixture(params=START_METHODS)
def start_method(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["fork", "spawn", "forkserver"])
def any_start_method(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _shm_segments() -> set[str]:
    shm = Path("/dev/shm")
    return {p.name for p in shm.iterdir()} if shm.is_dir() else set()


# Processes started for a whole module (a Dask scheduler and its workers): they and every
# process under them (a Dask nanny restarts workers on its own) are not a test's leak.
SERVICE_PIDS: set[int] = set()


def _children() -> set[int]:
    me = psutil.Process()
    # The forkserver and resource tracker are long-lived helpers of multiprocessing itself.
    pids = set()
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if not child.is_running() or child.status() == psutil.STATUS_ZOMBIE:
                continue
            if child.pid in SERVICE_PIDS or any(p.pid in SERVICE_PIDS for p in child.parents()):
                continue
            pids.add(child.pid)
    return pids


def _service_processes() -> list[psutil.Process]:
    processes = []
    for pid in SERVICE_PIDS:
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            processes += [process, *process.children(recursive=True)]
    return processes


def _service_shm() -> set[str]:
    """The /dev/shm segments the module's services map (a Dask nanny's semaphores)."""
    names = set()
    for process in _service_processes():
        with contextlib.suppress(OSError), open(f"/proc/{process.pid}/maps") as maps:
            names.update(line.rsplit("/dev/shm/", 1)[1].strip()
                         for line in maps if "/dev/shm/" in line)
    return names


def _helper_pids() -> set[int]:
    pids = set()
    try:
        from multiprocessing import forkserver, resource_tracker

        for helper in (forkserver._forkserver, resource_tracker._resource_tracker):
            pid = getattr(helper, "_forkserver_pid", None) or getattr(helper, "_pid", None)
            if pid:
                pids.add(pid)
    except ImportError:
        pass
    return pids


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    children_before = _children()
    shm_before = _shm_segments()
    yield
    gc.collect()  # objects in reference cycles release their resources only now
    threads = [t for t in threading.enumerate() if t.name.startswith("procpool-")]
    for thread in threads:
        thread.join(5)  # a feeder may still be returning from a generator
    leaked_threads = [t.name for t in threads if t.is_alive()]
    leaked_children = _children() - children_before - _helper_pids()
    for pid in leaked_children:  # do not let one leak cascade into every later test
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()
    leaked_shm = _shm_segments() - shm_before - _service_shm()
    assert not leaked_children, f"test leaked child processes: {sorted(leaked_children)}"
    assert not leaked_threads, f"test leaked procpool threads: {leaked_threads}"
    assert not leaked_shm, f"test leaked shared-memory segments: {sorted(leaked_shm)}"


@pytest.fixture
def fifos(tmp_path: Path) -> Fifos:
    return Fifos(tmp_path)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests that use Dask last (stable sort: the order is otherwise kept).
    Importing distributed installs tblib's pickling of
    exceptions process-wide (and forked workers inherit it): an exception that cannot be
    rebuilt by pickle then can be, and the failure matrix's RemoteError case would test
    tblib instead of procpool."""
    items.sort(key=lambda item: "dask" in item.nodeid
               or item.nodeid.startswith("tests/test_backend_contract.py"))


def pytest_configure(config: pytest.Config) -> None:
    # Workers started by tests must find the tests' helper modules under spawn/forkserver.
    here = str(Path(__file__).parent)
    if here not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (here, os.environ.get("PYTHONPATH")) if p
        )
    multiprocessing.set_forkserver_preload([])
