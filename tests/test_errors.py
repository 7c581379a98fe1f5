"""Every procpool exception pickles with its attributes, and reads well."""

from __future__ import annotations

import pickle
import signal
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.pool import MaybeEncodingError

import pytest

import procpool

EXAMPLES = [
    procpool.WorkerDied(123, -signal.SIGKILL, "work() item 4", 2**30),
    procpool.WorkerDied(124, 3),
    procpool.InitializerFailed("RuntimeError: no database"),
    procpool.WorkerStartFailed(77, "exit code 1", True),
    procpool.WorkerStartFailed(78, "killed by SIGKILL", False, in_a_row=7),
    procpool.PoolBroken("could not start a worker"),
    procpool.PoolTerminated("terminated"),
    procpool.SerializationError("arguments of item 3 (<lock>)", "TypeError: cannot pickle"),
    procpool.ResultSerializationError("<lock>", "TypeError: cannot pickle"),
    procpool.TaskUnpicklingError("arguments", "RuntimeError: refused"),
    procpool.ResultUnpicklingError("(unreadable)", "RuntimeError: refused", "work() item 2"),
    procpool.RemoteError("mymod.MyError", "went wrong", "Traceback ...\nMyError: went wrong"),
]


@pytest.mark.parametrize("error", EXAMPLES, ids=lambda e: type(e).__name__)
def test_errors_pickle_with_their_attributes(error: BaseException) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert vars(copy) == vars(error)
    assert str(copy) == str(error)


@pytest.mark.parametrize("error", EXAMPLES, ids=lambda e: type(e).__name__)
def test_errors_live_under_the_public_name(error: BaseException) -> None:
    assert type(error).__module__ == "procpool"
    assert isinstance(error, procpool.ProcpoolError)


def test_worker_died_names_the_signal_and_the_likely_cause() -> None:
    error = procpool.WorkerDied(123, -signal.SIGKILL, "work() item 4", 3 * 2**30)
    assert isinstance(error, BrokenProcessPool)  # stdlib executor handlers still catch it
    assert error.signal_name == "SIGKILL"
    text = str(error)
    for part in ("pid 123", "work() item 4", "SIGKILL", "OOM killer", "3072 MiB"):
        assert part in text
    assert procpool.WorkerDied(1, 7).signal_name is None
    assert "exit code 7" in str(procpool.WorkerDied(1, 7))


def test_result_error_is_also_the_stdlib_maybe_encoding_error() -> None:
    error = procpool.ResultSerializationError("<lock>", "TypeError: cannot pickle")
    assert isinstance(error, MaybeEncodingError)
    assert isinstance(error, pickle.PicklingError)
    assert (error.exc, error.value) == ("TypeError: cannot pickle", "<lock>")


@pytest.mark.parametrize("face", ["executor", "pool"])
def test_what_breaks_the_stdlibs_pool_fails_one_task_as_a_broken_process_pool(
    face: str,
) -> None:
    # The stdlib's executor breaks when a task's arguments cannot be unpickled in the worker,
    # or its result in the parent (CPython's test_deadlock); procpool fails only that task,
    # with an error that is also a BrokenProcessPool. A result that cannot be *pickled* is a
    # PicklingError there, and stays one here.
    import misbehaving as mb

    def run(fn: object, *args: object) -> object:
        if face == "executor":
            return executor.submit(fn, *args).result(timeout=30)  # type: ignore[arg-type]
        return pool.apply(fn, args)  # type: ignore[arg-type]

    with procpool.ProcessPoolExecutor(2, mp_context="fork") as executor, \
            procpool.Pool(2, context="fork") as pool:
        with pytest.raises(procpool.TaskUnpicklingError) as argument:
            run(mb.identity, mb.FailsToUnpickle())
        assert isinstance(argument.value, BrokenProcessPool)
        assert isinstance(argument.value, procpool.SerializationError)
        with pytest.raises(procpool.ResultUnpicklingError) as result:
            run(mb.return_unloadable)
        assert isinstance(result.value, BrokenProcessPool)
        assert isinstance(result.value, MaybeEncodingError)
        with pytest.raises(procpool.ResultSerializationError) as unpicklable:
            run(mb.return_lock)
        assert isinstance(unpicklable.value, pickle.PicklingError)
        assert not isinstance(unpicklable.value, BrokenProcessPool)
        assert run(mb.square, 7) == 49  # and the pool goes on
