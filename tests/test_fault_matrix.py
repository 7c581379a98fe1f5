"""The fault matrix: every way to submit work x options x faults x start methods.

The promise under test: every task a pool accepts is answered exactly once (its value, or an
error that names it), in order where the face promises order, within a bound; the pool still
serves afterwards; nothing is left behind (the autouse ``no_leaks`` fixture in conftest checks
processes, threads and shared-memory segments, and procpool's own exactly-once ledger,
PROCPOOL_CHECK_ACCOUNTING=1).

The matrix is four tables. To add a case, add one row:

- ``FACES``: a way to submit work (a driver that submits ``N_ITEMS`` items and records every
  answer, and how that face delivers them: ``Delivery``);
- ``OPTIONS``: pool or call options (and which faces take them);
- ``FAULTS``: what goes wrong, and what it must turn into (``Fault.expect``);
- ``START_METHODS``.

Every cell runs in a pool of its own. The default run holds every cell on fork and a
representative subset on spawn and forkserver (``DEFAULT_ELSEWHERE``); the rest is marked
``soak`` (``pytest -m soak``, or ``make soak``).

Choices worth knowing:

- Recycling is ``maxtasksperchild=2`` on the Pool. The executor's ``max_tasks_per_child`` is
  refused under fork (the stdlib's rule), so its recycling row uses ``max_memory_per_child=1``
  (one byte: every worker is replaced after every chunk) on every start method.
- ``init-exit``: the initializer calls ``os._exit(3)`` in every worker, so the pool is broken
  by design: every accepted task must fail with ``InitializerFailed``, later submissions too,
  and nothing may hang. ``init-sigkill``: the first worker to start is SIGKILLed inside its
  initializer (only that one, by a marker file): the pool must replace it and do all the work.
- ``kill``: item ``BAD`` SIGKILLs its own worker on its first attempt only. With ``retries=1``
  the retry must deliver the value (and the item must have run exactly twice); without, the
  item fails with ``WorkerDied``, and so may the items sharing its chunk, unless the chunk
  reports each item (``task_timeout``), where a death costs exactly that item.
- Inputs: ``map``, ``imap``, executor ``map`` and ``amap`` read a ``range`` (its chunks travel
  as sub-ranges), ``map_async``, ``imap_unordered`` and executor ``map`` with ``buffersize`` a
  list (chunks of pickled items): both input paths meet every fault on the Pool and executor.
- Map-like faces follow the stdlib: Pool ``map``/``map_async``/``starmap`` fail as a whole with
  the first error; ``imap``/``imap_unordered`` raise at the bad position and go on; executor
  ``map``/``amap`` deliver the values before the bad position in order, raise there, and stop.
- procpool's own errors must name what they answer: "FaultyTask() item 3" (or "items 2-3",
  positions in the call) on map-like faces, the task's function on one-call faces. The task
  counts its own starts (faulty_tasks), so "ran at most once, item BAD twice after a retried
  kill, never in a broken pool" is checked, not assumed.
- Every wait is bounded by one deadline per cell (``BOUNDS``, well under pytest-timeout), so a
  lost task fails its cell quickly with "not answered" instead of hanging the run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import multiprocessing
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from multiprocessing.pool import MaybeEncodingError
from pathlib import Path
from typing import Any

import pytest

import faulty_tasks as ft
import procpool

N_ITEMS = 8
BAD = 3  # odd: with chunksize=2 the item before it shares its chunk and finishes first
# Seconds one cell may wait for all its answers (pytest-timeout is 60). A cell takes well
# under a second on fork and a few seconds on spawn (a respawn per chunk when recycling);
# a lost answer costs its cell the whole bound, so it is kept short.
BOUNDS = {"fork": 10.0, "spawn": 20.0, "forkserver": 20.0}
FOLLOW_UP = list(range(6))  # the small map that shows the pool still serves

# What waiting too long raises, on each face (they are distinct classes before 3.11).
WAIT_TIMEOUTS = (multiprocessing.TimeoutError, concurrent.futures.TimeoutError,
                 asyncio.TimeoutError, TimeoutError)


class NotAnswered(AssertionError):
    """A wait reached the cell's deadline: some accepted task was not answered in time."""


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self, what: str = "an answer") -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise NotAnswered(f"still waiting for {what} after {self.seconds:g} s")
        return left


