"""The dispatcher's wait for readiness: one poll object kept from one round to the next.

``multiprocessing.connection.wait`` builds a selector, registers every object and closes it
again on each call: about 40 us a round, paid twice per chunk of tiny tasks. ``Poller`` keeps a
``select.poll`` and changes its registrations only as the watched set changes. poll keeps no
state in the kernel between calls, so a descriptor number that was closed and reused by a new
object between two rounds is watched correctly for the new one.
"""

from __future__ import annotations

import select
from collections.abc import Iterable

from ._runtime_typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

# Readable, and what poll reports whether asked or not (hang-up, error): any of them is a
# reason to look, as multiprocessing.connection.wait reports them too.
_READABLE = select.POLLIN


def _fileno(waitable: Any) -> int:
    return waitable if isinstance(waitable, int) else int(waitable.fileno())


class Poller:
    """Waits until some of the given objects (descriptors, or objects with ``fileno()``) are
    ready to read; owned by one thread."""

    def __init__(self) -> None:
        self._poll = select.poll()
        self._watched: dict[int, Any] = {}  # descriptor -> the object it was given as

    def wait(self, waitables: Iterable[Any], timeout: float | None) -> list[Any]:
        """The objects that are ready, waiting up to ``timeout`` seconds (None: no limit) for
        one to be; [] when the time ran out."""
        wanted = {_fileno(waitable): waitable for waitable in waitables}
        # One descriptor at a time, so that the record matches the poll object even if a
        # registration raises.
        for fd in self._watched.keys() - wanted.keys():
            self._poll.unregister(fd)
            del self._watched[fd]
        for fd, waitable in wanted.items():
            if fd not in self._watched:
                self._poll.register(fd, _READABLE)
            self._watched[fd] = waitable
        events = self._poll.poll(None if timeout is None else timeout * 1000)
        return [self._watched[fd] for fd, _ in events]
