"""A seeded kill storm: thousands of short tasks through every face while workers are SIGKILLed.

    python tools/soak.py [--seed N] [--duration SECONDS] [--max-tasks N]
                         [--methods fork,spawn,forkserver] [--faces apply_async,imap,...]
                         [--threads N] [--workers N]

For each start method, one ``procpool.Pool`` and one ``procpool.ProcessPoolExecutor`` serve
several submitting threads at once, each picking faces at random (``apply_async``,
``map_async``, ``imap``, ``imap_unordered``, executor ``submit`` and ``map``, and asyncio's
``await executor.run``, ``async for`` over ``executor.amap`` and over the Pool's ``imap``),
and faces that give up on what they asked for: futures cancelled with ``cancel()`` (at once,
or once the call's first answer is in, when they wait in a worker's pipe or run), asyncio
tasks of ``executor.run`` cancelled the same way, and streams left part-way (the Pool's
``imap`` dropped, the executor's ``map`` closed, ``amap`` closed); some calls with
``retries``, some with a ``chunksize``, some with a ``task_timeout`` (and now and then a task
among them that hangs until that timeout kills its worker), some tasks carrying numpy arrays
of 320 KiB (which travel through shared memory); one of the two pools recycles its workers
(``maxtasksperchild``); in some runs both bound their queues (``max_queued``), and for every
other start method the executor's ``submit`` is overridden, which sends its maps through it;
some map-like calls report ``progress=`` to a callable that checks every count. A
killer thread SIGKILLs a random *busy* worker every 50-200 ms (not one running a task that
hangs: its timeout is to end it): tasks write ``busy-<pid>`` in the run's log directory while
they run, and append their id to ``runs-<pid>`` as they start, so the soak knows which task
each kill hit and how often every task ran.

Checked, not assumed, at the end of each start method:

- every task answered exactly once, within a bound (a map that fails as a whole answers each
  of its tasks with its error; an executor map, and amap, stop at their first error, as the
  stdlib's map does);
- a task whose ``cancel()`` said yes (or whose asyncio task ended cancelled) is cancelled,
  done for ``concurrent.futures.wait()``, and answered by nothing else; one cancelled without
  being asked to is a violation; a task of a stream left part-way is owed no answer;
- values right (arrays included), and the only errors are ``WorkerDied``, for a worker the
  killer killed, and ``TaskTimeout``, for a task that hangs (or any task of a call that fails
  as a whole, or that cannot say which task an error answers: ``map_async``,
  ``imap_unordered``), either for a task with ``retries=r`` only once all ``r + 1`` attempts
  were made; a task that hangs never returns a value;
- no task ran more often than 1 + the kills of ours that hit it (+ its retries, for a task
  that hangs: each timeout is a kill too). The pool kills a worker to stop a cancelled task
  or one past its timeout, but takes back what is queued behind it first, or spares a worker
  that has gone on to it: nothing that started runs again for such a kill, and no other
  task fails with ``WorkerDied`` for it;
- nothing left: no child process, no procpool thread, no /dev/shm segment of this run, and no
  report from procpool's exactly-once ledger (PROCPOOL_CHECK_ACCOUNTING=1).

The seed is printed first: rerun with ``--seed`` to replay the same choices (which faces,
batches, arrays and delays; the kills' timing still depends on the machine). Exits 1 on any
violation, after one summary line.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import contextlib
import importlib
import multiprocessing
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))  # the soak's task lives in tests/faulty_tasks.py
os.environ["PYTHONPATH"] = os.pathsep.join(  # and spawned workers must import it too
    p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
os.environ.setdefault("PROCPOOL_CHECK_ACCOUNTING", "1")

import numpy as np  # noqa: E402
import psutil  # noqa: E402

import faulty_tasks as ft  # noqa: E402
import procpool  # noqa: E402

CALL_BOUND = 60.0  # seconds any one call may take to answer all its tasks
END_BOUND = 30.0  # seconds close/join and shutdown may take
ARRAY_ITEMS = 40_000  # float64: 320 KiB, above the 256 KiB shared-memory threshold
ARRAY_SHARE = 0.15  # of tasks carry an array
RETRY_CHOICES = (0, 0, 1, 2)  # retries= of a call, picked at random
# task_timeout= of a call (not submit or run, which take no options), picked at random: far
# above what a task takes, even a spawned worker's first, which imports numpy.
TIMEOUT_CHOICES = (None, None, 2.0)
HANG_SHARE = 0.05  # of calls with a task_timeout have one task that hangs
HANG_SECONDS = 600.0  # how long it would sleep: its timeout ends it
MAX_TASKS_PER_CHILD = 100  # of the pool that recycles (picked per start method)
MAX_QUEUED = 16  # the pools' max_queued, in the runs that set it (picked per start method)
CHUNKSIZE_CHOICES = (None, None, 1, 4)  # chunksize= of a map-like call, picked at random
PROGRESS_SHARE = 0.3  # of the calls that take progress= are given a ProgressCheck
# The map-like faces whose calls take progress= (amap takes none).
PROGRESS_FACES = {"map_async", "imap", "imap_unordered", "executor_map", "aimap", "imap_left",
                  "executor_map_left"}
FACE_WEIGHTS = {"apply_async": 2, "map_async": 2, "imap": 2, "imap_unordered": 1,
                "submit": 2, "executor_map": 2, "run": 1, "amap": 1, "aimap": 1,
                "cancel": 1, "acancel": 1, "imap_left": 1, "executor_map_left": 1,
                "amap_left": 1}
# Faces that submit one call per task, and take no options (the executor's submit and run
# take the function's arguments only).
ONE_CALL_FACES = {"apply_async", "submit", "run", "cancel", "acancel"}
NO_OPTIONS_FACES = {"submit", "run", "cancel", "acancel"}
# What a face does to a task besides asking for it (Task.plan), picked at random per task.
AT_ONCE, AFTER_FIRST, LEFT = "cancelled at once", "cancelled after the first answer", "left"
CANCEL_PLANS = (None, None, AT_ONCE, AFTER_FIRST)


@dataclass
class Task:
    task_id: int
    call: int
    face: str
    retries: int
    has_array: bool
    hangs: bool = False  # sleeps until its task_timeout kills it
    plan: str | None = None  # AT_ONCE, AFTER_FIRST (cancel it then), LEFT (its stream is left)
    # What fails, times out and is retried with it: itself, or (an executor map through an
    # overridden submit, one call per chunk) its chunk, named by the chunk's first task.
    unit: int = -1
    answers: list[tuple[bool, Any]] = field(default_factory=list)
    # No answer due: an executor map stopped at an earlier error, or its stream was left.
    dropped: bool = False
    cancelled: bool = False  # its cancel() said yes, or its asyncio task ended cancelled


@dataclass
class Storm:
    """One start method's run: its pools, its tasks and what happened to them."""

    method: str
    log_dir: str
    rng_seed: int
    pool: Any = None
    executor: Any = None
    tasks: dict[int, Task] = field(default_factory=dict)
    calls: dict[int, list[int]] = field(default_factory=dict)
    # (the worker's process token, task it hit): ft.process_token, pid first
    kills: list[tuple[str, int | None]] = field(default_factory=list)
    violations: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    next_task: int = 0
    next_call: int = 0
    submit_overridden: bool = False  # the executor's maps go through submit, a call a chunk

    def new_call(self, rng: random.Random, face: str, size: int,
                 options: dict[str, Any]) -> tuple[int, list[Any]]:
        with self.lock:
            call, self.next_call = self.next_call, self.next_call + 1
            first, self.next_task = self.next_task, self.next_task + size
        hanging = (first + rng.randrange(size)
                   if options.get("task_timeout") and rng.random() < HANG_SHARE else None)
        if face in ("cancel", "acancel"):
            plans = [rng.choice(CANCEL_PLANS) for _ in range(size)]
        elif face.endswith("_left"):  # how many answers are read before the stream is left
            kept = rng.randrange(size)
            plans = [None] * kept + [LEFT] * (size - kept)
        else:
            plans = [None] * size
        # A map through an overridden submit runs, fails and retries a chunk as one call.
        per_chunk = self.submit_overridden and face.startswith("executor_map")
        chunksize = (options.get("chunksize") or 1) if per_chunk else 1
        specs = []
        for task_id, plan in zip(range(first, first + size), plans, strict=True):
            array = (np.full(ARRAY_ITEMS, float(task_id)) if rng.random() < ARRAY_SHARE
                     else None)
            seconds = HANG_SECONDS if task_id == hanging else rng.uniform(0.001, 0.005)
            specs.append((task_id, self.log_dir, seconds, array))
            with self.lock:
                self.tasks[task_id] = Task(task_id, call, face, options.get("retries", 0),
                                           array is not None, hangs=task_id == hanging,
                                           plan=plan,
                                           unit=task_id - (task_id - first) % chunksize)
        with self.lock:
            self.calls[call] = [spec[0] for spec in specs]
        return call, specs

    def answer(self, task_id: int, ok: bool, payload: Any) -> None:
        with self.lock:
            self.tasks[task_id].answers.append((ok, payload))

    def planned(self, task_id: int) -> str | None:
        with self.lock:
            return self.tasks[task_id].plan

    def mark(self, task_ids: Iterable[int], *, dropped: bool = False,
             cancelled: bool = False) -> None:
        with self.lock:
            for task_id in task_ids:
                task = self.tasks[task_id]
                task.dropped |= dropped
                task.cancelled |= cancelled

    def violation(self, kind: str, text: str) -> None:
        """``kind``: a short name the summary groups by; ``text``: this occurrence."""
        with self.lock:
            self.violations.append((kind, f"[{self.method}] {text}"))


