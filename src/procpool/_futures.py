"""The executor face's futures: ``ProcessFuture`` and the sink that settles one.

Owns what a ``concurrent.futures.Future`` of procpool adds to the stdlib's: ``cancel()`` of a
running call (its worker is killed), Ctrl-C while waiting stopping the executor's work, and
done-callbacks handed to the pool's callback thread when the dispatcher settles the future.
Knows nothing of maps or streams (``_streams.py``) nor of the executor's lifecycle.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures._base import (
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    RUNNING,
    InvalidStateError,
)

from . import _threads as threads
from ._runtime_typing import TYPE_CHECKING, TypeVar
from ._task import Chunk, OneCallSink

if TYPE_CHECKING:
    from typing import Any

T = TypeVar("T")


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
        # With max_queued: takes its chunk out of the queue, and frees its place, when it is
        # cancelled before it starts.
        self._cancel_queued: Callable[[], None] | None = None
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
            return super().result(self._wait_until_done(timeout))
        except KeyboardInterrupt:
            self._interrupted()
            raise

    def exception(self, timeout: float | None = None) -> BaseException | None:
        try:
            return super().exception(self._wait_until_done(timeout))
        except KeyboardInterrupt:
            self._interrupted()
            raise

    def _wait_until_done(self, timeout: float | None) -> float | None:
        """Wait (in slices on the main thread: _threads.wait_in_slices) until the future is
        done or ``timeout`` has passed; what is left of ``timeout`` for the stdlib's own wait,
        which then raises its TimeoutError or answers at once."""
        if self.done():
            return timeout
        threads.wait_in_slices(self._wait_for_done, timeout)
        return 0 if timeout is not None else None

    def _wait_for_done(self, timeout: float | None) -> bool:
        with self._condition:
            if self._state not in _DONE:
                self._condition.wait(timeout)
            return self._state in _DONE

    def _interrupted(self) -> None:
        handler = self._on_interrupt() if self._on_interrupt is not None else None
        if handler is not None:
            handler()

    def cancel(self) -> bool:
        with self._condition:
            if self._state != RUNNING:
                cancelled = super().cancel()
                if cancelled:
                    if self._state == CANCELLED:
                        # wait() and as_completed() count a cancellation as done only once it
                        # is notified, which the stdlib's executor does as it reaches the call
                        # in its queue. The pool may never reach it (with max_queued it leaves
                        # the queue at once; a shutdown drops it): they would wait for ever.
                        self.set_running_or_notify_cancel()
                    self._cancel_running = None  # let go of the chunk (and its segments)
                    cancel_queued, self._cancel_queued = self._cancel_queued, None
                    if cancel_queued is not None:
                        cancel_queued()
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


_DONE = (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED)


def _only_schedules(callback: Callable[..., object]) -> bool:
    """Whether a done-callback is asyncio's bridge (``asyncio.wrap_future``, which
    ``executor.run`` and ``amap`` use): it only hands the outcome to its event loop with
    ``call_soon_threadsafe`` and never blocks, so it may run where the future is settled,
    saving a thread hop per awaited call."""
    return (getattr(callback, "__module__", None) == "asyncio.futures"
            and getattr(callback, "__qualname__", None) == "_chain_future.<locals>._call_set_state")


class FutureSink(OneCallSink):
    """Connects one call's chunk to its future: the call's outcome is the future's.

    Every future is one call (``submit``, and each chunk of a map that goes through an
    overridden ``submit``): its chunk holds one item, so it is answered whole, never in parts.
    """

    def __init__(self, future: ProcessFuture[Any]) -> None:
        self.future = future

    def chunk_starting(self, chunk: Chunk) -> bool:
        future = self.future
        # Under the future's lock: a cancel() in another thread comes before the look or
        # after the step, never between (it would find the future running, or leave it
        # cancelled and notified, which set_running_or_notify_cancel() refuses with a
        # RuntimeError that broke the pool: the soak saw it).
        with future._condition:
            state = future._state
            if state == RUNNING:
                return True  # a retry
            if state in (CANCELLED_AND_NOTIFIED, FINISHED):
                return False
            return future.set_running_or_notify_cancel()  # PENDING, or CANCELLED: notify

    def _settle(self, success: bool, value: Any) -> None:
        # Here, on the dispatcher thread, so that waiters wake at once; the done-callbacks go
        # to the callback thread (ProcessFuture._invoke_callbacks). Settling there too would
        # deadlock a callback waiting for a future that has callbacks of its own.
        future = self.future
        future._cancel_running = None  # nothing left to stop; let go of the chunk
        with future._condition:  # the look and the step as one, as in chunk_starting
            if future._state == CANCELLED:
                # Cancelled without the notice ProcessFuture.cancel() gives (the base class's
                # cancel() called on it directly): give it, since as_completed() and wait()
                # count only *notified* cancellations as done.
                future.set_running_or_notify_cancel()
                return
        try:
            if success:
                future.set_result(value)
            else:
                future.set_exception(executor_traceback(value))
        except InvalidStateError:
            pass  # cancelled meanwhile: nobody wants the outcome


def executor_traceback(error: BaseException) -> BaseException:
    """Give a task's exception the remote-traceback class the stdlib executor uses.

    The engine attaches the Pool's (multiprocessing.pool.RemoteTraceback); code written for
    concurrent.futures looks for concurrent.futures.process._RemoteTraceback. Both modules are
    imported here, not with the face (_log.py says why); the engine has imported them already.
    """
    from concurrent.futures.process import _RemoteTraceback
    from multiprocessing.pool import RemoteTraceback as PoolRemoteTraceback  # type: ignore[attr-defined]

    cause: Any = error.__cause__
    if type(cause) is PoolRemoteTraceback:
        error.__cause__ = _RemoteTraceback(cause.tb)
    return error