# ---- what a driver observes ------------------------------------------------------------------


class Delivery(Enum):
    """How a face answers N items, which decides what "exactly once, in order" means."""

    EACH = "one call per item; each answered on its own"
    ORDERED = "a stream: one answer per position, in order; a failure raises there, then goes on"
    UNORDERED = "a stream: one answer per item, in any order"
    WHOLE = "one answer for the lot: every value in order, or the first error"
    PREFIX = "values in order up to the first failure, which raises there and ends the stream"


@dataclass
class Answer:
    position: int | None  # None: the face does not say which item (imap_unordered)
    ok: bool
    payload: Any  # the value, or the exception

    def __repr__(self) -> str:
        where = "?" if self.position is None else self.position
        if self.ok:
            return f"{where}:{self.payload!r}"[:40]
        return f"{where}:{type(self.payload).__name__}({str(self.payload)[:50]!r})"


@dataclass
class Observed:
    answers: list[Answer] = field(default_factory=list)
    rejected: BaseException | None = None  # the call itself refused the work (accepted none)
    problems: list[str] = field(default_factory=list)  # what the driver saw go wrong itself


def attempt(call: Callable[[], Any], position: int | None, what: str) -> Answer:
    """Run one wait; an answer either way, except a wait that ran out (NotAnswered)."""
    try:
        return Answer(position, True, call())
    except WAIT_TIMEOUTS as exc:
        raise NotAnswered(f"{what}: no answer in time ({type(exc).__name__})") from exc
    except Exception as exc:
        return Answer(position, False, exc)


def in_thread(call: Callable[[], Any], deadline: Deadline, what: str) -> Any:
    """Run a blocking call that takes no timeout (Pool.map) in a thread, waiting at most until
    the deadline. If it never returns, the pool's terminate() releases it later."""
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as exc:
            outcome.append((False, exc))

    thread = threading.Thread(target=run, name=f"fault-matrix-{what}", daemon=True)
    thread.start()
    thread.join(deadline.left(what))
    if not outcome:
        raise NotAnswered(f"{what} did not return within {deadline.seconds:g} s")
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


class Counter:
    """Counts the calls of result callbacks: each must be called exactly once."""

    def __init__(self) -> None:
        self.calls = 0
        self._called = threading.Condition()

    def __call__(self, _: object) -> None:
        with self._called:
            self.calls += 1
            self._called.notify_all()

    def wait_for_a_call(self, deadline: Deadline) -> int:
        """A future runs its done-callbacks just *after* waking the waiters (the stdlib's
        order): wait for the first call before counting."""
        with self._called:
            self._called.wait_for(lambda: self.calls > 0, deadline.left("a done-callback"))
            return self.calls


# ---- the faces -------------------------------------------------------------------------------


def drive_apply_async(pool: Any, task: Any, call: dict[str, Any], deadline: Deadline) -> Observed:
    observed = Observed()
    pending = []
    for position in range(N_ITEMS):
        counter = Counter()
        try:
            result = pool.apply_async(task, (position,), callback=counter,
                                      error_callback=counter)
        except Exception as exc:  # refused at the call (a broken pool may)
            observed.answers.append(Answer(position, False, exc))
            continue
        pending.append((position, result, counter))
    for position, result, counter in pending:
        answer = attempt(lambda r=result: r.get(deadline.left()), position, f"item {position}")
        observed.answers.append(answer)
        if counter.calls != 1:
            observed.problems.append(
                f"item {position}: its callbacks ran {counter.calls} times, not once")
    observed.answers.sort(key=lambda a: a.position)
    return observed


def drive_map(pool: Any, task: Any, call: dict[str, Any], deadline: Deadline) -> Observed:
    return _whole(lambda: in_thread(lambda: pool.map(task, range(N_ITEMS), **call),
                                    deadline, "map"))


def drive_starmap(pool: Any, task: Any, call: dict[str, Any], deadline: Deadline) -> Observed:
    items = [(x,) for x in range(N_ITEMS)]
    return _whole(lambda: in_thread(lambda: pool.starmap(task, items, **call),
                                    deadline, "starmap"))