class ProgressCheck:
    """A call's ``progress=``: every snapshot must count no more items than the call has, its
    failures among them, and never fewer than the one before (an item counted twice, or a
    count that goes back, is a violation)."""

    def __init__(self, storm: Storm, face: str, size: int) -> None:
        self._storm, self._face, self._size = storm, face, size
        self._lock = threading.Lock()
        self._completed = 0

    def __call__(self, snapshot: procpool.Progress) -> None:
        with self._lock:
            problem = None
            if not 0 <= snapshot.failed <= snapshot.completed <= self._size:
                problem = f"counts {snapshot.completed} done, {snapshot.failed} failed"
            elif snapshot.total not in (None, self._size):
                problem = f"total {snapshot.total}"
            elif snapshot.completed < self._completed:
                problem = f"completed went back from {self._completed} to {snapshot.completed}"
            self._completed = max(self._completed, snapshot.completed)
        if problem:
            self._storm.violation("progress miscounted",
                                  f"{self._face} call of {self._size} tasks: {problem}")


class Late(Exception):
    """A call's bound ran out before every task was answered."""


def settle(storm: Storm, task_id: int, wait: Callable[[], Any]) -> None:
    try:
        value = wait()
    except (multiprocessing.TimeoutError, TimeoutError) as exc:
        raise Late(f"task {task_id}") from exc
    except Exception as exc:
        storm.answer(task_id, False, exc)
    else:
        storm.answer(task_id, True, value)


