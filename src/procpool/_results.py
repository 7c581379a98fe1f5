"""Result objects of the Pool face's single calls and eager maps.

Owns: ApplyResult / MapResult (the stdlib's AsyncResult API) and how a caller's wait reacts to
Ctrl-C. Chunk outcomes arrive from the dispatcher thread; user callbacks run on the pool's
callback thread (_callbacks.py); waiting happens in caller threads. The iterators of streaming
calls live with the stream engine (_streams.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from multiprocessing import TimeoutError

from . import _threads as threads
from ._log import logger
from ._runtime_typing import TYPE_CHECKING, Generic, TypeVar
from ._task import Chunk, OneCallSink

if TYPE_CHECKING:
    from typing import Any

    from ._callbacks import CallbackRunner
    from ._progress import ProgressTracker

T = TypeVar("T")
W = TypeVar("W")


def _call_user_callback(callback: Callable[[Any], object], argument: Any) -> None:
    try:
        callback(argument)
    except BaseException:  # even SystemExit: the callback thread serves every later result
        logger().exception("a result callback raised; the pool carries on")


def _wait_or_interrupt(wait: Callable[[], W], on_interrupt: Callable[[], None] | None) -> W:
    """Run a blocking wait; on Ctrl-C, stop the pool's work first, then let it propagate."""
    try:
        return wait()
    except KeyboardInterrupt:
        if on_interrupt is not None:
            on_interrupt()
        raise


class _AsyncResultBase(Generic[T]):
    """The stdlib's AsyncResult API: get, wait, ready, successful, and callbacks."""

    def __init__(
        self,
        callbacks: CallbackRunner,
        callback: Callable[[T], object] | None,
        error_callback: Callable[[BaseException], object] | None,
        on_interrupt: Callable[[], None] | None = None,
        progress: ProgressTracker | None = None,
    ) -> None:
        self._on_interrupt = on_interrupt
        self._progress = progress
        # get() may return once _released is set. A waiter that finds it unset makes the
        # event and waits on it: most results of a loop of apply_async are in before their
        # get(), and an Event per call cost as much as the rest of the result object.
        self._released = False
        self._released_event: threading.Event | None = None
        self._callbacks = callbacks
        self._callback = callback
        self._error_callback = error_callback
        self._lock = threading.Lock()
        self._settled = False
        self._success = False
        self._value: Any = None

    def ready(self) -> bool:
        return self._released

    def successful(self) -> bool:
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._success

    def wait(self, timeout: float | None = None) -> None:
        self._wait(timeout)

    def get(self, timeout: float | None = None) -> T:
        if not self._released and not self._wait(timeout):
            raise TimeoutError(f"the result was not ready within {timeout} s")
        if self._success:
            return self._value  # type: ignore[no-any-return]
        raise self._value

    def _wait(self, timeout: float | None) -> bool:
        """Wait until get() may return (Ctrl-C stops the pool's work, as for any wait)."""
        with self._lock:
            if self._released:
                return True
            if self._released_event is None:
                self._released_event = threading.Event()
            event = self._released_event
        return _wait_or_interrupt(lambda: threads.wait_in_slices(event.wait, timeout),
                                  self._on_interrupt)

    def _release(self) -> None:
        """The outcome (and its callback) is done: let get() return, now and for ever."""
        with self._lock:
            self._released = True
            event = self._released_event
        if event is not None:
            event.set()

    def chunk_starting(self, chunk: Chunk) -> bool:
        return True

    def fail(self, error: BaseException) -> None:
        """Fail the whole result before anything was submitted (e.g. unpicklable function)."""
        self._settle(False, error)

    def _settle(self, success: bool, value: Any) -> None:
        """Record the outcome once; later outcomes (other chunks of a failed map) are ignored."""
        with self._lock:
            if self._settled:
                return
            self._settled = True
            self._success, self._value = success, value
        if self._progress is not None:
            self._progress.finish()  # its last drawing is queued on the callback thread
        callback = self._callback if success else self._error_callback
        if callback is None and self._progress is None:
            self._release()
            return

        def run_callback_then_release() -> None:
            # The stdlib runs the callback before get() returns; so do we. A progress bar is
            # closed by then too (same thread, queued first), so map()'s caller never sees it
            # drawn after map() returned.
            try:
                if callback is not None:
                    _call_user_callback(callback, value)
            finally:
                self._release()

        self._callbacks.post(run_callback_then_release)

    def __repr__(self) -> str:
        state = "pending" if not self.ready() else ("ok" if self._success else "failed")
        return f"<procpool.{type(self).__name__} {state}>"


class ApplyResult(_AsyncResultBase[T], OneCallSink):
    """The result of ``apply_async``: one item."""

    __module__ = "procpool"


AsyncResult = ApplyResult


class MapResult(_AsyncResultBase[list[T]]):
    """The result of ``map_async`` and ``starmap_async``: a list, or the first error.

    Like the stdlib's, it shows its progress in two private attributes that progress-bar
    recipes (and parmap) read: ``_chunksize``, and ``_number_left``, the chunks of that size
    still to come (read-only here, and exact: it reaches 0 when the last item is done).
    """

    __module__ = "procpool"

    def __init__(
        self,
        length: int,
        chunksize: int,
        callbacks: CallbackRunner,
        callback: Callable[[list[T]], object] | None,
        error_callback: Callable[[BaseException], object] | None,
        on_interrupt: Callable[[], None] | None = None,
        progress: ProgressTracker | None = None,
    ) -> None:
        super().__init__(callbacks, callback, error_callback, on_interrupt, progress)
        self._values: list[Any] = [None] * length
        self._items_left = length
        self._chunk_length = chunksize if length else 0  # the stdlib's, for an empty map too
        if length == 0:
            self._settle(True, self._values)

    @property
    def _chunksize(self) -> int:
        return self._chunk_length

    @property
    def _number_left(self) -> int:
        if self._chunk_length == 0:
            return 0
        return -(-self._items_left // self._chunk_length)

    def chunk_done(
        self, chunk: Chunk, values: Sequence[Any], failures: Mapping[int, BaseException]
    ) -> None:
        if self._progress is not None:
            self._progress.advance(chunk.size, len(failures))
        if failures:
            self._settle(False, failures[min(failures)])
            return
        with self._lock:
            start = chunk.first_index
            self._values[start : start + chunk.size] = values
            self._items_left -= chunk.size
            complete = self._items_left == 0
        if complete:
            self._settle(True, self._values)

    def chunk_failed(self, chunk: Chunk, error: BaseException) -> None:
        if self._progress is not None:
            self._progress.advance(chunk.size, chunk.size)
        self._settle(False, error)
