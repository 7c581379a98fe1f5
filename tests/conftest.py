"""Fixtures shared by every test: start methods, and a guard against leaked resources.

Every test runs under pytest-timeout (pyproject.toml), which dumps all stacks on expiry. The
autouse ``no_leaks`` fixture fails a test that leaves a child process, a procpool thread or a
shared-memory segment behind, or whose pools broke the exactly-once accounting
(``procpool._accounting``, switched on for the whole run in ``pytest_configure``).

The guard counts only what this test run made, so that another program using /dev/shm beside
the run (a benchmark, another test run) never fails a test: children and threads are the test
process's own; a segment counts if procpool named it after this run's process or one it started
(``procpool-<pid>-...``), or, for any other name (multiprocessing's ``sem.mp-*`` and ``psm_*``),
if this run's processes still map it or hold it open when the test ends.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import multiprocessing
import os
import re
import signal
import subprocess
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import support
from procpool._accounting import ENVIRONMENT_VARIABLE as ACCOUNTING_VARIABLE
from procpool._accounting import take_violations
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


def _service_shm(names: set[str]) -> set[str]:
    """Those of ``names`` that the module's services hold (a Dask nanny's semaphores)."""
    return _held_by({process.pid for process in _service_processes()}, names)


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
    try:  # procpool's janitor: a long-lived helper of the test process, like the tracker
        pid = importlib.import_module("procpool._janitor").janitor_pid()
        if pid:
            pids.add(pid)
    except (ImportError, AttributeError):
        pass
    return pids


_PROCPOOL_SEGMENT = re.compile(r"procpool-(\d+)-")


def _live_descendants() -> set[int]:
    """The test process and every process under it now."""
    pids = {os.getpid()}
    with contextlib.suppress(psutil.Error):
        pids.update(child.pid for child in psutil.Process().children(recursive=True))
    return pids


def _held_by(pids: set[int], names: set[str]) -> set[str]:
    """Those of the /dev/shm ``names`` that the processes ``pids`` map or hold open now.

    Files are compared by inode, not by the name in /proc: glibc's sem_open maps a temporary
    file and then links it under the semaphore's name, so a process's maps never show that
    name.
    """
    if not names:
        return set()
    held: set[tuple[int, int]] = set()
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/maps") as maps:
            for line in maps:
                if "/dev/shm/" in line:  # address perms offset major:minor inode path
                    fields = line.split()
                    major, minor = fields[3].split(":")
                    held.add((os.makedev(int(major, 16), int(minor, 16)), int(fields[4])))
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/dev/shm/"):
                        status = os.stat(f"/proc/{pid}/fd/{fd}")
                        held.add((status.st_dev, status.st_ino))
    found = set()
    for name in names:
        with contextlib.suppress(OSError):
            status = os.stat(f"/dev/shm/{name}")
            if (status.st_dev, status.st_ino) in held:
                found.add(name)
    return found


def _ours(new_segments: set[str], seen: set[int]) -> set[str]:
    """The segments among ``new_segments`` that this test run made.

    procpool names a segment after the pool's parent process: it is ours if that process is
    one this run has seen under the test process (``seen``) or started (``support.STARTED``,
    which still holds a parent that has ended). Any other name is ours if this run's processes
    map it or hold it open: a multiprocessing semaphore or ``SharedMemory`` left alive. Names
    made by other programs on the machine are not counted, nor are names of ours that nothing
    holds any more (they cannot be told from another program's).
    """
    ours = set()
    others = set()
    for name in new_segments:
        match = _PROCPOOL_SEGMENT.match(name)
        if match is None:
            others.add(name)
        elif int(match[1]) in seen or support.started_by_this_run(int(match[1])):
            ours.add(name)
    return ours | _held_by(_live_descendants(), others)


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    # Reports made between tests (a module fixture's pool ending) are this test's to show.
    earlier_violations = take_violations()
    support.STARTED.clear()  # only processes started during this test; pids get reused
    children_before = _children()
    seen = _live_descendants()
    shm_before = _shm_segments()
    yield
    gc.collect()  # objects in reference cycles release their resources only now
    threads = [t for t in threading.enumerate() if t.name.startswith("procpool-")]
    for thread in threads:
        thread.join(5)  # a feeder may still be returning from a generator
    leaked_threads = [t.name for t in threads if t.is_alive()]
    seen |= _live_descendants()
    leaked_children = _children() - children_before - _helper_pids()
    for pid in leaked_children:  # do not let one leak cascade into every later test
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()
    new_shm = _shm_segments() - shm_before
    leaked_shm = _ours(new_shm - _service_shm(new_shm), seen)
    violations = take_violations()  # after the threads: a dispatcher reports as it ends
    problems = []
    if leaked_children:
        problems.append(f"test leaked child processes: {sorted(leaked_children)}")
    if leaked_threads:
        problems.append(f"test leaked procpool threads: {leaked_threads}")
    if leaked_shm:
        problems.append(f"test leaked shared-memory segments: {sorted(leaked_shm)}")
    if earlier_violations:
        problems.append("pools that ended before this test began broke the accounting:\n  "
                        + "\n  ".join(earlier_violations))
    if violations:
        problems.append("the test's pools broke the accounting (every accepted item answered "
                        "exactly once):\n  " + "\n  ".join(violations))
    assert not problems, "\n".join(problems)


@pytest.fixture
def fifos(tmp_path: Path) -> Fifos:
    return Fifos(tmp_path)


# Tests that take a minute or more each (CPython's own suites, run in a subprocess): started
# first, so that with two test processes one runs them while the other takes the rest, instead
# of one of them ending the run alone.
LONG_TESTS = ("tests/test_stdlib_conformance.py", "tests/test_demo.py")


# The matrix files: each of their cells runs on the default interpreter, and on one other.
# `make test` runs the suite on every supported interpreter; on the others it sets
# PROCPOOL_TEST_SHARE=k/n (the k-th of n), and each runs its own share of these files' cells,
# chosen by a hash of the test's id. The rest of the suite runs whole everywhere. That keeps
# four interpreters within CI's time.
SHARED_FILES = ("tests/test_fault_matrix.py", "tests/test_types_in_transit.py",
                "tests/test_backend_contract.py", "tests/test_failure_matrix.py",
                "tests/test_joblib_backend.py", "tests/test_docs.py", "tests/test_demo.py")
SHARE_VARIABLE = "PROCPOOL_TEST_SHARE"


def _share() -> tuple[int, int] | None:
    text = os.environ.get(SHARE_VARIABLE)
    if not text:
        return None
    match = re.fullmatch(r"(\d+)/(\d+)", text)
    if match is None or not 1 <= int(match[1]) <= int(match[2]):
        raise pytest.UsageError(f"{SHARE_VARIABLE} must be k/n with 1 <= k <= n, not {text!r}")
    return int(match[1]), int(match[2])


def pytest_report_header() -> str | None:
    share = _share()
    if share is None:
        return None
    return (f"{SHARE_VARIABLE}={share[0]}/{share[1]}: share {share[0]} of {share[1]} of the "
            f"cells of {', '.join(SHARED_FILES)} (the default interpreter runs them all)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep this interpreter's share of the matrix files (PROCPOOL_TEST_SHARE); run the long
    tests first, and the tests that use Dask last (stable sort: the order is otherwise kept).
    Importing distributed installs tblib's pickling of exceptions process-wide (and forked
    workers inherit it): an exception that cannot be rebuilt by pickle then can be, and the
    failure matrix's RemoteError case would test tblib instead of procpool."""
    share = _share()
    if share is not None:
        mine, count = share
        others = [item for item in items if item.nodeid.startswith(SHARED_FILES)
                  and zlib.crc32(item.nodeid.encode()) % count != mine - 1]
        if others:
            config.hook.pytest_deselected(items=others)
            kept = set(map(id, others))
            items[:] = [item for item in items if id(item) not in kept]

    def place(item: pytest.Item) -> int:
        if "dask" in item.nodeid or item.nodeid.startswith("tests/test_backend_contract.py"):
            return 2
        return 0 if item.nodeid.startswith(LONG_TESTS) else 1

    items.sort(key=place)


def pytest_configure(config: pytest.Config) -> None:
    # Workers started by tests must find the tests' helper modules under spawn/forkserver.
    here = str(Path(__file__).parent)
    if here not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (here, os.environ.get("PYTHONPATH")) if p
        )
    multiprocessing.set_forkserver_preload([])
    # Every pool of the run checks that each accepted item is answered exactly once; workers
    # and the parent interpreters tests start inherit it. ``=0`` turns it off.
    os.environ.setdefault(ACCOUNTING_VARIABLE, "1")
    # A test run started in the background of a non-interactive shell (`make test &`, nohup)
    # ignores SIGINT, and so would every program a test starts: Python installs no
    # KeyboardInterrupt for an ignored SIGINT, and the Ctrl-C tests would wait for it in vain.
    # With a handler here, the programs tests start get the default disposition at exec.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    _remember_started_processes()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Pools that end after the last test (module fixtures, the garbage collector) report here.
    violations = take_violations()
    if violations:
        print("\nprocpool accounting broken after the last test (every accepted item answered "
              "exactly once):\n  " + "\n  ".join(violations))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _remember_started_processes() -> None:
    """Record the pid of every process the test process starts (see support.STARTED)."""
    popen_init = subprocess.Popen.__init__
    process_start = multiprocessing.process.BaseProcess.start

    def remembering_popen_init(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
        popen_init(self, *args, **kwargs)
        support.remember_process(self.pid)

    def remembering_start(self: multiprocessing.process.BaseProcess) -> None:
        process_start(self)
        if self.pid is not None:
            support.remember_process(self.pid)

    subprocess.Popen.__init__ = remembering_popen_init  # type: ignore[method-assign]
    multiprocessing.process.BaseProcess.start = remembering_start  # type: ignore[method-assign]