def left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


# ---- the faces: each submits one call of specs and records every answer ----------------------


def face_apply_async(storm: Storm, specs: list[Any], options: dict[str, Any],
              deadline: float) -> None:
    results = [(spec[0], storm.pool.apply_async(ft.soak_task, (spec,), **options))
               for spec in specs]
    for task_id, result in results:
        settle(storm, task_id, lambda r=result: r.get(left(deadline)))


def face_map_async(storm: Storm, specs: list[Any], options: dict[str, Any],
              deadline: float) -> None:
    result = storm.pool.map_async(ft.soak_task, specs, **options)
    try:
        values = result.get(left(deadline))
    except multiprocessing.TimeoutError as exc:
        raise Late("map_async") from exc
    except Exception as exc:  # the map fails as a whole: each task is answered by it
        for spec in specs:
            storm.answer(spec[0], False, exc)
        return
    if len(values) != len(specs):
        storm.violation("map_async: wrong number of values",
                        f"map_async returned {len(values)} values for {len(specs)} tasks")
    for spec, value in zip(specs, values, strict=False):
        storm.answer(spec[0], True, value)


def face_imap(storm: Storm, specs: list[Any], options: dict[str, Any],
              deadline: float) -> None:
    iterator = storm.pool.imap(ft.soak_task, specs, **options)
    for spec in specs:
        settle(storm, spec[0], lambda: iterator.next(left(deadline)))
    _expect_end(storm, iterator, deadline, "imap")


def face_imap_left(storm: Storm, specs: list[Any], options: dict[str, Any],
              deadline: float) -> None:
    """The Pool's ``imap``, dropped after some answers: nobody is owed the rest."""
    iterator = storm.pool.imap(ft.soak_task, specs, **options)
    kept = _kept(storm, specs)
    for spec in specs[:kept]:
        settle(storm, spec[0], lambda i=iterator: i.next(left(deadline)))
    del iterator  # the pool learns of it when the iterator is collected
    storm.mark([spec[0] for spec in specs[kept:]], dropped=True)


def face_imap_unordered(storm: Storm, specs: list[Any], options: dict[str, Any],
              deadline: float) -> None:
    iterator = storm.pool.imap_unordered(ft.soak_task, specs, **options)
    ids = {spec[0] for spec in specs}
    errors = []
    for _ in specs:
        try:
            value = iterator.next(left(deadline))
        except (multiprocessing.TimeoutError, TimeoutError) as exc:
            raise Late("imap_unordered") from exc
        except StopIteration:
            storm.violation("imap_unordered ended early",
                            f"imap_unordered ended early: tasks {sorted(ids)} unanswered")
            return
        except Exception as exc:
            errors.append(exc)
            continue
        task_id = value[0] if isinstance(value, tuple) else None
        if task_id not in storm.tasks or storm.tasks[task_id].call != storm.tasks[
                specs[0][0]].call:
            storm.violation("imap_unordered: a stranger's value",
                            f"imap_unordered gave a value of no task of its call: {value!r}")
            continue
        storm.answer(task_id, True, value)
        ids.discard(task_id)
    # Errors do not say which task they answer: give them to the tasks left, in order.
    if len(errors) != len(ids):
        storm.violation("imap_unordered: errors do not match",
                        f"imap_unordered: {len(errors)} errors for {len(ids)} tasks without "
                        "a value")
    for task_id, error in zip(sorted(ids), errors, strict=False):
        storm.answer(task_id, False, error)
    _expect_end(storm, iterator, deadline, "imap_unordered")


def _expect_end(storm: Storm, iterator: Any, deadline: float, face: str) -> None:
    try:
        extra = iterator.next(left(deadline))
    except StopIteration:
        return
    except Exception as exc:
        extra = exc
    storm.violation(f"{face}: answers after the last task",
                    f"{face} answered more than its tasks: {extra!r}")


