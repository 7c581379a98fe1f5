"""procpool as a joblib parallel backend: ``import procpool.joblib``, then
``joblib.parallel_config(backend="procpool", n_jobs=2, task_timeout=30, retries=1)``.

Owns the joblib side of procpool: the backend class joblib drives (configure, submit, the
result callback, abort, terminate, nesting), its registration under the name "procpool", and
turning the backend's parameters into a ``procpool.ProcessPoolExecutor``. It must not be
imported by ``import procpool`` (joblib is the optional extra ``procpool[joblib]``), must not
second-guess the executor's options (every keyword goes through to it, so an option added to
the executor later works here unchanged), and must not leave a process, thread or descriptor
behind once the Parallel call (or the block holding the backend) that needed it has ended.

Why the executor and not ``procpool.Pool``: joblib's backend protocol (1.3 to 1.6) is the
futures protocol. ``submit`` returns a future, joblib's callback is a done-callback, and its
result is ``future.result()``, exactly as for loky. A procpool future's ``cancel()`` also kills
a running batch, which is what joblib asks of ``abort_everything``, and a worker's death fails
only the future it ran, so the executor keeps serving the rest of the call.

Start method: forkserver unless the options name one (spawn where there is no forkserver),
not Python's default, which is fork up to 3.13: see DEFAULT_START_METHOD.

Lifetime: by default, one executor per Parallel call (per ``with Parallel(...)`` block for a
managed Parallel, which is what scikit-learn's searches use). joblib calls ``configure`` when a
call starts and ``terminate`` when it ends, and nothing when a ``parallel_config`` block ends,
so a pool kept across calls, like loky's reusable executor, would outlive the block with no one
to stop it. Where workers are dear to start (spawn, forkserver, an initializer that loads a
model), the caller can hold a backend instance open with ``with ProcpoolBackend(...) as
backend`` and pass it to ``parallel_config``: every call in that block then shares one
executor, shut down when the block ends. Either way the executor has users (running calls,
and the holder), and the last one to leave shuts it down, so calls that overlap on one backend
(a ``return_as="generator"`` still being read) share it safely.
"""

from __future__ import annotations

import inspect
import multiprocessing
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future

from ._runtime_typing import TYPE_CHECKING

try:
    import joblib
except ImportError as missing:
    raise ImportError(
        "procpool.joblib is procpool's joblib backend and needs joblib, which is not installed: "
        "pip install 'procpool[joblib]'"
    ) from missing

# joblib defines the backend base classes here and nowhere public; its Dask backend and Ray's
# import them from the same module.
from joblib._parallel_backends import (
    AutoBatchingMixin,
    FallbackToBackend,
    ParallelBackendBase,
    SequentialBackend,
    ThreadingBackend,
)

if TYPE_CHECKING:
    from typing import Any

    # Imported where the parent starts an executor: a worker imports this module only to
    # unpickle _RunBatch, and needs none of the executor's machinery for that.
    from ._executor import ProcessPoolExecutor

__all__ = ["BACKEND_NAME", "DEFAULT_START_METHOD", "ProcpoolBackend"]

BACKEND_NAME = "procpool"

# The start method when the options name none: not fork, whatever Python's default. A parent
# that has run OpenMP code (scikit-learn's HistGradientBoosting, say) has a thread pool that a
# forked child inherits dead, and the child's first OpenMP call then hangs for ever. loky does
# not fork either; forkserver is Python's own default from 3.14 on.
DEFAULT_START_METHOD = ("forkserver" if "forkserver" in multiprocessing.get_all_start_methods()
                        else "spawn")

# What joblib.Parallel hands every backend's configure() besides the caller's own keywords
# (Parallel.__init__, joblib 1.3 to 1.6): its memmapping and verbosity settings and the default
# multiprocessing context. They belong to joblib's own backends; procpool has its own start
# method option (mp_context) and its own shared memory for large arrays.
_JOBLIB_SETTINGS = frozenset({"max_nbytes", "temp_folder", "mmap_mode", "verbose", "context"})


