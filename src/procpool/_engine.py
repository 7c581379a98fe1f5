"""What every face shares: one running pool, and the turning of calls into chunks.

Owns the dispatcher built from a face's ``PoolOptions`` and is the faces' only door to it
(submit, cancel, close, terminate, stats, ...), the cache of pickled task functions, the
pickling of arguments into chunks in the caller's thread, and the thread that feeds a stream
(_streams.py). The Pool and the executor each own one Engine and add only their own API on
top; neither talks to the dispatcher, the scheduler or the workers.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence

from . import _shared_memory as shared_memory
from . import _threads as threads
from ._backends import backend_name, create_backend
from ._codec import add_note, dumps, dumps_callable, short_repr
from ._dispatcher import Dispatcher
from ._errors import PoolBroken
from ._messages import CallMode
from ._options import PoolOptions, TaskPolicy
from ._pace import ChunkSizer
from ._queue_bound import QueueBound, QueueTicket, ticket_given_back_on_error
from ._runtime_typing import TYPE_CHECKING
from ._streams import Feeder, RangeInput, StreamJob
from ._task import Chunk, ChunkSink, TaskFunction, name_of, next_id
from ._worker_setup import check_supported

if TYPE_CHECKING:
    from typing import Any

    from ._stats import PoolStats

# join() and terminate() wait for the last forwarded records to be handled on the callback
# thread while it handles one at least this often: a callback that never returns must not
# hold them up.
FORWARDED_STALL = 0.5

# How many by-reference task functions keep their pickle cached across calls.
FUNCTION_CACHE_SIZE = 256

PICKLING_ADVICE = (
    "Pass picklable objects (module-level functions, plain data), or create the resource "
    "inside the task or the pool initializer."
)


class Engine:
    """A running dispatcher plus what a face needs to feed it."""

    def __init__(self, options: PoolOptions) -> None:
        self.policy = options.task_policy  # the pool's; each call may override it
        self._lock = threading.Lock()
        self._functions: OrderedDict[Any, TaskFunction] = OrderedDict()
        check_supported(options.worker_setup, backend_name(options.backend))
        backend = create_backend(options.backend, options.context)
        # None: as many as the backend suggests (this machine's CPUs, a Dask cluster's threads).
        self.processes = (backend.default_processes() if options.processes is None
                          else options.processes)
        self._dispatcher = Dispatcher(
            backend, self.processes, options.initializer, options.initargs,
            options.worker_policy._replace(imports_main=backend.imports_main),
            worker_setup=options.worker_setup, finish_at_exit=options.finish_at_exit,
        )
        # User callbacks (Pool callbacks, executor done-callbacks) run on this pool's thread.
        self.callbacks = self._dispatcher.callbacks
        self.queue_bound = (None if options.max_queued is None
                            else QueueBound(options.max_queued))

    # ---- the faces' door to the dispatcher (any thread) -------------------------------------

    def submit(self, chunks: list[Chunk]) -> None:
        self._dispatcher.submit(chunks)

    def submit_one(self, chunk: Chunk) -> None:
        self._dispatcher.submit([chunk])

    def cancel(self, chunk: Chunk) -> None:
        """Drop ``chunk`` and every part of it if not started; kill the workers running them."""
        self._dispatcher.cancel(chunk)

    def close(self) -> None:
        """Finish what was submitted (and what open streams will submit), then wind down."""
        self._dispatcher.close()
        if self.queue_bound is not None:
            self.queue_bound.close()  # a caller waiting for room gets the face's usual error

    def terminate(self, *, force: bool = False, wait: bool = True) -> None:
        """Fail what is unfinished and end the workers (SIGTERM, then SIGKILL; at once with
        ``force``); with ``wait``, return once the pool has ended."""
        self._dispatcher.terminate(force=force)
        if self.queue_bound is not None:
            self.queue_bound.close()
        if wait:
            self.join()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the pool to end; without a ``timeout``, also for the workers' last
        forwarded log records and prints to be handled (while the callback thread moves on:
        a callback that never returns holds them up, and must not hold up the join)."""
        ended = self._dispatcher.join(timeout)
        if ended and timeout is None:
            self._dispatcher.forwarded.wait_handled(FORWARDED_STALL)
        return ended

    @property
    def finished(self) -> bool:
        """Whether the pool has ended (its dispatcher thread has shut down)."""
        return self._dispatcher.finished.is_set()

    def sync(self) -> None:
        """Return once everything submitted before this call has reached the dispatcher."""
        self._dispatcher.sync()

    def stats(self) -> PoolStats:
        return self._dispatcher.stats()

    def worker_pids(self) -> list[int | None]:
        return self._dispatcher.worker_pids()

    @property
    def broken(self) -> BaseException | None:
        return self._dispatcher.broken

    def defer_callbacks(self, job: Callable[[], None]) -> bool:
        return self._dispatcher.defer_callbacks(job)

    def broken_error(self) -> BaseException | None:
        """A fresh copy of the error that broke the pool, if it is broken.

        Fresh, because re-raising one stored instance grows its traceback each time.
        """
        broken = self._dispatcher.broken
        if broken is None:
            return None
        error = copy.copy(broken)
        error.__cause__ = broken.__cause__
        return error

    def task_function(self, func: Callable[..., Any],
                      on_error: Callable[[BaseException], None]) -> TaskFunction | None:
        """The pickled function, reused while it names the same importable object.

        If it cannot be pickled, ``on_error`` gets the pickler's own exception (the stdlib's
        type, with a note saying what to do) and None is returned.
        """
        try:
            with self._lock:
                cached = self._functions.get(func)
                if cached is not None:
                    self._functions.move_to_end(func)
                    return cached
        except TypeError:
            pass  # unhashable callable: pickle it every time
        try:
            payload, by_reference = dumps_callable(
                func, inherits_memory=self._dispatcher.inherits_memory,
                imports_main=self._dispatcher.imports_main,
            )
        except Exception as exc:
            add_note(exc, f"procpool: cannot send the function {short_repr(func)} to a worker "
                          f"process. {PICKLING_ADVICE}")
            on_error(exc)
            return None
        function = TaskFunction(next_id(), payload)
        if by_reference:
            with self._lock:
                self._functions[func] = function
                if len(self._functions) > FUNCTION_CACHE_SIZE:
                    self._functions.popitem(last=False)
        return function

    def submit_all(self, function: TaskFunction, items: Sequence[Any], mode: CallMode,
                   chunksize: int, sink: ChunkSink, name: str, policy: TaskPolicy) -> None:
        """Cut ``items`` into chunks of ``chunksize``, pickle and submit them all. Chunks are
        handed over as they are made, the first at once, then in doubling groups: the workers
        start while the rest is pickled, at a few posts per call. If an argument cannot be
        pickled, the sink has failed with that, and nothing more is submitted."""
        chunks: list[Chunk] = []
        submitted = 0
        for start in range(0, len(items), chunksize):
            chunk = self.make_chunk(function, items[start : start + chunksize], mode, start,
                                    sink, name, policy)
            if chunk is None:
                break
            chunks.append(chunk)
            if len(chunks) > submitted:
                self.submit(chunks)
                submitted += len(chunks)
                chunks = []
        if chunks:
            self.submit(chunks)

    def stream_feeder(self, fn: Callable[..., Any], items: Iterator[Any] | RangeInput,
                      mode: CallMode,
                      policy: TaskPolicy, chunksize: int | None, job: StreamJob, *,
                      before_chunk: Callable[[], object] | None = None,
                      cancel_when_abandoned: bool = False) -> Feeder | None:
        """The feeder of a stream of ``fn`` over ``items`` into ``job``; None if ``fn`` cannot
        be pickled (the stream then holds that error at its start, raised when it is read, as
        the stdlib's map does). ``before_chunk`` runs before each chunk is made (and may refuse
        it by raising). ``cancel_when_abandoned``: abandoning the stream cancels its chunks,
        and so kills the running ones (the executor's rule); otherwise they finish (the Pool's).
        """
        function = self.task_function(fn, lambda error: job.input_finished(0, error))
        if function is None:
            return None
        name = name_of(fn)

        def chunk_of(batch: Sequence[Any], first_index: int) -> Chunk | None:
            if before_chunk is not None:
                before_chunk()
            return self.make_chunk(function, batch, mode, first_index, job, name, policy)

        feeder = Feeder(job, items, ChunkSizer(function.pace, chunksize), chunk_of,
                        self.submit_one)
        if cancel_when_abandoned:
            def abandoned() -> None:
                feeder.stop()
                if feeder.first_chunk is not None:
                    self.cancel(feeder.first_chunk)  # every chunk of the stream

            job.on_abandon = abandoned
        return feeder

    def feed_in_thread(self, feeder: Feeder) -> None:
        """Run a stream's feeder on a thread of its own. Until it has read its input to the
        end (or was stopped), the pool's close() waits for it: its items are accepted work."""
        self._dispatcher.stream_opened()
        try:
            start_thread(self._feed, "procpool-feeder", feeder)
        except BaseException:
            self._dispatcher.stream_closed()
            raise

    def _feed(self, feeder: Feeder) -> None:
        try:
            feeder.run()
        finally:
            self._dispatcher.stream_closed()

    def wait_for_queue_room(self, check_accepting: Callable[[], None]) -> QueueTicket | None:
        """With max_queued: wait until fewer calls are queued, and take a place for the next
        single call. ``check_accepting`` raises the face's error if the pool was closed
        meanwhile (then no place is taken). None: no bound."""
        if self.queue_bound is None:
            return None
        ticket = self.queue_bound.reserve()
        with ticket_given_back_on_error(ticket):
            check_accepting()
        return ticket

    def single_call(self, fn: Callable[..., Any], call: tuple[tuple[Any, ...], dict[str, Any]],
                    sink: ChunkSink, on_error: Callable[[BaseException], None],
                    policy: TaskPolicy, ticket: QueueTicket | None) -> Chunk | None:
        """The chunk of one call ``fn(*args, **kwargs)`` (apply_async, submit), or None when
        ``fn`` (``on_error`` has the pickler's error) or its arguments (``sink`` has it)
        cannot be pickled."""
        function = self.task_function(fn, on_error)
        if function is None:
            if ticket is not None:
                ticket.give_back()
            return None
        return self.make_chunk(function, [call], CallMode.ARGS_KWARGS, 0, sink, name_of(fn),
                               policy, ticket)

    def make_chunk(self, function: TaskFunction, items: Sequence[Any], mode: CallMode,
                   first_index: int, sink: ChunkSink, name: str,
                   policy: TaskPolicy, ticket: QueueTicket | None = None) -> Chunk | None:
        """Pickle the items into a chunk; if they cannot be pickled, fail the sink and say so.

        Large buffers go to shared memory when the workers can map it, except for chunks that
        report each item: a death or retry splits those, and the parent must still hold their
        items then (the worker removes a segment once it has mapped it).
        """
        chunk_id = next_id()
        segments = None
        prefix = self._dispatcher.segment_prefix
        try:
            if prefix is not None and not policy.reports_each_item:
                namer = shared_memory.SegmentNames(f"{prefix}{chunk_id}-a")
                payload, names = shared_memory.dumps(items, namer)
                segments = shared_memory.SharedSegments(names, namer.nbytes) if names else None
            else:
                payload = dumps(items)
        except Exception as exc:
            payload = b""
            error: BaseException | None = _argument_error(items, first_index, exc)
        else:
            error = None
        chunk = Chunk(chunk_id, function, payload, mode, first_index, len(items), sink, name,
                      policy, segments=segments, ticket=ticket)
        if error is not None:
            chunk.left_queue()
            sink.chunk_failed(chunk, error)
            return None
        return chunk


