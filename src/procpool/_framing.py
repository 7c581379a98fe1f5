"""How replies travel from a worker to the dispatcher: framed, checked, read without blocking.

A task runs in the worker's process and can write to any descriptor the worker holds; a task
that takes descriptor 3 for its log file writes into the worker's reply pipe. The dispatcher
must then lose that worker, not the pool: so every reply starts with a magic word and its
length (``Frame``), a header that is not procpool's marks the stream corrupt at once
(``CorruptStream``), and the dispatcher reads what a descriptor has without ever waiting for
more (``FrameReader``: one read per readiness, complete frames out), so a stream that stops
mid-frame cannot stall it. The parent-to-worker direction keeps multiprocessing's framing
(only the parent writes there, and the worker reads it with ``Connection.recv_bytes``), written
by ``send_to_worker`` in one system call.

Imported by workers: standard library only, nothing heavy.
"""

from __future__ import annotations

import os
import select
import struct
import threading

TYPE_CHECKING = False  # not typing's: a worker must not import typing to start (_messages.py)
if TYPE_CHECKING:
    from typing import Protocol

    class _HasFileno(Protocol):
        def fileno(self) -> int: ...


MAGIC = b"PPf1"
_HEADER = struct.Struct("!4sQ")  # magic, payload length
# No reply is this large; a header that says so was written by something else.
MAX_PAYLOAD = 1 << 40
# What one read takes at most when no large payload is being filled.
_READ_SIZE = 64 * 1024


class CorruptStream(Exception):
    """The reply stream holds bytes that procpool did not write. ``complete``: the payloads
    the same read completed before them, which procpool did write (a reply sent before the
    stray bytes counts)."""

    def __init__(self, message: str, complete: list[bytearray]) -> None:
        super().__init__(message)
        self.complete = complete


class FrameInProgress(Exception):
    """A send began while this thread was in the middle of one: a signal handler that logs or
    prints, run between two writes of a frame. Sending now would split that frame."""


# multiprocessing's framing (Connection.send_bytes): a signed 32-bit length, or -1 and an
# unsigned 64-bit one for larger payloads.
_LENGTH = struct.Struct("!i")
_LONG_LENGTH = struct.Struct("!Q")


def send_to_worker(fd: int, *payloads: bytes) -> None:
    """Write each payload to a worker's pipe as ``Connection.send_bytes`` would (the worker
    reads each with ``recv_bytes``), without its layers of checks, all in one system call
    when the pipe takes them: the dispatcher sends a message per chunk, and a write that wakes
    a sleeping worker costs as much as the rest of the sending."""
    pieces: list[bytes] = []
    for payload in payloads:
        size = len(payload)
        pieces.append(_LENGTH.pack(size) if size <= 0x7FFFFFFF
                      else _LENGTH.pack(-1) + _LONG_LENGTH.pack(size))
        pieces.append(payload)
    written = os.writev(fd, pieces)
    if written < sum(map(len, pieces)):  # more than the pipe took at once
        _write_all(fd, [memoryview(piece) for piece in pieces], written)


def _write_all(fd: int, pieces: list[memoryview], written: int = 0) -> None:
    """Write every piece, in order, with as few system calls as the descriptor allows; the
    first ``written`` bytes are out already."""
    while True:
        while pieces and written >= len(pieces[0]):
            written -= len(pieces[0])
            pieces.pop(0)
        if not pieces:
            return
        if written:
            pieces[0] = pieces[0][written:]
        written = os.writev(fd, pieces)


