"""A module whose import, in a pool's worker, takes as long as the test wants: the heavy import
of a task's module (torch, tensorflow) by a fresh worker under spawn or forkserver.

In a process that multiprocessing started, with ``PROCPOOL_TEST_SLOW_IMPORT`` set to
``started<os.pathsep>release`` (two FIFOs), the import says "importing" on the first and
waits for what the test writes to the second; it holds the second open for reading and
writing first, so the test's writer never waits, and finds it gone if the worker was killed.
Anywhere else (the test process itself) the import is immediate.
"""

from __future__ import annotations

import multiprocessing
import os
import threading

if multiprocessing.parent_process() is not None and "PROCPOOL_TEST_SLOW_IMPORT" in os.environ:
    _started, _release = os.environ["PROCPOOL_TEST_SLOW_IMPORT"].split(os.pathsep)
    _fd = os.open(_release, os.O_RDWR)
    with open(_started, "w") as _fifo:
        _fifo.write("importing")
    os.read(_fd, 100)
    os.close(_fd)


def double(x: int) -> int:
    return 2 * x


def hang(_: object = None) -> None:
    threading.Event().wait()
