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
from concurrent.futures import CancelledError, Executor, Future
from concurrent.futures import TimeoutError as FuturesTimeoutError
from concurrent.futures import process as stdlib_process
from concurrent.futures._base import (
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    RUNNING,
    InvalidStateError,
)
from concurrent.futures.process import _RemoteTraceback
from multiprocessing.pool import RemoteTraceback as PoolRemoteTraceback  # type: ignore[attr-defined]
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar

from ._engine import Engine, WorkerView, name_of, start_thread
from ._messages import CallMode
from ._options import DEFAULT_RETRY_ON, CallOptions, TaskPolicy, check_per_call_options
from ._pace import CHUNKS_PER_WORKER, ChunkSizer, Pace, read_batch, stream_sizes
from ._progress import length_of, make_tracker
from ._stats import PoolStats
from ._task import Chunk, TaskFunction

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing's own from 3.11

T = TypeVar("T")
P = ParamSpec("P")  # a submitted call's parameters, which its arguments must match

# Bound once (see _pool.py): never look these up at call time.
_get_context = multiprocessing.get_context


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
        # Hands the done-callbacks to the pool's callback thread when the dispatcher settles
        # this future: a callback that waits on another future must not stall the pool.
        self._defer_callbacks: Callable[[Callable[[], None]], bool] | None = None

    def _invoke_callbacks(self) -> None:
        invoke: Callable[[], None] = super()._invoke_callbacks  # type: ignore[misc]
        callbacks = self._done_callbacks  # type: ignore[attr-defined]
        defer = self._defer_callbacks
        if (defer is not None and callbacks and not all(map(_only_schedules, callbacks))
                and defer(invoke)):
            return
        invoke()

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
                cancelled = super().cancel()
                if cancelled:
                    self._cancel_running = None  # let go of the chunk (and its segments)
                return cancelled
            # What Future.cancel() + set_running_or_notify_cancel() would do, in one step,
            # for a state the stdlib never cancels from.
            self._state = CANCELLED_AND_NOTIFIED
            for waiter in self._waiters:
                waiter.add_cancelled(self)
            self._condition.notify_all()
        cancel_running, self._cancel_running = self._cancel_running, None
        if cancel_running is not None:
            cancel_running()
        self._invoke_callbacks()
        return True


def _only_schedules(callback: Callable[..., object]) -> bool:
    """Whether a done-callback is asyncio's bridge (``asyncio.wrap_future``, which
    ``executor.run`` and ``amap`` use): it only hands the outcome to its event loop with
    ``call_soon_threadsafe`` and never blocks, so it may run where the future is settled,
    saving a thread hop per awaited call."""
    return (getattr(callback, "__module__", None) == "asyncio.futures"
            and getattr(callback, "__qualname__", None) == "_chain_future.<locals>._call_set_state")


