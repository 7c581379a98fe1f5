"""The thread that runs user callbacks, so that the dispatcher never does.

Owns one pool's callback thread: Pool result callbacks and error callbacks, progress drawings of
eager maps, and executor done-callbacks of futures the dispatcher settles. A callback that
blocks cannot stall the dispatcher (a callback that waits on another result works); one that
raises anything, even SystemExit, is logged and the thread goes on with the next.

Must not run anything on the dispatcher thread, and must never be left running after its pool
has ended: the dispatcher stops it as it shuts down, after its last delivery.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from . import _threads as threads
from ._log import logger


class CallbackRunner:
    """Runs jobs in order on one thread of its own, started on first use.

    ``stop()`` lets the queued jobs finish and ends the thread. A job posted after that (a
    result failed from a caller's thread once the pool has ended) runs at once in the posting
    thread: no thread is ever started that nobody would stop.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._lock = threading.Lock()

    def post(self, job: Callable[[], None]) -> None:
        with self._lock:
            inline = self._stopped
            if not inline and self._thread is None:
                thread = threading.Thread(target=self._run, name="procpool-callbacks",
                                          daemon=True)
                try:
                    threads.start(thread)  # with SIGINT blocked (_threads.py)
                except RuntimeError:  # no new threads (the interpreter is shutting down)
                    logger().warning("procpool could not start its callback thread; running "
                                     "callbacks in the thread that delivers results")
                    self._stopped = inline = True
                else:
                    self._thread = thread
            if not inline:
                self._queue.put(job)
        if inline:
            _run_guarded(job)

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            _run_guarded(job)

    def stop(self, wait: bool) -> None:
        """Let the queued jobs run, then end the thread; with ``wait``, until it has ended
        (also when an earlier call stopped it without waiting)."""
        with self._lock:
            if not self._stopped and self._thread is not None:
                self._queue.put(None)
            self._stopped = True
            thread = self._thread
        if thread is not None and wait and thread is not threading.current_thread():
            thread.join()


def _run_guarded(job: Callable[[], None]) -> None:
    try:
        job()
    except BaseException:  # a callback's SystemExit must not end the thread every later one needs
        logger().exception("a callback raised; the pool carries on")
