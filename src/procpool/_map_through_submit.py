"""``executor.map`` when ``submit`` was overridden: one ``submit`` per chunk, as the stdlib does.

A subclass or an instance that replaces ``submit`` (tqdm's ``process_map`` wraps it to count
the work) relies on ``Executor.map`` calling it for all of the map's work. This module is that
path: the shape of CPython 3.14's ``Executor.map`` (every chunk submitted at once, or
``buffersize`` ahead of the reader, the iterator topping up as it goes), over futures, since
futures are what ``submit`` returns. Every other map runs on the stream engine (_streams.py).

Owns nothing but this path; it knows the executor only through ``submit`` and the per-call
options it hands to it.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future

from ._options import TaskPolicy
from ._runtime_typing import TYPE_CHECKING
from ._streams import popping, read_batch

if TYPE_CHECKING:
    from typing import Any

    from ._executor import ProcessPoolExecutor

CALLBACK_WAIT = 1.0  # seconds the map waits for a chunk's done-callbacks before delivering it


def map_through_submit(executor: ProcessPoolExecutor, fn: Callable[..., Any],
                       iterables: tuple[Iterable[Any], ...], chunksize: int | None,
                       buffersize: int | None, end_time: float | None,
                       policy: TaskPolicy) -> Iterator[Any]:
    """One ``executor.submit`` per chunk of ``chunksize`` items (default 1), all at once or
    ``buffersize`` ahead of the reader; a chunk fails as a whole, at its first failing item.
    The map's per-call options reach ``submit`` through the executor's ``_map_call``."""
    submit = _SubmitThrough(executor, fn, policy)
    batches = _batched(zip(*iterables, strict=False), chunksize or 1)
    futures = collections.deque(
        submit(batch) for batch in (itertools.islice(batches, buffersize)
                                    if buffersize else batches))
    return _results(futures, batches if buffersize else None, weakref.ref(executor), submit,
                    end_time)


class _SubmitThrough:
    """Submits each chunk as one call of ``_call_each``, whose future's result is the
    chunk's values, through the executor's own (overridden) ``submit``."""

    def __init__(self, executor: ProcessPoolExecutor, fn: Callable[..., Any],
                 policy: TaskPolicy) -> None:
        self._executor = executor
        self._fn = fn
        self._policy = policy
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


def _call_each(fn: Callable[..., Any], batch: list[tuple[Any, ...]]) -> list[Any]:
    """In the worker: one chunk of a map that went through ``submit``."""
    return [fn(*arguments) for arguments in batch]


def _results(futures: collections.deque[Future[Any]], more_batches: Iterator[list[Any]] | None,
             executor: weakref.ref[ProcessPoolExecutor], submit: _SubmitThrough,
             end_time: float | None) -> Iterator[Any]:
    """Results in order, topping up the buffer as it goes (while the executor lives, as in
    the stdlib), cancelling what is left when closed early."""
    input_error: Exception | None = None
    try:
        while futures:
            if more_batches is not None and input_error is None and executor() is not None:
                try:
                    batch = next(more_batches, None)
                except Exception as exc:  # the input raised: first deliver what was read
                    input_error, batch = exc, None
                if batch is not None:
                    futures.append(submit(batch))
            future = futures.popleft()
            values = _wait_for(future, end_time)
            submit.callbacks_ran(future)
            del future  # hold no reference to a result the caller has let go of (gh-14406)
            yield from popping(values)
        if input_error is not None:
            raise input_error
    finally:
        for future in futures:
            future.cancel()


def _wait_for(future: Future[Any], end_time: float | None) -> list[Any]:
    """One chunk's values, waited for until the map's deadline. If the wait fails (the
    deadline passed, Ctrl-C), nobody will read them: the chunk is cancelled, as in the stdlib."""
    timeout = None if end_time is None else end_time - time.monotonic()
    try:
        return future.result(timeout)  # type: ignore[no-any-return]
    except BaseException:
        future.cancel()
        raise


def _batched(iterable: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Batches of ``size``. If the input raises, the items read before it still come out as
    a batch, then the exception."""
    iterator = iter(iterable)
    while True:
        batch, error = read_batch(iterator, size)
        if batch:
            yield batch
        if error is not None:
            raise error
        if not batch:
            return

