"""The dispatcher's Poller: multiprocessing.connection.wait's answers, with one poll object."""

from __future__ import annotations

import os
from multiprocessing import Pipe

from procpool._poller import Poller


def test_it_answers_the_ready_objects_as_given_and_nothing_when_the_time_runs_out() -> None:
    poller = Poller()
    quiet_reader, quiet_writer = Pipe(duplex=False)
    busy_reader, busy_writer = Pipe(duplex=False)
    raw_read, raw_write = os.pipe()
    try:
        assert poller.wait([quiet_reader, busy_reader, raw_read], 0.01) == []
        busy_writer.send_bytes(b"x")
        os.write(raw_write, b"y")
        ready = poller.wait([quiet_reader, busy_reader, raw_read], None)
        assert sorted(map(id, ready)) == sorted(map(id, [busy_reader, raw_read]))
        busy_writer.close()  # end of stream counts as ready, as a read would not wait
        busy_reader.recv_bytes()
        assert poller.wait([busy_reader], 0) == [busy_reader]
    finally:
        for connection in (quiet_reader, quiet_writer, busy_reader, busy_writer):
            connection.close()
        os.close(raw_read)
        os.close(raw_write)


def test_objects_come_and_go_between_rounds_and_a_reused_descriptor_is_watched_anew() -> None:
    poller = Poller()
    first_read, first_write = os.pipe()
    os.write(first_write, b"x")
    assert poller.wait([first_read], None) == [first_read]
    os.close(first_read)
    os.close(first_write)
    # The next pipe may well get the same numbers: the new one must be watched, quiet or not.
    second_read, second_write = os.pipe()
    other_read, other_write = os.pipe()
    try:
        assert poller.wait([second_read, other_read], 0) == []
        os.write(other_write, b"y")
        assert poller.wait([second_read, other_read], None) == [other_read]
        assert poller.wait([second_read], 0) == []  # other_read no longer watched
    finally:
        for fd in (second_read, second_write, other_read, other_write):
            os.close(fd)
