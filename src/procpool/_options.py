"""Every knob procpool has beyond the stdlib's, validated once and documented once.

Owns ``TaskPolicy`` (what happens to one task: timeout, retries), ``WorkerPolicy`` (when a
worker is replaced: tasks, memory, start-up time), ``WorkerSetupOptions`` (what a new worker is
given: environment, forwarding of its logs and prints), ``PoolOptions`` (everything a pool is built
from, made by ``pool_options`` from the keywords both faces take) and ``CallOptions`` (what
every call that submits work takes), and the checks that turn bad values into errors naming
the option and a valid range. Pure data: faces build these, the engine and scheduler read them.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Callable, Mapping

from ._runtime_typing import TYPE_CHECKING, NamedTuple, TypedDict

if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any


class _DefaultRetryOn:
    """``retry_on``'s default: a worker's death and a task's timeout (WorkerDied, TaskTimeout).

    A stand-in rather than those classes, which ``TaskPolicy.retried_kinds`` names when a
    failure is weighed: WorkerDied derives from concurrent.futures' BrokenProcessPool, and
    this module is imported with the faces, which must not import concurrent.futures (_log.py
    says why).
    """

    def __repr__(self) -> str:
        return "(procpool.WorkerDied, procpool.TaskTimeout)"

    def __reduce__(self) -> str:
        return "DEFAULT_RETRY_ON"  # unpickled as this very object


DEFAULT_RETRY_ON: Any = _DefaultRetryOn()


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()  # "not given in this call: use the pool's setting"


class TaskPolicy(NamedTuple):
    """How one task is run; set on the pool, overridable per call.

    ``timeout``: seconds a single item may run, counted from when a worker calls it (loading
    its function and arguments, a fresh worker's import of their modules, does not count, up
    to ``_worker_slot.LOADING_ALLOWANCE``); past that its worker (and every process in the
    worker's process group) is killed and the item fails with TaskTimeout. ``retries``: how
    many more times an item is run after a failure listed in ``retry_on`` (worker death and
    task timeout by default; add exception classes to retry those too). ``exit_fails_task``:
    a task's ``SystemExit`` (``sys.exit()`` in the task, or while its result is pickled) is
    that task's error and the worker goes on, as in ``concurrent.futures`` (the executor's
    faces); otherwise it ends the worker, as in ``multiprocessing.Pool``, and the task fails
    with WorkerDied.
    """

    timeout: float | None = None
    retries: int = 0
    retry_on: tuple[type[BaseException], ...] | _DefaultRetryOn = DEFAULT_RETRY_ON
    exit_fails_task: bool = False

    def retried_kinds(self) -> tuple[type[BaseException], ...]:
        """The exception classes an item is run again after (while retries are left)."""
        if isinstance(self.retry_on, _DefaultRetryOn):
            from ._errors import TaskTimeout, WorkerDied  # imported by the engine already

            return (WorkerDied, TaskTimeout)
        return self.retry_on

    @property
    def reports_each_item(self) -> bool:
        # Timeouts and retries need to know which item a worker is on, so the worker reports
        # every item as it finishes; without them, a chunk's results travel together (faster).
        return self.timeout is not None or self.retries > 0

    def override(self, task_timeout: Any = UNSET, retries: Any = UNSET,
                 retry_on: Any = UNSET) -> TaskPolicy:
        """This policy with the given per-call values (the public spellings) replacing the
        pool's."""
        changes: dict[str, Any] = {}
        if task_timeout is not UNSET:
            changes["timeout"] = check_seconds("task_timeout", task_timeout)
        if retries is not UNSET:
            changes["retries"] = check_count("retries", retries)
        if retry_on is not UNSET:
            changes["retry_on"] = check_retry_on(retry_on)
        return self._replace(**changes) if changes else self


class WorkerPolicy(NamedTuple):
    """When a worker is replaced, and how long it may take to start."""

    max_tasks: int | None = None  # chunks per worker (the stdlib's maxtasksperchild)
    max_memory: int | None = None  # resident bytes after a chunk
    initializer_timeout: float | None = None
    # What a worker runs before it is ready, for the error when it dies then: the pool's
    # initializer, and (spawn, forkserver) an import of the parent's main module.
    has_initializer: bool = False
    imports_main: bool = False


class WorkerSetupOptions(NamedTuple):
    """What each new worker is given before it runs the initializer (_worker_setup.py)."""

    # worker_env: the variables (a None value removes one), a function of the worker's index
    # that returns them, or None
    env: Any = None
    forward_logs: bool | None = None  # None: where the workers cannot use the parent's set-up
    forward_output: bool = False


