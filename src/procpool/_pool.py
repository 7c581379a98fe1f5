"""``procpool.Pool``: the ``multiprocessing.Pool`` API, translated into chunks for the dispatcher.

Owns argument checking, chunking, pickling of functions and arguments (in the caller's thread, so
a bad argument fails its own task at once), the feeder threads that read imap input lazily, and
the pool's lifecycle state. Scheduling, workers and failures belong to the dispatcher. What
the calls are made of (results, streams, progress) is imported at a program's first call, not
with this module (_lazy.py).
"""

from __future__ import annotations

import threading
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping

from ._codec import pickled_size

# Stand-ins for these modules, each imported at its first use (_lazy.py).
from ._lazy import _pace, _progress, _queue_bound, _results, _streams, _task
from ._messages import CallMode
from ._options import (
    DEFAULT_RETRY_ON,
    UNSET,
    check_imap_buffersize,
    check_per_call_options,
    check_pool_arguments,
    check_pool_chunksize,
    pool_options,
)
from ._runtime_typing import TYPE_CHECKING, TypeVar
from ._worker_identity import WorkerView

if TYPE_CHECKING:
    from typing import Any

    from typing_extensions import Unpack  # typing's own from 3.11

    from ._options import CallOptions, RetryOn, WorkerEnv
    from ._results import ApplyResult, MapResult, _AsyncResultBase
    from ._stats import PoolStats
    from ._streams import IMapIterator, Outcome, Window

T = TypeVar("T")
S = TypeVar("S")  # a map's items, which its function takes
W = TypeVar("W")

RUN, CLOSE, TERMINATE = "RUN", "CLOSE", "TERMINATE"  # the stdlib's state names


