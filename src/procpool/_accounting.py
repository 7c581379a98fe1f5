"""The exactly-once check: a debug ledger of every item a pool accepted and how it was answered.

procpool promises that every task a pool accepts is answered exactly once: with its value, with
an error that names it, or by the cancellation its caller asked for. With the environment
variable ``PROCPOOL_CHECK_ACCOUNTING=1`` each dispatcher keeps a ``Ledger``: it records the
items of every chunk it accepts and every answer it hands to a sink, and when the pool ends it
reports any item answered twice or never. A report is logged as an error and kept in this
module until ``take_violations()`` collects it (the test suite runs with the check on and fails
any test that leaves a report).

Owns the ledger only; it decides nothing and changes no outcome. Off by default: the ledger
holds every accepted item's index, which a production pool need not pay for.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections import deque

from ._log import logger
from ._runtime_typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._task import Chunk

ENVIRONMENT_VARIABLE = "PROCPOOL_CHECK_ACCOUNTING"


_violations: list[str] = []
_violations_lock = threading.Lock()


def enabled() -> bool:
    return os.environ.get(ENVIRONMENT_VARIABLE, "") not in ("", "0")


def take_violations() -> list[str]:
    """Every report made since the last call (and forget them)."""
    with _violations_lock:
        taken = list(_violations)
        _violations.clear()
    return taken


class Ledger:
    """How many times each accepted item has been answered, by sink and index.

    Holds no sink: a result object must be collectable exactly as without the check. Every
    chunk of a sink refers to it, so a sink collected while an accepted item of it has no
    answer was lost silently, and that is reported as it happens. Called from caller threads
    (``accepted``), the dispatcher thread and the garbage collector, so it keeps its own lock
    and takes the collector's news through a deque, never under it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # id(sink) -> (what the sink was, {item index: times answered})
        self._answers: dict[int, tuple[str, dict[int, int]]] = {}
        self._collected: deque[int] = deque()  # ids of sinks the collector took
        # The last ids forgotten, and why: a report can then tell a sink the ledger forgot
        # from one it never saw.
        self._forgotten: dict[int, str] = {}
        self._problems: list[str] = []

    def accepted(self, chunk: Chunk) -> None:
        with self._lock:
            self._forget_collected()
            key = id(chunk.sink)
            entry = self._answers.get(key)
            if entry is None:
                entry = self._answers[key] = (repr(chunk.sink), {})
                with contextlib.suppress(TypeError):  # a sink without weak references
                    weakref.finalize(chunk.sink, self._collected.append, key)
            counts = entry[1]
            for index in _indices(chunk):
                if index in counts:
                    self._problems.append(f"{_describe(chunk, index)} was accepted twice")
                counts[index] = 0

    def answered(self, chunk: Chunk, how: str) -> None:
        """``how``: "done", "failed" or "dropped" (nobody wanted it any more)."""
        with self._lock:
            self._forget_collected()
            entry = self._answers.get(id(chunk.sink))
            for index in _indices(chunk):
                if entry is None or index not in entry[1]:
                    known = ("its sink's entry was forgotten "
                             + self._forgotten.get(id(chunk.sink), "never")
                             if entry is None else
                             f"its sink had items {sorted(entry[1])[:5]}...")
                    self._problems.append(
                        f"{_describe(chunk, index)} was answered ({how}) but never accepted "
                        f"(chunk {chunk.chunk_id}: items {chunk.first_index} to "
                        f"{chunk.first_index + chunk.size - 1}; {known})")
                    continue
                entry[1][index] += 1
                if entry[1][index] > 1:
                    self._problems.append(
                        f"{_describe(chunk, index)} was answered {entry[1][index]} times "
                        f"(the last: {how})")

    def close(self) -> None:
        """The pool has ended: report every item that was never answered, and every problem
        seen on the way."""
        with self._lock:
            self._forget_collected()
            for key in list(self._answers):
                self._check_answered(key, "when the pool ended")
            problems, self._problems = self._problems, []
        if problems:
            for problem in problems:
                logger().error("procpool accounting: %s", problem)
            with _violations_lock:
                _violations.extend(problems)

    def _forget_collected(self) -> None:
        while self._collected:
            self._check_answered(self._collected.popleft(), "when its result was collected")

    def _check_answered(self, key: int, when: str) -> None:
        entry = self._answers.pop(key, None)
        if entry is None:
            return
        if len(self._forgotten) > 10_000:
            self._forgotten.clear()
        self._forgotten[key] = f"{when} (it was {entry[0]})"
        sink, counts = entry
        missing = sorted(index for index, count in counts.items() if count == 0)
        if missing:
            shown = ", ".join(map(str, missing[:10]))
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            self._problems.append(f"items {shown}{more} of {sink} had no answer {when}")


def _indices(chunk: Chunk) -> range:
    return range(chunk.first_index, chunk.first_index + chunk.size)


def _describe(chunk: Chunk, index: int) -> str:
    return f"{chunk.name}() item {index} of {chunk.sink!r}"