class ProcpoolBackend(AutoBatchingMixin, ParallelBackendBase):  # type: ignore[misc]
    """joblib's Parallel on a ``procpool.ProcessPoolExecutor``.

    Every keyword of ``parallel_config(backend="procpool", ...)`` beyond joblib's own
    (``task_timeout``, ``retries``, ``retry_on``, ``max_memory_per_child``, ``mp_context``,
    ``initializer``, ...) goes to the executor; ``n_jobs`` is its ``max_workers``, and
    ``mp_context`` defaults to :data:`DEFAULT_START_METHOD` (never fork). A batch whose
    worker dies fails with ``procpool.WorkerDied`` (or runs again, with ``retries``), a batch
    that runs past ``task_timeout`` is killed and fails with ``procpool.TaskTimeout``, and the
    next Parallel call works as usual.

    Each Parallel call starts its own executor and shuts it down as it ends. To share one
    executor across the calls of a block, hold an instance open and hand it to joblib::

        with ProcpoolBackend(task_timeout=30) as backend, parallel_config(backend, n_jobs=2):
            ...  # every call here runs on the same workers; they exit when the block ends
    """

    supports_retrieve_callback = True  # results are read in the done-callback, as loky's
    uses_threads = False
    supports_sharedmem = False
    default_n_jobs = 1  # n_jobs=None means one job, as for loky (joblib's convention)

    def __init__(self, nesting_level: int | None = None,
                 inner_max_num_threads: int | None = None, **executor_options: Any) -> None:
        _check_option_names(executor_options, f"parallel_config(backend={BACKEND_NAME!r}, ...)")
        super().__init__(nesting_level=nesting_level,
                         inner_max_num_threads=inner_max_num_threads)
        # Kept here, not in joblib's backend_kwargs: before 1.5 the base class has none.
        self.executor_options: dict[str, Any] = dict(executor_options)
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None
        self._workers = 0  # the executor's max_workers: what configure reports to joblib
        # Who needs the executor: each Parallel call between configure and terminate, and the
        # `with` block holding the backend open. The last to leave shuts it down.
        self._users = 0
        self._outstanding: set[Future[Any]] = set()  # submitted and not done: abort's to stop

    # ---- what joblib calls -------------------------------------------------------------------

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """joblib's reading of n_jobs, as for loky: None is 1, -1 every CPU, -2 all but one."""
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            return max(int(joblib.cpu_count()) + 1 + n_jobs, 1)
        return n_jobs

    def configure(self, n_jobs: int | None = 1, parallel: Any = None, prefer: Any = None,
                  require: Any = None, **parallel_options: Any) -> int:
        """Start the executor for a Parallel call, or join the one already running; return
        the number of workers it has."""
        n_jobs = self.effective_n_jobs(n_jobs)
        if n_jobs == 1:
            # joblib itself runs a one-job call in the caller, sequentially, whatever the
            # backend; say so now rather than start a pool nobody will use.
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        # Keywords given to Parallel itself (joblib 1.5+) join the backend's own.
        call_options = {name: value for name, value in parallel_options.items()
                        if name not in _JOBLIB_SETTINGS}
        _check_option_names(call_options, f"Parallel(backend={BACKEND_NAME!r}, ...)")
        with self._lock:
            if self._executor is None:
                options = {"mp_context": DEFAULT_START_METHOD, **self.executor_options,
                           **call_options}
                self._executor = _start_executor(n_jobs, options)
                self._workers = n_jobs
            self._users += 1
            workers = self._workers
        self.parallel = parallel
        return workers

    def submit(self, func: Callable[[], Any],
               callback: Callable[[Future[Any]], None] | None = None) -> Future[Any]:
        """Run one joblib batch on the executor; joblib's callback is its done-callback.

        Never raises: a batch the executor refuses (shut down by an abort, broken by a failing
        initializer) comes back as a failed future. joblib also submits from its callback,
        on procpool's callback thread, where an exception would reach nobody and the call
        would wait for that batch for ever.
        """
        with self._lock:
            executor = self._executor
        future: Future[Any]
        try:
            if executor is None:
                raise RuntimeError(f"the {BACKEND_NAME!r} joblib backend has no executor: "
                                   "its Parallel call has ended")
            # Outside the lock: pickling a batch takes time (and may wait, with the
            # executor's max_queued), and the lock is also what done-callbacks take.
            future = executor.submit(_run_batch(func), func)
        except Exception as refused:
            future = Future()
            future.set_exception(refused)
        else:
            with self._lock:
                self._outstanding.add(future)
        future.add_done_callback(self._forget)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def apply_async(self, func: Callable[[], Any],
                    callback: Callable[[Future[Any]], None] | None = None) -> Future[Any]:
        """What joblib before 1.5 calls instead of ``submit``."""
        return self.submit(func, callback)

    def retrieve_result_callback(self, future: Future[Any]) -> Any:
        """The batch's results, or its error: the task's own exception, or procpool's
        (``WorkerDied``, ``TaskTimeout``) naming what happened to the batch."""
        return future.result()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """A batch failed and joblib will raise its error: stop the batches still running.

        Cancelling a procpool future kills the worker running it and the executor replaces
        the worker, so it stays ready for the next call (``ensure_ready``). When joblib says
        no call follows and nobody else uses the executor, its workers are killed outright
        instead: no replacements start only to be shut down.
        """
        with self._lock:
            executor = self._executor
            outstanding = list(self._outstanding)
            only_user = self._users <= 1
        if executor is not None and not ensure_ready and only_user:
            executor.kill_workers()
            return
        for future in outstanding:
            future.cancel()

    def terminate(self) -> None:
        """A Parallel call ended: when nobody else uses the executor, shut it down and wait
        for every worker to exit.

        Anything still outstanding (only after an abort, or a generator dropped mid-call) is
        cancelled first, so that the wait never depends on a task finishing.
        """
        self._leave()
        self.reset_batch_stats()

    def get_nested_backend(self) -> tuple[ParallelBackendBase, None]:
        """What a Parallel call made inside a task runs on, as under loky: threads of the
        worker at the first level of nesting, sequentially below that. A task does not start
        a process pool inside a worker unless it names a backend itself."""
        nesting_level = (self.nesting_level or 0) + 1
        if nesting_level > 1:
            return SequentialBackend(nesting_level=nesting_level), None
        return ThreadingBackend(nesting_level=nesting_level), None

    # ---- holding the executor across calls ---------------------------------------------------

    def __enter__(self) -> ProcpoolBackend:
        """Keep the executor the first call starts until this block ends."""
        with self._lock:
            self._users += 1
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._leave()

    # ---- helpers -----------------------------------------------------------------------------

    def _leave(self) -> None:
        with self._lock:
            self._users = max(self._users - 1, 0)
            if self._users > 0 or self._executor is None:
                return
            executor, self._executor = self._executor, None
            outstanding = list(self._outstanding)
        for future in outstanding:
            future.cancel()
        executor.shutdown(wait=True, cancel_futures=True)

    def _forget(self, future: Future[Any]) -> None:
        with self._lock:
            self._outstanding.discard(future)

    def __repr__(self) -> str:
        options = ", ".join(f"{name}={value!r}" for name, value in self.executor_options.items())
        return f"<procpool.joblib.ProcpoolBackend({options})>"


