"""The iterator ``ProcessPoolExecutor.map`` returns: ``stream_results``.

Owns reading a map's stream in order for the executor's face: results piece by piece (handed
out in C, ChainedResults), the map's deadline as the executor's own ``TimeoutError``, a failed
item's error raised at its position with the executor's traceback, and the stdlib's
``close()``. However the iteration ends early (an error, the deadline, closed by its reader),
the stream is abandoned, so what is left of it is cancelled. Imported at a program's first
``map``, not with the face (_lazy.py).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Generator, Iterable
from concurrent.futures import TimeoutError as FuturesTimeoutError

from ._futures import executor_traceback
from ._runtime_typing import TYPE_CHECKING
from ._streams import ChainedResults, WaitTimedOut, next_piece

if TYPE_CHECKING:
    from typing import Any

    from ._streams import StreamJob


class MapResults(ChainedResults):
    """What ``map`` returns: an iterator of its results, with the ``close()`` of the stdlib's
    (a generator)."""

    __slots__ = ()

    def close(self) -> None:
        """End the iteration: the pieces' generator is closed (its ``finally`` abandons the
        stream), what is left of the piece in hand is dropped, and next() raises
        StopIteration."""
        self._pieces.close()
        deque(self, maxlen=0)


def stream_results(job: StreamJob, end_time: float | None) -> MapResults:
    """The iterator ``map`` returns: results in order; at a failed item its error is raised
    and the iteration ends. ``end_time`` bounds the whole iteration. However it ends early
    (an error, the timeout, closed by its reader), what is left is cancelled."""
    return MapResults.over(_map_pieces(job, end_time))  # type: ignore[no-any-return]


def _map_pieces(job: StreamJob, end_time: float | None) -> Generator[Iterable[Any], None, None]:
    try:
        while True:
            yield job.values_left
            timeout = None if end_time is None else max(0.0, end_time - time.monotonic())
            try:
                piece = next_piece(job, timeout)
            except StopIteration:
                return
            except WaitTimedOut:  # the map's deadline passed: the executor's own error
                raise FuturesTimeoutError() from None
            except Exception as error:
                raise executor_traceback(error) from error.__cause__
            yield piece
    finally:
        job.abandon()
