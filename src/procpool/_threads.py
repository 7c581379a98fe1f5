"""How procpool starts its own threads: so that a Ctrl-C always reaches the main thread.

The kernel delivers a process-directed signal (the terminal's SIGINT) to any one thread that
does not block it: usually the main thread, but not always (Linux passes over a thread that is
not running and has a signal pending already). Python runs its handler in the main thread
only, and a main thread blocked in a lock wait, a ``select`` or ``epoll`` wakes for it only if
the signal was delivered to that thread. Delivered to one of procpool's threads, a Ctrl-C would
wait for the main thread to run Python code again: for ever, when it waits for a result that
never comes. So every thread procpool starts (dispatcher, callbacks, feeders, inline workers,
Dask relays) has SIGINT blocked from its first instruction: the starting thread blocks it
around the start, and the new thread inherits the mask.

Processes started from such a thread inherit the mask too; a worker unblocks SIGINT as it
starts (_worker.py: it does not import this module, to start light; it ignores SIGINT anyway,
the parent decides what Ctrl-C means), and so does the janitor.

And the main thread's waits for results go in slices (``wait_in_slices``): CPython loses the
wake-up of a signal that lands just as a lock wait begins (its handler runs before the wait,
which then sleeps on; python/cpython#85300). A Ctrl-C at that instant would otherwise wait for
a result that the Ctrl-C was meant to give up on.

An event loop on the main thread has the same window: a signal that lands after the loop's
last look at its handlers and before its ``select`` sleeps leaves the handler (asyncio.Runner's,
which cancels the main task, or the default one, which raises KeyboardInterrupt) waiting until
something wakes the loop. While procpool awaits a result there (``await_in_slices``), a timer
wakes that loop at least every SIGNAL_CHECK_SECONDS: one timer per loop, however many awaits.
"""

from __future__ import annotations

import signal
import threading
import time
import weakref
from collections.abc import Awaitable, Callable

from ._runtime_typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import asyncio

T = TypeVar("T")

_BLOCKED = {signal.SIGINT}

# The longest a main thread's wait sleeps before it runs the signal handlers a lost wake-up
# left pending: how late such a Ctrl-C can take effect. A wait costs one wake-up per slice.
SIGNAL_CHECK_SECONDS = 0.5


def start(thread: threading.Thread) -> None:
    """``thread.start()``, with SIGINT blocked in the new thread (raises what start raises)."""
    if not hasattr(signal, "pthread_sigmask"):  # not POSIX: nothing to block
        thread.start()
        return
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCKED)
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def wait_in_slices(wait: Callable[[float | None], bool], timeout: float | None) -> bool:
    """``wait(timeout)`` (True once what it waits for has happened), made of waits of at most
    SIGNAL_CHECK_SECONDS on the main thread, so that a signal whose wake-up was lost is
    handled (see above). On other threads, one wait."""
    if threading.current_thread() is not threading.main_thread():
        return wait(timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if left is not None and left <= SIGNAL_CHECK_SECONDS:
            return wait(left)
        if wait(SIGNAL_CHECK_SECONDS):
            return True


async def await_in_slices(awaitable: Awaitable[T]) -> T:
    """``await awaitable``; on the main thread, its event loop wakes at least every
    SIGNAL_CHECK_SECONDS meanwhile, so that a signal whose wake-up was lost is handled (see
    above). The caller's coroutine runs in a loop, so asyncio is imported already."""
    if threading.current_thread() is not threading.main_thread():
        return await awaitable
    import asyncio

    loop = asyncio.get_running_loop()
    waker = _loop_wakers.get(loop)
    if waker is None:
        waker = _loop_wakers[loop] = _LoopWaker()
    waker.enter(loop)
    try:
        return await awaitable
    finally:
        waker.leave()


class _LoopWaker:
    """Wakes one event loop every SIGNAL_CHECK_SECONDS while anything awaits in slices on it.

    Used only from the loop's own thread, so it needs no lock. A timer is never cancelled: one
    that finds nothing waiting simply ends, so that an await costs a clock read, not a timer.
    Only the timer due at ``_next_wake`` goes on; one that is late or was lost (a
    KeyboardInterrupt raised in its callback) is replaced at the next ``enter``, and the one
    replaced ends when it runs. It does not hold its loop (the timers do), so the registry's
    weak key can die."""

    __slots__ = ("_next_wake", "_waiting")

    def __init__(self) -> None:
        self._waiting = 0
        self._next_wake = float("-inf")  # when the live timer is due; past: there is none

    def enter(self, loop: asyncio.AbstractEventLoop) -> None:
        self._waiting += 1
        now = loop.time()
        if now >= self._next_wake:
            self._arm(loop, now)

    def leave(self) -> None:
        self._waiting -= 1

    def _arm(self, loop: asyncio.AbstractEventLoop, now: float) -> None:
        self._next_wake = due = now + SIGNAL_CHECK_SECONDS
        loop.call_at(due, self._wake, loop, due)

    def _wake(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        # Running this callback is the point: the loop is awake, and runs pending handlers.
        if due != self._next_wake:
            return  # overtaken by a timer armed after this one was late
        if self._waiting:
            self._arm(loop, loop.time())
        else:
            self._next_wake = float("-inf")  # the next enter arms one, even if this ran early


_loop_wakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopWaker] = (
    weakref.WeakKeyDictionary())