class _FutureSink:
    """Connects one chunk to its future: the whole chunk's outcome is the future's result.

    For ``submit`` the chunk holds one call and the result is its value. For ``map`` the
    result is the chunk's list of values with its failures by position, so the map iterator
    can deliver every value before a failed item and raise at it.

    A chunk that reports each item (timeouts, retries) is answered in parts: one per item,
    and a part for the items a retry or a death split off. The future settles once every
    position has its answer.
    """

    def __init__(self, future: ProcessFuture[Any], size: int, outcomes: bool,
                 first_index: int = 0) -> None:
        self.future = future
        self._outcomes = outcomes
        self._size = size
        self._first_index = first_index  # of the chunk's first item, in its map
        self._values: list[Any] = []  # filled only when the answer comes in parts
        self._failures: dict[int, BaseException] = {}
        self._left = size

    def chunk_starting(self, chunk: Chunk) -> bool:
        state = self.future._state
        if state == RUNNING:
            return True  # a retry, or the rest of a chunk requeued after a death
        if state in (CANCELLED_AND_NOTIFIED, FINISHED):
            return False
        return self.future.set_running_or_notify_cancel()  # PENDING, or CANCELLED: notify

    def chunk_done(self, chunk: Chunk, values: Sequence[Any],
                   failures: Mapping[int, BaseException]) -> None:
        if chunk.size == self._size:  # the whole chunk at once: the common case
            self._settle_with(values, failures)
            return
        if not self._values:
            self._values = [None] * self._size
        start = chunk.first_index - self._first_index
        self._values[start : start + chunk.size] = values
        for position, error in failures.items():
            self._failures[start + position] = error
        self._part_answered(chunk.size)

    def chunk_failed(self, chunk: Chunk, error: BaseException) -> None:
        if chunk.size == self._size:
            self._settle(False, error)
            return
        start = chunk.first_index - self._first_index
        for position in range(start, start + chunk.size):
            self._failures[position] = error
        self._part_answered(chunk.size)

    def _part_answered(self, size: int) -> None:
        self._left -= size
        if self._left == 0:
            self._settle_with(self._values or [None] * self._size, self._failures)

    def _settle_with(self, values: Sequence[Any], failures: Mapping[int, BaseException]) -> None:
        if self._outcomes:
            self._settle(True, (values, failures))
        elif failures:
            self._settle(False, failures[0])
        else:
            self._settle(True, values[0])

    def _settle(self, success: bool, value: Any) -> None:
        # Here, on the dispatcher thread, so that waiters wake at once; the done-callbacks go
        # to the callback thread (ProcessFuture._invoke_callbacks). Settling there too would
        # deadlock a callback waiting for a future that has callbacks of its own.
        future = self.future
        future._cancel_running = None  # nothing left to stop; let go of the chunk
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
            finish_at_exit=True, exit_fails_task=True,
        )
        self._max_workers = self._engine.processes
        # Futures submitted and still referenced (weakly: a dropped one goes), so that
        # shutdown(cancel_futures=True) can find the pending ones.
        self._pending: weakref.WeakSet[Future[Any]] = weakref.WeakSet()
        # Eager maps still submitting, so a shutdown that cancels can stop them.
        self._feeders: weakref.WeakSet[_MapFeeder] = weakref.WeakSet()
        self._shutdown = False
        # A map's per-call options, for the submit calls it makes through an overridden
        # submit (which cannot pass them on): set around each such call, in its thread.
        self._map_call = threading.local()

    # ---- concurrent.futures API --------------------------------------------------------------

    def submit(self, fn: Callable[P, T], /, *args: P.args,
               **kwargs: P.kwargs) -> ProcessFuture[T]:
        """Schedule ``fn(*args, **kwargs)``; every keyword goes to ``fn``."""
        policy = getattr(self._map_call, "policy", None) or self._engine.policy
        return self._submit(fn, [(args, kwargs)], CallMode.ARGS_KWARGS, policy,
                            outcomes=False)

    def map(self, fn: Callable[..., T], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int | None = None, buffersize: int | None = None, progress: Any = False,
            **options: Unpack[CallOptions]) -> Iterator[T]:
        """Like ``map(fn, *iterables)``, run in the pool; results in order.

        Without ``chunksize`` or ``buffersize``, chunks are sized from how long the items take
        (one item first, then about 10 ms of work each), as imap's are; with ``buffersize``
        alone, chunks hold one item (the stdlib's default), so it bounds items.

        ``timeout`` bounds the whole iteration: when it expires the iterator raises
        TimeoutError and ends, and, as in the stdlib, cancels its remaining futures (which here
        also stops the ones running).
        ``buffersize`` (3.14) keeps at most that many chunks in flight and reads the input
        lazily, so an endless generator works; without it the input is read at once, as in
        the stdlib. ``progress``: True for a progress bar (tqdm), or a callable that receives
        :class:`procpool.Progress` snapshots; it counts results as they are taken.
        ``options``: ``task_timeout``, ``retries``, ``retry_on`` for this call.
        """
        _check_chunksize(chunksize)
        _check_buffersize(buffersize)
        check_per_call_options("map", options)
        with self._shutdown_lock:
            self._check_accepting()  # as the stdlib's map: at the call, not at the first item
        policy = self._engine.policy.override(**options)
        lengths = [length_of(iterable) for iterable in iterables]
        known = [length for length in lengths if length is not None]
        total = min(known, default=0) if len(known) == len(lengths) else None
        tracker = make_tracker(progress, total, name_of(fn))
        end_time = None if timeout is None else time.monotonic() + timeout
        if self._submit_overridden():
            through = self._map_through_submit(fn, iterables, chunksize, buffersize, policy,
                                               end_time)
            return through if tracker is None else tracker.count(through)
        # Only the chunk size: without buffersize this map is eager, as the stdlib's.
        chunksize, _ = stream_sizes(chunksize, buffersize, self._max_workers)
        submit = self._chunk_submitter(fn, policy, chunksize)
        if submit is None:  # fn cannot be pickled: the stdlib raises when it is consumed
            return _map_results(collections.deque([self._failed_future(fn)]), None,
                                weakref.ref(self), None, end_time)
        arguments = zip(*iterables, strict=False)
        results: Iterator[Any]
        if chunksize is None and buffersize is None:
            # The stdlib reads the input now and runs it all, read or not; a feeder thread
            # does that here, so that chunk sizes can follow the pace of the first ones.
            feeder = _MapFeeder(self, list(arguments), submit)
            results = _fed_map_results(feeder, end_time)
        else:
            results = self._stream_map(submit, arguments, buffersize, end_time)
        return results if tracker is None else tracker.count(results)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting work; with ``cancel_futures``, drop what has not started; with
        ``wait``, return once every worker has exited."""
        with self._shutdown_lock:
            self._shutdown = True
            if cancel_futures:
                self._stop_feeders()
        if cancel_futures:
            # What was submitted before this call reaches the workers first (those already
            # free take their share, as the stdlib's call queue does); only the rest waits,
            # and is cancelled.
            self._engine.dispatcher.sync()
            for future in list(self._pending):
                if not future.running():
                    future.cancel()
        self._engine.dispatcher.close()
        if wait:
            self._engine.dispatcher.join()
            self._engine.dispatcher.callbacks.stop(wait=True)

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
            self._stop_feeders()
        for future in list(self._pending):
            if not future.running():
                future.cancel()
        self._engine.dispatcher.terminate(force=force)
        self._engine.dispatcher.join()

    # ---- asyncio -----------------------------------------------------------------------------

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``await executor.run(fn, *args, **kwargs)``: cancelling the awaiting task cancels
        the call, and kills its worker if it is running. No thread per call."""
        future = self.submit(fn, *args, **kwargs)
        try:
            awaitable = asyncio.wrap_future(future)
        except BaseException:
            # A KeyboardInterrupt landing here would leave a call nobody can cancel, and
            # shutdown(wait=True) waiting for it.
            future.cancel()
            raise
        return await awaitable

    async def amap(self, fn: Callable[..., T], *iterables: Iterable[Any],
                   chunksize: int | None = None,
                   buffersize: int | None = None, ordered: bool = True,
                   **options: Unpack[CallOptions]) -> AsyncIterator[T]:
        """``async for result in executor.amap(fn, items)``: results in order (or as they
        finish, with ``ordered=False``), at most ``buffersize`` chunks in flight (default 4
        per worker), input read lazily. Leaving the loop early, or cancelling the consuming
        task, cancels what is still running."""
        _check_chunksize(chunksize)
        _check_buffersize(buffersize)
        check_per_call_options("amap", options)
        with self._shutdown_lock:
            self._check_accepting()
        chunksize, buffersize = stream_sizes(chunksize, buffersize, self._max_workers)
        submit = self._chunk_submitter(fn, self._engine.policy.override(**options), chunksize)
        if submit is None:
            self._failed_future(fn).result()  # raises the pickling error
            return
        batches = _batched(zip(*iterables, strict=False), submit.sizer)
        in_flight: collections.deque[asyncio.Future[Any]] = collections.deque()
        sources: dict[asyncio.Future[Any], ProcessFuture[Any]] = {}
        input_errors: list[Exception] = []  # raised once what was read is delivered

        def top_up() -> None:
            while len(in_flight) < buffersize and not input_errors:
                try:
                    batch = next(batches, None)
                except Exception as exc:
                    input_errors.append(exc)
                    return
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
            if input_errors:
                raise input_errors[0]
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

    def _submit_overridden(self) -> bool:
        """Whether a subclass or the instance replaced ``submit`` (tqdm's ``process_map``
        wraps it to count the work): ``map`` must then go through it, as the stdlib's does."""
        return ("submit" in vars(self)
                or getattr(type(self), "submit", None) is not ProcessPoolExecutor.submit)

    def _map_through_submit(self, fn: Callable[..., Any], iterables: tuple[Iterable[Any], ...],
                            chunksize: int | None, buffersize: int | None,
                            policy: TaskPolicy, end_time: float | None) -> Iterator[Any]:
        """``map`` as the stdlib runs it: one ``self.submit`` per chunk of ``chunksize``
        items (default 1), all at once, or ``buffersize`` ahead of the reader; a chunk
        fails as a whole, at its first failing item."""
        submit = _SubmitThrough(self, fn, policy, chunksize or 1)
        return self._stream_map(submit, zip(*iterables, strict=False), buffersize, end_time)

    def _stream_map(self, submit: _BatchSubmitter, arguments: Iterator[tuple[Any, ...]],
                    buffersize: int | None, end_time: float | None) -> Iterator[Any]:
        """Submit every batch now, or the first ``buffersize``; the iterator returned submits
        one more as it delivers each (the shape of CPython 3.14's Executor.map)."""
        batches = _batched(arguments, submit.sizer)
        futures: collections.deque[Future[Any]] = collections.deque(
            submit(batch) for batch in (itertools.islice(batches, buffersize)
                                        if buffersize else batches))
        return _map_results(futures, batches if buffersize else None, weakref.ref(self),
                            submit, end_time)

    def _check_accepting(self) -> None:
        # The stdlib executor's own flag, set by its exit hook (threading's, which runs before
        # atexit handlers): a submit from then on is refused, as there.
        if stdlib_process._global_shutdown:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")
        error = self._engine.broken_error()
        if error is not None:
            raise error
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def _chunk_submitter(self, fn: Callable[..., Any], policy: TaskPolicy,
                         chunksize: int | None) -> _Submitter | None:
        """What map and amap submit their batches with; None if ``fn`` cannot be pickled."""
        function = self._engine.task_function(fn, lambda error: None)
        return None if function is None else _Submitter(self, fn, function, policy, chunksize)

    def _stop_feeders(self) -> None:
        for feeder in list(self._feeders):
            feeder.stop()

    def _failed_future(self, fn: Callable[..., Any]) -> ProcessFuture[Any]:
        """A future holding the error that pickling ``fn`` raises."""
        future: ProcessFuture[Any] = ProcessFuture()
        self._engine.task_function(fn, future.set_exception)
        return future

    def _submit(self, fn: Callable[..., Any], items: list[Any], mode: CallMode,
                policy: TaskPolicy, *, outcomes: bool, function: TaskFunction | None = None,
                first_index: int = 0, withdrawn: Callable[[], bool] | None = None,
                on_chunk: Callable[[Chunk], object] | None = None) -> ProcessFuture[Any]:
        """One chunk as one future. ``function``: ``fn`` pickled already (map's batches share
        it, and so its pace). ``first_index``: the first item's place in its map (errors name
        items by it). ``withdrawn``: the batch belongs to a map accepted earlier, so a
        shutdown does not refuse it; it is cancelled instead if this says so (asked under the
        lock a cancelling shutdown takes). ``on_chunk`` is told about the chunk made."""
        with self._shutdown_lock:
            future: ProcessFuture[Any] = ProcessFuture()
            if withdrawn is None:
                self._check_accepting()
            elif withdrawn():
                future.cancel()
                return future
            sink = _FutureSink(future, len(items), outcomes, first_index)
            if function is None:
                function = self._engine.task_function(fn, future.set_exception)
            if function is None:
                return future
            chunk = self._engine.make_chunk(function, items, mode, first_index, sink,
                                            name_of(fn), policy)
            if chunk is None:
                return future
            if on_chunk is not None:
                on_chunk(chunk)
            future._cancel_running = functools.partial(self._engine.dispatcher.cancel, chunk)
            future._on_interrupt = weakref.WeakMethod(self._interrupted)
            future._defer_callbacks = self._engine.dispatcher.defer_callbacks
            self._pending.add(future)  # weakly: a done future the caller dropped goes
            self._engine.dispatcher.submit([chunk])
            return future