class Pool:
    """A process pool with the ``multiprocessing.Pool`` API that survives worker deaths.

    ``Pool(processes=None, initializer=None, initargs=(), maxtasksperchild=None, context=None)``
    behaves as the stdlib's, except that a dying worker fails only the task it held (with
    :class:`procpool.WorkerDied`) and is replaced, nothing ever hangs, callables that pickle
    cannot carry go through cloudpickle, and ``imap``/``imap_unordered`` read their input lazily
    with a bounded read-ahead (``buffersize``).

    Keyword-only options (see docs/robustness.md):

    - ``task_timeout``: seconds one item may run; then its worker and the processes it started
      are killed and the item fails with :class:`procpool.TaskTimeout`. Also per call.
    - ``retries`` / ``retry_on``: run an item again after a failure of these kinds (default:
      worker death and task timeout). Also per call.
    - ``max_memory_per_child``: bytes of resident memory after which a worker is replaced
      before its next task.
    - ``initializer_timeout``: seconds a worker may take to start (initializer included);
      past that the pool is broken with :class:`procpool.InitializerFailed`.
    - ``backend="inline"`` runs workers as threads of this process (for debugging).
    - ``worker_env``: environment variables each worker gets before it imports anything of
      yours: a mapping, or a function of the worker's index (``procpool.current_worker()``)
      returning one, e.g. one GPU per worker (docs/workers.md).
    - ``forward_logs``: workers' log records are handled by this process's logging; the
      default forwards them where workers cannot use this process's set-up (spawn,
      forkserver). ``forward_output=True``: what tasks print reaches this process's
      ``sys.stdout``/``sys.stderr`` line by line (a notebook's cell).
    - ``max_queued``: while this many ``apply_async`` calls wait to start, the next one waits
      for one of them to start (maps keep their own bound, ``imap``'s ``buffersize``).

    As in the stdlib, leaving a ``with Pool() as pool:`` block calls ``terminate()``. A
    KeyboardInterrupt inside a blocking call (``map``, ``apply``, ``get``, ``next``)
    terminates the pool, then propagates.
    """

    __module__ = "procpool"

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
        *,
        task_timeout: float | None = None,
        retries: int = 0,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = DEFAULT_RETRY_ON,
        max_memory_per_child: int | None = None,
        initializer_timeout: float | None = None,
        backend: Any = "local",
        worker_env: WorkerEnv | None = None,
        forward_logs: bool | None = None,
        forward_output: bool = False,
        max_queued: int | None = None,
    ) -> None:
        # Set first: __del__ must work even if a check below raises.
        self._state = TERMINATE
        context = check_pool_arguments(processes, maxtasksperchild, initializer, context)
        self._ctx = context  # the stdlib Pool's attribute name, kept for code that reads it
        self._maxtasksperchild = maxtasksperchild  # the stdlib's, too
        self._streams: weakref.WeakSet[Window] = weakref.WeakSet()
        self._state_lock = threading.Lock()
        # The engine is imported with a program's first pool, not with this module: every
        # spawned worker, and a forkserver, imports the program's main module, and with it the
        # faces, which must stay light (docs/architecture.md, "What importing a face costs").
        from ._engine import Engine

        self._engine = Engine(pool_options(
            processes=processes, initializer=initializer, initargs=initargs, context=context,
            backend=backend, max_tasks=maxtasksperchild, task_timeout=task_timeout,
            retries=retries, retry_on=retry_on, max_memory_per_child=max_memory_per_child,
            initializer_timeout=initializer_timeout, worker_env=worker_env,
            forward_logs=forward_logs, forward_output=forward_output,
            max_queued=max_queued,
        ))
        self._callbacks = self._engine.callbacks
        self._processes = self._engine.processes
        self._state = RUN

    # ---- single calls ------------------------------------------------------------------------

    def apply(self, func: Callable[..., T], args: Iterable[Any] = (),
              kwds: Mapping[str, Any] | None = None, *, task_timeout: float | None = UNSET,
              retries: int = UNSET, retry_on: RetryOn = UNSET) -> T:
        """Call ``func(*args, **kwds)`` in a worker and return its result."""
        return self._blocking(lambda: self.apply_async(
            func, args, kwds, task_timeout=task_timeout, retries=retries, retry_on=retry_on))

    def apply_async(
        self,
        func: Callable[..., T],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] | None = None,
        callback: Callable[[T], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        task_timeout: float | None = UNSET,
        retries: int = UNSET,
        retry_on: RetryOn = UNSET,
    ) -> ApplyResult[T]:
        """Start ``func(*args, **kwds)`` in a worker; return an AsyncResult at once."""
        self._check_accepting()
        policy = self._engine.policy.override(task_timeout, retries, retry_on)
        # With max_queued, wait here while that many calls wait to start.
        ticket = self._engine.wait_for_queue_room(self._check_accepting)
        # Whatever interrupts the submission (a Ctrl-C while the arguments are pickled) must
        # not keep the place taken: the pool would take one call fewer for ever.
        with _queue_bound.ticket_given_back_on_error(ticket):
            result: ApplyResult[T] = _results.ApplyResult(self._callbacks, callback,
                                                          error_callback, self._interrupted)
            item = (tuple(args), dict(kwds or {}))
            chunk = self._engine.single_call(func, item, result, result.fail, policy, ticket)
            if chunk is not None:
                self._engine.submit_one(chunk)
        return result

    # ---- eager maps --------------------------------------------------------------------------

    def map(self, func: Callable[[S], T], iterable: Iterable[S],
            chunksize: int | None = None, *, progress: Any = False,
            **options: Unpack[CallOptions]) -> list[T]:
        """Apply ``func`` to every item; return the results in order (like the builtin map).

        ``progress``: True for a progress bar (tqdm), or a callable that receives
        :class:`procpool.Progress` snapshots; off by default. ``options``: ``task_timeout``,
        ``retries``, ``retry_on`` for this call.
        """
        check_per_call_options("map", options)
        return self._blocking(lambda: self._map_async(
            func, iterable, CallMode.ONE_ARG, chunksize, None, None, progress, **options))

    def map_async(
        self,
        func: Callable[[S], T],
        iterable: Iterable[S],
        chunksize: int | None = None,
        callback: Callable[[list[T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        progress: Any = False,
        **options: Unpack[CallOptions],
    ) -> MapResult[T]:
        """Like map, but returns a :class:`procpool.MapResult` at once; ``callback`` gets the
        list of results, ``error_callback`` the first error (on the pool's callback thread)."""
        check_per_call_options("map_async", options)
        return self._map_async(func, iterable, CallMode.ONE_ARG, chunksize, callback,
                               error_callback, progress, **options)

    def starmap(self, func: Callable[..., T], iterable: Iterable[Iterable[Any]],
                chunksize: int | None = None, *, progress: Any = False,
                **options: Unpack[CallOptions]) -> list[T]:
        """Like map, but each item is unpacked as the arguments: ``func(*item)``."""
        check_per_call_options("starmap", options)
        return self._blocking(lambda: self._map_async(
            func, iterable, CallMode.STAR_ARGS, chunksize, None, None, progress, **options))

    def starmap_async(
        self,
        func: Callable[..., T],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callable[[list[T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        progress: Any = False,
        **options: Unpack[CallOptions],
    ) -> MapResult[T]:
        """Like map_async, but each item is unpacked as the arguments: ``func(*item)``."""
        check_per_call_options("starmap_async", options)
        return self._map_async(func, iterable, CallMode.STAR_ARGS, chunksize, callback,
                               error_callback, progress, **options)

    def _map_async(
        self,
        func: Callable[..., T],
        iterable: Iterable[Any],
        mode: CallMode,
        chunksize: int | None,
        callback: Callable[[list[T]], object] | None,
        error_callback: Callable[[BaseException], object] | None,
        progress: Any = False,
        task_timeout: float | None = UNSET,
        retries: int = UNSET,
        retry_on: RetryOn = UNSET,
    ) -> MapResult[T]:
        self._check_accepting()
        policy = self._engine.policy.override(task_timeout, retries, retry_on)
        # A range stays one: its slices are ranges too, so each chunk travels as its bounds
        # (the workers make the ints), not as pickled items.
        items = iterable if isinstance(iterable, (list, range)) else list(iterable)
        if chunksize is None:
            # Four times finer than the stdlib's, large items (arrays) a few at a time
            # (map_chunksize); the stdlib's with maxtasksperchild, which counts chunks.
            if self._maxtasksperchild is not None or not items:
                chunksize = _pace.stdlib_map_chunksize(len(items), self._processes)
            else:
                item_bytes = 0 if type(items) is range else pickled_size(items[0])
                chunksize = _pace.map_chunksize(len(items), self._processes, item_bytes)
        else:
            check_pool_chunksize(chunksize)
        name = _task.name_of(func)
        tracker = _progress.make_tracker(progress, len(items), name, self._callbacks.post)
        result: MapResult[T] = _results.MapResult(len(items), chunksize, self._callbacks,
                                                  callback, error_callback, self._interrupted,
                                                  tracker)
        function = self._engine.task_function(func, result.fail) if items else None
        if function is None:
            return result  # empty input (already complete), or the function failed it
        self._engine.submit_all(function, items, mode, chunksize, result, name, policy)
        return result

    # ---- streaming maps ----------------------------------------------------------------------

    def imap(self, func: Callable[[S], T], iterable: Iterable[S],
             chunksize: int | None = None, buffersize: int | None = None, *,
             progress: Any = False, **options: Unpack[CallOptions]) -> IMapIterator[T]:
        """Like map, but returns an iterator, reads the input lazily, and yields in order.

        Without ``chunksize``, chunks are sized from how long the items take (one item
        first, then about 10 ms of work each; docs/performance.md). At most ``buffersize``
        chunks (default: 4 per worker) are submitted ahead of the consumer, so an endless
        generator streams in bounded memory; a ``buffersize`` given without ``chunksize``
        means chunks of one item, so that it bounds items. ``progress`` counts
        results as they are taken (its total is ``len(iterable)`` when the input has one).
        ``options``: ``task_timeout``, ``retries``, ``retry_on`` for this call.
        """
        check_per_call_options("imap", options)
        return self._imap(func, iterable, chunksize, buffersize, progress, ordered=True,
                          **options)

    def imap_unordered(self, func: Callable[[S], T], iterable: Iterable[S],
                       chunksize: int | None = None, buffersize: int | None = None, *,
                       progress: Any = False,
                       **options: Unpack[CallOptions]) -> IMapIterator[T]:
        """Like imap, but yields results as they finish."""
        check_per_call_options("imap_unordered", options)
        return self._imap(func, iterable, chunksize, buffersize, progress, ordered=False,
                          **options)

    def _imap_outcomes(self, func: Callable[[Any], Any], iterable: Iterable[Any],
                       chunksize: int | None = None, buffersize: int | None = None, *,
                       progress: Any = False, ordered: bool = False,
                       **options: Any) -> IMapIterator[Outcome]:
        """Like imap_unordered (or imap), but yields an ``Outcome`` per item: its input index,
        attempt, and value or error, so a failed item can be told apart from the others
        (the batch runner journals each item by index)."""
        check_per_call_options("imap" if ordered else "imap_unordered", options)
        return self._imap(func, iterable, chunksize, buffersize, progress, ordered=ordered,
                          detailed=True, **options)

    def _imap(self, func: Callable[[Any], T], iterable: Iterable[Any], chunksize: int | None,
              buffersize: int | None, progress: Any, *, ordered: bool, detailed: bool = False,
              task_timeout: Any = UNSET, retries: Any = UNSET,
              retry_on: Any = UNSET) -> IMapIterator[Any]:
        self._check_accepting()
        policy = self._engine.policy.override(task_timeout, retries, retry_on)
        if chunksize is not None:
            check_pool_chunksize(chunksize)
        check_imap_buffersize(buffersize)
        chunksize, buffersize = _streams.stream_sizes(chunksize, buffersize, self._processes)
        tracker = _progress.make_tracker(progress, _progress.length_of(iterable),
                                         _task.name_of(func))
        window = _streams.Window(buffersize)
        job = _streams.StreamJob(ordered, window, self._interrupted, tracker, detailed=detailed)
        cls = _streams.IMapIterator if ordered else _streams.IMapUnorderedIterator
        feeder = self._engine.stream_feeder(func, _streams.stream_input(iterable),
                                            CallMode.ONE_ARG, policy, chunksize, job)
        if feeder is None:
            return cls(job)  # the function cannot be sent: the stream yields that error once
        self._streams.add(window)
        if self._state == TERMINATE:
            window.cancel()  # terminate() raced with us: read nothing more
        elif self._state != RUN:
            window.lift()  # close() raced with us: the input must still be read to the end
        self._engine.feed_in_thread(feeder)
        return cls(job)

    # ---- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Accept no more work; workers exit once everything submitted has finished."""
        with self._state_lock:
            if self._state != RUN:
                return
            self._state = CLOSE
        for window in list(self._streams):
            window.lift()  # join() must be able to read every stream's input to the end
        self._engine.close()

    def _blocking(self, start: Callable[[], _AsyncResultBase[W]]) -> W:
        """Run a blocking call: Ctrl-C anywhere in it stops the pool's work, as in its wait.

        The interrupt can land before the wait begins (while the call submits, with a task
        already running); the caller cannot tell the two apart, so neither may the pool.
        """
        try:
            result = start()
        except KeyboardInterrupt:
            self._interrupted()
            raise
        return result.get()

    def _interrupted(self) -> None:
        """Ctrl-C while a caller waited on this pool: drop the queue, kill running tasks."""
        self.terminate()

    def terminate(self) -> None:
        """Stop now: kill the workers; every unfinished task fails with PoolTerminated."""
        with self._state_lock:
            self._state = TERMINATE
        for window in list(self._streams):
            window.cancel()
        self._engine.terminate()
        # Not waiting: a callback that never returns must not make terminate() hang.
        self._callbacks.stop(wait=False)

    def join(self) -> None:
        """Wait for the workers to exit; call close() or terminate() first."""
        if self._state == RUN:
            raise ValueError("Pool is still running")
        self._engine.join()
        self._callbacks.stop(wait=True)

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.terminate()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if getattr(self, "_state", None) == RUN:
            # The stdlib's wording, which code and tests match on.
            _warn(f"unclosed running multiprocessing pool {self._identity()}",
                  ResourceWarning, source=self)
            self._engine.terminate(wait=False)

    def __reduce__(self) -> Any:
        raise NotImplementedError(
            "pool objects cannot be passed between processes or pickled"
        )

    def stats(self) -> PoolStats:
        """A frozen snapshot: workers alive and busy, tasks queued, running, done, failed,
        retried and timed out, why workers were replaced, and per-worker busy/idle time and
        peak memory (see :class:`procpool.PoolStats`)."""
        return self._engine.stats()

    def __repr__(self) -> str:
        if not hasattr(self, "_engine"):
            return self._identity()  # construction failed
        return self._identity(self.stats().summary())

    def _identity(self, details: str = "") -> str:
        # Without details no call into the dispatcher: safe from __del__, whatever thread.
        parts = [f"state={self._state}", f"processes={getattr(self, '_processes', 0)}", details]
        return f"<procpool.Pool {' '.join(part for part in parts if part)}>"

    @property
    def _pool(self) -> list[Any]:
        # Some stdlib-era code counts workers with len(pool._pool).
        return [WorkerView(pid) for pid in self._engine.worker_pids()]

    # ---- helpers -----------------------------------------------------------------------------

    def _check_running(self) -> None:
        if self._state != RUN:
            raise ValueError("Pool not running")

    def _check_accepting(self) -> None:
        """Before a submission: the pool must be running and not broken."""
        self._check_running()
        error = self._engine.broken_error()
        if error is not None:
            raise error
