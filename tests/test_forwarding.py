"""Workers' log records and prints, forwarded to the parent (``forward_logs``,
``forward_output``).

Records are handled by the parent's logging as its own (so ``caplog`` sees them) before the
callbacks of the results that came after them, and by the time ``join()`` or ``shutdown()``
returns; prints reach the parent's ``sys.stdout``/``sys.stderr`` (so ``capsys`` sees them)
whole line by whole line. Tasks synchronise on FIFOs; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import procpool
import worker_tasks as wt
from procpool._forwarding import Forwarded
from procpool._framing import FrameInProgress, FrameReader, FrameWriter
from procpool._messages import Logged, Printed
from procpool._worker_logs import _ForwardingHandler
from support import Fifos


def _from_workers(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "worker_tasks"]


@pytest.mark.parametrize("method, forward_logs", [
    ("spawn", None), ("forkserver", None), ("fork", True)])
def test_records_are_handled_by_the_parents_logging(
        method: str, forward_logs: bool | None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="worker_tasks")
    with procpool.Pool(2, context=method, forward_logs=forward_logs) as pool:
        assert pool.map(wt.log_at_levels, range(4), chunksize=1) == [0, 1, 2, 3]
        pool.close()
        pool.join()  # the records of the last results are handled by now
    records = _from_workers(caplog)
    assert sorted(r.getMessage() for r in records) == sorted(
        [f"info {x}" for x in range(4)] + [f"warning {x}" for x in range(4)])  # no debug
    assert {r.worker for r in records} <= {0, 1}  # type: ignore[attr-defined]
    assert all(r.process != os.getpid() and r.processName.startswith("procpool-worker-")
               for r in records)


def test_workers_take_the_parents_levels_when_they_start(caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    caplog.set_level(logging.INFO, logger="worker_tasks")
    logging.getLogger("worker_tasks.quiet").setLevel(logging.ERROR)
    try:
        with procpool.Pool(1, context="spawn") as pool:
            assert pool.apply(wt.effective_level, ("worker_tasks",)) == logging.INFO
            assert pool.apply(wt.effective_level, ("worker_tasks.quiet",)) == logging.ERROR
    finally:
        logging.getLogger("worker_tasks.quiet").setLevel(logging.NOTSET)


def test_under_fork_workers_keep_the_handlers_they_inherit_by_default() -> None:
    # As with the stdlib's pools: a forked worker logs through its copies of the parent's
    # handlers, so a program written for them sees no change.
    parents = [type(handler).__name__ for handler in logging.getLogger().handlers]
    with procpool.Pool(1, context="fork") as pool:
        assert pool.apply(wt.root_handler_types) == parents
    with procpool.Pool(1, context="fork", forward_logs=True) as pool:
        assert pool.apply(wt.root_handler_types) == ["_ForwardingHandler"]


def test_forward_logs_false_leaves_spawned_workers_logging_alone() -> None:
    with procpool.Pool(1, context="spawn", forward_logs=False) as pool:
        assert pool.apply(wt.root_handler_types) == []


def test_exceptions_and_unpicklable_extras_arrive_as_text(caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    caplog.set_level(logging.INFO, logger="worker_tasks")
    with procpool.ProcessPoolExecutor(1, mp_context="forkserver") as executor:
        executor.submit(wt.log_exception).result()
        executor.submit(wt.log_with_unpicklable_extra).result()
    failed, carrying = _from_workers(caplog)
    assert failed.getMessage() == "it failed"
    assert "ValueError: inside the task" in (failed.exc_text or "")
    assert carrying.getMessage() == "carrying something"
    assert carrying.payload == "<Unpicklable>"  # type: ignore[attr-defined]


def test_last_words_before_a_death_arrive(start_method: str,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="worker_tasks")
    with procpool.Pool(1, context=start_method, forward_logs=True) as pool:
        with pytest.raises(procpool.WorkerDied):
            pool.apply(wt.log_then_die, (7,))
        pool.close()
        pool.join()
    assert [r.getMessage() for r in _from_workers(caplog)] == ["last words 7"]


def test_a_record_logged_before_a_timeout_kill_arrives(
        fifos: Fifos, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="worker_tasks")
    with procpool.ProcessPoolExecutor(1, mp_context="spawn", task_timeout=1) as executor:
        future = executor.submit(wt.log_then_hang, fifos.started)
        assert fifos.wait_started() == "started"
        with pytest.raises(procpool.TaskTimeout):
            future.result()
    assert [r.getMessage() for r in _from_workers(caplog)] == ["about to hang"]


def test_records_are_handled_before_the_callback_of_their_result(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="worker_tasks")
    seen_by_callback: list[list[str]] = []
    with procpool.Pool(1, context="spawn") as pool:
        result = pool.apply_async(wt.log_at_levels, (3,), callback=lambda _: seen_by_callback
                                  .append([r.getMessage() for r in _from_workers(caplog)]))
        assert result.get(timeout=30) == 3
        pool.close()
        pool.join()
    assert seen_by_callback == [["info 3", "warning 3"]]


def test_asyncio_calls_forward_too(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="worker_tasks")

    async def main(executor: procpool.ProcessPoolExecutor) -> list[int]:
        return [await executor.run(wt.log_at_levels, 5)]

    with procpool.ProcessPoolExecutor(1, mp_context="spawn") as executor:
        assert asyncio.run(main(executor)) == [5]
    assert [r.getMessage() for r in _from_workers(caplog)] == ["info 5", "warning 5"]


def test_an_initializer_that_sets_up_logging_is_not_doubled_by_default(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="worker_tasks")
    with procpool.Pool(1, wt.initializer_configures_logging, context="spawn") as pool:
        assert pool.apply(wt.root_handler_types) == ["StreamHandler"]  # its own, alone
    with procpool.Pool(1, wt.initializer_configures_logging, context="spawn",
                       forward_logs=True) as pool:  # asked for: both
        assert sorted(pool.apply(wt.root_handler_types)) == ["StreamHandler",
                                                             "_ForwardingHandler"]


def test_dask_refuses_forwarding_naming_its_own() -> None:
    with pytest.raises(ValueError, match=r"Client\.forward_logging\(\)"):
        procpool.Pool(1, backend="dask", forward_logs=True)


@pytest.mark.parametrize("value", ["yes", 1])
def test_forwarding_flags_must_be_booleans(value: object) -> None:
    with pytest.raises(TypeError, match="forward_logs must be True, False or None"):
        procpool.Pool(1, forward_logs=value)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="forward_output must be True or False"):
        procpool.Pool(1, forward_output=value)  # type: ignore[arg-type]


# ---- forward_output -------------------------------------------------------------------------


def test_prints_arrive_whole_line_by_line(any_start_method: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    with procpool.Pool(2, context=any_start_method, forward_output=True) as pool:
        assert pool.map(wt.print_piecewise, range(6), chunksize=1) == list(range(6))
        pool.close()
        pool.join()
    out, err = capsys.readouterr()
    # Two workers wrote a character at a time: every line is still one task's, whole.
    assert sorted(out.splitlines()) == [str(x) * 200 for x in range(6)]
    assert sorted(err.splitlines()) == [f"stderr {x}" for x in range(6)]


def test_an_unfinished_line_arrives_with_its_chunk(capsys: pytest.CaptureFixture[str]) -> None:
    with procpool.ProcessPoolExecutor(1, forward_output=True) as executor:
        assert executor.submit(wt.print_without_newline, 4).result() == 4
    assert capsys.readouterr().out == "unfinished 4"


# ---- the bound ------------------------------------------------------------------------------


class _HeldRunner:
    """A callback runner whose jobs wait until the test lets them run."""

    def __init__(self) -> None:
        self.jobs: list[Callable[[], None]] = []

    def post(self, job: Callable[[], None]) -> None:
        self.jobs.append(job)

    def run_all(self) -> None:
        while self.jobs:
            self.jobs.pop(0)()


def test_past_the_bound_records_are_dropped_and_the_drop_is_reported(
        caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    runner = _HeldRunner()
    forwarded = Forwarded(runner, max_waiting=3)  # type: ignore[arg-type]
    record = logging.makeLogRecord({"name": "worker_tasks", "msg": "hello",
                                    "levelno": logging.WARNING, "levelname": "WARNING"})
    for _ in range(5):
        forwarded.received(Logged(dict(record.__dict__)))
    forwarded.received(Printed(1, "a line\n"))
    assert len(runner.jobs) == 3  # the dispatcher never waited for the handlers
    runner.run_all()
    assert [r.getMessage() for r in caplog.records] == [
        "hello", "hello", "hello",
        "procpool dropped 3 log records or output lines from its workers: the parent's "
        "handlers fell behind (more than 3 were waiting)"]
    forwarded.received(Printed(1, "later\n"))  # room again
    runner.run_all()
    assert capsys.readouterr().out == "later\n"



# ---- a signal handler that logs while its thread writes a reply ------------------------------


def test_a_send_from_inside_a_send_of_the_same_thread_is_refused_not_deadlocked() -> None:
    # A task's signal handler may log while the worker's main thread is between two writes of
    # a frame (a large result): the record must neither wait for the frame (a deadlock: it
    # waits on its own thread) nor go out inside it (a corrupt stream, the worker lost).
    read_end, write_end = os.pipe()
    try:
        writer = FrameWriter(_Descriptor(write_end))
        handler = _ForwardingHandler(0, writer)
        write_pieces = writer._write
        interrupted: list[str] = []

        def write_with_a_signal_between(pieces: list[memoryview]) -> None:
            record = logging.makeLogRecord({"msg": "from a signal handler"})
            handler.emit(record)  # dropped, quietly
            with pytest.raises(FrameInProgress):
                writer.send_bytes(b"nested")
            interrupted.append("handled")
            write_pieces(pieces)

        writer._write = write_with_a_signal_between  # type: ignore[method-assign]
        writer.send_bytes(b"the reply")
        assert interrupted == ["handled"]
        writer._write = write_pieces  # type: ignore[method-assign]
        writer.send_bytes(b"the next reply")  # the writer is usable again
        assert FrameReader(read_end).read() == [b"the reply", b"the next reply"]
    finally:
        os.close(read_end)
        os.close(write_end)


class _Descriptor:
    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd


def test_a_large_chunk_waits_for_a_worker_whose_initializer_is_still_logging() -> None:
    # The dispatcher must not block writing a chunk larger than the pipe's buffer to a worker
    # that reads nothing until its initializer ends, while that initializer blocks writing
    # its records to the dispatcher.
    chatty = logging.getLogger("worker_tasks.chatty")
    chatty.setLevel(logging.WARNING)
    chatty.propagate = False
    quiet = logging.NullHandler()
    chatty.addHandler(quiet)
    try:
        with procpool.Pool(1, wt.initializer_logs_a_lot, (20_000,), context="fork",
                           forward_logs=True) as pool:
            result = pool.apply_async(wt.length, (list(range(1_000_000)),))
            assert result.get(timeout=40) == 1_000_000
    finally:
        chatty.removeHandler(quiet)
        chatty.propagate = True
        chatty.setLevel(logging.NOTSET)


def test_extras_the_parent_could_not_rebuild_arrive_as_their_repr(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="worker_tasks")
    with procpool.Pool(1, context="spawn") as pool:
        first = pool.apply(wt.log_with_extras_the_parent_cannot_rebuild)
        assert pool.apply(wt.log_with_extras_the_parent_cannot_rebuild) == first  # not lost
    record = _from_workers(caplog)[0]
    assert record.err == "KeywordOnly('bad')"  # type: ignore[attr-defined]
    assert record.ids == [1, 2]  # type: ignore[attr-defined]  # plain data keeps its type


def test_a_signal_handler_that_prints_amid_a_print_does_not_deadlock(
        capsys: pytest.CaptureFixture[str]) -> None:
    with procpool.Pool(1, context="fork", forward_output=True, task_timeout=30) as pool:
        pool.apply(wt.print_while_a_signal_handler_prints)
        pool.close()
        pool.join()
    assert capsys.readouterr().out.splitlines()[-2:] == ["the task's own line", "after it"]


def test_what_a_stopping_worker_logs_as_it_exits_arrives(caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    # A worker asked to stop is read until it has exited: its last records are handled by
    # the time join() returns, and a lot of them cannot hold up its exit.
    caplog.set_level(logging.INFO, logger="worker_tasks")
    with procpool.Pool(2, wt.initializer_says_goodbye_at_exit, context="spawn") as pool:
        assert pool.map(wt.where, range(4), chunksize=1)
        pool.close()
        pool.join()
    assert sorted(r.getMessage() for r in _from_workers(caplog)) == [
        "goodbye from worker 0", "goodbye from worker 1"]


def test_waiting_for_the_last_records_ends_when_the_callback_thread_is_stuck() -> None:
    # A callback that never returns holds up the records queued behind it: join() and
    # terminate() wait only while the callback thread moves on.
    runner = _HeldRunner()
    forwarded = Forwarded(runner)  # type: ignore[arg-type]
    forwarded.received(Printed(1, "held\n"))
    assert not forwarded.wait_handled(0.01)  # nothing moves: it gives up
    runner.run_all()
    assert forwarded.wait_handled(0.01)


def test_bytes_written_to_sys_stdout_buffer_are_forwarded_as_text(
        capsys: pytest.CaptureFixture[str]) -> None:
    with procpool.Pool(1, context="spawn", forward_output=True) as pool:
        assert pool.apply(wt.write_bytes_to_stdout) == len("héllo wörld\n".encode())
        pool.close()
        pool.join()
    assert capsys.readouterr().out == "héllo wörld\n"



LAZY_SCRIPT = """
import sys
import procpool

def logging_imported(_):
    return "logging" in sys.modules

def import_logging_and_warn(x):
    import logging
    logging.getLogger("late").warning("late %s", x)
    return x

if __name__ == "__main__":
    import logging  # here, not above: a spawned worker imports the top of this module

    logging.basicConfig(format="%(name)s %(processName)s %(message)s", stream=sys.stdout)
    with procpool.Pool(1, context="spawn") as pool:
        before = pool.apply(logging_imported, (0,))
        value = pool.apply(import_logging_and_warn, (7,))
    print(before, value)  # after the pool's end, which waits for the last records
"""


def test_a_spawned_worker_imports_logging_only_once_something_does_and_forwards_from_then(
        tmp_path: Path) -> None:
    # Forwarding is set up as logging is first imported (_on_import.py): here by the task's
    # own body, whose record must still arrive.
    script = tmp_path / "lazy_logging.py"
    script.write_text(LAZY_SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=50, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["late procpool-worker-0 late 7", "False 7"]