class _Submitter:
    """Submits the batches of one map or amap call, each as one future, all with the same
    pickled function, and owns the call's chunk sizes (``sizer``: the caller's chunksize, or
    from the function's pace and the size of what was sent)."""

    def __init__(self, executor: ProcessPoolExecutor, fn: Callable[..., Any],
                 function: TaskFunction, policy: TaskPolicy, chunksize: int | None) -> None:
        self._executor = executor
        self._fn = fn
        self._function = function
        self._policy = policy
        self.sizer = ChunkSizer(function.pace, chunksize)
        self._next_index = 0  # batches are submitted in order: where the next one starts

    def __call__(self, batch: list[Any], *,
                 withdrawn: Callable[[], bool] | None = None) -> ProcessFuture[Any]:
        first_index, self._next_index = self._next_index, self._next_index + len(batch)
        return self._executor._submit(self._fn, batch, CallMode.STAR_ARGS, self._policy,
                                      outcomes=True, function=self._function,
                                      first_index=first_index, withdrawn=withdrawn,
                                      on_chunk=self._sent)

    def _sent(self, chunk: Chunk) -> None:
        self.sizer.sent(chunk.size, chunk.payload_bytes)

    def callbacks_ran(self, future: Future[Any]) -> None:
        pass  # its futures are procpool's own: nobody counts on their callbacks


