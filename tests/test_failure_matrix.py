"""The failure model, as a table: every way a task can go wrong, through every kind of call.

For each case the bad item fails with the expected error, every other item is delivered, and the
pool keeps serving afterwards. Runs on fork and spawn (the ``start_method`` fixture).
"""

from __future__ import annotations

import signal
import sys
import threading
from dataclasses import dataclass
from multiprocessing.pool import MaybeEncodingError, RemoteTraceback
from typing import Any

import pytest

import procpool

import misbehaving as mb


@dataclass(frozen=True)
class Case:
    name: str
    task: Any  # called as task(bad_argument)
    bad_argument: Any
    error: type[BaseException]
    check: Any = None  # extra assertions on the error
    remote_traceback: bool = False


def _died(exitcode: int | None = None, signal_name: str | None = None) -> Any:
    def check(error: procpool.WorkerDied) -> None:
        assert error.pid is not None
        if exitcode is not None:
            assert error.exitcode == exitcode
        assert error.signal_name == signal_name
        assert "pool replaced the worker" in str(error)

    return check


def _remote_error(type_name: str) -> Any:
    def check(error: procpool.RemoteError) -> None:
        assert error.type_name.endswith(type_name)
        assert type_name in error.traceback_text

    return check


def _noted(word: str) -> Any:
    def check(error: BaseException) -> None:
        if sys.version_info >= (3, 11):
            assert any(word in note for note in error.__notes__)

    return check


def _is_maybe_encoding_error(error: BaseException) -> None:
    assert isinstance(error, MaybeEncodingError)  # the stdlib class stdlib-era code catches


CASES = [
    Case("os._exit", mb.exit_with_code, 7, procpool.WorkerDied, _died(exitcode=7)),
    Case("sys.exit", mb.sys_exit, 4, procpool.WorkerDied, _died(exitcode=4)),
    Case("SIGKILL", mb.kill_self, signal.SIGKILL, procpool.WorkerDied,
         _died(exitcode=-signal.SIGKILL, signal_name="SIGKILL")),
    Case("segfault", mb.segfault, None, procpool.WorkerDied,
         _died(exitcode=-signal.SIGSEGV, signal_name="SIGSEGV")),
    Case("raises", mb.raise_value_error, 1, ValueError, remote_traceback=True),
    Case("unpicklable exception", mb.raise_unpicklable_exception, None, procpool.RemoteError,
         _remote_error("ExceptionHoldingLock"), remote_traceback=True),
    Case("exception that cannot be rebuilt", mb.raise_unrebuildable_exception, None,
         procpool.RemoteError, _remote_error("ExceptionWithTwoArgs"), remote_traceback=True),
    Case("unpicklable result", mb.return_lock, None, procpool.ResultSerializationError,
         _is_maybe_encoding_error),
    Case("result fails to unpickle in parent", mb.return_unloadable, None,
         procpool.ResultSerializationError, _is_maybe_encoding_error),
    Case("result calls sys.exit() when unpickled in parent", mb.return_exits_when_unpickled,
         None, procpool.ResultSerializationError, _is_maybe_encoding_error),
    # The pickler's own exception, as the stdlib raises it, with a note saying which item.
    Case("unpicklable argument", mb.identity, threading.Lock(), TypeError, _noted("item")),
    Case("argument fails to unpickle in worker", mb.identity, mb.FailsToUnpickle(),
         procpool.SerializationError, remote_traceback=True),
]


def _run_apply_async(pool: procpool.Pool, case: Case) -> list[tuple[bool, Any]]:
    arguments = [0, case.bad_argument, 2]
    tasks = [mb.identity, case.task, mb.identity]
    results = [pool.apply_async(t, (a,)) for t, a in zip(tasks, arguments, strict=True)]
    return [_outcome(lambda r=r: r.get(timeout=30)) for r in results]


def _run_map(pool: procpool.Pool, case: Case) -> list[tuple[bool, Any]]:
    # map fails as a whole on its first error, like the stdlib; other maps are unaffected.
    good = pool.map_async(mb.square, range(5), chunksize=1)
    bad = _outcome(lambda: pool.map(case.task, [case.bad_argument], chunksize=1))
    return [(True, good.get(timeout=30)[0]), bad, (True, 2)]