def face_submit(storm: Storm, specs: list[Any], options: dict[str, Any],
              deadline: float) -> None:
    futures = [(spec[0], storm.executor.submit(ft.soak_task, spec)) for spec in specs]
    for task_id, future in futures:
        settle(storm, task_id, lambda f=future: f.result(left(deadline)))


def face_cancel(storm: Storm, specs: list[Any], options: dict[str, Any],
              deadline: float) -> None:
    """``executor.submit`` per task, then ``cancel()`` for those planned: at once (most still
    pending in the pool), or once the call's first answer is in (queued in a worker's pipe,
    or running: the pool then kills the worker, and must take back what waits behind it)."""
    futures = {spec[0]: storm.executor.submit(ft.soak_task, spec) for spec in specs}
    _cancel(storm, futures, AT_ONCE)
    if any(storm.planned(task_id) == AFTER_FIRST for task_id in futures):
        concurrent.futures.wait([f for f in futures.values() if not f.cancelled()],
                                timeout=left(deadline),
                                return_when=concurrent.futures.FIRST_COMPLETED)
        _cancel(storm, futures, AFTER_FIRST)
    cancelled = [future for task_id, future in futures.items()
                 if storm.tasks[task_id].cancelled]
    if len(concurrent.futures.wait(cancelled, timeout=left(deadline)).done) < len(cancelled):
        storm.violation("wait() does not count a cancelled future as done",
                        f"call of tasks {sorted(futures)}")
    for task_id, future in futures.items():
        if storm.tasks[task_id].cancelled:
            if not future.cancelled():
                storm.violation("cancel() said yes, the future is not cancelled",
                                f"task {task_id}: {future!r}")
            continue
        settle(storm, task_id, lambda f=future: f.result(left(deadline)))


def _cancel(storm: Storm, futures: dict[int, Any], plan: str) -> None:
    """Cancel the futures of the tasks whose plan is ``plan``; note those that said yes."""
    storm.mark([task_id for task_id, future in futures.items()
                if storm.planned(task_id) == plan and future.cancel()], cancelled=True)


def face_acancel(storm: Storm, specs: list[Any], options: dict[str, Any],
              deadline: float) -> None:
    """``executor.run`` per task as asyncio tasks, those planned cancelled as ``cancel``
    does; a task that ends cancelled without being asked to is a violation."""

    async def calls() -> list[Any]:
        runs = {spec[0]: asyncio.ensure_future(storm.executor.run(ft.soak_task, spec))
                for spec in specs}
        for task_id, run in runs.items():
            if storm.planned(task_id) == AT_ONCE:
                run.cancel()
        if any(storm.planned(task_id) == AFTER_FIRST for task_id in runs):
            await asyncio.wait([run for run in runs.values() if not run.cancelled()],
                               timeout=left(deadline), return_when=asyncio.FIRST_COMPLETED)
            for task_id, run in runs.items():
                if storm.planned(task_id) == AFTER_FIRST:
                    run.cancel()
        return await asyncio.wait_for(asyncio.gather(*runs.values(), return_exceptions=True),
                                      left(deadline))

    for spec, outcome in zip(specs, _in_a_loop(calls(), "acancel"), strict=True):
        if isinstance(outcome, asyncio.CancelledError):
            if storm.planned(spec[0]) is None:
                storm.violation("cancelled without being asked to", f"task {spec[0]}")
            storm.mark([spec[0]], cancelled=True)
        else:
            storm.answer(spec[0], not isinstance(outcome, BaseException), outcome)


def face_executor_map(storm: Storm, specs: list[Any], options: dict[str, Any],
              deadline: float) -> None:
    results = storm.executor.map(ft.soak_task, specs, timeout=left(deadline), **options)
    _read_executor_map(storm, results, specs, len(specs))


def face_executor_map_left(storm: Storm, specs: list[Any], options: dict[str, Any],
              deadline: float) -> None:
    """The executor's map, closed after some answers: what it has not handed out is
    cancelled, as the stdlib's map cancels its futures."""
    results = storm.executor.map(ft.soak_task, specs, timeout=left(deadline), **options)
    kept = _kept(storm, specs)
    _read_executor_map(storm, results, specs, kept)
    results.close()
    storm.mark([spec[0] for spec in specs[kept:]], dropped=True)


def _read_executor_map(storm: Storm, results: Any, specs: list[Any], count: int) -> None:
    """Record the first ``count`` answers of an executor map of ``specs``."""
    for index, spec in enumerate(specs[:count]):
        try:
            value = next(results)
        except (TimeoutError, multiprocessing.TimeoutError) as exc:
            raise Late("executor map") from exc
        except StopIteration:
            storm.violation("executor map ended early without an error",
                            f"executor map ended after {index} of {len(specs)} results "
                            "without an error")
            return
        except Exception as exc:  # raised at its position; the map ends there
            storm.answer(spec[0], False, exc)
            storm.mark([later[0] for later in specs[index + 1:]], dropped=True)
            return
        storm.answer(spec[0], True, value)


def _kept(storm: Storm, specs: list[Any]) -> int:
    """How many of a call's tasks are read before its stream is left (their plan)."""
    return sum(1 for spec in specs if storm.planned(spec[0]) != LEFT)


