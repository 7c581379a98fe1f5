"""The worker's side of forwarding: its log records and its prints, sent to the parent.

Owns the handler that ships a worker's log records (``Logged``) and the streams that stand for
its ``sys.stdout`` and ``sys.stderr`` (``Printed``), both writing to the worker's reply pipe
from whatever thread logs or prints. Each record or line is written before the call that made
it returns, so what a task said just before it died or hung is already in the pipe. The parent
reads the pipe without ever waiting on its own handlers (_forwarding.py), so a worker blocks no
longer than the parent takes to read.

Imported by a worker only when the pool forwards something; it must not import the pool.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pickle
import sys
import threading

from ._codec import dumps
from ._messages import Logged, LogLevels, Printed, WorkerSetup

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._worker import _Sender

# An unfinished line longer than this goes out as it is: a task that writes megabytes without a
# newline must not hold them all in the worker.
_MAX_UNFINISHED_LINE = 64 * 1024

_streams: list[_ForwardedStream] = []


def install(setup: WorkerSetup, sender: _Sender) -> None:
    """Start forwarding what ``setup`` asks for, before the initializer runs."""
    if setup.log_levels is not None:
        _forward_logs(setup.worker_index, setup.log_levels, sender)
    if setup.forward_output:
        sys.stdout = _ForwardedStream(1, sender, sys.stdout)
        sys.stderr = _ForwardedStream(2, sender, sys.stderr)
        _streams[:] = [sys.stdout, sys.stderr]


def after_initializer(setup: WorkerSetup) -> None:
    """A pool that forwards by default steps aside when its initializer set up the worker's
    logging itself (the logging cookbook's QueueHandler, say): records must not arrive
    twice."""
    if not setup.logs_yield_to_initializer or setup.log_levels is None:
        return
    root = logging.getLogger()
    if any(not isinstance(handler, _ForwardingHandler) for handler in root.handlers):
        for logger in _all_loggers():
            for handler in list(logger.handlers):
                if isinstance(handler, _ForwardingHandler):
                    logger.removeHandler(handler)


def send_unfinished_lines() -> None:
    """A chunk has ended: what its tasks printed without a final newline goes out now, before
    its results."""
    for stream in _streams:
        stream.send_unfinished()


def _forward_logs(index: int, levels: LogLevels, sender: _Sender) -> None:
    handler = _ForwardingHandler(index, sender)
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


class _ForwardedStream(io.TextIOBase):
    """Stands for sys.stdout or sys.stderr: sends whole lines, so lines of different workers
    never mix mid-line in the parent."""

    def __init__(self, number: int, sender: _Sender, original: object) -> None:
        super().__init__()
        self._number = number
        self._sender = sender
        self._original = original
        self._pid = os.getpid()
        self._unfinished = ""
        self._lock = threading.Lock()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._original, "encoding", None) or "utf-8"

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        # Code that writes to the descriptor (a subprocess, C code) bypasses the forwarding,
        # as it bypasses any sys.stdout that is not a file.
        return int(self._original.fileno())  # type: ignore[attr-defined]

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._lock:
            pending = self._unfinished + text
            cut = pending.rfind("\n") + 1
            if cut == 0 and len(pending) > _MAX_UNFINISHED_LINE:
                cut = len(pending)
            self._unfinished = pending[cut:]
            if cut:
                self._send(pending[:cut])
        return len(text)

    def send_unfinished(self) -> None:
        with self._lock:
            if self._unfinished:
                text, self._unfinished = self._unfinished, ""
                self._send(text)

    def _send(self, text: str) -> None:
        if os.getpid() != self._pid:
            # A process a task forked: only the worker owns the reply pipe.
            self._original.write(text)  # type: ignore[attr-defined]
            return
        with contextlib.suppress(EOFError, OSError):  # the parent is gone
            self._sender.send_bytes(dumps(Printed(self._number, text)))