def _run_imap(pool: procpool.Pool, case: Case) -> list[tuple[bool, Any]]:
    # imap delivers every item; the bad one raises at its position and iteration goes on.
    # A thin wrapper picks the misbehaving task for the middle item only.
    iterator = pool.imap(_Dispatch(case.task), [(0, False), (case.bad_argument, True), (2, False)])
    return [_outcome(lambda: iterator.next(timeout=30)) for _ in range(3)]


class _Dispatch:
    """Calls the misbehaving task for flagged items and identity for the others (picklable)."""

    def __init__(self, task: Any) -> None:
        self.task = task

    def __call__(self, item: tuple[Any, bool]) -> Any:
        argument, misbehave = item
        return self.task(argument) if misbehave else argument


def _outcome(call: Any) -> tuple[bool, Any]:
    try:
        return True, call()
    except Exception as exc:
        return False, exc


CALLS = {"apply_async": _run_apply_async, "map": _run_map, "imap": _run_imap}


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_failure_fails_only_its_task(case: Case, call: str, start_method: str) -> None:
    with procpool.Pool(2, context=start_method) as pool:
        outcomes = CALLS[call](pool, case)

        assert outcomes[0] == (True, 0)
        assert outcomes[2] == (True, 2)
        succeeded, error = outcomes[1]
        assert not succeeded, f"expected {case.error.__name__}, got result {error!r}"
        assert isinstance(error, case.error), f"{type(error).__name__}: {error}"
        if case.check:
            case.check(error)
        if case.remote_traceback:
            assert isinstance(error.__cause__, RemoteTraceback)
        # The pool is still fully usable, with its full complement of workers.
        assert pool.map(mb.square, range(20)) == [x * x for x in range(20)]
        assert len(set(pool.map(mb.pid_of_worker, range(40), chunksize=1))) >= 1


@pytest.mark.parametrize("how", ["exit", "kill", "segv"])
def test_death_in_a_chunk_fails_that_chunk_only(how: str, start_method: str) -> None:
    with procpool.Pool(2, context=start_method) as pool:
        iterator = pool.imap(_CrashIf(how), range(12), chunksize=3)
        outcomes = [_outcome(lambda: iterator.next(timeout=30)) for _ in range(12)]
    # Item 4 crashed the worker holding items 3-5; the other chunks are delivered.
    for index, (ok, value) in enumerate(outcomes):
        if index in (3, 4, 5):
            assert not ok and isinstance(value, procpool.WorkerDied), (index, value)
            assert "items 3-5" in str(value)
        else:
            assert (ok, value) == (True, index)


def test_a_death_spares_the_short_chunk_queued_behind_the_dying_one(start_method: str) -> None:
    # One worker, quick items of one each: once the first has finished (the pace is known),
    # every chunk it runs has the next one queued in its pipe. Item 4 kills it while item 5
    # waits there; item 5 never started, so it runs on the replacement and succeeds.
    # chunksize=1: left to size itself, imap may put items 3 and 4 in one chunk once it knows
    # the pace (it did under load), and the death then fails both, as it should.
    with procpool.Pool(1, context=start_method) as pool:
        iterator = pool.imap(_CrashIf("exit"), range(10), chunksize=1)
        outcomes = [_outcome(lambda: iterator.next(timeout=30)) for _ in range(10)]
    for index, (ok, value) in enumerate(outcomes):
        if index == 4:
            assert not ok and isinstance(value, procpool.WorkerDied), value
            assert "item 4" in str(value)
        else:
            assert (ok, value) == (True, index)


class _CrashIf:
    def __init__(self, how: str) -> None:
        self.how = how

    def __call__(self, x: int) -> int:
        return mb.crash_if(x, bad=4, how=self.how)


def test_many_deaths_in_a_row_never_break_the_pool(start_method: str) -> None:
    with procpool.Pool(2, context=start_method) as pool:
        results = [pool.apply_async(mb.exit_with_code, (1,)) for _ in range(6)]
        for result in results:
            with pytest.raises(procpool.WorkerDied):
                result.get(timeout=30)
        assert pool.map(mb.square, range(10)) == [x * x for x in range(10)]