def drive_map_async(pool: Any, task: Any, call: dict[str, Any], deadline: Deadline) -> Observed:
    counter = Counter()
    try:
        result = pool.map_async(task, list(range(N_ITEMS)), callback=counter,
                                error_callback=counter, **call)
    except Exception as exc:
        return Observed(rejected=exc)
    observed = _whole(lambda: result.get(deadline.left("map_async")))
    if counter.calls != 1:
        observed.problems.append(f"map_async: its callbacks ran {counter.calls} times, not once")
    return observed


def _whole(call: Callable[[], list[Any]]) -> Observed:
    answer = attempt(call, None, "the map")
    if not answer.ok:
        return Observed([answer])
    return Observed([Answer(position, True, value)
                     for position, value in enumerate(answer.payload)])


def drive_imap(pool: Any, task: Any, call: dict[str, Any], deadline: Deadline) -> Observed:
    return _stream(pool.imap, task, range(N_ITEMS), call, deadline, ordered=True)


def drive_imap_unordered(pool: Any, task: Any, call: dict[str, Any],
                         deadline: Deadline) -> Observed:
    return _stream(pool.imap_unordered, task, list(range(N_ITEMS)), call, deadline,
                   ordered=False)


def _stream(imap: Any, task: Any, items: Any, call: dict[str, Any], deadline: Deadline, *,
            ordered: bool) -> Observed:
    """imap and imap_unordered: N answers (raising at failures and going on), then the end."""
    observed = Observed()
    try:
        iterator = imap(task, items, **call)
    except Exception as exc:
        return Observed(rejected=exc)
    for position in range(N_ITEMS):
        answer = attempt(lambda: iterator.next(deadline.left()), position if ordered else None,
                         f"answer {position + 1} of {N_ITEMS}")
        if not answer.ok and isinstance(answer.payload, StopIteration):
            break  # ended early: the missing answers are reported by the checks
        observed.answers.append(answer)
    else:
        extra = attempt(lambda: iterator.next(deadline.left()), None, "the end of the stream")
        if not (not extra.ok and isinstance(extra.payload, StopIteration)):
            observed.problems.append(f"the stream gave an answer after {N_ITEMS}: {extra!r}")
    return observed


def drive_submit(executor: Any, task: Any, call: dict[str, Any], deadline: Deadline) -> Observed:
    observed = Observed()
    pending = []
    for position in range(N_ITEMS):
        counter = Counter()
        try:
            future = executor.submit(task, position)
        except Exception as exc:
            observed.answers.append(Answer(position, False, exc))
            continue
        future.add_done_callback(counter)
        pending.append((position, future, counter))
    for position, future, counter in pending:
        observed.answers.append(attempt(lambda f=future: f.result(deadline.left()), position,
                                        f"item {position}"))
        if counter.wait_for_a_call(deadline) != 1:
            observed.problems.append(
                f"item {position}: its done-callbacks ran {counter.calls} times, not once")
    observed.answers.sort(key=lambda a: a.position)
    return observed


def drive_executor_map(executor: Any, task: Any, call: dict[str, Any],
                       deadline: Deadline, items: Any = range(N_ITEMS)) -> Observed:
    try:
        results = executor.map(task, items, timeout=deadline.left(), **call)
    except Exception as exc:
        return Observed(rejected=exc)
    return _prefix(lambda: next(results))


def drive_executor_map_buffered(executor: Any, task: Any, call: dict[str, Any],
                                deadline: Deadline) -> Observed:
    return drive_executor_map(executor, task, {"buffersize": 2, **call}, deadline,
                              list(range(N_ITEMS)))


def _prefix(take: Callable[[], Any]) -> Observed:
    """Executor map: values in order until the first failure, then the end."""
    observed = Observed()
    for position in itertools.count():
        answer = attempt(take, position, f"answer {position + 1} of {N_ITEMS}")
        if not answer.ok and isinstance(answer.payload, StopIteration):
            return observed
        observed.answers.append(answer)
        if not answer.ok:
            break
        if len(observed.answers) > N_ITEMS:
            observed.problems.append(f"more than {N_ITEMS} answers")
            return observed
    after = attempt(take, None, "the end of the map after its failure")
    if not (not after.ok and isinstance(after.payload, StopIteration)):
        observed.problems.append(f"the map went on after raising: {after!r}")
    return observed