class _BatchSubmitter(Protocol):
    """Submits one batch of a map's arguments as one future (``sizer`` cuts the batches)."""

    sizer: ChunkSizer

    def __call__(self, batch: list[Any]) -> Future[Any]: ...

    def callbacks_ran(self, future: Future[Any]) -> None:
        """Called once the batch's outcome is in, before its values are delivered."""


CALLBACK_WAIT = 1.0  # seconds a map through an overridden submit waits for its callbacks


class _SubmitThrough:
    """Submits the chunks of a ``map`` through the executor's overridden ``submit``, each
    as one call of ``_call_each`` whose future's result is the chunk's outcomes (the shape
    ``_map_results`` reads), with the map's per-call options."""

    def __init__(self, executor: ProcessPoolExecutor, fn: Callable[..., Any],
                 policy: TaskPolicy, chunksize: int) -> None:
        self._executor = executor
        self._fn = fn
        self._policy = policy
        self.sizer = ChunkSizer(Pace(), chunksize)
        self._ran: dict[Future[Any], threading.Event] = {}

    def __call__(self, batch: list[Any]) -> Future[Any]:
        call = self._executor._map_call
        call.policy = self._policy
        try:
            future = self._executor.submit(_call_each, self._fn, batch)
        finally:
            call.policy = None
        # Added after the overriding submit's own callbacks, so it runs after them.
        ran = self._ran[future] = threading.Event()
        future.add_done_callback(lambda _: ran.set())
        return future

    def callbacks_ran(self, future: Future[Any]) -> None:
        """Wait a little for the overriding submit's done-callbacks (tqdm's bar counts there):
        the stdlib runs them before its map goes on, and so a bar ends full. Bounded: a
        callback that blocks costs the map this wait, never a hang."""
        ran = self._ran.pop(future, None)
        if ran is not None:
            ran.wait(CALLBACK_WAIT)


