"""The parent's side of forwarding: workers' log records and printed lines, handled here.

Owns what the parent does with a ``Logged`` or ``Printed`` reply: the record goes to the
parent's logger of the record's name, as if logged in the parent (its handlers, filters and
formatters decide what is shown); the lines go to the parent's ``sys.stdout`` or ``sys.stderr``
as they are at that moment (a notebook's cell, say). Both run on the pool's callback thread,
never on the dispatcher thread: a slow handler must not slow the pool, and each worker's
records and lines keep their order, ahead of the callbacks of results that came after them.

The bound: at most ``MAX_WAITING`` records and lines wait for the callback thread. Past that
the dispatcher drops what arrives (it never waits, so workers never wait for slow handlers),
and once the backlog is gone a warning on the ``procpool`` logger says how many were dropped.
"""

from __future__ import annotations

import logging
import sys
import threading

from ._log import logger
from ._messages import Logged, Printed
from ._runtime_typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._callbacks import CallbackRunner


MAX_WAITING = 10_000


class Forwarded:
    """Takes forwarded replies off the dispatcher thread onto the callback thread."""

    def __init__(self, callbacks: CallbackRunner, max_waiting: int = MAX_WAITING) -> None:
        self._callbacks = callbacks
        self._max_waiting = max_waiting
        self._lock = threading.Lock()
        self._all_handled = threading.Condition(self._lock)
        self._waiting = 0
        self._handled = 0  # ever: whether the callback thread moves on
        self._dropped = 0

    def received(self, message: Logged | Printed) -> None:
        """A worker's record or lines (dispatcher thread): queue its handling, or drop it."""
        with self._lock:
            if self._waiting >= self._max_waiting:
                self._dropped += 1
                return
            self._waiting += 1
        self._callbacks.post(lambda: self._handle(message))

    def wait_handled(self, stall: float) -> bool:
        """Wait until every record and line received so far has been handled, for as long
        as the callback thread handles one at least every ``stall`` seconds; False if it
        stopped (a callback of the user's that never returns holds it)."""
        with self._lock:
            while self._waiting:
                handled = self._handled
                self._all_handled.wait(stall)
                if self._waiting and self._handled == handled:
                    return False
            return True

    def _handle(self, message: Logged | Printed) -> None:
        try:
            if isinstance(message, Logged):
                _log(message.record)
            else:
                _print(message.stream, message.text)
        finally:
            with self._lock:
                self._waiting -= 1
                self._handled += 1
                dropped = self._dropped if self._waiting == 0 else 0
                self._dropped -= dropped
                if self._waiting == 0:
                    self._all_handled.notify_all()
            if dropped:
                logger().warning("procpool dropped %d log records or output lines from its "
                                 "workers: the parent's handlers fell behind (more than %d "
                                 "were waiting)", dropped, self._max_waiting)


def _log(fields: dict[str, object]) -> None:
    record = logging.makeLogRecord(fields)
    target = logging.getLogger(record.name)
    # The worker filtered on the parent's levels when it started; they may have changed since.
    if target.isEnabledFor(record.levelno):
        target.handle(record)


def _print(stream: int, text: str) -> None:
    out = sys.stdout if stream == 1 else sys.stderr
    if out is None:  # pythonw, or a daemon that closed them
        return
    out.write(text)
    out.flush()