# What worker_env takes: the variables (a None value removes one), or a function of the
# worker's index that returns them.
WorkerEnv = Mapping[str, str | None] | Callable[[int], Mapping[str, str | None]]

# What retry_on takes: an exception class, or a tuple of them (as an except clause does).
RetryOn = type[BaseException] | tuple[type[BaseException], ...]


class PoolOptions(NamedTuple):
    """Everything a pool is built from, checked: one object from the faces to the engine."""

    processes: int | None  # None: as many as the backend suggests
    initializer: Callable[..., object] | None
    initargs: tuple[Any, ...]
    context: Any  # the multiprocessing context the local backend starts workers with
    backend: Any  # a backend name, or a procpool.DaskBackend
    task_policy: TaskPolicy
    worker_policy: WorkerPolicy
    worker_setup: WorkerSetupOptions
    # At most this many single calls queued: apply_async/submit wait for room (None: no bound)
    max_queued: int | None = None
    # At interpreter exit: finish what was submitted (the executor's contract), or
    # terminate (the Pool's).
    finish_at_exit: bool = False


def pool_options(
    *, processes: int | None, initializer: Callable[..., object] | None,
    initargs: Iterable[Any], context: Any, backend: Any, max_tasks: int | None,
    task_timeout: Any, retries: Any, retry_on: Any, max_memory_per_child: Any,
    initializer_timeout: Any, worker_env: Any = None, forward_logs: Any = None,
    forward_output: Any = False, max_queued: Any = None, executor_semantics: bool = False,
) -> PoolOptions:
    """The options of a pool from the keywords both faces take, each checked here, once.
    The faces check what the stdlib checks with its own words (processes, maxtasksperchild,
    the context) before. ``executor_semantics``: the executor's contract (a task's SystemExit
    is its error; work submitted is finished at interpreter exit)."""
    return PoolOptions(
        processes=processes,
        initializer=initializer,
        initargs=tuple(initargs),
        context=context,
        backend=backend,
        task_policy=TaskPolicy(
            timeout=check_seconds("task_timeout", task_timeout),
            retries=check_count("retries", retries),
            retry_on=check_retry_on(retry_on),
            exit_fails_task=executor_semantics,
        ),
        worker_policy=WorkerPolicy(
            max_tasks=max_tasks,
            max_memory=check_positive_int("max_memory_per_child", max_memory_per_child),
            initializer_timeout=check_seconds("initializer_timeout", initializer_timeout),
            has_initializer=initializer is not None,
        ),
        worker_setup=WorkerSetupOptions(
            env=check_worker_env(worker_env),
            forward_logs=check_flag("forward_logs", forward_logs, optional=True),
            forward_output=check_flag("forward_output", forward_output),
        ),
        max_queued=check_positive_int("max_queued", max_queued),
        finish_at_exit=executor_semantics,
    )


class CallOptions(TypedDict, total=False):
    """The options every call that submits work takes besides its own (``**options``), as a
    type checker sees them: each replaces the pool's setting for that call."""

    task_timeout: float | None
    retries: int
    retry_on: RetryOn


PER_CALL_OPTIONS = tuple(CallOptions.__annotations__)


def check_per_call_options(call: str, options: Mapping[str, object]) -> None:
    """Reject a keyword that is not a per-call option, naming the ones there are."""
    for name in options:
        if name not in PER_CALL_OPTIONS:
            raise TypeError(f"{call}() got an unexpected keyword argument {name!r}; its "
                            f"procpool options are {', '.join(PER_CALL_OPTIONS)}")


