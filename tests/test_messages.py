"""The messages on a worker's pipe as they travel: encoded, framed, read back."""

from __future__ import annotations

import pickle
import threading
from multiprocessing import Pipe

import pytest

from procpool._framing import send_to_worker
from procpool._messages import (
    CallMode,
    ChunkDone,
    InitFailed,
    ItemDone,
    Logged,
    Printed,
    Ready,
    RunChunk,
    Stop,
    decode,
    encode,
)

EVERY_KIND = [
    RunChunk(7, 3, b"function", b"items", CallMode.STAR_ARGS.value, 2, True, ("/seg",),
             "/procpool-1-", True),
    RunChunk(8, 3, None, b"items", CallMode.ONE_ARG.value, 1, False),
    Stop(),
    Ready(1234),
    InitFailed(ValueError("no"), "Traceback ..."),
    ItemDone(7, 1, b"result", ("/r0",)),
    Logged({"name": "app", "msg": "hello", "levelno": 20}),
    Printed(2, "a line\n"),
    ChunkDone(7, b"results", (1,), 0, 4096, 0.25, ("/r1",)),
]


@pytest.mark.parametrize("message", EVERY_KIND, ids=lambda m: type(m).__name__)
def test_every_kind_of_message_comes_back_as_itself(message: object) -> None:
    decoded = decode(encode(message))
    assert type(decoded) is type(message)
    if isinstance(message, InitFailed):  # exceptions compare by identity
        assert isinstance(decoded, InitFailed)
        assert (type(decoded.error), decoded.error.args, decoded.traceback_text) == (
            ValueError, ("no",), "Traceback ...")
    else:
        assert decoded == message


def test_a_message_travels_as_a_plain_tuple_without_class_names() -> None:
    # Named tuples pickle by their class's name, looked up again for each message read.
    assert b"ChunkDone" not in encode(EVERY_KIND[-1])


@pytest.mark.parametrize("payload", [pickle.dumps(("not", "a message")), pickle.dumps((99,)),
                                     pickle.dumps((0, 1))])
def test_bytes_that_are_no_message_raise_instead_of_passing_for_one(payload: bytes) -> None:
    # The dispatcher contains what decoding raises: the worker's stream is lost, not the pool.
    with pytest.raises((IndexError, TypeError)):
        decode(payload)


@pytest.mark.parametrize("size", [0, 1, 100_000, 3_000_000])
def test_send_to_worker_writes_what_recv_bytes_reads(size: int) -> None:
    # Larger than a pipe's buffer too: the write goes on while the worker reads.
    parent_end, worker_end = Pipe(duplex=True)
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(worker_end.recv_bytes()))
    reader.start()
    try:
        send_to_worker(parent_end.fileno(), payload)
        reader.join(30)
        assert not reader.is_alive()
        assert received == [payload]
    finally:
        parent_end.close()
        worker_end.close()
