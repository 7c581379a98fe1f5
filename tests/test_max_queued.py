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
