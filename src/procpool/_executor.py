"""``procpool.ProcessPoolExecutor``: the concurrent.futures API, and asyncio, on the same engine.

Owns futures (``ProcessFuture``, a ``concurrent.futures.Future`` whose ``cancel()`` also stops a
running task), ``map`` with the 3.14 signature on every Python (``buffersize`` streams the input
lazily), shutdown, and the asyncio spellings ``run`` and ``amap``. Scheduling, workers and
failures belong to the dispatcher, exactly as for the Pool face.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import multiprocessing
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future
from concurrent.futures._base import (
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    RUNNING,
    InvalidStateError,
)
from concurrent.futures.process import _RemoteTraceback
from multiprocessing.pool import RemoteTraceback as PoolRemoteTraceback  # type: ignore[attr-defined]
from typing import Any, TypeVar

from ._engine import Engine, WorkerView, name_of
from ._options import DEFAULT_RETRY_ON, TaskPolicy, check_per_call_options
from ._progress import length_of, make_tracker
from ._stats import PoolStats
from ._task import CallMode, Chunk

T = TypeVar("T")

# Bound once (see _pool.py): never look these up at call time.
_get_context = multiprocessing.get_context

# amap's default read-ahead, in chunks per worker (it has no stdlib precedent to follow).
ASYNC_CHUNKS_PER_WORKER = 4


class ProcessFuture(Future[T]):
    """A ``concurrent.futures.Future`` whose ``cancel()`` also works on a running task.

    Cancelling a pending task drops it, as in the stdlib; cancelling a running one kills the
    worker running it (the pool replaces the worker) and the future ends cancelled. Everything
    else (``as_completed``, ``wait``, callbacks, ``asyncio.wrap_future``) works unchanged.
    """

    __module__ = "procpool"

    def __init__(self) -> None:
        super().__init__()
        self._cancel_running: Callable[[], None] | None = None
        # Ctrl-C while waiting on this future stops the executor's work (weak: a future must
        # not keep a dropped executor alive).
        self._on_interrupt: weakref.WeakMethod[Callable[[], None]] | None = None

    def result(self, timeout: float | None = None) -> T:
        try:
            return super().result(timeout)
        except KeyboardInterrupt:
            self._interrupted()
            raise

    def exception(self, timeout: float | None = None) -> BaseException | None:
        try:
            return super().exception(timeout)
        except KeyboardInterrupt:
            self._interrupted()
            raise

    def _interrupted(self) -> None:
        handler = self._on_interrupt() if self._on_interrupt is not None else None
        if handler is not None:
            handler()

    def cancel(self) -> bool:
        with self._condition:
            if self._state != RUNNING:
                return super().cancel()
            # What Future.cancel() + set_running_or_notify_cancel() would do, in one step,
            # for a state the stdlib never cancels from.
            self._state = CANCELLED_AND_NOTIFIED
            for waiter in self._waiters:
                waiter.add_cancelled(self)
            self._condition.notify_all()
        if self._cancel_running is not None:
            self._cancel_running()
        self._invoke_callbacks()  # type: ignore[attr-defined]
        return True


class _FutureSink:
    """Connects one chunk to its future: the whole chunk's outcome is the future's result.

    For ``submit`` the chunk holds one call and the result is its value. For ``map`` the
    result is the chunk's list of values with its failures by position, so the map iterator
    can deliver every value before a failed item and raise at it.
    """

    def __init__(self, future: ProcessFuture[Any], outcomes: bool) -> None:
        self.future = future
        self._outcomes = outcomes

    def chunk_starting(self, chunk: Chunk) -> bool:
        state = self.future._state
        if state == RUNNING:
            return True  # a retry, or the rest of a chunk requeued after a death
        if state in (CANCELLED_AND_NOTIFIED, FINISHED):
            return False
        return self.future.set_running_or_notify_cancel()  # PENDING, or CANCELLED: notify

    def chunk_done(self, chunk: Chunk, values: Sequence[Any],
                   failures: Mapping[int, BaseException]) -> None:
        if self._outcomes:
            self._settle(True, (values, failures))
        elif failures:
            self._settle(False, failures[0])
        else:
            self._settle(True, values[0])

    def chunk_failed(self, chunk: Chunk, error: BaseException) -> None:
        self._settle(False, error)

    def _settle(self, success: bool, value: Any) -> None:
        future = self.future
        if future._state == CANCELLED:
            # Cancelled while pending and failed (terminate) before it was dispatched: tell
            # as_completed() and wait(), which only count *notified* cancellations as done.
            future.set_running_or_notify_cancel()
            return
        try:
            if success:
                future.set_result(value)
            else:
                future.set_exception(_executor_traceback(value))
        except InvalidStateError:
            pass  # cancelled meanwhile: nobody wants the outcome


class ProcessPoolExecutor(Executor):
    """A ``concurrent.futures.ProcessPoolExecutor`` whose workers can die without breaking it.

    Same constructor and methods as the stdlib's, with ``map(..., buffersize=)`` and
    ``terminate_workers()`` / ``kill_workers()`` (3.14) on every Python. A worker that dies fails
    only the future it was running, with :class:`procpool.WorkerDied` (a ``BrokenProcessPool``);
    the executor replaces the worker and stays usable. ``cancel()`` stops running tasks too.
    The robustness options are the Pool's: ``task_timeout``, ``retries``, ``retry_on``,
    ``max_memory_per_child``, ``initializer_timeout``, ``backend``.
    """

    __module__ = "procpool"

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: Any = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        *,
        max_tasks_per_child: int | None = None,
        task_timeout: float | None = None,
        retries: int = 0,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = DEFAULT_RETRY_ON,
        max_memory_per_child: int | None = None,
        initializer_timeout: float | None = None,
        backend: Any = "local",
    ) -> None:
        self._shutdown = True  # until construction succeeds
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
        self._mp_context = mp_context
        self._shutdown_lock = threading.Lock()
        self._engine = Engine(
            processes=max_workers, initializer=initializer, initargs=initargs,
            context=mp_context, backend=backend, max_tasks=max_tasks_per_child,
            task_timeout=task_timeout, retries=retries, retry_on=retry_on,
            max_memory_per_child=max_memory_per_child, initializer_timeout=initializer_timeout,
            finish_at_exit=True,
        )
        self._max_workers = self._engine.processes
        # Futures not yet done, so shutdown(cancel_futures=True) can find the pending ones.
        self._pending: weakref.WeakSet[Future[Any]] = weakref.WeakSet()
        self._shutdown = False

    # ---- concurrent.futures API --------------------------------------------------------------

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> ProcessFuture[T]:
        """Schedule ``fn(*args, **kwargs)``; every keyword goes to ``fn``."""
        return self._submit(fn, [(args, kwargs)], CallMode.ARGS_KWARGS, self._engine.policy,
                            outcomes=False)

    def map(self, fn: Callable[..., T], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1, buffersize: int | None = None, progress: Any = False,
            **options: Any) -> Iterator[T]:
        """Like ``map(fn, *iterables)``, run in the pool; results in order.

        ``timeout`` bounds the whole iteration: when it expires the iterator raises
        TimeoutError and ends, and, as in the stdlib, cancels its remaining futures (which here
        also stops the ones running).
        ``buffersize`` (3.14) keeps at most that many chunks in flight and reads the input
        lazily, so an endless generator works; without it the input is read at once, as in
        the stdlib. ``progress``: True for a progress bar (tqdm), or a callable that receives
        :class:`procpool.Progress` snapshots; it counts results as they are taken.
        ``options``: ``task_timeout``, ``retries``, ``retry_on`` for this call.
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        _check_buffersize(buffersize)
        check_per_call_options("map", options)
        policy = self._engine.policy.override(**options)
        lengths = [length_of(iterable) for iterable in iterables]
        known = [length for length in lengths if length is not None]
        total = min(known, default=0) if len(known) == len(lengths) else None
        tracker = make_tracker(progress, total, name_of(fn))
        end_time = None if timeout is None else time.monotonic() + timeout
        batches = _batched(zip(*iterables, strict=False), chunksize)
        submit = self._chunk_submitter(fn, policy)
        futures = collections.deque(
            submit(batch) for batch in (itertools.islice(batches, buffersize)
                                        if buffersize else batches)
        )
        executor = weakref.ref(self)
        results = _map_results(futures, batches if buffersize else None, executor, submit,
                               end_time)
        return results if tracker is None else tracker.count(results)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting work; with ``cancel_futures``, drop what has not started; with
        ``wait``, return once every worker has exited."""
        with self._shutdown_lock:
            self._shutdown = True
        if cancel_futures:
            for future in list(self._pending):
                if not future.running():
                    future.cancel()
        self._engine.dispatcher.close()
        if wait:
            self._engine.dispatcher.join()

    def terminate_workers(self) -> None:
        """Stop now (3.14): cancel pending futures, SIGTERM the workers (SIGKILL after a grace
        period); running futures fail with PoolTerminated. The executor cannot be used again."""
        self._force_shutdown(force=False)

    def kill_workers(self) -> None:
        """Like ``terminate_workers()``, with SIGKILL at once (3.14)."""
        self._force_shutdown(force=True)

    def _interrupted(self) -> None:
        """Ctrl-C while a caller waited on a future: drop the queue, kill running tasks."""
        self._force_shutdown(force=True)

    def _force_shutdown(self, *, force: bool) -> None:
        with self._shutdown_lock:
            self._shutdown = True
        for future in list(self._pending):
            if not future.running():
                future.cancel()
        self._engine.dispatcher.terminate(force=force)
        self._engine.dispatcher.join()

    # ---- asyncio -----------------------------------------------------------------------------

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``await executor.run(fn, *args, **kwargs)``: cancelling the awaiting task cancels
        the call, and kills its worker if it is running. No thread per call."""
        return await asyncio.wrap_future(self.submit(fn, *args, **kwargs))

    async def amap(self, fn: Callable[..., T], *iterables: Iterable[Any], chunksize: int = 1,
                   buffersize: int | None = None, ordered: bool = True,
                   **options: Any) -> AsyncIterator[T]:
        """``async for result in executor.amap(fn, items)``: results in order (or as they
        finish, with ``ordered=False``), at most ``buffersize`` chunks in flight (default 4
        per worker), input read lazily. Leaving the loop early, or cancelling the consuming
        task, cancels what is still running."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        _check_buffersize(buffersize)
        check_per_call_options("amap", options)
        buffersize = buffersize or ASYNC_CHUNKS_PER_WORKER * self._max_workers
        submit = self._chunk_submitter(fn, self._engine.policy.override(**options))
        batches = _batched(zip(*iterables, strict=False), chunksize)
        in_flight: collections.deque[asyncio.Future[Any]] = collections.deque()
        sources: dict[asyncio.Future[Any], ProcessFuture[Any]] = {}

        def top_up() -> None:
            while len(in_flight) < buffersize:
                batch = next(batches, None)
                if batch is None:
                    return
                future = submit(batch)
                wrapped = asyncio.wrap_future(future)
                sources[wrapped] = future
                in_flight.append(wrapped)

        try:
            top_up()
            while in_flight:
                if ordered:
                    done = in_flight.popleft()
                    outcomes = await done
                else:
                    finished, _ = await asyncio.wait(in_flight,
                                                     return_when=asyncio.FIRST_COMPLETED)
                    done = next(iter(finished))
                    in_flight.remove(done)
                    outcomes = done.result()
                del sources[done]
                top_up()
                for value in _unpack(outcomes):
                    yield value
        finally:
            for future in sources.values():
                future.cancel()

    # ---- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> ProcessPoolExecutor:
        return self

    def __del__(self) -> None:
        # Like the stdlib's: an executor dropped without shutdown() still finishes what was
        # submitted, then its workers and dispatcher thread exit.
        if not getattr(self, "_shutdown", True):
            self._engine.dispatcher.close()

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown(wait=True)

    def stats(self) -> PoolStats:
        """A frozen snapshot of the pool behind this executor (see :class:`procpool.PoolStats`)."""
        return self._engine.dispatcher.stats()

    def __repr__(self) -> str:
        state = "shutdown" if self._shutdown else "running"
        workers = getattr(self, "_max_workers", None)
        identity = f"<procpool.ProcessPoolExecutor {state} max_workers={workers}"
        if not hasattr(self, "_engine"):
            return identity + ">"  # construction failed
        return f"{identity} {self.stats().summary()}>"

    @property
    def _broken(self) -> BaseException | None:
        # The stdlib's private flag, which some code polls to learn the executor broke.
        return self._engine.dispatcher.broken

    @property
    def _processes(self) -> dict[int | None, WorkerView]:
        # Some stdlib-era code reads the worker pids from this private mapping.
        return {pid: WorkerView(pid) for pid in self._engine.dispatcher.worker_pids()}

    # ---- helpers -----------------------------------------------------------------------------

    def _check_accepting(self) -> None:
        error = self._engine.broken_error()
        if error is not None:
            raise error
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def _chunk_submitter(self, fn: Callable[..., Any],
                         policy: TaskPolicy) -> Callable[[list[Any]], ProcessFuture[Any]]:
        """Submit one batch of argument tuples as one chunk, for map and amap."""

        def submit(batch: list[Any]) -> ProcessFuture[Any]:
            return self._submit(fn, batch, CallMode.STAR_ARGS, policy, outcomes=True)

        return submit

    def _submit(self, fn: Callable[..., Any], items: list[Any], mode: CallMode,
                policy: TaskPolicy, *, outcomes: bool) -> ProcessFuture[Any]:
        with self._shutdown_lock:
            self._check_accepting()
            future: ProcessFuture[Any] = ProcessFuture()
            sink = _FutureSink(future, outcomes)
            function = self._engine.task_function(fn, future.set_exception)
            if function is None:
                return future
            chunk = self._engine.make_chunk(function, items, mode, 0, sink, name_of(fn), policy)
            if chunk is None:
                return future
            future._cancel_running = functools.partial(self._engine.dispatcher.cancel, chunk)
            future._on_interrupt = weakref.WeakMethod(self._interrupted)
            self._pending.add(future)
            future.add_done_callback(self._pending.discard)
            self._engine.dispatcher.submit([chunk])
            return future


def _executor_traceback(error: BaseException) -> BaseException:
    """Give a task's exception the remote-traceback class the stdlib executor uses.

    The engine attaches the Pool's (multiprocessing.pool.RemoteTraceback); code written for
    concurrent.futures looks for concurrent.futures.process._RemoteTraceback.
    """
    cause: Any = error.__cause__
    if type(cause) is PoolRemoteTraceback:
        error.__cause__ = _RemoteTraceback(cause.tb)
    return error


def _map_results(futures: collections.deque[ProcessFuture[Any]],
                 more_batches: Iterator[list[Any]] | None,
                 executor: weakref.ref[ProcessPoolExecutor],
                 submit: Callable[[list[Any]], ProcessFuture[Any]],
                 end_time: float | None) -> Iterator[Any]:
    """The iterator ``map`` returns: results in order, topping up the buffer as it goes
    (the shape of CPython 3.14's Executor.map), cancelling what is left when closed early."""
    try:
        while futures:
            if more_batches is not None and executor() is not None:
                batch = next(more_batches, None)
                if batch is not None:
                    futures.append(submit(batch))
            future = futures.popleft()
            timeout = None if end_time is None else end_time - time.monotonic()
            try:
                outcomes = future.result(timeout)
            except BaseException:
                future.cancel()
                raise
            del future  # hold no reference to a result the caller has let go of (gh-14406)
            yield from _unpack(outcomes)
    finally:
        for future in futures:
            future.cancel()


def _unpack(outcome: tuple[list[Any], Mapping[int, BaseException]]) -> Iterator[Any]:
    """Yield a chunk's values in order, then raise its first failure, if any. Pops as it
    goes and keeps no local name on a value while suspended, so a result the caller has
    dropped is freed (gh-14406)."""
    values, failures = outcome
    stop = min(failures) if failures else len(values)
    del values[stop:]
    values.reverse()
    while values:
        yield values.pop()
    if failures:
        raise failures[stop]


def _batched(iterable: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(iterable)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def _check_buffersize(buffersize: object) -> None:
    if buffersize is not None and (not isinstance(buffersize, int) or buffersize < 1):
        raise ValueError("buffersize must be None or > 0")