def face_run(storm: Storm, specs: list[Any], options: dict[str, Any],
              deadline: float) -> None:
    """``await executor.run(...)`` per task, gathered, in this thread's own event loop."""

    async def calls() -> list[Any]:
        runs = [storm.executor.run(ft.soak_task, spec) for spec in specs]
        return await asyncio.wait_for(asyncio.gather(*runs, return_exceptions=True),
                                      left(deadline))

    for spec, outcome in zip(specs, _in_a_loop(calls(), "run"), strict=True):
        storm.answer(spec[0], not isinstance(outcome, BaseException), outcome)


def _in_a_loop(calls: Any, face: str) -> Any:
    """Run a face's coroutine in this thread's own event loop; its bound running out is Late."""
    try:
        return asyncio.run(calls)
    except asyncio.TimeoutError as exc:
        raise Late(face) from exc


def face_amap(storm: Storm, specs: list[Any], options: dict[str, Any],
              deadline: float) -> None:
    """``async for`` over ``executor.amap``: in order; an error ends it at its position."""
    _amap(storm, specs, options, deadline, len(specs))


def face_amap_left(storm: Storm, specs: list[Any], options: dict[str, Any],
              deadline: float) -> None:
    """``executor.amap`` closed after some answers (a loop left early): what is still running
    is cancelled."""
    kept = _kept(storm, specs)
    _amap(storm, specs, options, deadline, kept)
    storm.mark([spec[0] for spec in specs[kept:]], dropped=True)


def _amap(storm: Storm, specs: list[Any], options: dict[str, Any], deadline: float,
          count: int) -> None:
    """Record the first ``count`` answers of ``executor.amap`` over ``specs``, then close it."""

    async def consume() -> None:
        answers = storm.executor.amap(ft.soak_task, specs, **options)
        answered = 0
        try:
            while answered < count:
                value = await anext(answers)
                storm.answer(specs[answered][0], True, value)
                answered += 1
            if count == len(specs):  # nothing may follow the last answer
                extra = await anext(answers)
                storm.violation("amap: answers after the last task",
                                f"amap answered more than its tasks: {extra!r}")
        except StopAsyncIteration:
            if answered < count:
                storm.violation("amap ended early without an error",
                                f"amap ended after {answered} of {len(specs)} results "
                                "without an error")
        except Exception as exc:
            if answered == len(specs):
                storm.violation("amap: an error after the last task",
                                f"amap raised after all {answered} results: {exc!r}")
                return
            storm.answer(specs[answered][0], False, exc)
            storm.mark([later[0] for later in specs[answered + 1:]], dropped=True)
        finally:
            await answers.aclose()

    _in_a_loop(asyncio.wait_for(consume(), left(deadline)), "amap")


def face_aimap(storm: Storm, specs: list[Any], options: dict[str, Any],
              deadline: float) -> None:
    """``async for`` over the Pool's ``imap``: in order; an error is its own task's, and the
    stream goes on after it, as ``next()`` does."""

    async def consume() -> None:
        iterator = aiter(storm.pool.imap(ft.soak_task, specs, **options))
        for spec in specs:
            try:
                value = await anext(iterator)
            except StopAsyncIteration:
                storm.violation("aimap ended early",
                                f"aimap ended before task {spec[0]} of its {len(specs)}")
                return
            except Exception as exc:
                storm.answer(spec[0], False, exc)
            else:
                storm.answer(spec[0], True, value)
        try:
            extra = await anext(iterator)
        except StopAsyncIteration:
            return
        except Exception as exc:
            extra = exc
        storm.violation("aimap: answers after the last task",
                        f"aimap answered more than its tasks: {extra!r}")

    _in_a_loop(asyncio.wait_for(consume(), left(deadline)), "aimap")


FACES: dict[str, Callable[[Storm, list[Any], dict[str, Any], float], None]] = {
    "apply_async": face_apply_async,
    "map_async": face_map_async,
    "imap": face_imap,
    "imap_unordered": face_imap_unordered,
    "submit": face_submit,  # the executor's own retries (none): submit takes no options
    "executor_map": face_executor_map,
    "run": face_run,  # like submit, no options: run's keyword arguments are the function's
    "amap": face_amap,
    "aimap": face_aimap,
    "cancel": face_cancel,  # submit, then cancel()
    "acancel": face_acancel,  # run's asyncio tasks, then cancel()
    "imap_left": face_imap_left,
    "executor_map_left": face_executor_map_left,
    "amap_left": face_amap_left,
}


