"""Progress of one map-like call (``progress=`` on map, imap, starmap, executor map).

Owns the tracker that counts finished items and decides when to show them as ``Progress``
snapshots (a public record, in procpool._stats with the other snapshots, imported once a call
with ``progress`` first draws), and the two displays: a tqdm bar (``progress=True``; tqdm's
notebook widget in Jupyter, through ``tqdm.auto``) or a callable of the user's that receives
snapshots. tqdm is imported only when a bar is asked for, and a call without ``progress``
builds none of this.

Where counting happens: eager maps (``map``, ``starmap``, their ``_async`` forms) count in their
result object as chunks arrive, on the dispatcher thread, and hand the drawing to the pool's
callback thread (user code never runs on the dispatcher). Streams (``imap``, executor ``map``)
count as the consumer takes each result, and draw in the consumer's thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from ._log import logger
from ._runtime_typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from typing import Any

    from ._stats import Progress

T = TypeVar("T")

# Draw at most this often (seconds), besides the final snapshot, which is always drawn.
DRAW_INTERVAL = 0.1


class _Display(Protocol):
    def show(self, progress: Progress) -> None: ...

    def close(self) -> None: ...


class ProgressTracker:
    """Counts one call's finished items and draws them on its display, at most every
    ``DRAW_INTERVAL`` seconds, plus once at the end.

    ``advance`` may be called from any thread. Drawing happens through ``run``: the pool's
    callback thread for eager maps, or directly (the consumer's thread) for streams. Once
    ``finish`` is called later counts are ignored, so a map that failed early stops its bar.
    """

    def __init__(self, display: _Display, total: int | None,
                 run: Callable[[Callable[[], None]], None] | None = None) -> None:
        self._display = display
        self._run = run or _call_now
        self._lock = threading.Lock()
        self._total = total
        self._completed = 0
        self._failed = 0
        self._started = time.monotonic()
        self._last_draw = float("-inf")
        self._finished = False

    def advance(self, completed: int, failed: int = 0) -> None:
        with self._lock:
            if self._finished:
                return
            self._completed += completed
            self._failed += failed
            now = time.monotonic()
            if now - self._last_draw < DRAW_INTERVAL and self._completed != self._total:
                return
            self._last_draw = now
        self._run(self._draw)

    def set_total(self, total: int) -> None:
        with self._lock:
            self._total = total

    def finish(self) -> None:
        """The call is over (done, failed, or abandoned): draw the last snapshot and close."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
        self._run(self._close)

    def count(self, results: Iterator[T]) -> Iterator[T]:
        """Pass ``results`` through, counting each one taken (and the failure that ends them).

        Closing this generator closes ``results`` too, so whatever it cleans up on an early
        exit (cancelling futures) still happens at once.
        """
        try:
            for value in results:
                self.advance(1)
                yield value
        except Exception:
            self.advance(1, failed=1)
            raise
        finally:
            self.finish()
            close = getattr(results, "close", None)
            if close is not None:
                close()

    def _snapshot(self) -> Progress | None:
        """The counts now; None once the call has finished (only the last drawing remains)."""
        from ._stats import Progress

        with self._lock:
            if self._finished:
                return None
            return Progress(self._completed, self._failed, self._total,
                            time.monotonic() - self._started)

    def _draw(self) -> None:
        progress = self._snapshot()
        if progress is not None:
            self._display.show(progress)

    def _close(self) -> None:
        from ._stats import Progress

        with self._lock:
            final = Progress(self._completed, self._failed, self._total,
                             time.monotonic() - self._started, finished=True)
        self._display.show(final)
        self._display.close()


def make_tracker(progress: Any, total: int | None, description: str,
                 run: Callable[[Callable[[], None]], None] | None = None
                 ) -> ProgressTracker | None:
    """The tracker ``progress=`` asks for: None (off), a tqdm bar (True) or a callable's."""
    if progress is None or progress is False:
        return None
    display: _Display
    if progress is True:
        display = _TqdmDisplay(total, description)
    elif callable(progress):
        display = _CallableDisplay(progress)
    else:
        raise TypeError(f"progress must be True (a tqdm bar), False, or a callable that takes a "
                        f"procpool.Progress, not {progress!r}")
    return ProgressTracker(display, total, run)


def length_of(iterable: object) -> int | None:
    """The number of items, if the input knows it without being consumed."""
    try:
        return len(iterable)  # type: ignore[arg-type]
    except (TypeError, OverflowError):  # no length, or one past sys.maxsize (a huge range)
        return None


def _call_now(job: Callable[[], None]) -> None:
    job()


class _TqdmDisplay:
    """A tqdm bar (``tqdm.auto``: the notebook widget in Jupyter, text elsewhere)."""

    def __init__(self, total: int | None, description: str) -> None:
        from tqdm.auto import tqdm  # imported only when a bar is asked for

        self._bar = tqdm(total=total, desc=description, unit="item", dynamic_ncols=True)
        self._failed = 0

    def show(self, progress: Progress) -> None:
        bar = self._bar
        if progress.total != bar.total:
            bar.total = progress.total
        if progress.failed != self._failed:
            self._failed = progress.failed
            bar.set_postfix(failed=progress.failed, refresh=False)
        bar.update(progress.completed - bar.n)

    def close(self) -> None:
        self._bar.close()


class _CallableDisplay:
    """Hands each snapshot to the user's callable; one that raises is logged and dropped."""

    def __init__(self, callback: Callable[[Progress], object]) -> None:
        self._callback: Callable[[Progress], object] | None = callback

    def show(self, progress: Progress) -> None:
        if self._callback is None:
            return
        try:
            self._callback(progress)
        except Exception:
            logger().exception("the progress callable raised; no more progress is reported to it")
            self._callback = None

    def close(self) -> None:
        self._callback = None
