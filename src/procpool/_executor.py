"""``procpool.ProcessPoolExecutor``: the concurrent.futures API, and asyncio, on the same engine.

Owns the executor's API and lifecycle: ``submit`` (one call, one ``ProcessFuture``: see
_futures.py), ``map`` with the 3.14 signature on every Python (eager, or lazy with
``buffersize``), shutdown, ``terminate_workers``/``kill_workers``, and the asyncio spellings
``run`` and ``amap``. ``map`` and ``amap`` run on the stream engine (_streams.py), as the Pool's
imap does, and ``map`` returns _executor_map.py's iterator; a ``map`` through an overridden
``submit`` is _map_through_submit.py's. Those modules, and the others the calls are made of,
are imported at a program's first call, not with this module (_lazy.py). Scheduling,
workers and failures belong to the dispatcher, exactly as for the Pool face.
"""

from __future__ import annotations

import functools
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import Executor, Future

# Stand-ins for these modules, each imported at its first use (_lazy.py).
from ._lazy import (
    _executor_map,
    _futures,
    _map_through_submit,
    _progress,
    _queue_bound,
    _streams,
    _task,
    _threads,
)
from ._messages import CallMode
from ._options import (
    DEFAULT_RETRY_ON,
    check_executor_arguments,
    check_executor_buffersize,
    check_executor_chunksize,
    check_per_call_options,
    pool_options,
)
from ._runtime_typing import TYPE_CHECKING, ParamSpec, TypeVar
from ._worker_identity import WorkerView

if TYPE_CHECKING:
    from typing import Any

    from typing_extensions import Unpack  # typing's own from 3.11

    from ._engine import Engine
    from ._futures import ProcessFuture
    from ._options import CallOptions, TaskPolicy, WorkerEnv
    from ._stats import PoolStats
    from ._streams import Feeder, RangeInput, StreamJob
    from ._task import Chunk

T = TypeVar("T")
P = ParamSpec("P")  # a submitted call's parameters, which its arguments must match


