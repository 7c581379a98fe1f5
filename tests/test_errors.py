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
    procpool.PoolBroken("could not start a worker"),
    procpool.PoolTerminated("terminated"),
    procpool.SerializationError("arguments of item 3 (<lock>)", "TypeError: cannot pickle"),
    procpool.ResultSerializationError("<lock>", "TypeError: cannot pickle"),
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
