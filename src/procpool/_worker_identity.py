"""Which pool worker this is (``procpool.current_worker()``) and the environment it was given.

Owns the worker's identity (its index and pid), the one way a worker's environment is set
(``apply_env``), and what stdlib-era code reads of a pool's workers (``WorkerView``: a pid,
for ``pool._pool`` and ``executor._processes``). Imported by workers as they start, and
under spawn and forkserver even before the parent's main module (see
``EnvironmentOnArrival``): standard library only, nothing heavy, and nothing of the pool.
"""

from __future__ import annotations

import importlib
import operator
import os
import threading

TYPE_CHECKING = False  # not typing's: a worker must not import typing to start (_messages.py)
if TYPE_CHECKING:
    from collections.abc import Iterable


class WorkerInfo:
    """The pool worker running the current task: ``index`` from 0 to processes-1 (a worker
    that replaces another takes its index), and its process id ``pid``."""

    __slots__ = ("index", "pid")
    __module__ = "procpool"

    def __init__(self, index: int, pid: int) -> None:
        self.index = index
        self.pid = pid

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WorkerInfo):
            return NotImplemented
        return (self.index, self.pid) == (other.index, other.pid)

    def __hash__(self) -> int:
        return hash((self.index, self.pid))

    def __repr__(self) -> str:
        return f"WorkerInfo(index={self.index}, pid={self.pid})"

    def __reduce__(self) -> tuple[object, tuple[int, int]]:
        return WorkerInfo, (self.index, self.pid)


# A process worker's identity is the process's (its tasks' own threads see it too); a thread
# worker's (the inline backend, a Dask relay's chunk) is its thread's.
_process_worker: WorkerInfo | None = None
_thread_worker = threading.local()


def current_worker() -> WorkerInfo | None:
    """The worker running this code, or None outside a pool's worker (in the parent, or in a
    process that a task started)."""
    worker: WorkerInfo | None = getattr(_thread_worker, "info", None) or _process_worker
    # A process a task forked inherits this module's state (its thread's too), but it is no
    # pool worker.
    return worker if worker is not None and worker.pid == os.getpid() else None


def become(index: int, *, thread_only: bool = False) -> None:
    """Make this process (or, with ``thread_only``, this thread) pool worker ``index``."""
    global _process_worker
    info = WorkerInfo(index, os.getpid())
    if thread_only:
        _thread_worker.info = info
    else:
        _process_worker = info


def leave_thread() -> None:
    """This thread no longer runs a pool worker's chunk (a Dask worker's thread goes on)."""
    _thread_worker.info = None


def apply_env(env: Iterable[tuple[str, str | None]]) -> None:
    """Set each variable (None: remove it). Through os.environ, so both Python code and C
    code that calls getenv() in this process see the values."""
    for name, value in env:
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


class EnvironmentOnArrival(str):
    """A worker process's name that sets the worker's environment as it is unpickled.

    Under spawn and forkserver, the child unpickles multiprocessing's preparation data, whose
    ``name`` is the process's name, and then imports the parent's main module, before anything
    of procpool's runs: a script's top-level ``import torch`` would otherwise read
    CUDA_VISIBLE_DEVICES before the worker could set it. Unpickled, this is a plain ``str``, and
    the variables are set in ``os.environ``. The pickle names standard-library functions only:
    the child has not yet taken the parent's sys.path, and may not find procpool on its own.
    """

    env: tuple[tuple[str, str | None], ...]

    def __new__(cls, name: str, env: tuple[tuple[str, str | None], ...]) -> EnvironmentOnArrival:
        self = super().__new__(cls, name)
        self.env = env
        return self

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        environ = _Call(getattr, _Call(importlib.import_module, "os"), "environ")
        setting = {name: value for name, value in self.env if value is not None}
        steps = [_Call(_Call(getattr, environ, "update"), setting)]
        steps += [_Call(_Call(getattr, environ, "pop"), name, None)
                  for name, value in self.env if value is None]
        # A tuple of the steps' results and the name, of which the name is kept.
        return operator.getitem, ((*steps, str(self)), -1)


class _Call:
    """Pickled as ``function(*args)``, which unpickling calls (pickle's REDUCE): nested, they
    spell ``os.environ.update(...)`` with nothing but standard-library names."""

    def __init__(self, function: object, *args: object) -> None:
        self.function = function
        self.args = args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.function, self.args

    def __call__(self, *args: object) -> object:  # pickle wants a callable where one is called
        raise TypeError("a _Call is only ever unpickled")


class WorkerView:
    """What stdlib-era code reads from a pool's private worker list: a pid."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid

    def is_alive(self) -> bool:
        return self.pid is not None
