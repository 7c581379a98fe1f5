"""The janitor (``procpool._janitor``): when a parent is SIGKILLed, its watched workers, what
they started, and its shared-memory segments go, even when a worker holds the GIL in C code
(which keeps the worker's own lifeline thread from running).

Each test runs a "parent" interpreter (PARENT below) that starts a GIL holder the way the local
backend starts a worker (a process that leads its own group, with a child in that group), tells
the janitor about it and about a segment prefix, creates a segment, and reports what it made on
stdout. The test then kills the parent and checks what is left. No test starts a janitor in the
test process itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from procpool import _janitor
from support import still_alive

PARENT = textwrap.dedent("""
    import ctypes, json, os, select, signal, sys
    from procpool import _janitor

    def start_gil_holder():
        '''A process leading its own group, with a child in the group, stuck in C code that
        holds the GIL (PyDLL keeps it during the call): a worker's lifeline thread could not
        run. Returns both pids once the child exists.'''
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.setpgid(0, 0)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # a crashed parent's EOF is not ours
            child = os.fork()
            if child == 0:
                while True:
                    signal.pause()
            os.write(write_end, b"%d" % child)
            ctypes.PyDLL(None).sleep(60)
            os._exit(0)
        os.close(write_end)
        child = int(os.read(read_end, 64))
        os.close(read_end)
        return pid, child

    def set_up(who):
        '''Watch a prefix, start a GIL holder and watch it, make a segment; report it all.
        The prefix first, as a pool tells it: that alone starts no janitor.'''
        prefix = f"procpool-{os.getpid()}-"
        _janitor.watch_segments("/" + prefix)  # as _shared_memory.parent_prefix spells it
        before_worker = _janitor.janitor_pid()
        holder, child = start_gil_holder()
        _janitor.watch_worker(holder)
        segment = prefix + "test-r0"
        open("/dev/shm/" + segment, "wb").close()
        return {"who": who, "pid": os.getpid(), "holder": holder, "child": child,
                "segment": segment, "janitor": _janitor.janitor_pid(),
                "janitor_before_worker": before_worker}

    def report(info):
        # One write of a whole line: the parent and its forked child report on one pipe, and
        # a write of less than PIPE_BUF bytes is never interleaved with another.
        os.write(1, (json.dumps(info) + "\\n").encode())

    # The test sends Ctrl-C to our process group. Not SIG_IGN: the janitor would inherit that.
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    mode = sys.argv[1]
    info = set_up("parent")
    if mode == "forget":
        _janitor.forget_worker(info["holder"])  # as if it had been reaped
    elif mode == "replace":
        # The janitor dies (killed by hand): the next call starts another and tells it all.
        first = info["janitor"]
        exited = os.pidfd_open(first)
        os.kill(first, signal.SIGKILL)
        select.select([exited], [], [])
        _janitor.watch_worker(info["holder"])
        info["first_janitor"], info["janitor"] = first, _janitor.janitor_pid()
    elif mode == "fork":
        if os.fork() == 0:
            report(set_up("child"))
            while True:
                signal.pause()
    report(info)
    while True:
        signal.pause()
