"""The dispatcher's inbox: how any thread hands a command to the dispatcher thread.

Owns a queue under a lock, and a wake-up pipe whose read end the dispatcher's wait watches
beside the workers' pipes. A post never blocks: a byte is written only when none is known to
be unread (``_wake_pending``), so a handful at most wait in the pipe, far below its capacity.
Once the inbox is closed (the dispatcher is ending), posts are refused, and whatever was
posted but not handled is handed back, so that the dispatcher can still answer it. Knows
nothing of what the commands mean, but which ones may be joined: a run of posts that
``joinable`` accepts is handed over as one command (``join``), as the dispatcher hands a run
of submissions to the scheduler in one go.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterator

from ._runtime_typing import Generic, TypeVar

Command = TypeVar("Command")


class Inbox(Generic[Command]):
    def __init__(self, joinable: Callable[[Command], bool] = lambda command: False,
                 join: Callable[[list[Command]], Command] | None = None) -> None:
        self._joinable = joinable
        self._join = join
        self._lock = threading.Lock()
        self._posted: deque[Command] = deque()  # shared with posting threads, under _lock
        # Taken from _posted by the dispatcher thread and not yet handled: if that thread
        # crashes half-way through a batch, close() still hands them back.
        self._in_hand: deque[Command] = deque()
        self._wake_pending = False
        self._closed = False
        self._wake_read, self._wake_write = os.pipe()

    @property
    def waitable(self) -> int:
        """Readable when commands are waiting (for ``multiprocessing.connection.wait``)."""
        return self._wake_read

    def private_fds(self) -> list[int]:
        """The inbox's descriptors, which a forked worker must close."""
        return [self._wake_read, self._wake_write]

    def post(self, command: Command, on_accepted: Callable[[], object] | None = None) -> bool:
        """Queue ``command``; False if the inbox is closed. ``on_accepted`` runs under the
        lock before the dispatcher can see the command."""
        with self._lock:
            if self._closed:
                return False
            if on_accepted is not None:
                on_accepted()
            self._posted.append(command)
            if not self._wake_pending:
                # Under the lock, so close() cannot close the pipe in between. The byte goes
                # first: a KeyboardInterrupt landing between the two lines then costs one
                # spare byte, where the other order would leave the flag set with no byte,
                # and the dispatcher would never wake again.
                os.write(self._wake_write, b"!")
                self._wake_pending = True
        return True

    def take(self) -> Iterator[Command]:
        """The dispatcher thread: every command posted so far, in order, one at a time."""
        os.read(self._wake_read, 4096)
        with self._lock:
            run: list[Command] = []  # consecutive joinable commands
            for command in self._posted:
                if self._joinable(command):
                    run.append(command)
                else:
                    self._hand_over(run)
                    self._in_hand.append(command)
            self._hand_over(run)
            self._posted.clear()
            self._wake_pending = False
        while self._in_hand:
            yield self._in_hand.popleft()

    def _hand_over(self, run: list[Command]) -> None:
        if len(run) > 1:
            assert self._join is not None
            self._in_hand.append(self._join(run))
        elif run:
            self._in_hand.append(run[0])
        run.clear()

    def close(self) -> list[Command]:
        """Refuse further posts; hand back what was posted and not handled."""
        with self._lock:
            self._closed = True
            leftovers = [*self._in_hand, *self._posted]
            self._in_hand.clear()
            self._posted.clear()
            os.close(self._wake_read)
            os.close(self._wake_write)
        return leftovers
