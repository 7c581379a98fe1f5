"""``max_queued``: at most N single calls accepted and waiting to start.

Owns the count of queued single calls (``apply_async``, ``submit``, ``run``) and the waits of
callers that find it full: a thread blocks in ``reserve`` (a Ctrl-C interrupts it), a coroutine
awaits ``reserve_async`` without blocking its event loop. Each accepted call's chunk carries a
``QueueTicket``, given back once when the chunk leaves the queue: sent to a worker, dropped
(cancelled), or failed before it ran (``Chunk.left_queue``). Closing the pool wakes every
waiter, and the face then raises its usual error. Maps are not counted: they keep their own
bound (``buffersize``, the stream window).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator


class QueueTicket:
    """One queued call's place in the count; giving it back twice counts once (a retried
    call's parts share their chunk's ticket)."""

    __slots__ = ("_bound", "_held")

    def __init__(self, bound: QueueBound) -> None:
        self._bound = bound
        self._held = True

    def give_back(self) -> None:
        self._bound._give_back(self)


class QueueBound:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._queued = 0
        self._closed = False
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        # A place a coroutine waited for, taken by its thread's next reserve() (the submit
        # that the coroutine makes right after, without yielding to its loop).
        self._reserved_here = threading.local()

    def reserve(self) -> QueueTicket | None:
        """Wait until fewer than ``limit`` calls are queued and take a place; None if the pool
        was closed first."""
        if getattr(self._reserved_here, "ticket", None) is not None:
            ticket, self._reserved_here.ticket = self._reserved_here.ticket, None
            return ticket  # type: ignore[no-any-return]
        with self._room:
            while self._queued >= self.limit and not self._closed:
                self._room.wait()
            return None if self._closed else self._take()

    async def reserve_async(self) -> bool:
        """Wait, without blocking the event loop, for a place that this thread's next
        ``reserve()`` takes; False if the pool was closed first."""
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self._closed:
                    return False
                if self._queued < self.limit:
                    self._reserved_here.ticket = self._take()
                    return True
                woken: asyncio.Future[None] = loop.create_future()
                self._async_waiters.append((loop, woken))
            try:
                await woken
            finally:
                with self._lock, contextlib.suppress(ValueError):
                    self._async_waiters.remove((loop, woken))

    def forget_reserved(self) -> None:
        """The call ``reserve_async`` waited for was not made (it raised first)."""
        ticket = getattr(self._reserved_here, "ticket", None)
        self._reserved_here.ticket = None
        if ticket is not None:
            ticket.give_back()

    def close(self) -> None:
        """The pool takes no more calls: every waiter returns."""
        with self._room:
            self._closed = True
            self._room.notify_all()
            waiters, self._async_waiters = self._async_waiters, []
        _wake(waiters)

    def _take(self) -> QueueTicket:
        self._queued += 1
        return QueueTicket(self)

    def _give_back(self, ticket: QueueTicket) -> None:
        with self._room:
            if not ticket._held:
                return
            ticket._held = False
            self._queued -= 1
            self._room.notify()
            waiters, self._async_waiters = self._async_waiters, []
        _wake(waiters)


@contextlib.contextmanager
def ticket_given_back_on_error(ticket: QueueTicket | None) -> Iterator[None]:
    """What runs inside may raise (the pool closed while its caller waited): the place taken
    for the call is then free again."""
    try:
        yield
    except BaseException:
        if ticket is not None:
            ticket.give_back()
        raise


def _wake(waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]) -> None:
    for loop, woken in waiters:
        with contextlib.suppress(RuntimeError):  # its loop has closed: nobody waits there
            loop.call_soon_threadsafe(_set_if_waiting, woken)


def _set_if_waiting(woken: asyncio.Future[None]) -> None:
    if not woken.done():
        woken.set_result(None)