def drive_amap(executor: Any, task: Any, call: dict[str, Any], deadline: Deadline) -> Observed:
    async def consume() -> Observed:
        results = executor.amap(task, range(N_ITEMS), **call)
        observed = Observed()
        while True:
            position = len(observed.answers)
            try:
                value = await _anext_or_stop(results)
            except Exception as exc:  # at its position; the stream ends there
                observed.answers.append(Answer(position, False, exc))
                break
            if value is _END:
                return observed
            observed.answers.append(Answer(position, True, value))
            if len(observed.answers) > N_ITEMS:
                observed.problems.append(f"more than {N_ITEMS} answers")
                return observed
        if await _anext_or_stop(results) is not _END:
            observed.problems.append("amap went on after raising")
        return observed

    return _run_async(consume(), deadline, "amap")


_END = object()


async def _anext_or_stop(iterator: Any) -> Any:
    try:
        return await iterator.__anext__()
    except StopAsyncIteration:
        return _END


def drive_run(executor: Any, task: Any, call: dict[str, Any], deadline: Deadline) -> Observed:
    async def gather() -> Observed:
        outcomes = await asyncio.gather(*(executor.run(task, x) for x in range(N_ITEMS)),
                                        return_exceptions=True)
        return Observed([Answer(position, not isinstance(outcome, BaseException), outcome)
                         for position, outcome in enumerate(outcomes)])

    return _run_async(gather(), deadline, "executor.run")


def _run_async(coroutine: Any, deadline: Deadline, what: str) -> Observed:
    async def bounded() -> Observed:
        return await asyncio.wait_for(coroutine, deadline.left(what))  # type: ignore[no-any-return]

    try:
        return asyncio.run(bounded())
    except WAIT_TIMEOUTS as exc:
        raise NotAnswered(f"{what}: not every answer within {deadline.seconds:g} s") from exc


class Kind(Enum):
    POOL = "procpool.Pool"
    EXECUTOR = "procpool.ProcessPoolExecutor"


@dataclass(frozen=True)
class Face:
    name: str
    kind: Kind
    drive: Callable[[Any, Any, dict[str, Any], Deadline], Observed]
    delivery: Delivery
    takes_chunksize: bool


FACES = [
    Face("apply_async", Kind.POOL, drive_apply_async, Delivery.EACH, False),
    Face("map", Kind.POOL, drive_map, Delivery.WHOLE, True),
    Face("map_async", Kind.POOL, drive_map_async, Delivery.WHOLE, True),
    Face("imap", Kind.POOL, drive_imap, Delivery.ORDERED, True),
    Face("imap_unordered", Kind.POOL, drive_imap_unordered, Delivery.UNORDERED, True),
    Face("starmap", Kind.POOL, drive_starmap, Delivery.WHOLE, True),
    Face("submit", Kind.EXECUTOR, drive_submit, Delivery.EACH, False),
    Face("ex_map", Kind.EXECUTOR, drive_executor_map, Delivery.PREFIX, True),
    Face("ex_map_buffered", Kind.EXECUTOR, drive_executor_map_buffered, Delivery.PREFIX, True),
    Face("amap", Kind.EXECUTOR, drive_amap, Delivery.PREFIX, True),
    Face("run", Kind.EXECUTOR, drive_run, Delivery.EACH, False),
]


# ---- the options -----------------------------------------------------------------------------


QUEUED_FORWARDED = {"max_queued": 2, "forward_logs": True, "forward_output": True}


@dataclass(frozen=True)
class Option:
    name: str
    pool: dict[str, Any] = field(default_factory=dict)  # procpool.Pool(...) keywords
    executor: dict[str, Any] = field(default_factory=dict)  # ProcessPoolExecutor(...) keywords
    call: dict[str, Any] = field(default_factory=dict)  # keywords of the submitting call
    needs_chunksize: bool = False  # only for faces that take a chunksize
    retries: int = 0  # how many reruns a lost item gets
    reports_each_item: bool = False  # a death costs exactly its item (docs/failure-model.md)