""")


class Parent:
    """A parent interpreter running PARENT in its own session, and what it reported."""

    def __init__(self, tmp_path: Path, mode: str) -> None:
        script = tmp_path / "parent.py"
        script.write_text(PARENT)
        self.stderr = tmp_path / "stderr.txt"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        with open(self.stderr, "wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, str(script), mode], stdout=subprocess.PIPE, stderr=stderr,
                env=env, start_new_session=True, text=True)
        self.reports: list[dict[str, Any]] = []

    def read_report(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"the parent failed: {self.stderr.read_text()}"
        report: dict[str, Any] = json.loads(line)
        self.reports.append(report)
        return report

    def clean_up(self) -> None:
        """Whatever a failed test left: kill every process, remove every segment."""
        for report in self.reports:
            with contextlib.suppress(OSError):
                os.killpg(report["holder"], signal.SIGKILL)  # the holder and its child
            for key in ("pid", "child", "janitor", "first_janitor"):
                if report.get(key):
                    with contextlib.suppress(OSError):
                        os.kill(report[key], signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.unlink("/dev/shm/" + report["segment"])
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for process in psutil.process_iter():  # what it started before it failed to report
            with contextlib.suppress(OSError, psutil.Error):
                if os.getsid(process.pid) == self.process.pid:
                    process.kill()
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def run_parent(tmp_path: Path) -> Iterator[Any]:
    parents: list[Parent] = []

    def run(mode: str) -> Parent:
        parent = Parent(tmp_path, mode)
        parents.append(parent)
        return parent

    try:
        yield run
    finally:
        for parent in parents:
            parent.clean_up()


def kill(process: subprocess.Popen[str]) -> None:
    process.kill()
    process.wait()


def segment_exists(report: dict[str, Any]) -> bool:
    return os.path.exists("/dev/shm/" + report["segment"])


def test_a_killed_parents_gil_holding_worker_its_children_and_segments_go(
        run_parent: Any) -> None:
    parent = run_parent("watch")
    report = parent.read_report()
    # Started with the first worker, and told the prefix it was told before.
    assert report["janitor_before_worker"] is None
    assert psutil.Process(report["janitor"]).ppid() == parent.process.pid
    # Ctrl-C in a terminal signals the foreground process group: the parent's (which ignores
    # it here), not its janitor, which may be starting up just now.
    os.killpg(parent.process.pid, signal.SIGINT)
    kill(parent.process)
    assert still_alive([report["holder"], report["child"], report["janitor"]]) == []
    assert not segment_exists(report)  # removed before the janitor exited


def test_a_forgotten_worker_is_not_killed(run_parent: Any) -> None:
    parent = run_parent("forget")
    report = parent.read_report()
    kill(parent.process)
    assert still_alive([report["janitor"]]) == []
    # The janitor has done all it would do: had it killed the holder, it would have waited for
    # it to exit first.
    assert set(still_alive([report["holder"], report["child"]], timeout=0)) == {
        report["holder"], report["child"]}
    assert not segment_exists(report)


def test_a_janitor_that_died_is_replaced_and_told_everything(run_parent: Any) -> None:
    parent = run_parent("replace")
    report = parent.read_report()
    assert report["janitor"] not in (None, report["first_janitor"])
    kill(parent.process)
    assert still_alive([report["holder"], report["child"], report["janitor"]]) == []
    assert not segment_exists(report)


def pipe_inode(pid: int, fd: int) -> str:
    return os.readlink(f"/proc/{pid}/fd/{fd}")


def test_a_forked_child_gets_a_janitor_of_its_own(run_parent: Any) -> None:
    parent = run_parent("fork")
    reports = {report["who"]: report for report in (parent.read_report(),
                                                    parent.read_report())}
    mine, childs = reports["parent"], reports["child"]
    assert childs["janitor"] not in (None, mine["janitor"])
    assert psutil.Process(childs["janitor"]).ppid() == childs["pid"]
    # The child closed its copy of the parent's janitor pipe (its read end is the janitor's
    # last argument): EOF is not held back by it.
    janitor_pipe = pipe_inode(mine["janitor"],
                              int(psutil.Process(mine["janitor"]).cmdline()[-1]))
    assert janitor_pipe in {pipe_inode(mine["pid"], int(fd))
                            for fd in os.listdir(f"/proc/{mine['pid']}/fd")}
    assert janitor_pipe not in {pipe_inode(childs["pid"], int(fd))
                                for fd in os.listdir(f"/proc/{childs['pid']}/fd")}

    os.kill(childs["pid"], signal.SIGKILL)
    assert still_alive([childs["holder"], childs["child"], childs["janitor"]]) == []
    assert not segment_exists(childs)
    # The child's janitor knew nothing of the parent's: its segment is still there.
    assert segment_exists(mine)
    assert set(still_alive([mine["janitor"], mine["holder"]], timeout=0)) == {
        mine["janitor"], mine["holder"]}

    kill(parent.process)
    assert still_alive([mine["holder"], mine["child"], mine["janitor"]]) == []
    assert not segment_exists(mine)


def test_what_cannot_be_a_worker_or_a_prefix_starts_nothing() -> None:
    # Checked in the test process: none of these may start a janitor here.
    before = _janitor.janitor_pid()
    for pid in (0, 1, -1, os.getpid()):
        _janitor.watch_worker(pid)
    for prefix in ("", "/", "procpool-1/x", "a\nb"):
        _janitor.watch_segments(prefix)
    _janitor.forget_worker(12345)
    assert _janitor.janitor_pid() == before


def test_the_janitor_process_imports_only_what_starts_fast() -> None:
    # A program's first pool waits for the janitor's start beside its workers' on the same
    # cores: signal's enums, threading and contextlib made the janitor's start three times
    # the interpreter's own. It is this module, imported by the interpreter procpool starts.
    read_end, write_end = os.pipe()
    try:
        janitor = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-I", "-S", "-c", _janitor._RUN,
             os.path.dirname(_janitor._SCRIPT), str(os.getpid()), str(read_end)],
            pass_fds=[read_end], stderr=subprocess.PIPE, text=True)
    finally:
        os.close(read_end)
    os.close(write_end)  # EOF: the janitor sees its parent gone, cleans nothing, exits
    _, report = janitor.communicate(timeout=60)
    assert janitor.returncode == 0, report
    imported = {line.rpartition("|")[2].strip() for line in report.splitlines()
                if line.startswith("import time:") and "|" in line}
    assert "_janitor" in imported
    assert not imported & {"signal", "threading", "contextlib", "enum", "functools",
                           "logging", "multiprocessing", "procpool"}
