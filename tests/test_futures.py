"""ProcessFuture and FutureSink: a call's future, started and settled on the dispatcher thread
while any other thread may cancel it."""

from __future__ import annotations

import concurrent.futures as cf
import threading
from typing import Any

from procpool._futures import FutureSink, ProcessFuture

LOOK = 0.3  # how long the test gives a cancel that must be waiting to slip in anyway


def _cancel_in_another_thread_first(future: ProcessFuture[Any]) -> list[Any]:
    """Make the future's next set_running_or_notify_cancel() (the dispatcher's step) first let
    another thread try to cancel it; returns what that cancel() answers, once it has."""
    answers: list[Any] = []
    real = future.set_running_or_notify_cancel

    def step() -> bool:
        thread = threading.Thread(target=lambda: answers.append(future.cancel()))
        thread.start()
        thread.join(LOOK)  # a cancel that can land between the look and the step has by now
        answers.append(thread)
        return real()

    future.set_running_or_notify_cancel = step  # type: ignore[method-assign]
    return answers


def test_a_cancel_never_lands_between_the_dispatchers_look_and_its_start() -> None:
    # The dispatcher looks at the state (pending), then starts the call. A cancel() in
    # between made the state cancelled-and-notified, which set_running_or_notify_cancel()
    # refuses with a RuntimeError: the dispatcher took it for an internal error and broke
    # the pool (seen in the soak). Now the cancel waits for the start, and then finds the
    # call running (procpool's cancel() of a running call kills its worker).
    future: ProcessFuture[Any] = ProcessFuture()
    answers = _cancel_in_another_thread_first(future)
    assert FutureSink(future).chunk_starting(None) is True  # type: ignore[arg-type]
    thread = answers.pop()
    thread.join(10)
    assert answers == [True]
    assert future.cancelled()
    assert cf.wait([future], timeout=0).done == {future}


def test_a_future_cancelled_before_the_look_is_not_started() -> None:
    future: ProcessFuture[Any] = ProcessFuture()
    assert future.cancel()
    assert FutureSink(future).chunk_starting(None) is False  # type: ignore[arg-type]
    assert cf.wait([future], timeout=0).done == {future}