OPTIONS = [
    Option("plain"),
    Option("chunksize2", call={"chunksize": 2}, needs_chunksize=True),
    Option("retries1", pool={"retries": 1}, executor={"retries": 1}, retries=1,
           reports_each_item=True),
    Option("timeout30", pool={"task_timeout": 30}, executor={"task_timeout": 30},
           reports_each_item=True),
    # The executor's max_tasks_per_child is refused under fork: recycle on memory (1 byte:
    # after every chunk) instead, on every start method.
    Option("recycle", pool={"maxtasksperchild": 2}, executor={"max_memory_per_child": 1}),
    # Submitters wait for room while faults happen, and every record and printed line of the
    # tasks travels on the reply pipes beside the results.
    Option("queued-forwarded", pool=QUEUED_FORWARDED, executor=QUEUED_FORWARDED),
]


# ---- the faults ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expectation:
    bad_error: type[BaseException] | None = None  # None: item BAD must deliver its value
    chunk_shares_failure: bool = False  # the items in BAD's chunk may fail with it
    broken: bool = False  # every answer is InitializerFailed, and so is later work
    bad_runs: tuple[int, int] = (0, 1)  # how often item BAD may start (min, max)
    check: Callable[[BaseException], str | None] | None = None  # more about the error


@dataclass(frozen=True)
class Fault:
    name: str
    task_fault: str = "none"  # what FaultyTask does to item BAD
    start_fault: str | None = None  # what the initializer does (faulty_tasks.start_worker)
    expect: Callable[[Option], Expectation] = lambda option: Expectation()


def _sigkilled(error: BaseException) -> str | None:
    if getattr(error, "signal_name", None) != "SIGKILL":
        return f"WorkerDied should say SIGKILL, says {getattr(error, 'signal_name', None)!r}"
    return None


def _kill_expectation(option: Option) -> Expectation:
    if option.retries:
        return Expectation(bad_runs=(2, 2))  # killed, then run again and delivered
    return Expectation(procpool.WorkerDied, chunk_shares_failure=not option.reports_each_item,
                       bad_runs=(1, 1), check=_sigkilled)


def _names_value_error(error: BaseException) -> str | None:
    return None if str(error) == f"bad value {BAD}" else f"not the task's error: {error!r}"


FAULTS = [
    Fault("none"),
    Fault("kill", task_fault="kill", expect=_kill_expectation),
    Fault("init-exit", start_fault="exit", expect=lambda option: Expectation(
        procpool.InitializerFailed, broken=True, bad_runs=(0, 0))),
    Fault("init-sigkill", start_fault="sigkill"),
    Fault("raise", task_fault="raise", expect=lambda option: Expectation(
        ValueError, bad_runs=(1, 1), check=_names_value_error)),
    Fault("unpicklable", task_fault="unpicklable", expect=lambda option: Expectation(
        procpool.ResultSerializationError, bad_runs=(1, 1),
        check=lambda error: None if isinstance(error, MaybeEncodingError)
        else "not a multiprocessing.pool.MaybeEncodingError")),
]


# ---- the cells -------------------------------------------------------------------------------

START_METHODS = ["fork", "spawn", "forkserver"]
SINGLE_CALL_FACES = ("apply_async", "submit", "run")

# On spawn and forkserver, where every worker start costs more, the default run holds these
# (face, option, fault) cells: every face against the faults that involve starting workers, and
# a retried death on the streaming faces. The others are marked soak.
DEFAULT_ELSEWHERE = {
    (face.name, "plain", fault)
    for face in FACES
    for fault in ("kill", "init-exit", "init-sigkill")
} | {(face, "retries1", "kill") for face in ("apply_async", "imap", "ex_map", "amap")} | {
    (face, "queued-forwarded", "kill") for face in SINGLE_CALL_FACES}

# Cells run only with -m soak even on fork: (face, option, fault). max_queued bounds only
# single calls; on the map-like faces that option row is forwarding alone, a soak's check.
SLOW_ON_FORK: set[tuple[str, str, str]] = {
    (face.name, "queued-forwarded", fault.name) for face in FACES for fault in FAULTS
    if face.name not in SINGLE_CALL_FACES}


@dataclass(frozen=True)
class Cell:
    start_method: str
    face: Face
    option: Option
    fault: Fault

    @property
    def id(self) -> str:
        return f"{self.start_method}-{self.face.name}-{self.option.name}-{self.fault.name}"

    @property
    def soak(self) -> bool:
        key = (self.face.name, self.option.name, self.fault.name)
        if self.start_method == "fork":
            return key in SLOW_ON_FORK
        return key not in DEFAULT_ELSEWHERE