def _call_each(fn: Callable[..., Any], batch: list[tuple[Any, ...]]
               ) -> tuple[list[Any], Mapping[int, BaseException]]:
    """In the worker: one chunk of a map that went through ``submit``."""
    return [fn(*arguments) for arguments in batch], {}


class _MapFeeder:
    """Submits an eager ``map``'s batches from a thread of its own.

    All of them, whether or not anyone reads the results (the stdlib's eager map), but only
    CHUNKS_PER_WORKER per worker ahead of the workers: batches are cut as they are
    submitted, so their sizes follow the pace of the first ones. Owns the futures submitted
    and not yet handed to the results iterator. Every wait has a way out: a future always
    finishes (done, failed, cancelled, or failed by a broken or terminated pool), and
    ``stop()`` wakes the thread.
    """

    def __init__(self, executor: ProcessPoolExecutor, items: list[Any],
                 submit: _Submitter) -> None:
        self._items = items
        self._submit = submit
        self._dispatcher = executor._engine.dispatcher
        self._credit = threading.Semaphore(CHUNKS_PER_WORKER * executor._max_workers)
        self._condition = threading.Condition()
        self._futures: collections.deque[ProcessFuture[Any]] = collections.deque()
        self._finished = False  # every batch submitted, or stopped
        self._stopped = False
        self.dropped_items = False  # stopped (a shutdown that cancels) before submitting all
        executor._feeders.add(self)
        # Like an open imap stream, this map holds close() back until it has submitted all.
        self._dispatcher.stream_opened()
        try:
            start_thread(self._run, "procpool-map-feeder")
        except BaseException:
            self._dispatcher.stream_closed()
            raise

    def _run(self) -> None:
        sizer = self._submit.sizer
        items, start = self._items, 0
        try:
            while start < len(items) and not self._stopped:
                self._credit.acquire()
                if self._stopped:
                    break
                batch = items[start : start + sizer.next_size()]
                start += len(batch)
                future = self._submit(batch, withdrawn=lambda: self._stopped)
                future.add_done_callback(lambda _: self._credit.release())
                with self._condition:
                    self._futures.append(future)
                    self._condition.notify_all()
        finally:
            with self._condition:
                self.dropped_items = start < len(items)
                self._finished = True
                self._condition.notify_all()
            self._items = []
            self._dispatcher.stream_closed()

    def next_future(self, timeout: float | None) -> ProcessFuture[Any] | None:
        """The next batch's future, in order; None once all were handed out."""
        with self._condition:
            if not self._condition.wait_for(lambda: self._futures or self._finished, timeout):
                raise FuturesTimeoutError()
            return self._futures.popleft() if self._futures else None

    def stop(self) -> None:
        """Submit nothing more (the results iterator was closed, or the executor cancels)."""
        self._stopped = True
        self._credit.release()  # the thread may be waiting for credit

    def take_rest(self) -> list[ProcessFuture[Any]]:
        """The futures submitted but not yet handed out."""
        with self._condition:
            rest, self._futures = list(self._futures), collections.deque()
        return rest


