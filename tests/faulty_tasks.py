"""Tasks and initializers that misbehave once, on purpose, for the fault matrix and the soak.

Module-level (importable by spawn and forkserver workers: conftest puts tests/ on PYTHONPATH).
Every task records each of its executions in a directory the test owns, so a test can check how
often an item really ran instead of assuming it. Faults that must happen once only (a kill
that a retry then survives, a start-up that fails in the first worker only) claim a marker file
with O_EXCL: exactly one process wins, whatever the start method.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# What FaultyTask's ``fault`` may be, and what it does to the one bad item.
TASK_FAULTS = ("none", "kill", "raise", "unpicklable")
# What start_worker's ``how`` may be.
START_FAULTS = ("exit", "sigkill")


def value_of(x: int) -> int:
    """What a task returns for item ``x`` when nothing goes wrong (distinct for every x)."""
    return x * x + 1


def claim(path: str) -> bool:
    """True for the first caller in any process to claim ``path``, False for every later one."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def record_run(log_dir: str, x: int) -> None:
    """Append one byte to ``runs-<x>``: its size is how many times item x started."""
    fd = os.open(os.path.join(log_dir, f"runs-{x}"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, b".")
    finally:
        os.close(fd)


def runs_of(log_dir: str | Path, x: int) -> int:
    try:
        return os.path.getsize(os.path.join(log_dir, f"runs-{x}"))
    except FileNotFoundError:
        return 0


@dataclass(frozen=True)
class FaultyTask:
    """``task(x)`` returns ``value_of(x)``, except for item ``bad``, which does ``fault``:

    - ``"kill"``: SIGKILLs its own worker, on its first attempt only (a retry then succeeds,
      so a retried item is told apart from one that was never lost);
    - ``"raise"``: raises ``ValueError("bad value <x>")``;
    - ``"unpicklable"``: returns a ``threading.Lock`` (procpool.ResultSerializationError).

    Error messages name it ``FaultyTask() item N``.
    """

    fault: str
    bad: int
    log_dir: str

    def __call__(self, x: int) -> Any:
        record_run(self.log_dir, x)
        if x == self.bad:
            if self.fault == "kill" and claim(os.path.join(self.log_dir, f"killed-{x}")):
                os.kill(os.getpid(), signal.SIGKILL)
            elif self.fault == "raise":
                raise ValueError(f"bad value {x}")
            elif self.fault == "unpicklable":
                return threading.Lock()
        return value_of(x)


def start_worker(marker_dir: str, how: str) -> None:
    """A pool initializer that fails.

    ``"exit"``: ends every worker with ``os._exit(3)`` (an initializer that exits: the pool
    is broken by design). ``"sigkill"``: the first worker to start, and only that one (a marker
    file in ``marker_dir``), is SIGKILLed while it starts, as by the OOM killer or ``kill -9``:
    the pool must replace it and do the work.
    """
    if how == "exit":
        os._exit(3)
    if how != "sigkill":
        raise ValueError(f"unknown start fault {how!r}")
    if claim(os.path.join(marker_dir, "start-fault")):
        os.kill(os.getpid(), signal.SIGKILL)


# ---- the soak's task (tools/soak.py) ---------------------------------------------------------


def process_token(pid: int) -> str | None:
    """``<pid>-<start time>``: a name for one process that a later one given the same pid
    does not share (Linux: /proc/<pid>/stat); None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return f"{pid}-{int(fields[19])}"  # field 22 of stat: the start time, in clock ticks


def soak_task(spec: tuple[int, str, float, Any]) -> tuple[int, Any]:
    """One soak task, ``(task id, log dir, seconds, array or None)``: return the id, and twice
    the array if there is one, after ``seconds`` of sleep.

    As it starts it writes its id to ``busy-<process>``, removed when it returns (so the
    killer picks only workers that are running a task), then appends it to ``runs-<process>``
    (so the soak counts every execution, and a killed worker's last line is the task the kill
    hit). ``<process>`` is ``process_token``: a worker given the pid of an earlier
    one writes logs of its own.
    """
    import time

    task_id, log_dir, seconds, array = spec
    token = process_token(os.getpid())
    # The marker first, whole (renamed into place): the killer never reads an empty one, and
    # a kill between the two steps leaves a marker and no run.
    busy = os.path.join(log_dir, f"busy-{token}")
    with open(os.path.join(log_dir, f".busy-{token}"), "w") as marker:
        marker.write(str(task_id))
    os.replace(marker.name, busy)
    fd = os.open(os.path.join(log_dir, f"runs-{token}"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{task_id}\n".encode())
    finally:
        os.close(fd)
    time.sleep(seconds)
    result = None if array is None else array * 2
    os.unlink(busy)
    return task_id, result
