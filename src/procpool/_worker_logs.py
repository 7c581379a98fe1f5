"""The worker's side of log forwarding: its log records, sent to the parent as ``Logged``.

Owns the handler that ships a worker's records and the worker's logging set-up while it
forwards: the parent's levels, no handler of its own besides. Each record is written to the
reply pipe, from whatever thread logs, before the logging call returns, so what a task said
just before it died or hung is already there; the parent reads the pipe without waiting on
its own handlers (_forwarding.py), so a worker waits no longer than the parent takes to read.

Imported by a worker only when its pool forwards log records. It must not import the pool.
"""

from __future__ import annotations

import logging
import os

from ._framing import FrameInProgress
from ._messages import Logged, WorkerSetup, encode

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._worker import _Sender


def install(setup: WorkerSetup, sender: _Sender) -> None:
    """Forward the worker's records from now on (before its initializer runs), at the
    parent's levels, through no other handler."""
    assert setup.log_levels is not None
    levels = setup.log_levels
    handler = _ForwardingHandler(setup.worker_index, sender)
    # Under fork the worker holds copies of the parent's handlers, and under spawn the main
    # module may have configured some as it was imported: writing through those as well would
    # show each record twice. Removed, not closed: closing would flush the parent's buffered
    # output a second time.
    for logger in _all_loggers():
        had_handlers = bool(logger.handlers)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        if had_handlers and not logger.propagate and logger is not logging.root:
            logger.addHandler(handler)  # its records never reach the root's handler
    logging.root.setLevel(levels.root)
    for name, level in levels.named:
        logging.getLogger(name).setLevel(level)
    logging.disable(levels.disabled_up_to)
    logging.root.addHandler(handler)


def initializer_done(setup: WorkerSetup) -> None:
    """A pool that forwards by default steps aside when the worker's initializer set up
    logging itself (the logging cookbook's QueueHandler, say): records must not arrive
    twice. One that was asked to forward keeps forwarding beside it."""
    if not setup.logs_yield_to_initializer:
        return
    root = logging.getLogger()
    # A NullHandler (a library's way of saying "not configured here") is no set-up.
    if any(not isinstance(handler, (_ForwardingHandler, logging.NullHandler))
           for handler in root.handlers):
        for logger in _all_loggers():
            for handler in list(logger.handlers):
                if isinstance(handler, _ForwardingHandler):
                    logger.removeHandler(handler)


def _all_loggers() -> list[logging.Logger]:
    loggers = [logger for logger in list(logging.root.manager.loggerDict.values())
               if isinstance(logger, logging.Logger)]
    return [logging.root, *loggers]


class _ForwardingHandler(logging.Handler):
    """Sends each record to the parent, which handles it as its own (_forwarding.py)."""

    def __init__(self, index: int, sender: _Sender) -> None:
        super().__init__()
        self._index = index
        self._sender = sender
        self._pid = os.getpid()

    def emit(self, record: logging.LogRecord) -> None:
        if os.getpid() != self._pid:
            # A process a task forked: only the worker owns the reply pipe. Shown as a
            # record nobody handles would be (on stderr, from WARNING up).
            if logging.lastResort is not None:
                logging.lastResort.handle(record)
            return
        try:
            self._sender.send_bytes(encode(Logged(self._portable(record))))
        except (EOFError, OSError):
            pass  # the parent is gone: nobody is left to show it
        except FrameInProgress:
            pass  # logged by a signal handler amid a reply of its own thread: it cannot go
        except Exception:
            self.handleError(record)

    def _portable(self, record: logging.LogRecord) -> dict[str, object]:
        """The record as plain data: its message made (as QueueHandler does), its exception
        as text, and whatever else it carries (``extra=``) kept if it is built of str,
        numbers, None, lists, tuples and dicts, else as its repr. An object of the task's
        own could fail to pickle here, or to unpickle in the parent, and a reply the parent
        cannot read costs the worker and its task."""
        fields = {name: value if _plain(value) else repr(value)
                  for name, value in record.__dict__.items()}
        fields["msg"] = record.getMessage()
        fields["args"] = None
        if record.exc_info and not record.exc_text:
            fields["exc_text"] = logging.Formatter().formatException(record.exc_info)
        fields["exc_info"] = None
        fields["worker"] = self._index
        return fields


_PLAIN_TYPES = (str, int, float, bool, type(None))


def _plain(value: object, depth: int = 3) -> bool:
    """Whether ``value`` is made of builtins only, which pickle and unpickle anywhere."""
    if type(value) in _PLAIN_TYPES:
        return True
    if depth == 0:
        return False
    if isinstance(value, (list, tuple)) and type(value) in (list, tuple):
        return all(_plain(item, depth - 1) for item in value)
    if isinstance(value, dict) and type(value) is dict:
        return all(type(key) in _PLAIN_TYPES and _plain(item, depth - 1)
                   for key, item in value.items())
    return False