class ProcessPoolExecutor(Executor):
    """A ``concurrent.futures.ProcessPoolExecutor`` whose workers can die without breaking it.

    Same constructor and methods as the stdlib's, with ``map(..., buffersize=)`` and
    ``terminate_workers()`` / ``kill_workers()`` (3.14) on every Python. A worker that dies fails
    only the future it was running, with :class:`procpool.WorkerDied` (a ``BrokenProcessPool``);
    the executor replaces the worker and stays usable. ``cancel()`` stops running tasks too.
    The robustness options are the Pool's: ``task_timeout``, ``retries``, ``retry_on``,
    ``max_memory_per_child``, ``initializer_timeout``, ``backend``; so are the worker options
    ``worker_env``, ``forward_logs`` and ``forward_output`` (docs/workers.md). With
    ``max_queued``, ``submit`` (and ``await run(...)``, without blocking the event loop) waits
    while that many calls wait to start.
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
        worker_env: WorkerEnv | None = None,
        forward_logs: bool | None = None,
        forward_output: bool = False,
        max_queued: int | None = None,
    ) -> None:
        self._shutdown = True  # until construction succeeds
        mp_context = check_executor_arguments(max_workers, mp_context, max_tasks_per_child,
                                              initializer)
        self._mp_context = mp_context
        self._shutdown_lock = threading.Lock()
        # The engine is imported with a program's first pool, not with this module: every
        # spawned worker, and a forkserver, imports the program's main module, and with it the
        # faces, which must stay light (docs/architecture.md, "What importing a face costs").
        from ._engine import Engine

        self._engine = Engine(pool_options(
            processes=max_workers, initializer=initializer, initargs=initargs,
            context=mp_context, backend=backend, max_tasks=max_tasks_per_child,
            task_timeout=task_timeout, retries=retries, retry_on=retry_on,
            max_memory_per_child=max_memory_per_child, initializer_timeout=initializer_timeout,
            worker_env=worker_env, forward_logs=forward_logs, forward_output=forward_output,
            max_queued=max_queued,
            executor_semantics=True,
        ))
        self._max_workers = self._engine.processes
        # Futures submitted and still referenced (weakly: a dropped one goes), so that
        # shutdown(cancel_futures=True) can find the pending ones.
        self._pending: weakref.WeakSet[Future[Any]] = weakref.WeakSet()
        # The feeders of maps still being read, so a shutdown that cancels can stop them.
        self._feeders: weakref.WeakSet[Feeder] = weakref.WeakSet()
        self._cancelling = False  # a shutdown cancels what has not started
        # What a future's wait calls on Ctrl-C: one weak reference for all of them (one made
        # per submit was about a tenth of the parent's CPU in a loop of submits).
        self._on_interrupt = weakref.WeakMethod(self._interrupted)
        self._shutdown = False
        # A map's per-call options, for the submit calls it makes through an overridden
        # submit (which cannot pass them on): set around each such call, in its thread.
        self._map_call = threading.local()

    # ---- concurrent.futures API --------------------------------------------------------------

    def submit(self, fn: Callable[P, T], /, *args: P.args,
               **kwargs: P.kwargs) -> ProcessFuture[T]:
        """Schedule ``fn(*args, **kwargs)``; every keyword goes to ``fn``."""
        policy = getattr(self._map_call, "policy", None) or self._engine.policy
        return self._submit(fn, (args, kwargs), policy)

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
        check_executor_chunksize(chunksize)
        check_executor_buffersize(buffersize)
        check_per_call_options("map", options)
        with self._shutdown_lock:
            self._check_accepting()  # as the stdlib's map: at the call, not at the first item
        policy = self._engine.policy.override(**options)
        lengths = [_progress.length_of(iterable) for iterable in iterables]
        known = [length for length in lengths if length is not None]
        total = min(known, default=0) if len(known) == len(lengths) else None
        tracker = _progress.make_tracker(progress, total, _task.name_of(fn))
        end_time = None if timeout is None else time.monotonic() + timeout
        if self._submit_overridden():
            through = _map_through_submit.map_through_submit(self, fn, iterables, chunksize,
                                                             buffersize, end_time, policy)
            return through if tracker is None else tracker.count(through)
        if buffersize is None:
            # The stdlib reads the input now and runs it all, read or not. A feeder thread
            # submits it as the workers go, so that chunk sizes follow the pace.
            job, feeder = self._open_stream(fn, iterables, policy, chunksize, None,
                                            ordered=True, eager=True)
            if feeder is not None:
                self._engine.feed_in_thread(feeder)
        else:
            job, feeder = self._open_stream(fn, iterables, policy, chunksize, buffersize,
                                            ordered=True, eager=False)
            if feeder is not None:
                try:
                    # As the stdlib's: the first buffersize batches are read by map() itself.
                    feeder.top_up(raise_input_error=True)
                except BaseException:
                    job.abandon()
                    raise
        results = _executor_map.stream_results(job, end_time)
        return results if tracker is None else tracker.count(results)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting work; with ``cancel_futures``, drop what has not started; with
        ``wait``, return once every worker has exited."""
        with self._shutdown_lock:
            self._shutdown = True
            if cancel_futures:
                self._cancelling = True
                self._stop_feeders()
        if cancel_futures:
            # What was submitted before this call reaches the workers first (those already
            # free take their share, as the stdlib's call queue does); only the rest waits,
            # and is cancelled.
            self._engine.sync()
            for future in list(self._pending):
                if not future.running():
                    future.cancel()
            for feeder in list(self._feeders):
                feeder.job.cancel_waiting()
        self._engine.close()
        if wait:
            self._engine.join()
            self._engine.callbacks.stop(wait=True)

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
            self._cancelling = True
            self._stop_feeders()
        for future in list(self._pending):
            if not future.running():
                future.cancel()
        self._engine.terminate(force=force)

    # ---- asyncio -----------------------------------------------------------------------------

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``await executor.run(fn, *args, **kwargs)``: cancelling the awaiting task cancels
        the call, and kills its worker if it is running. No thread per call."""
        bound = self._engine.queue_bound
        # With max_queued, wait for room without blocking the event loop; the submit below
        # takes the place waited for.
        if bound is not None and not await bound.reserve_async():
            self._check_accepting()  # closed while it waited: the usual error
        try:
            future = self.submit(fn, *args, **kwargs)
        finally:
            if bound is not None:
                bound.forget_reserved()  # if submit raised before it took the place
        import asyncio  # imported already where a coroutine runs: an executor never imports it

        try:
            awaitable = asyncio.wrap_future(future)
        except BaseException:
            # A KeyboardInterrupt landing here would leave a call nobody can cancel, and
            # shutdown(wait=True) waiting for it.
            future.cancel()
            raise
        return await _threads.await_in_slices(awaitable)

    async def amap(self, fn: Callable[..., T], *iterables: Iterable[Any],
                   chunksize: int | None = None,
                   buffersize: int | None = None, ordered: bool = True,
                   **options: Unpack[CallOptions]) -> AsyncIterator[T]:
        """``async for result in executor.amap(fn, items)``: results in order (or as they
        finish, with ``ordered=False``), at most ``buffersize`` chunks in flight (default 4
        per worker), input read lazily. Leaving the loop early, or cancelling the consuming
        task, cancels what is still running."""
        check_executor_chunksize(chunksize)
        check_executor_buffersize(buffersize)
        check_per_call_options("amap", options)
        with self._shutdown_lock:
            self._check_accepting()
        job, feeder = self._open_stream(fn, iterables,
                                        self._engine.policy.override(**options), chunksize,
                                        buffersize, ordered=ordered, eager=False)
        try:
            if feeder is not None:
                feeder.top_up()  # here, the input's exception surfaces at its position
            while True:
                try:
                    value = await _streams.next_async(job)
                except StopAsyncIteration:
                    return
                yield value
        finally:
            job.abandon()

    # ---- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> ProcessPoolExecutor:
        return self

    def __del__(self) -> None:
        # Like the stdlib's: an executor dropped without shutdown() still finishes what was
        # submitted, then its workers and dispatcher thread exit.
        if not getattr(self, "_shutdown", True):
            self._engine.close()

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown(wait=True)

    def stats(self) -> PoolStats:
        """A frozen snapshot of the pool behind this executor (see :class:`procpool.PoolStats`)."""
        return self._engine.stats()

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
        return self._engine.broken

    @property
    def _processes(self) -> dict[int | None, WorkerView]:
        # Some stdlib-era code reads the worker pids from this private mapping.
        return {pid: WorkerView(pid) for pid in self._engine.worker_pids()}

    # ---- helpers -----------------------------------------------------------------------------

    def _submit_overridden(self) -> bool:
        """Whether a subclass or the instance replaced ``submit`` (tqdm's ``process_map``
        wraps it to count the work): ``map`` must then go through it, as the stdlib's does."""
        return ("submit" in vars(self)
                or getattr(type(self), "submit", None) is not ProcessPoolExecutor.submit)

    def _check_accepting(self) -> None:
        # The stdlib executor's own flag, set by its exit hook (threading's, which runs before
        # atexit handlers): a submit from then on is refused, as there. Its module is the
        # engine's import (_errors.py), not the face's.
        from concurrent.futures import process as stdlib_process

        if stdlib_process._global_shutdown:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")
        error = self._engine.broken_error()
        if error is not None:
            raise error
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def _open_stream(self, fn: Callable[..., Any], iterables: tuple[Iterable[Any], ...],
                     policy: TaskPolicy, chunksize: int | None, buffersize: int | None, *,
                     ordered: bool, eager: bool) -> tuple[StreamJob, Feeder | None]:
        """A stream of ``fn`` over the zipped ``iterables`` for ``map`` or ``amap``, and its
        feeder (None when ``fn`` cannot be pickled: the stream then holds that error, raised
        when it is read, as the stdlib's). A single range is sent as bounds.

        ``eager``: credit comes back as chunks are answered, not as results are read (every
        item runs, read or not). Either way, a stream abandoned (closed, timed out, left)
        cancels its chunks, and so kills the running ones: nobody can read them any more.
        """
        arguments: Iterator[Any] | RangeInput
        if len(iterables) == 1 and type(iterables[0]) is range:
            arguments, mode = _streams.RangeInput(iterables[0]), CallMode.ONE_ARG
        else:
            # fn(item) is fn(*(item,)): the items of one iterable go as they are, without a
            # tuple each, which the parent would make and pickle and the worker unpickle.
            arguments, mode = ((iter(iterables[0]), CallMode.ONE_ARG) if len(iterables) == 1
                               else (zip(*iterables, strict=False), CallMode.STAR_ARGS))
            if eager:
                arguments = iter(list(arguments))  # read now: its errors raise in map()
        chunksize, bound = _streams.stream_sizes(chunksize, buffersize, self._max_workers)
        job = _streams.StreamJob(ordered, _streams.Window(bound), self._interrupted,
                                 credit_on_arrival=eager)

        def accepting() -> None:
            if not eager and self._shutdown:  # a lazy map reading on, as the stdlib's submits
                raise RuntimeError("cannot schedule new futures after shutdown")

        feeder = self._engine.stream_feeder(fn, arguments, mode, policy,
                                            chunksize, job, before_chunk=accepting,
                                            cancel_when_abandoned=True)
        if feeder is None:
            return job, None
        if not eager:
            job.refill = feeder.top_up
        with self._shutdown_lock:
            self._feeders.add(feeder)
            if self._cancelling:  # a shutdown that cancels came between map() and here
                feeder.stop()
                job.cancel_waiting()
        return job, feeder

    def _stop_feeders(self) -> None:
        for feeder in list(self._feeders):
            feeder.stop()

    def _submit(self, fn: Callable[..., Any], call: tuple[tuple[Any, ...], dict[str, Any]],
                policy: TaskPolicy) -> ProcessFuture[Any]:
        """One call as one future."""
        # With max_queued, wait (outside the lock shutdown() takes) while that many calls
        # wait to start.
        ticket = self._engine.wait_for_queue_room(self._check_accepting)
        # Whatever interrupts the submission (a Ctrl-C while the arguments are pickled) must
        # not keep the place taken: the executor would take one call fewer for ever.
        with self._shutdown_lock, _queue_bound.ticket_given_back_on_error(ticket):
            self._check_accepting()
            future: ProcessFuture[Any] = _futures.ProcessFuture()
            sink = _futures.FutureSink(future)
            chunk = self._engine.single_call(fn, call, sink, future.set_exception, policy,
                                             ticket)
            if chunk is None:
                return future
            future._cancel_running = functools.partial(self._engine.cancel, chunk)
            if ticket is not None:
                # Cancelled while it waits: its place is free at once, and its chunk (with
                # its arguments) leaves the queue instead of waiting for a worker to skip it.
                future._cancel_queued = functools.partial(_leave_the_queue, self._engine,
                                                          chunk)
            future._on_interrupt = self._on_interrupt
            future._defer_callbacks = self._engine.defer_callbacks
            self._pending.add(future)  # weakly: a done future the caller dropped goes
            self._engine.submit_one(chunk)
            return future


def _leave_the_queue(engine: Engine, chunk: Chunk) -> None:
    chunk.left_queue()
    engine.cancel(chunk)