def _fed_map_results(feeder: _MapFeeder, end_time: float | None) -> Iterator[Any]:
    """The iterator an eager ``map`` returns: results in order, cancelling what is left when
    closed early (which here also stops the running ones)."""
    try:
        while True:
            timeout = None if end_time is None else max(0.0, end_time - time.monotonic())
            future = feeder.next_future(timeout)
            if future is None:
                if feeder.dropped_items:  # a shutdown cancelled what was not yet submitted
                    raise CancelledError()
                return
            outcomes = _wait_for_batch(future, end_time)
            del future  # hold no reference to a result the caller has let go of (gh-14406)
            yield from _unpack(outcomes)
    finally:
        feeder.stop()
        for future in feeder.take_rest():
            future.cancel()


def _executor_traceback(error: BaseException) -> BaseException:
    """Give a task's exception the remote-traceback class the stdlib executor uses.

    The engine attaches the Pool's (multiprocessing.pool.RemoteTraceback); code written for
    concurrent.futures looks for concurrent.futures.process._RemoteTraceback.
    """
    cause: Any = error.__cause__
    if type(cause) is PoolRemoteTraceback:
        error.__cause__ = _RemoteTraceback(cause.tb)
    return error


def _map_results(futures: collections.deque[Future[Any]],
                 more_batches: Iterator[list[Any]] | None,
                 executor: weakref.ref[ProcessPoolExecutor],
                 submit: _BatchSubmitter | None,
                 end_time: float | None) -> Iterator[Any]:
    """The iterator ``map`` returns: results in order, topping up the buffer as it goes
    (the shape of CPython 3.14's Executor.map), cancelling what is left when closed early."""
    input_error: Exception | None = None
    try:
        while futures:
            if (more_batches is not None and input_error is None and submit is not None
                    and executor() is not None):
                try:
                    batch = next(more_batches, None)
                except Exception as exc:  # the input raised: first deliver what was read
                    input_error, batch = exc, None
                if batch is not None:
                    futures.append(submit(batch))
            future = futures.popleft()
            outcomes = _wait_for_batch(future, end_time)
            if submit is not None:
                submit.callbacks_ran(future)
            del future  # hold no reference to a result the caller has let go of (gh-14406)
            yield from _unpack(outcomes)
        if input_error is not None:
            raise input_error
    finally:
        for future in futures:
            future.cancel()


def _wait_for_batch(future: Future[Any], end_time: float | None,
                    ) -> tuple[list[Any], Mapping[int, BaseException]]:
    """One batch's outcomes, waited for until the map's deadline. If the wait fails (the
    deadline passed, Ctrl-C), nobody will read them: the batch is cancelled, as in the stdlib."""
    timeout = None if end_time is None else end_time - time.monotonic()
    try:
        return future.result(timeout)  # type: ignore[no-any-return]
    except BaseException:
        future.cancel()
        raise


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


def _batched(iterable: Iterable[Any], sizer: ChunkSizer) -> Iterator[list[Any]]:
    """Batches of the sizes ``sizer`` gives. If the input raises, the items read before it
    still come out as a batch, then the exception."""
    iterator = iter(iterable)
    while True:
        batch, error = read_batch(iterator, sizer.next_size())
        if batch:
            yield batch
        if error is not None:
            raise error
        if not batch:
            return


def _check_chunksize(chunksize: object) -> None:
    if chunksize is not None and (not isinstance(chunksize, int) or chunksize < 1):
        raise ValueError("chunksize must be >= 1.")


def _check_buffersize(buffersize: object) -> None:
    if buffersize is not None and (not isinstance(buffersize, int) or buffersize < 1):
        raise ValueError("buffersize must be None or > 0")