class _RunBatch:
    """Runs the joblib batch it is given: the function procpool sends for every batch.

    The batch goes as the call's argument, not as its function, because procpool sends a
    task's arguments with their large buffers (numpy arrays) in shared memory, and its
    function in the pickle. The instance carries a ``__qualname__``, which is what procpool's
    errors name a task by: "worker died while running a joblib batch of 2 calls to fit_one()"
    rather than "BatchedCalls()".
    """

    def __init__(self, name: str) -> None:
        self.__qualname__ = name

    def __call__(self, batch: Callable[[], Any]) -> Any:
        return batch()


def _run_batch(batch: Callable[[], Any]) -> _RunBatch:
    """The function to send with ``batch``, named after what the batch runs."""
    from ._task import name_of  # the parent's only: a worker unpickling this needs none

    items = getattr(batch, "items", None)  # joblib's BatchedCalls: (function, args, kwargs)
    if not items:
        return _RunBatch(name_of(batch))
    first = name_of(items[0][0])
    count = f"{len(items)} call{'' if len(items) == 1 else 's'}"
    if all(name_of(function) == first for function, _, _ in items):
        return _RunBatch(f"a joblib batch of {count} to {first}")
    return _RunBatch(f"a joblib batch of {count}, the first to {first}")


def _check_option_names(options: Mapping[str, Any], where: str) -> None:
    """Refuse a keyword the executor does not take, naming the ones it does.

    Read from the executor's signature when asked, not from a list kept here: an option added
    to the executor later passes through unchanged. Values are the executor's to check.
    """
    from ._executor import ProcessPoolExecutor

    if "max_workers" in options:
        raise TypeError(f"{where}: n_jobs sets the number of procpool workers "
                        "(ProcessPoolExecutor's max_workers); pass n_jobs instead of max_workers")
    parameters = inspect.signature(ProcessPoolExecutor).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return  # the executor takes any keyword: its own error names a wrong one
    accepted = [name for name, p in parameters.items()
                if name != "max_workers" and p.kind in (inspect.Parameter.KEYWORD_ONLY,
                                                        inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for name in options:
        if name not in accepted:
            raise TypeError(
                f"{where}: procpool.ProcessPoolExecutor() got an unexpected keyword argument "
                f"{name!r}. The procpool joblib backend passes its options to the executor, "
                f"which takes: {', '.join(accepted)} (n_jobs gives its max_workers)"
            )


def _start_executor(n_jobs: int, options: dict[str, Any]) -> ProcessPoolExecutor:
    """The executor for a call. Its own errors about an option are kept, and said to be about
    the backend's options: they surface at the first Parallel call, far from where the
    option was written."""
    from ._executor import ProcessPoolExecutor

    try:
        return ProcessPoolExecutor(max_workers=n_jobs, **options)
    except (TypeError, ValueError) as error:
        if type(error) not in (TypeError, ValueError):
            raise  # a subclass may not take one message; it names its problem itself
        raise type(error)(f"{error} (in the options of the {BACKEND_NAME!r} joblib backend: "
                          f"{', '.join(sorted(options)) or 'none'})") from error


joblib.register_parallel_backend(BACKEND_NAME, ProcpoolBackend)