def _cells() -> Iterator[Any]:
    for start_method, face, option, fault in itertools.product(START_METHODS, FACES, OPTIONS,
                                                               FAULTS):
        if option.needs_chunksize and not face.takes_chunksize:
            continue
        cell = Cell(start_method, face, option, fault)
        yield pytest.param(cell, id=cell.id, marks=[pytest.mark.soak] if cell.soak else [])


# ---- the checks ------------------------------------------------------------------------------

_NAMED = re.compile(r"(\w+)\(\) items? (\d+)(?:-(\d+))?")


def named_items(error: BaseException) -> set[int]:
    """The items an error names: procpool's say "FaultyTask() item 3" or "... items 2-3";
    the task's own ValueError says "bad value 3"."""
    if not isinstance(error, procpool.ProcpoolError):
        match = re.fullmatch(r"bad value (\d+)", str(error))
        return {int(match[1])} if match else set()
    items: set[int] = set()
    for function, first, last in _NAMED.findall(str(error)):
        if function == "FaultyTask":
            items.update(range(int(first), int(last or first) + 1))
    return items


def check_answers(cell: Cell, expected: Expectation, observed: Observed) -> list[str]:
    """Every problem with what the face answered, as sentences."""
    problems = list(observed.problems)
    delivery = cell.face.delivery
    if observed.rejected is not None:
        if not (expected.broken and isinstance(observed.rejected, procpool.InitializerFailed)):
            problems.append(f"the call refused the work: {observed.rejected!r}")
        return problems
    answers = observed.answers
    if delivery is Delivery.WHOLE and len(answers) == 1 and not answers[0].ok:
        return problems + _check_error(cell, expected, answers[0].payload, BAD, whole=True)
    if delivery is Delivery.WHOLE and (expected.bad_error or expected.broken):
        problems.append(f"map returned {len(answers)} values instead of raising "
                        f"{(expected.bad_error or procpool.InitializerFailed).__name__}")
    if delivery is Delivery.UNORDERED:
        return problems + _check_unordered(cell, expected, answers)

    positions = [answer.position for answer in answers]
    if delivery is Delivery.PREFIX:
        if positions != list(range(len(answers))):
            problems.append(f"answers out of order: positions {positions}")
        failures = [answer for answer in answers if not answer.ok]
        must_fail = expected.broken or expected.bad_error is not None
        if not failures and len(answers) != N_ITEMS:
            problems.append(f"{len(answers)} answers for {N_ITEMS} items and no error")
        if not failures and must_fail:
            problems.append(f"no error raised for item {BAD}")
    elif delivery is Delivery.ORDERED and expected.broken:
        if not answers or positions != list(range(len(answers))):
            problems.append(f"answers at positions {positions}")
    elif positions != list(range(N_ITEMS)):
        problems.append(f"{len(answers)} answers at positions {positions}, "
                        f"expected one for each of 0-{N_ITEMS - 1} in order")
    for answer in answers:
        assert answer.position is not None
        if answer.ok:
            if answer.payload != ft.value_of(answer.position):
                problems.append(f"item {answer.position}: wrong value {answer.payload!r}")
            elif answer.position == BAD and (expected.bad_error or expected.broken):
                problems.append(f"item {BAD} delivered a value, expected "
                                f"{(expected.bad_error or procpool.InitializerFailed).__name__}")
        else:
            problems += _check_error(cell, expected, answer.payload, answer.position)
    return problems


def _check_unordered(cell: Cell, expected: Expectation, answers: list[Answer]) -> list[str]:
    problems = []
    values = [a.payload for a in answers if a.ok]
    errors = [a.payload for a in answers if not a.ok]
    by_value = {ft.value_of(x): x for x in range(N_ITEMS)}
    delivered = [by_value.get(value) for value in values]
    if None in delivered:
        problems.append(f"values no item has: {values}")
    duplicates = {x for x in delivered if delivered.count(x) > 1}
    if duplicates:
        problems.append(f"items answered more than once: {sorted(duplicates)}")  # type: ignore
    missing = sorted(set(range(N_ITEMS)) - set(delivered))
    if expected.broken:
        if values or not errors:
            problems.append(f"a broken pool answered {len(values)} values, {len(errors)} errors")
    elif len(answers) != N_ITEMS:
        problems.append(f"{len(answers)} answers for {N_ITEMS} items")
    elif len(errors) != len(missing):
        problems.append(f"{len(errors)} errors for {len(missing)} items without a value")
    named: set[int] = set()
    for error in errors:
        problems += _check_error(cell, expected, error, None)
        named |= named_items(error)
    unnamed = any(not named_items(error) for error in errors)  # reported once, above
    if not expected.broken and not unnamed and not named >= set(missing):
        problems.append(f"items {missing} have no value, the errors name only {sorted(named)}")
    return problems


