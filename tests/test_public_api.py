"""The public surface: what ``import procpool`` offers, and nothing private leaking out."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

import procpool


def test_all_lists_exactly_the_public_names() -> None:
    # dir(), not vars(): public names are imported on first use. Public submodules
    # (procpool.joblib) become attributes once imported; they are no names of the package's.
    public = {name for name in dir(procpool) if not name.startswith("_")
              and not isinstance(getattr(procpool, name), types.ModuleType)}
    assert set(procpool.__all__) == public
    for name in procpool.__all__:
        assert getattr(procpool, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'Poool'"):
        procpool.Poool  # noqa: B018


def test_a_worker_imports_none_of_the_faces() -> None:
    # A spawned worker imports procpool._worker; the package must not drag in the faces.
    code = ("import sys, procpool._worker; "
            "print(sorted(m for m in sys.modules if m in ('asyncio', 'procpool._pool', "
            "'procpool._executor', 'procpool._dispatcher')))")
    assert _in_a_fresh_interpreter(code) == "[]"


def test_public_classes_report_the_package_as_their_module() -> None:
    for name in procpool.__all__:
        obj = getattr(procpool, name)
        if isinstance(obj, type) and name != "TimeoutError":
            assert obj.__module__ == "procpool", name


def test_timeout_error_is_the_stdlib_class() -> None:
    import multiprocessing

    assert procpool.TimeoutError is multiprocessing.TimeoutError


# What importing a face must not import: the engine, and what only the engine needs. Every
# spawned worker, and a forkserver before its first fork, imports the program's main module
# again, and with it ``from procpool import Pool``: these cost each such start about 20 ms
# (docs/performance.md, "A program's import of the faces").
_ENGINE_ONLY = ("procpool._engine", "procpool._dispatcher", "procpool._errors",
                "concurrent.futures.process", "multiprocessing.pool")
# Nor what the faces' calls are made of, imported at a program's first call (_lazy.py).
_CALLS_ONLY = ("procpool._results", "procpool._streams", "procpool._progress",
               "procpool._queue_bound", "procpool._task", "procpool._pace", "procpool._threads",
               "procpool._futures", "procpool._executor_map", "procpool._map_through_submit")


@pytest.mark.parametrize(("face", "also_not"), [
    ("Pool", ("logging", "concurrent.futures", "traceback")),
    # Its base class is concurrent.futures.Executor, whose module imports logging.
    ("ProcessPoolExecutor", ()),
])
def test_importing_a_face_imports_no_engine(face: str, also_not: tuple[str, ...]) -> None:
    unwanted = (*_ENGINE_ONLY, *_CALLS_ONLY, *also_not)
    code = (f"import sys\nfrom procpool import {face}\n"
            f"print(sorted(m for m in sys.modules if m in {unwanted!r}))")
    assert _in_a_fresh_interpreter(code) == "[]"


def test_the_default_retry_on_names_its_classes_and_survives_pickling() -> None:
    import inspect
    import pickle

    from procpool._options import DEFAULT_RETRY_ON, TaskPolicy

    for face in (procpool.Pool, procpool.ProcessPoolExecutor):
        default = inspect.signature(face).parameters["retry_on"].default
        assert repr(default) == "(procpool.WorkerDied, procpool.TaskTimeout)"
    assert pickle.loads(pickle.dumps(DEFAULT_RETRY_ON)) is DEFAULT_RETRY_ON
    assert TaskPolicy().retried_kinds() == (procpool.WorkerDied, procpool.TaskTimeout)
    assert TaskPolicy(retry_on=(OSError,)).retried_kinds() == (OSError,)


def test_import_is_light() -> None:
    # Optional heavy dependencies are imported only where used.
    heavy = "{'cloudpickle', 'numpy', 'tqdm'}"
    code = f"import sys, procpool; print(sorted({heavy} & set(sys.modules)))"
    assert _in_a_fresh_interpreter(code) == "[]"


def test_a_local_pool_imports_nothing_of_the_other_backends() -> None:
    code = ("import sys, procpool\n"
            "pool = procpool.Pool(1)\n"
            "pool.terminate()\n"
            "pool.join()\n"
            "print(sorted(m for m in sys.modules if m.startswith('procpool._backends.')))")
    assert _in_a_fresh_interpreter(code) == "['procpool._backends.local']"


def test_a_pool_under_fork_does_not_import_the_forkserver() -> None:
    # Only preloading into a forkserver needs multiprocessing.forkserver (and with it spawn,
    # runpy, importlib.util): 1-3 ms of a program's first pool under fork.
    code = ("import sys, procpool\n"
            "with procpool.Pool(1, context='fork') as pool:\n"
            "    pool.apply(abs, (1,))\n"
            "print('multiprocessing.forkserver' in sys.modules)")
    assert _in_a_fresh_interpreter(code) == "False"


def test_pools_import_asyncio_only_for_a_coroutine() -> None:
    # asyncio (and ssl, which it imports) made the parent about 8 MB larger, and every fork
    # of a worker copies the page tables of all of it. A coroutine imports it itself.
    code = ("import sys, procpool\n"
            "with procpool.Pool(1) as pool:\n"
            "    pool.apply(abs, (1,)); list(pool.imap(abs, [1, 2])); pool.map(abs, [1])\n"
            "with procpool.ProcessPoolExecutor(1, max_queued=2) as executor:\n"
            "    executor.submit(abs, 1).result(); list(executor.map(abs, [1, 2]))\n"
            "print(sorted(m for m in sys.modules if m in ('asyncio', 'ssl')))")
    assert _in_a_fresh_interpreter(code) == "[]"


def test_a_pool_imports_neither_typing_nor_dataclasses_but_for_a_public_snapshot() -> None:
    # dataclasses (with inspect, ast and dis) and defining 25 of them cost a program's first
    # import of procpool about 40 ms; typing and its named tuples about 20 ms more. Only the
    # public snapshots are dataclasses, imported when the first one is made; the typing names
    # the modules use at run time are procpool._runtime_typing's.
    code = ("import sys, procpool\n"
            "with procpool.Pool(1) as pool:\n"
            "    pool.apply(abs, (1,)); list(pool.imap(abs, [1, 2], task_timeout=30))\n"
            "with procpool.ProcessPoolExecutor(1) as executor:\n"
            "    executor.submit(abs, 1).result(); list(executor.map(abs, [1, 2]))\n"
            "    print('dataclasses' in sys.modules, 'typing' in sys.modules)\n"
            "    executor.stats()\n"
            "print('dataclasses' in sys.modules)")
    assert _in_a_fresh_interpreter(code).split() == ["False", "False", "True"]


def _in_a_fresh_interpreter(code: str) -> str:
    """What ``code`` prints, run by a new interpreter (nothing of this test run imported)."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    return done.stdout.strip()