class FrameWriter:
    """Sends each payload as one frame on a connection's descriptor (the worker's side).

    Has ``send_bytes`` so it stands wherever a connection did. Blocking, like the connection:
    a worker waits for the parent to read. Any thread may send (a task's thread forwards its
    log records): one frame at a time. A send from a signal handler that interrupted one in
    the same thread raises FrameInProgress (a plain lock would deadlock there).
    """

    def __init__(self, connection: _HasFileno) -> None:
        self._fd = connection.fileno()
        self._lock = threading.RLock()
        self._sending = False

    def send_bytes(self, payload: bytes) -> None:
        pieces = [memoryview(_HEADER.pack(MAGIC, len(payload))), memoryview(payload)]
        with self._lock:
            if self._sending:
                raise FrameInProgress("a frame is being written by this thread")
            self._sending = True
            try:
                self._write(pieces)
            finally:
                self._sending = False

    def _write(self, pieces: list[memoryview]) -> None:
        _write_all(self._fd, pieces)


def new_scratch() -> bytearray:
    """What a FrameReader's reads land in (see FrameReader)."""
    return bytearray(_READ_SIZE)


class FrameReader:
    """Takes frames off a descriptor the dispatcher's wait found readable (the parent's side).

    ``read()`` makes exactly one read, which a readable descriptor answers at once, and
    returns the payloads it completed (often none, or several). A large payload is read
    straight into a buffer of its full size, piece by piece across calls. ``scratch``, what
    one read lands in before it is parsed, may be shared by the readers of one thread (a
    fresh 64 KiB each cost a worker's start 16 page faults).
    """

    def __init__(self, fd: int, scratch: bytearray | None = None) -> None:
        self._fd = fd
        # Asked, while a large payload flows, whether more can be read at once.
        self._poller: select.poll | None = None
        self._scratch = new_scratch() if scratch is None else scratch
        self._unparsed = bytearray()
        self._body: bytearray | None = None  # a large payload being filled
        self._filled = 0

    def read(self) -> list[bytearray]:
        """One read; the payloads it completed. Raises EOFError at the end of the stream (a
        frame cut short there is dropped: its writer died) and CorruptStream."""
        if self._body is not None:
            return self._fill_body()
        count = os.readv(self._fd, [self._scratch])
        if count == 0:
            raise EOFError
        self._unparsed += memoryview(self._scratch)[:count]
        return self._parse()

    def _fill_body(self) -> list[bytearray]:
        """Read into the large payload: once (which does not wait), then on for as long as
        more is there at once: the writer refills the pipe while we copy."""
        assert self._body is not None
        view = memoryview(self._body)
        while True:
            count = os.readv(self._fd, [view[self._filled:]])
            if count == 0:
                raise EOFError
            self._filled += count
            if self._filled == len(view) or not self._more_at_once():
                break
        if self._filled < len(view):
            return []
        payload, self._body = self._body, None
        return [payload]

    def _more_at_once(self) -> bool:
        if self._poller is None:  # made for the first large payload only
            self._poller = select.poll()
            self._poller.register(self._fd, select.POLLIN)
        return bool(self._poller.poll(0))

    def _parse(self) -> list[bytearray]:
        unparsed = self._unparsed
        payloads: list[bytearray] = []
        offset = 0
        while len(unparsed) - offset >= _HEADER.size:
            magic, size = _HEADER.unpack_from(unparsed, offset)
            if magic != MAGIC or size > MAX_PAYLOAD:
                shown = bytes(unparsed[offset : offset + 24])
                raise CorruptStream(f"bytes that are not a procpool reply: {shown!r}", payloads)
            start = offset + _HEADER.size
            available = len(unparsed) - start
            if available >= size:
                payloads.append(unparsed[start : start + size])
                offset = start + size
                continue
            # The rest of this payload is still to come: read it into a buffer of its own.
            self._body = bytearray(size)
            self._body[:available] = unparsed[start:]
            self._filled = available
            offset = len(unparsed)
            break
        rest = unparsed[offset : offset + len(MAGIC)]
        if self._body is None and not MAGIC.startswith(rest):
            # Too short for a header, yet already not the start of one: say so now, not
            # when the worker's next reply completes it (which may be never, or much later).
            raise CorruptStream(f"bytes that are not a procpool reply: {bytes(rest)!r}...",
                                payloads)
        del unparsed[:offset]
        return payloads