def submitter(storm: Storm, index: int, max_tasks: int | None, names: list[str]) -> None:
    rng = random.Random(storm.rng_seed * 1000 + index)
    weights = [FACE_WEIGHTS[name] for name in names]
    while not storm.stop.is_set() and (max_tasks is None or storm.next_task < max_tasks):
        face = rng.choices(names, weights)[0]
        size = rng.randint(1, 10) if face in ONE_CALL_FACES else rng.randint(1, 40)
        options: dict[str, Any] = {}
        if face not in NO_OPTIONS_FACES:
            options["retries"] = rng.choice(RETRY_CHOICES)
            timeout = rng.choice(TIMEOUT_CHOICES)
            if timeout is not None:
                options["task_timeout"] = timeout
        if face not in ONE_CALL_FACES:
            chunksize = rng.choice(CHUNKSIZE_CHOICES)
            if chunksize is not None:
                options["chunksize"] = chunksize
        if face in PROGRESS_FACES and rng.random() < PROGRESS_SHARE:
            options["progress"] = ProgressCheck(storm, face, size)
        call, specs = storm.new_call(rng, face, size, options)
        try:
            FACES[face](storm, specs, options, time.monotonic() + CALL_BOUND)
        except Late as exc:
            storm.violation(f"{face}: not answered within the bound",
                            f"call {call} ({face}, {size} tasks, {options}): {exc} "
                            f"not answered within {CALL_BOUND:g} s")
        except Exception as exc:  # the call itself failed: nothing of it was accepted
            storm.violation(f"{face}: call refused", f"call {call} ({face}) refused: {exc!r}")
            storm.mark([spec[0] for spec in specs], dropped=True)


# ---- the killer ------------------------------------------------------------------------------


def killer(storm: Storm) -> None:
    """Every 50-200 ms, SIGKILL one worker that is running a task, and note which task."""
    rng = random.Random(storm.rng_seed * 1000 + 999)
    me = psutil.Process()
    while not storm.stop.wait(rng.uniform(0.05, 0.2)):
        with contextlib.suppress(psutil.Error):
            ours = {child.pid for child in me.children(recursive=True)}
        busy = sorted(name[5:] for name in os.listdir(storm.log_dir)
                      if name.startswith("busy-") and _pid(name[5:]) in ours
                      and not _runs_a_hanging_task(storm, name[5:]))
        if not busy:
            continue
        token = rng.choice(busy)
        pid = _pid(token)
        try:
            if ft.process_token(pid) != token:
                continue  # ended, and its pid given to another process meanwhile
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                continue  # killed by the pool (a cancel, a timeout): not a kill of ours
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
        storm.kills.append((token, _task_hit(storm.log_dir, token)))


def _runs_a_hanging_task(storm: Storm, token: str) -> bool:
    """Whether the worker of ``token`` is running a task that hangs (by its marker, which may
    be gone or name another task by now: then the kill may hit that one, as any kill may)."""
    try:
        task_id = int(Path(storm.log_dir, f"busy-{token}").read_text())
    except (OSError, ValueError):
        return False
    with storm.lock:
        task = storm.tasks.get(task_id)
    return task is not None and task.hangs


def _pid(token: str) -> int:
    return int(token.split("-")[0])


def _task_hit(log_dir: str, token: str) -> int | None:
    """The last task the killed worker started (the one the kill hit, if it was still
    running), once the worker is dead."""
    pid = _pid(token)
    end = time.monotonic() + 2
    while time.monotonic() < end:  # never reap it (that is the pool's job): watch its state
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.005)
    try:
        lines = Path(log_dir, f"runs-{token}").read_text().split()
    except FileNotFoundError:
        return None
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(log_dir, f"busy-{token}"))
    return int(lines[-1]) if lines else None


# ---- the checks ------------------------------------------------------------------------------


