"""``max_queued``: while N single calls wait to start, the next ``apply_async``/``submit``
waits for one to start; ``await executor.run()`` waits without blocking its event loop.

One worker is held on a FIFO (``fifos``) so that the calls behind it stay queued; a call that
must wait is made from a thread, and shown to wait by that thread still running once the test
has looked (a wait that works never lets it return early, so the look cannot fail wrongly).
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import pytest

import procpool
from procpool._queue_bound import QueueBound, _Waiter
from support import Fifos

import misbehaving as mb

LOOK = 0.3  # how long the test looks at a thread that must still be waiting


def _in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # the outcome is what the test checks
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def _still_waiting(thread: threading.Thread) -> bool:
    thread.join(LOOK)
    return thread.is_alive()


def test_apply_async_waits_while_max_queued_calls_wait(fifos: Fifos) -> None:
    with procpool.Pool(1, max_queued=2) as pool:
        held = pool.apply_async(mb.announce_then_block, (fifos.started, fifos.release))
        fifos.wait_started()
        queued = [pool.apply_async(mb.square, (x,)) for x in (2, 3)]
        thread, outcome = _in_thread(lambda: pool.apply_async(mb.square, (4,)))
        assert _still_waiting(thread)
        fifos.release_task()
        thread.join()
        assert held.get() == "released"
        assert [r.get() for r in queued] == [4, 9]
        assert outcome[0].get() == 16


def test_submit_waits_and_a_cancelled_or_failed_call_frees_its_place(fifos: Fifos) -> None:
    with procpool.ProcessPoolExecutor(1, max_queued=1) as executor:
        held = executor.submit(mb.announce_then_block, fifos.started, fifos.release)
        fifos.wait_started()
        first = executor.submit(mb.square, 5)
        assert first.cancel()  # its place is free again: the next submit does not wait
        unpicklable = executor.submit(mb.identity, threading.Lock())
        with pytest.raises(TypeError):
            unpicklable.result()  # failed before it was queued: no place held either
        second = executor.submit(mb.square, 6)
        thread, outcome = _in_thread(lambda: executor.submit(mb.square, 7))
        assert _still_waiting(thread)
        fifos.release_task()
        thread.join()
        assert (held.result(), second.result(), outcome[0].result()) == ("released", 36, 49)


def test_maps_keep_their_own_bound(fifos: Fifos) -> None:
    with procpool.Pool(2, max_queued=1) as pool:
        assert pool.map(mb.square, range(100), chunksize=1) == [x * x for x in range(100)]
        assert list(pool.imap(mb.square, range(50))) == [x * x for x in range(50)]
    with procpool.ProcessPoolExecutor(2, max_queued=1) as executor:
        assert list(executor.map(mb.square, range(100))) == [x * x for x in range(100)]


@pytest.mark.parametrize("face", ["pool", "executor"])
def test_closing_from_another_thread_ends_the_wait_with_the_usual_error(
        face: str, fifos: Fifos) -> None:
    if face == "pool":
        pool = procpool.Pool(1, max_queued=1)
        submit: Callable[..., Any] = pool.apply_async
        close = pool.close
        usual: tuple[type[Exception], str] = (ValueError, "Pool not running")
    else:
        executor = procpool.ProcessPoolExecutor(1, max_queued=1)
        submit = lambda fn, args: executor.submit(fn, *args)  # noqa: E731
        close = lambda: executor.shutdown(wait=False)  # noqa: E731
        usual = (RuntimeError, "cannot schedule new futures after shutdown")
    held = submit(mb.announce_then_block, (fifos.started, fifos.release))
    fifos.wait_started()
    queued = submit(mb.square, (2,))
    thread, outcome = _in_thread(lambda: submit(mb.square, (3,)))
    assert _still_waiting(thread)
    close()
    thread.join()
    assert isinstance(outcome[0], usual[0]) and usual[1] in str(outcome[0])
    fifos.release_task()
    assert queued.get() if face == "pool" else queued.result() == 4
    assert (held.get() if face == "pool" else held.result()) == "released"
    if face == "pool":
        pool.join()
    else:
        executor.shutdown()


def test_ctrl_c_interrupts_the_wait_and_holds_no_place(fifos: Fifos) -> None:
    with procpool.Pool(1, max_queued=1) as pool:
        held = pool.apply_async(mb.announce_then_block, (fifos.started, fifos.release))
        fifos.wait_started()
        queued = pool.apply_async(mb.square, (2,))
        timer = threading.Timer(LOOK, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            pool.apply_async(mb.square, (3,))
        timer.join()
        fifos.release_task()
        assert (held.get(), queued.get()) == ("released", 4)
        # The interrupted call took no place: the pool still takes one queued call at a time.
        assert [pool.apply_async(mb.square, (x,)).get() for x in range(3)] == [0, 1, 4]


def test_await_run_waits_without_blocking_the_event_loop(fifos: Fifos) -> None:
    async def main(executor: procpool.ProcessPoolExecutor) -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        held = asyncio.ensure_future(executor.run(mb.announce_then_block, fifos.started,
                                                  fifos.release))
        await loop.run_in_executor(None, fifos.wait_started)
        queued = asyncio.ensure_future(executor.run(mb.square, 2))
        waiting = asyncio.ensure_future(executor.run(mb.square, 3))
        ticks = 0
        while ticks < 100:  # the loop runs on while `waiting` waits for room
            await asyncio.sleep(0)
            ticks += 1
        assert not waiting.done()
        await loop.run_in_executor(None, fifos.release_task)
        assert await held == "released"
        return await queued, await waiting

    with procpool.ProcessPoolExecutor(1, max_queued=1) as executor:
        assert asyncio.run(main(executor)) == (4, 9)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_max_queued_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises(ValueError, match="max_queued must be a positive int or None"):
        procpool.Pool(1, max_queued=bad)  # type: ignore[arg-type]


class _InterruptsPickling:
    def __reduce__(self) -> Any:
        raise KeyboardInterrupt  # a Ctrl-C while the arguments are pickled


@pytest.mark.parametrize("face", ["pool", "executor"])
def test_a_submission_interrupted_midway_gives_its_place_back(face: str, fifos: Fifos) -> None:
    pool_or_executor: Any = (procpool.Pool(1, max_queued=1) if face == "pool"
                             else procpool.ProcessPoolExecutor(1, max_queued=1))
    with pool_or_executor:
        if face == "pool":
            def submit(fn: Any, *args: Any) -> Any:
                return pool_or_executor.apply_async(fn, args)
        else:
            submit = pool_or_executor.submit
        held = submit(mb.announce_then_block, fifos.started, fifos.release)
        fifos.wait_started()
        with pytest.raises(KeyboardInterrupt):
            submit(mb.identity, _InterruptsPickling())
        queued = submit(mb.square, 3)  # would wait for ever had the place been kept
        fifos.release_task()
        if face == "pool":
            assert (held.get(), queued.get()) == ("released", 9)
        else:
            assert (held.result(), queued.result()) == ("released", 9)


def test_a_freed_place_wakes_one_waiter_not_all(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each waiting coroutine woken for every freed place made a million awaited calls
    # quadratic (and the dispatcher thread posted a wake-up per waiter per chunk).
    bound = QueueBound(1)
    wakes: list[object] = []
    wake = _Waiter.wake
    monkeypatch.setattr(_Waiter, "wake", lambda waiter: (wakes.append(waiter), wake(waiter)))

    async def main() -> list[bool]:
        first = bound.reserve()
        assert first is not None
        waiting = [asyncio.ensure_future(bound.reserve_async()) for _ in range(5)]
        for _ in range(3):
            await asyncio.sleep(0)
        assert not any(task.done() for task in waiting)
        first.give_back()
        for _ in range(5):
            await asyncio.sleep(0)
        done = [task.done() for task in waiting]
        assert len(wakes) == 1
        bound.forget_reserved()  # the woken one's place, unused here: it passes on
        assert len(wakes) == 2
        bound.close()
        await asyncio.gather(*waiting)
        return done

    assert asyncio.run(main()) == [True, False, False, False, False]  # the first to come


def test_a_cancelled_waiting_call_leaves_the_queue_at_once(fifos: Fifos) -> None:
    with procpool.ProcessPoolExecutor(1, max_queued=3) as executor:
        held = executor.submit(mb.announce_then_block, fifos.started, fifos.release)
        fifos.wait_started()
        waiting = [executor.submit(mb.square, x) for x in range(3)]
        assert executor.stats().tasks_queued == 3
        assert all(future.cancel() for future in waiting)
        # Its arguments do not wait in the queue for a worker to skip them.
        assert executor.stats().tasks_queued == 0
        fifos.release_task()
        assert held.result() == "released"