def _check_error(cell: Cell, expected: Expectation, error: BaseException,
                 position: int | None, whole: bool = False) -> list[str]:
    """One error answer at ``position`` (None: not known; ``whole``: a map's one error)."""
    shown = f"{type(error).__name__}: {str(error)[:300]}"
    where = "the map" if whole else f"item {'?' if position is None else position}"
    if expected.broken:
        if isinstance(error, procpool.InitializerFailed):
            return []
        return [f"{where}: expected InitializerFailed, got {shown}"]
    if expected.bad_error is None or not isinstance(error, expected.bad_error):
        return [f"{where}: unexpected {shown}"]
    problems = []
    if expected.check is not None:
        problem = expected.check(error)
        if problem:
            problems.append(f"{where}: {problem}")
    if not isinstance(error, procpool.ProcpoolError):
        if position is not None and position != BAD:
            problems.append(f"{where}: failed with item {BAD}'s error {shown}")
        return problems
    # procpool's own errors must name the item they answer.
    named = named_items(error)
    if cell.face.delivery is Delivery.EACH:
        # One call per item: the error names the call's function, and no item ("item 0" of a
        # single call would be wrong).
        if "FaultyTask()" not in str(error) or named:
            problems.append(f"{where}: the error does not name its call (FaultyTask(), with "
                            f"no item number): {shown}")
        elif position != BAD:
            problems.append(f"{where}: failed with an error meant for item {BAD}: {shown}")
        return problems
    must_name = {BAD} if position is None else {position, BAD}
    if position is not None and position != BAD and not expected.chunk_shares_failure:
        problems.append(f"{where}: failed although only item {BAD} should: {shown}")
    elif not must_name <= named:
        problems.append(f"{where}: the error should name item(s) {sorted(must_name)}, "
                        f"names {sorted(named) or 'none'}: {shown}")
    return problems


def check_runs(expected: Expectation, observed: Observed, log_dir: Path) -> list[str]:
    """How often each item started (faulty_tasks records it), against what the fault allows:
    any item at most once, item BAD within ``bad_runs``, a delivered value at least once."""
    delivered = {a.position for a in observed.answers if a.ok and a.position is not None}
    by_value = {ft.value_of(x): x for x in range(N_ITEMS)}
    delivered |= {by_value.get(a.payload) for a in observed.answers  # imap_unordered
                  if a.ok and a.position is None}
    problems = []
    for x in range(N_ITEMS):
        runs = ft.runs_of(log_dir, x)
        low, high = expected.bad_runs if x == BAD else (0, 0 if expected.broken else 1)
        if x in delivered:
            low = max(low, 1)
        elif observed.rejected is not None or x != BAD:
            low = 0
        if not low <= runs <= high:
            problems.append(f"item {x} started {runs} times (allowed: {low} to {high})")
    return problems


# ---- opening, following up, ending -------------------------------------------------------------


def open_pool(cell: Cell, tmp_path: Path) -> Any:
    """The pool or executor of one cell: 2 workers, the cell's start method and options."""
    start: dict[str, Any] = {}
    if cell.fault.start_fault is not None:
        start = {"initializer": ft.start_worker,
                 "initargs": (str(tmp_path), cell.fault.start_fault)}
    if cell.face.kind is Kind.POOL:
        return procpool.Pool(2, context=cell.start_method, **start, **cell.option.pool)
    return procpool.ProcessPoolExecutor(2, mp_context=cell.start_method, **start,
                                        **cell.option.executor)


