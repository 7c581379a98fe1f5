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
import pickle

from ._codec import dumps
from ._framing import FrameInProgress
from ._messages import Logged, WorkerSetup

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
    if any(not isinstance(handler, _ForwardingHandler) for handler in root.handlers):
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
            return  # a process a task forked: only the worker owns the reply pipe
        try:
            fields = self._portable(record)
            try:
                payload = dumps(Logged(fields))
            except Exception:  # something it carries (extra=) cannot be pickled
                payload = dumps(Logged(_with_unpicklable_as_repr(fields)))
            self._sender.send_bytes(payload)
        except (EOFError, OSError):
            pass  # the parent is gone: nobody is left to show it
        except FrameInProgress:
            pass  # logged by a signal handler amid a reply of its own thread: it cannot go
        except Exception:
            self.handleError(record)

    def _portable(self, record: logging.LogRecord) -> dict[str, object]:
        """The record as plain data: its message made (as QueueHandler does), its exception
        as text."""
        fields = dict(record.__dict__)
        fields["msg"] = record.getMessage()
        fields["args"] = None
        if record.exc_info and not record.exc_text:
            fields["exc_text"] = logging.Formatter().formatException(record.exc_info)
        fields["exc_info"] = None
        fields["worker"] = self._index
        return fields


def _with_unpicklable_as_repr(fields: dict[str, object]) -> dict[str, object]:
    portable = {}
    for name, value in fields.items():
        try:
            pickle.dumps(value)
        except Exception:
            value = repr(value)
        portable[name] = value
    return portable
