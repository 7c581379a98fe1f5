"""``max_queued``: at most N single calls accepted and waiting to start.

Owns the count of queued single calls (``apply_async``, ``submit``, ``run``) and the waits of
callers that find it full, first come first served: a thread blocks in ``reserve`` (a Ctrl-C
interrupts it), a coroutine awaits ``reserve_async`` without blocking its event loop; a place
given back goes straight to the first waiter, so each place wakes one caller. Each accepted
call's chunk carries a ``QueueTicket``, given back once when the chunk leaves the queue: sent
to a worker, dropped (cancelled), or failed before it ran (``Chunk.left_queue``); the faces
give it back too if the submission itself is interrupted. Closing the pool wakes every
waiter, and the face then raises its usual error. Maps are not counted: they keep their own
bound (``buffersize``, the stream window).
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from types import TracebackType

from . import _threads as threads
from ._runtime_typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio


class QueueTicket:
    """One queued call's place in the count; giving it back twice counts once (a retried
    call's parts share their chunk's ticket)."""

    __slots__ = ("_bound", "_held")

    def __init__(self, bound: QueueBound) -> None:
        self._bound = bound
        self._held = True

    def give_back(self) -> None:
        self._bound._give_back(self)


class _Waiter:
    """A caller waiting for room: a thread (woken through its event) or a coroutine (through
    its future, on its loop). ``ticket`` is the place handed to it; None if the pool closed."""

    __slots__ = ("event", "future", "loop", "ticket")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.ticket: QueueTicket | None = None
        self.loop = loop
        self.event = threading.Event() if loop is None else None
        self.future: asyncio.Future[None] | None = None if loop is None else loop.create_future()

    def wake(self) -> None:
        if self.event is not None:
            self.event.set()
            return
        assert self.loop is not None and self.future is not None
        with contextlib.suppress(RuntimeError):  # its loop has closed: nobody waits there
            self.loop.call_soon_threadsafe(_set_if_waiting, self.future)


class QueueBound:
    """The count, and the waiters in the order they came: a place given back goes to the
    first of them (one wake-up per place, however many wait)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._queued = 0  # places held
        self._closed = False
        self._waiters: deque[_Waiter] = deque()
        # A place a coroutine waited for, taken by its thread's next reserve() (the submit
        # that the coroutine makes right after, without yielding to its loop).
        self._reserved_here = threading.local()

    def reserve(self) -> QueueTicket | None:
        """Wait until fewer than ``limit`` calls are queued and take a place; None if the pool
        was closed first."""
        ticket: QueueTicket | None = getattr(self._reserved_here, "ticket", None)
        if ticket is not None:
            self._reserved_here.ticket = None
            return ticket
        with self._lock:
            if self._closed:
                return None
            if self._queued < self.limit and not self._waiters:
                return self._take()
            waiter = _Waiter()
            self._waiters.append(waiter)
        assert waiter.event is not None
        try:
            waiter.event.wait()  # a Ctrl-C interrupts it
        except BaseException:
            self._withdraw(waiter)
            raise
        return waiter.ticket

    async def reserve_async(self) -> bool:
        """Wait, without blocking the event loop, for a place that this thread's next
        ``reserve()`` takes; False if the pool was closed first."""
        with self._lock:
            if self._closed:
                return False
            if self._queued < self.limit and not self._waiters:
                self._reserved_here.ticket = self._take()
                return True
            import asyncio  # imported already where a coroutine runs

            waiter = _Waiter(asyncio.get_running_loop())
            self._waiters.append(waiter)
        assert waiter.future is not None
        try:
            await threads.await_in_slices(waiter.future)
        except BaseException:  # cancelled: a place handed to it meanwhile goes on
            self._withdraw(waiter)
            raise
        if waiter.ticket is None:
            return False
        self._reserved_here.ticket = waiter.ticket
        return True

    def forget_reserved(self) -> None:
        """The call ``reserve_async`` waited for was not made (it raised first)."""
        ticket = getattr(self._reserved_here, "ticket", None)
        self._reserved_here.ticket = None
        if ticket is not None:
            ticket.give_back()

    def close(self) -> None:
        """The pool takes no more calls: every waiter returns, with no place."""
        with self._lock:
            self._closed = True
            waiters = list(self._waiters)
            self._waiters.clear()
        for waiter in waiters:
            waiter.wake()

    def _take(self) -> QueueTicket:
        self._queued += 1
        return QueueTicket(self)

    def _withdraw(self, waiter: _Waiter) -> None:
        """A waiter gave up (Ctrl-C, a cancelled coroutine): a place handed to it meanwhile
        goes to the next."""
        with self._lock:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                return
            ticket, waiter.ticket = waiter.ticket, None
        if ticket is not None:
            ticket.give_back()

    def _give_back(self, ticket: QueueTicket) -> None:
        with self._lock:
            if not ticket._held:
                return
            ticket._held = False
            if not self._waiters or self._closed:
                self._queued -= 1
                return
            waiter = self._waiters.popleft()
            waiter.ticket = QueueTicket(self)  # the place passes on: the count stays
        waiter.wake()


def ticket_given_back_on_error(
        ticket: QueueTicket | None) -> _GivenBackOnError | contextlib.nullcontext[None]:
    """What runs inside may raise (the pool closed while its caller waited): the place taken
    for the call is then free again. (A class, not a generator: entered for every call.)"""
    return _NO_TICKET if ticket is None else _GivenBackOnError(ticket)


class _GivenBackOnError:
    __slots__ = ("_ticket",)

    def __init__(self, ticket: QueueTicket) -> None:
        self._ticket = ticket

    def __enter__(self) -> None:
        pass

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if exc is not None:
            self._ticket.give_back()


_NO_TICKET: contextlib.nullcontext[None] = contextlib.nullcontext()


def _set_if_waiting(woken: asyncio.Future[None]) -> None:
    if not woken.done():
        woken.set_result(None)