def follow_up(cell: Cell, pool: Any, expected: Expectation, deadline: Deadline) -> list[str]:
    """The pool still serves (a small map), or, when broken by design, still says so."""
    if cell.face.kind is Kind.POOL:
        def run() -> Any:
            return pool.map_async(ft.value_of, FOLLOW_UP).get(deadline.left("the follow-up"))
    else:
        def run() -> Any:
            return list(pool.map(ft.value_of, FOLLOW_UP, timeout=deadline.left("the follow-up")))
    answer = attempt(run, None, "the follow-up map")
    if expected.broken:
        if answer.ok or not isinstance(answer.payload, procpool.InitializerFailed):
            return [f"a broken pool's follow-up map gave {answer!r}, not InitializerFailed"]
        return []
    if not answer.ok or answer.payload != [ft.value_of(x) for x in FOLLOW_UP]:
        return [f"the pool no longer serves: its follow-up map gave {answer!r}"]
    return []


def end(cell: Cell, pool: Any, deadline: Deadline) -> list[str]:
    """End the pool the graceful way (close+join, shutdown(wait=True)), within the bound."""
    def graceful() -> None:
        if cell.face.kind is Kind.POOL:
            pool.close()
            pool.join()
        else:
            pool.shutdown(wait=True)

    try:
        in_thread(graceful, Deadline(max(5.0, deadline.end - time.monotonic())), "ending")
    except NotAnswered:
        abort(cell, pool)
        return ["the pool did not end (close/join or shutdown(wait=True)) within the bound"]
    return []


def abort(cell: Cell, pool: Any) -> None:
    if cell.face.kind is Kind.POOL:
        pool.terminate()
    else:
        pool.kill_workers()


# ---- the test --------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", list(_cells()))
def test_every_accepted_task_is_answered_exactly_once(cell: Cell, tmp_path: Path) -> None:
    log_dir = tmp_path / "runs"
    log_dir.mkdir()
    task = ft.FaultyTask(cell.fault.task_fault, BAD, str(log_dir))
    expected = cell.fault.expect(cell.option)
    deadline = Deadline(BOUNDS[cell.start_method])
    pool = open_pool(cell, tmp_path)
    observed = Observed()
    try:
        observed = cell.face.drive(pool, task, dict(cell.option.call), deadline)
        problems = check_answers(cell, expected, observed)
        problems += follow_up(cell, pool, expected, deadline)
    except NotAnswered as exc:
        abort(cell, pool)
        pytest.fail(f"{cell.id}: {exc} (answers so far: {observed.answers})", pytrace=False)
    except BaseException:
        abort(cell, pool)
        raise
    problems += end(cell, pool, deadline)
    problems += check_runs(expected, observed, log_dir)
    if problems:
        pytest.fail(f"{cell.id}:\n  " + "\n  ".join(grouped(problems))
                    + f"\n  answers: {observed.answers}", pytrace=False)


def grouped(problems: list[str]) -> list[str]:
    """Problems that differ only in the item they are about, as one line ("items 0-7: ...")."""
    items: dict[str, list[int]] = {}
    lines: list[str] = []
    for problem in problems:
        match = re.fullmatch(r"item (\d+): (.*)", problem, re.DOTALL)
        if match is None:
            lines.append(problem)
            continue
        if match[2] not in items:
            items[match[2]] = []
            lines.append(match[2])
        items[match[2]].append(int(match[1]))
    out = []
    for line in lines:
        if line in items:
            numbers = items[line]
            if len(numbers) == 1:
                ranges = str(numbers[0])
            elif numbers == list(range(numbers[0], numbers[-1] + 1)):
                ranges = f"{numbers[0]}-{numbers[-1]}"
            else:
                ranges = ",".join(map(str, numbers))
            line = f"item{'s' if len(numbers) > 1 else ''} {ranges}: {line}"
        out.append(line)
    return out


def test_the_matrix_covers_every_row() -> None:
    """Every face, option, fault and start method appears in some cell, and the default run
    holds at least one cell of each start method."""
    cells = [param.values[0] for param in _cells()]
    for attribute, rows in (("face", FACES), ("option", OPTIONS), ("fault", FAULTS)):
        assert {getattr(c, attribute).name for c in cells} == {r.name for r in rows}
    assert {c.start_method for c in cells if not c.soak} == set(START_METHODS)
    assert len({c.id for c in cells}) == len(cells)