def check_seconds(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, not {value!r}")
    if not value > 0 or math.isinf(value):
        raise ValueError(f"{name} must be a positive, finite number of seconds or None, "
                         f"not {value!r}")
    return float(value)


def check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a whole number >= 0, not {value!r}")
    return value


def check_positive_int(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int or None, not {value!r}")
    return value


def check_flag(name: str, value: Any, *, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, bool):
        allowed = "True, False or None" if optional else "True or False"
        raise TypeError(f"{name} must be {allowed}, not {value!r}")
    return value


def check_worker_env(value: Any) -> Any:
    """A mapping is checked now; a function's answers as each worker starts
    (``env_items``)."""
    if value is None or callable(value):
        return value
    return dict(env_items(value))


def env_items(env: Any, index: int | None = None) -> list[tuple[str, str | None]]:
    """``env`` as (name, value) pairs, each a str (a value may be None: removed); the error
    names what is wrong and, for a function's answer, the worker's index."""
    source = "worker_env" if index is None else f"worker_env({index})"
    if not isinstance(env, Mapping):
        raise TypeError(f"{source} must be a mapping of environment variable names to str "
                        f"values (or None to remove one), not {type(env).__name__}; for a "
                        f"value per worker pass a function of the worker's index")
    items = list(env.items())
    for name, value in items:
        if not isinstance(name, str) or not name or "=" in name or "\0" in name:
            raise ValueError(f"{source}: {name!r} is not an environment variable name")
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{source}[{name!r}] must be a str (or None to remove it), not "
                            f"{type(value).__name__}: environment variables hold text, so "
                            f"say str({value!r}) if that is what you mean")
    return items


def check_retry_on(value: Any) -> tuple[type[BaseException], ...] | _DefaultRetryOn:
    if isinstance(value, _DefaultRetryOn):
        return value
    classes = value if isinstance(value, tuple) else (value,)
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise TypeError(
                f"retry_on must be an exception class or a tuple of them, not {value!r}; "
                "for example retry_on=(procpool.WorkerDied, procpool.TaskTimeout, OSError)"
            )
    return classes


# ---- the stdlib's own checks, in its words (code and tests match on them) ------------------

# Bound now, never looked up later: programs that replace multiprocessing.Pool (or its
# get_context) with procpool's must not send a pool into its own constructor.
_get_context = multiprocessing.get_context


def check_pool_arguments(processes: Any, maxtasksperchild: Any, initializer: Any,
                         context: Any) -> Any:
    """multiprocessing.Pool's checks (Lib/multiprocessing/pool.py, Pool.__init__); the
    context its workers start with."""
    if processes is not None:
        if not isinstance(processes, int) or isinstance(processes, bool):
            raise TypeError(f"processes must be an int or None, not {type(processes).__name__}")
        if processes < 1:
            raise ValueError("Number of processes must be at least 1")
    if maxtasksperchild is not None and (
        not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0
    ):
        raise ValueError("maxtasksperchild must be a positive int or None")
    if initializer is not None and not callable(initializer):
        raise TypeError("initializer must be a callable")
    return _get_context(context) if context is None or isinstance(context, str) else context


def check_executor_arguments(max_workers: Any, mp_context: Any, max_tasks_per_child: Any,
                             initializer: Any) -> Any:
    """ProcessPoolExecutor's checks (Lib/concurrent/futures/process.py, __init__); the
    context its workers start with."""
    if max_workers is not None and max_workers <= 0:
        raise ValueError("max_workers must be greater than 0")
    if mp_context is None:
        # The stdlib's rule: recycling workers forks from a threaded process, so it
        # defaults to spawn and refuses fork.
        mp_context = _get_context("spawn" if max_tasks_per_child is not None else None)
    elif isinstance(mp_context, str):
        mp_context = _get_context(mp_context)
    if max_tasks_per_child is not None:
        if not isinstance(max_tasks_per_child, int):
            raise TypeError("max_tasks_per_child must be an integer")
        if max_tasks_per_child <= 0:
            raise ValueError("max_tasks_per_child must be >= 1")
        if mp_context.get_start_method(allow_none=False) == "fork":
            raise ValueError("max_tasks_per_child is incompatible with the 'fork' "
                             "multiprocessing start method; supply a different mp_context.")
    if initializer is not None and not callable(initializer):
        raise TypeError("initializer must be a callable")
    return mp_context


def check_pool_chunksize(chunksize: object) -> None:
    """multiprocessing.Pool's (Lib/multiprocessing/pool.py, Pool._map_async)."""
    if not isinstance(chunksize, int) or chunksize < 1:
        raise ValueError(f"Chunksize must be 1+, not {chunksize!r}")


def check_imap_buffersize(buffersize: object) -> None:
    """Pool.imap's ``buffersize`` (procpool's; the stdlib's comes in 3.16)."""
    if buffersize is not None and (not isinstance(buffersize, int) or buffersize < 1):
        raise ValueError(f"buffersize must be a positive int or None, not {buffersize!r}")


def check_executor_chunksize(chunksize: object) -> None:
    """Executor.map's (Lib/concurrent/futures/process.py, ProcessPoolExecutor.map)."""
    if chunksize is not None and (not isinstance(chunksize, int) or chunksize < 1):
        raise ValueError("chunksize must be >= 1.")


def check_executor_buffersize(buffersize: object) -> None:
    """Executor.map's (3.14, Lib/concurrent/futures/_base.py, Executor.map)."""
    if buffersize is not None and not isinstance(buffersize, int):
        raise TypeError("buffersize must be an integer or None")
    if buffersize is not None and buffersize < 1:
        raise ValueError("buffersize must be None or > 0")