def check(storm: Storm) -> dict[str, int]:
    """Every task's answers and executions against the rules (module docstring)."""
    runs: collections.Counter[int] = collections.Counter()
    for log in Path(storm.log_dir).glob("runs-*"):
        runs.update(int(line) for line in log.read_text().split())
    hits = collections.Counter(task for _, task in storm.kills if task is not None)
    unit_hits = collections.Counter({storm.tasks[task].unit: 0 for task in hits})
    for task_id, count in hits.items():
        unit_hits[storm.tasks[task_id].unit] += count
    killed = {_pid(token) for token, _ in storm.kills}
    calls_that_hang = {task.call for task in storm.tasks.values() if task.hangs}
    units_that_hang = {task.unit for task in storm.tasks.values() if task.hangs}
    for task in storm.tasks.values():
        name = (f"task {task.task_id} ({task.face} call {task.call}, retries={task.retries}"
                f"{', hangs' if task.hangs else ''})")
        # At most one extra run per kill that hit it (its retry): ours, and each timeout of
        # a task that hangs, as many as its retries allow; of its unit (above), that is.
        timeouts = task.retries if task.unit in units_that_hang else 0
        if runs[task.task_id] > 1 + unit_hits[task.unit] + timeouts:
            storm.violation("ran more often than the kills that hit it allow",
                            f"{name} ran {runs[task.task_id]} times, "
                            f"{unit_hits[task.unit]} kills of ours hit it or its chunk")
        if task.cancelled:
            if task.answers:
                storm.violation("answered, and cancelled too", f"{name}: {task.answers!r:.200}")
            continue
        if task.dropped:
            if task.answers:
                storm.violation("answered after its map stopped", name)
            continue
        if len(task.answers) != 1:
            storm.violation(f"answered {min(len(task.answers), 2)}{'+' * (len(task.answers) > 2)}"
                            " times", f"{name} answered {len(task.answers)} times")
            continue
        ok, payload = task.answers[0]
        attempts = getattr(payload, "attempts", None)
        if ok:
            problem = "it hangs" if task.hangs else _wrong_value(task, payload)
            if problem:
                storm.violation("wrong value", f"{name}: {problem}")
            elif runs[task.task_id] < 1:
                storm.violation("a value without a run", f"{name} delivered a value, never ran")
        elif isinstance(payload, procpool.TaskTimeout):
            if not (task.unit in units_that_hang or (
                    task.call in calls_that_hang and task.face in ("map_async",
                                                                   "imap_unordered"))):
                storm.violation("TaskTimeout for a task that does not hang",
                                f"{name}: {payload}")
            elif task.retries and attempts != task.retries + 1:
                storm.violation("TaskTimeout before its retries were used",
                                f"{name}: attempts={attempts}: {payload}")
        elif not isinstance(payload, procpool.WorkerDied):
            storm.violation(f"failed with {type(payload).__name__}", f"{name}: {payload!r:.300}")
        elif payload.pid not in killed:
            storm.violation("WorkerDied for a worker the soak did not kill", f"{name}: {payload}")
        elif task.retries and attempts != task.retries + 1:
            storm.violation("WorkerDied before its retries were used",
                            f"{name}: attempts={attempts}: {payload}")
    timed_out = sum(1 for task in storm.tasks.values() if task.hangs and task.answers
                    and isinstance(task.answers[0][1], procpool.TaskTimeout))
    return {"tasks": len(storm.tasks), "kills": len(storm.kills), "hits": sum(hits.values()),
            "cancelled": sum(1 for task in storm.tasks.values() if task.cancelled),
            "left": sum(1 for task in storm.tasks.values() if task.plan == LEFT),
            "reruns": sum(max(0, n - 1) for n in runs.values()),
            "hangs": sum(1 for task in storm.tasks.values() if task.hangs),
            "timed_out": timed_out}


def _wrong_value(task: Task, value: Any) -> str | None:
    if not isinstance(value, tuple) or len(value) != 2 or value[0] != task.task_id:
        return f"wrong value {value!r:.80}"
    array = value[1]
    if not task.has_array:
        return None if array is None else "an array it was not given"
    if (array is None or array.shape != (ARRAY_ITEMS,) or array[0] != 2 * task.task_id
            or array[-1] != 2 * task.task_id):
        return "wrong array"
    return None


def helper_pids() -> set[int]:
    """multiprocessing's long-lived helpers (forkserver, resource tracker) and procpool's."""
    pids: set[int] = set()
    from multiprocessing import forkserver, resource_tracker

    for helper in (forkserver._forkserver, resource_tracker._resource_tracker):  # type: ignore
        pid = getattr(helper, "_forkserver_pid", None) or getattr(helper, "_pid", None)
        if pid:
            pids.add(pid)
    with contextlib.suppress(ImportError, AttributeError):
        pid = importlib.import_module("procpool._janitor").janitor_pid()
        if pid:
            pids.add(pid)
    return pids


def leftovers(storm: Storm) -> None:
    """No child process, procpool thread or shared-memory segment of this run is left."""
    end = time.monotonic() + 10
    while True:
        children = {child.pid for child in psutil.Process().children(recursive=True)
                    if child.status() != psutil.STATUS_ZOMBIE} - helper_pids()
        if not children or time.monotonic() > end:
            break
        time.sleep(0.05)
    if children:
        storm.violation("child processes left", f"child processes left: {sorted(children)}")
        for pid in children:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
    threads = [t for t in threading.enumerate() if t.name.startswith("procpool-")]
    for thread in threads:
        thread.join(5)
    alive = [t.name for t in threads if t.is_alive()]
    if alive:
        storm.violation("procpool threads left", f"procpool threads left: {alive}")
    shm = Path("/dev/shm")
    prefix = f"procpool-{os.getpid()}-"
    segments = sorted(p.name for p in shm.iterdir() if p.name.startswith(prefix)) if (
        shm.is_dir()) else []
    if segments:
        storm.violation("shared-memory segments left",
                        f"shared-memory segments left: {segments[:10]} ({len(segments)})")
    with contextlib.suppress(ImportError):
        for report in importlib.import_module("procpool._accounting").take_violations():
            storm.violation("procpool accounting", f"procpool accounting: {report}")


def end_pools(storm: Storm) -> None:
    """close()+join() and shutdown(wait=True), each within END_BOUND, or a violation (and
    then terminate, so the run can go on)."""
    for name, graceful, force in (
        ("Pool close()/join()", lambda: (storm.pool.close(), storm.pool.join()),
         storm.pool.terminate),
        ("executor shutdown(wait=True)", lambda: storm.executor.shutdown(wait=True),
         storm.executor.kill_workers),
    ):
        thread = threading.Thread(target=graceful, name=f"soak-end-{name}", daemon=True)
        thread.start()
        thread.join(END_BOUND)
        if thread.is_alive():
            storm.violation(f"{name} hung", f"{name} did not return within {END_BOUND:g} s")
            force()


