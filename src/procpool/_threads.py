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
"""

from __future__ import annotations

import signal
import threading

_BLOCKED = {signal.SIGINT}


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