def _argument_error(items: Sequence[Any], first_index: int, exc: Exception) -> BaseException:
    """The pickler's own exception (the type the stdlib raises), with a note naming the item."""
    for offset, item in enumerate(items):
        try:
            dumps(item)
        except Exception as item_exc:
            return add_note(item_exc, f"procpool: cannot send the arguments of item "
                                      f"{first_index + offset} ({short_repr(item)}) to a worker "
                                      f"process. {PICKLING_ADVICE}")
    return add_note(exc, f"procpool: cannot send the arguments to a worker process. "
                         f"{PICKLING_ADVICE}")


def kill_live_pools(timeout: float) -> None:
    """Kill every pool this process still runs, waiting up to ``timeout`` for each (for tools
    whose failing tests leave executors behind, which would hold their process at exit)."""
    from ._dispatcher import live_dispatchers

    for dispatcher in live_dispatchers():
        dispatcher.terminate(force=True)
        dispatcher.join(timeout)


def start_thread(target: Callable[..., object], name: str, *args: Any) -> None:
    """Start one of procpool's own short-lived daemon threads (a stream's feeder). Where no
    thread can be started (the interpreter is shutting down), the call that needed it fails
    with PoolBroken (a BrokenProcessPool) rather than waiting for work nobody will do.

    The thread waits at its end until this call has let go of its Thread object: a thread
    that ended first (a feeder of two items can, while the caller waits for the GIL) would
    be freed here, in the caller's thread, running threading's weakref callback; a Ctrl-C
    that lands in a weakref callback is swallowed by Python ("Exception ignored"), and the
    caller then waited for ever on work the Ctrl-C was meant to stop.
    """
    let_go = threading.Lock()
    let_go.acquire()

    def run() -> None:
        try:
            target(*args)
        finally:
            let_go.acquire()  # until the starter has dropped its reference (below)

    thread = threading.Thread(target=run, name=name, daemon=True)
    try:
        threads.start(thread)  # with SIGINT blocked (_threads.py)
    except RuntimeError as exc:
        raise PoolBroken(f"procpool could not start its {name} thread: {exc}") from exc
    finally:
        try:
            del thread
        finally:
            let_go.release()  # one call: a Ctrl-C lands before or after it, never inside