# ---- one start method ------------------------------------------------------------------------


class OverriddenSubmit(procpool.ProcessPoolExecutor):
    """An executor whose ``submit`` a subclass replaced: its ``map`` must go through it."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        return super().submit(fn, *args, **kwargs)



def run(method: str, seed: int,
        args: argparse.Namespace) -> tuple[dict[str, int], list[tuple[str, str]]]:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"procpool-soak-{method}-") as log_dir:
        storm = Storm(method, log_dir, seed, submit_overridden=bool(seed % 2))
        # (The executor refuses max_tasks_per_child under fork, as the stdlib's does.)
        recycles = ("pool" if method == "fork"
                    else random.Random(seed * 1000 + 998).choice(["pool", "executor"]))
        # max_queued makes apply_async and submit wait for room, and changes how a cancel
        # leaves the queue: on for some runs, in both pools.
        max_queued = random.Random(seed * 1000 + 997).choice([None, MAX_QUEUED])
        storm.pool = procpool.Pool(
            args.workers, context=method,
            maxtasksperchild=MAX_TASKS_PER_CHILD if recycles == "pool" else None,
            max_queued=max_queued)
        # Every other start method, the executor's submit is overridden (as tqdm's process_map
        # does), so its maps go through submit, a future per chunk (_map_through_submit.py).
        executor_class = (OverriddenSubmit if storm.submit_overridden
                          else procpool.ProcessPoolExecutor)
        storm.executor = executor_class(
            args.workers, mp_context=method,
            max_tasks_per_child=MAX_TASKS_PER_CHILD if recycles == "executor" else None,
            max_queued=max_queued)
        faces = args.faces.split(",")
        threads = [threading.Thread(target=submitter, args=(storm, i, args.max_tasks, faces),
                                    name=f"soak-submitter-{i}") for i in range(args.threads)]
        threads.append(threading.Thread(target=killer, args=(storm,), name="soak-killer"))
        for thread in threads:
            thread.start()
        storm.stop.wait(args.duration)
        storm.stop.set()
        for thread in threads:
            thread.join(CALL_BOUND + 10)
            if thread.is_alive():
                storm.violation("a soak thread hung",
                                f"{thread.name} still running {CALL_BOUND + 10:g} s after "
                                "the end")
        end_pools(storm)
        counts = check(storm)
        leftovers(storm)
    counts["seconds"] = round(time.monotonic() - started)
    counts["violations"] = len(storm.violations)
    print(f"soak {method} ({recycles} recycles, max_queued={max_queued}"
          f"{', submit overridden' if executor_class is OverriddenSubmit else ''}): "
          f"{counts['tasks']} tasks, {counts['kills']} kills "
          f"({counts['hits']} hit a task), {counts['reruns']} reruns, {counts['hangs']} hung "
          f"({counts['timed_out']} answered TaskTimeout), {counts['cancelled']} cancelled, "
          f"{counts['left']} in streams left, "
          f"{counts['violations']} violations, {time.monotonic() - started:.1f} s", flush=True)
    return counts, storm.violations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=None, help="replay a run (printed first)")
    parser.add_argument("--duration", type=float, default=30.0,
                        help="seconds of storm per start method (default 30)")
    parser.add_argument("--max-tasks", type=int, default=None,
                        help="stop submitting after this many tasks per start method")
    parser.add_argument("--methods", default="fork,spawn,forkserver")
    parser.add_argument("--faces", default=",".join(FACES),
                        help=f"which faces to use (default: all of {','.join(FACES)})")
    parser.add_argument("--threads", type=int, default=6, help="submitting threads")
    parser.add_argument("--workers", type=int, default=2, help="workers per pool (two pools)")
    args = parser.parse_args(argv)
    unknown = set(args.faces.split(",")) - set(FACES)
    if unknown:
        parser.error(f"unknown faces: {', '.join(sorted(unknown))}")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    methods = args.methods.split(",")
    print(f"soak: seed {seed} (replay: python tools/soak.py --seed {seed} "
          f"--duration {args.duration:g} --methods {args.methods} --faces {args.faces})",
          flush=True)
    started = time.monotonic()
    totals: collections.Counter[str] = collections.Counter()
    violations: list[tuple[str, str]] = []
    for number, method in enumerate(methods):
        counts, found = run(method, seed + number, args)
        totals.update(counts)
        violations += found
    kinds = collections.Counter(kind for kind, _ in violations)
    for kind, count in kinds.most_common():
        print(f"VIOLATION x{count}: {kind}", file=sys.stderr)
        for example in [text for k, text in violations if k == kind][:3]:
            print(f"    e.g. {example[:400]}", file=sys.stderr)
    print(f"soak: seed {seed}: {totals['tasks']} tasks, {totals['kills']} kills, "
          f"{totals['reruns']} retries, {totals['timed_out']} timeouts, "
          f"{totals['cancelled']} cancelled, "
          f"{len(violations)} violations, {time.monotonic() - started:.1f} s", flush=True)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
