"""What every face shares: one dispatcher, and the turning of calls into chunks.

Owns the options every face accepts (validated into a TaskPolicy and a WorkerPolicy), the
dispatcher built from them, the cache of pickled task functions, and the pickling of arguments
into chunks in the caller's thread. The Pool and the executor each own one Engine and add only
their own API on top; neither talks to the scheduler or the workers.
"""

from __future__ import annotations

import copy
import functools
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from . import _shared_memory as shared_memory
from ._backends import create_backend
from ._codec import add_note, dumps, dumps_callable, short_repr
from ._dispatcher import Dispatcher
from ._errors import PoolBroken
from ._messages import CallMode
from ._options import (
    TaskPolicy,
    WorkerPolicy,
    check_count,
    check_positive_int,
    check_retry_on,
    check_seconds,
)
from ._task import Chunk, ChunkSink, TaskFunction, next_id

if TYPE_CHECKING:
    from ._streams import Feeder

# How many by-reference task functions keep their pickle cached across calls.
FUNCTION_CACHE_SIZE = 256

PICKLING_ADVICE = (
    "Pass picklable objects (module-level functions, plain data), or create the resource "
    "inside the task or the pool initializer."
)


class Engine:
    """A running dispatcher plus what a face needs to feed it."""

    def __init__(
        self,
        *,
        processes: int | None,
        initializer: Callable[..., object] | None,
        initargs: Iterable[Any],
        context: Any,
        backend: Any,
        max_tasks: int | None,
        task_timeout: Any,
        retries: Any,
        retry_on: Any,
        max_memory_per_child: Any,
        initializer_timeout: Any,
        finish_at_exit: bool = False,
        exit_fails_task: bool = False,
    ) -> None:
        self.policy = TaskPolicy(
            timeout=check_seconds("task_timeout", task_timeout),
            retries=check_count("retries", retries),
            retry_on=check_retry_on(retry_on),
            exit_fails_task=exit_fails_task,
        )
        self._lock = threading.Lock()
        self._functions: OrderedDict[Any, TaskFunction] = OrderedDict()
        built_backend = create_backend(backend, context)
        worker_policy = WorkerPolicy(
            max_tasks=max_tasks,
            max_memory=check_positive_int("max_memory_per_child", max_memory_per_child),
            initializer_timeout=check_seconds("initializer_timeout", initializer_timeout),
            has_initializer=initializer is not None,
            imports_main=built_backend.imports_main,
        )
        # None: as many as the backend suggests (this machine's CPUs, a Dask cluster's threads).
        self.processes = built_backend.default_processes() if processes is None else processes
        self.dispatcher = Dispatcher(
            built_backend, self.processes, initializer, initargs, worker_policy,
            finish_at_exit=finish_at_exit,
        )

    def broken_error(self) -> BaseException | None:
        """A fresh copy of the error that broke the pool, if it is broken.

        Fresh, because re-raising one stored instance grows its traceback each time.
        """
        broken = self.dispatcher.broken
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
                func, inherits_memory=self.dispatcher.inherits_memory,
                imports_main=self.dispatcher.imports_main,
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

    def submit_one(self, chunk: Chunk) -> None:
        self.dispatcher.submit([chunk])

    def feed_in_thread(self, feeder: Feeder) -> None:
        """Run a stream's feeder on a thread of its own. Until it has read its input to the
        end (or was stopped), the pool's close() waits for it: its items are accepted work."""
        self.dispatcher.stream_opened()
        try:
            start_thread(self._feed, "procpool-feeder", feeder)
        except BaseException:
            self.dispatcher.stream_closed()
            raise

    def _feed(self, feeder: Feeder) -> None:
        try:
            feeder.run()
        finally:
            self.dispatcher.stream_closed()

    def make_chunk(self, function: TaskFunction, items: list[Any], mode: CallMode,
                   first_index: int, sink: ChunkSink, name: str,
                   policy: TaskPolicy) -> Chunk | None:
        """Pickle the items into a chunk; if they cannot be pickled, fail the sink and say so.

        Large buffers go to shared memory when the workers can map it, except for chunks that
        report each item: a death or retry splits those, and the parent must still hold their
        items then (the worker removes a segment once it has mapped it).
        """
        chunk_id = next_id()
        segments = None
        prefix = self.dispatcher.segment_prefix
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
                      policy, segments=segments)
        if error is not None:
            sink.chunk_failed(chunk, error)
            return None
        return chunk


class WorkerView:
    """What stdlib-era code reads from a pool's private worker list: a pid."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid

    def is_alive(self) -> bool:
        return self.pid is not None


def _argument_error(items: list[Any], first_index: int, exc: Exception) -> BaseException:
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


def start_thread(target: Callable[..., object], name: str, *args: Any) -> None:
    """Start one of procpool's own daemon threads. Where no thread can be started (the
    interpreter is shutting down), the call that needed it fails with PoolBroken (a
    BrokenProcessPool) rather than waiting for work nobody will do."""
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    try:
        thread.start()
    except RuntimeError as exc:
        raise PoolBroken(f"procpool could not start its {name} thread: {exc}") from exc


def name_of(func: Callable[..., Any]) -> str:
    """The name error messages and progress bars give a task's function."""
    while isinstance(func, functools.partial):
        func = func.func
    return getattr(func, "__qualname__", None) or type(func).__qualname__
