"""The worker's side of output forwarding: what its code prints, sent to the parent.

Owns the streams that stand for the worker's ``sys.stdout`` and ``sys.stderr``: they write
whole lines (``Printed``) to the worker's reply pipe from whatever thread prints, before the
write returns, and a chunk's unfinished last line before the chunk's results. Log records have
their own module (_worker_logs.py).

Imported by a worker only when the pool forwards its output; it must not import the pool.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import os
import sys
import threading

from ._framing import FrameInProgress
from ._messages import Printed, encode

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._worker import _Sender

# An unfinished line longer than this goes out as it is: a task that writes megabytes without a
# newline must not hold them all in the worker.
_MAX_UNFINISHED_LINE = 64 * 1024

_streams: list[_ForwardedStream] = []


def install(sender: _Sender) -> None:
    """Forward what the worker's code prints from now on."""
    sys.stdout = _ForwardedStream(1, sender, sys.stdout)
    sys.stderr = _ForwardedStream(2, sender, sys.stderr)
    _streams[:] = [sys.stdout, sys.stderr]


def send_unfinished_lines() -> None:
    """A chunk has ended: what its tasks printed without a final newline goes out now, before
    its results."""
    for stream in _streams:
        stream.send_unfinished()


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
        # Re-entrant, with a flag: a signal handler that prints amid a write of its own
        # thread must neither wait for that write (a deadlock) nor change it halfway.
        self._lock = threading.RLock()
        self._writing = False
        self._buffer = _BytesToText(self)

    @property
    def buffer(self) -> _BytesToText:
        """What code that writes bytes to ``sys.stdout.buffer`` writes to."""
        return self._buffer

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
        if os.getpid() != self._pid:
            # A process a task forked: only the worker owns the reply pipe (and the lock may
            # have been held by another thread at the fork).
            return int(self._original.write(text))  # type: ignore[attr-defined]
        with self._lock:
            if self._writing:  # a signal handler, amid this thread's own write
                return int(self._original.write(text))  # type: ignore[attr-defined]
            self._writing = True
            try:
                pending = self._unfinished + text
                cut = pending.rfind("\n") + 1
                if cut == 0 and len(pending) > _MAX_UNFINISHED_LINE:
                    cut = len(pending)
                self._unfinished = pending[cut:]
                if cut:
                    self._send(pending[:cut])
            finally:
                self._writing = False
        return len(text)

    def send_unfinished(self) -> None:
        with self._lock:
            if self._unfinished and not self._writing:
                text, self._unfinished = self._unfinished, ""
                self._send(text)

    def _send(self, text: str) -> None:
        # The parent is gone; or a signal handler prints amid a reply of its own thread.
        with contextlib.suppress(EOFError, OSError, FrameInProgress):
            self._sender.send_bytes(encode(Printed(self._number, text)))


class _BytesToText(io.RawIOBase):
    """The ``buffer`` of a forwarded stream: bytes are decoded as the stream's encoding says
    (a character split between two writes is kept whole) and forwarded as text."""

    def __init__(self, text: _ForwardedStream) -> None:
        super().__init__()
        self._text = text
        self._decoder = codecs.getincrementaldecoder(text.encoding)(errors="replace")

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._text.write(self._decoder.decode(chunk))
        return len(chunk)
