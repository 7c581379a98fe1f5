"""``procpool run`` and ``procpool status``, run as a user runs them: as a command, in a
subprocess, killed with SIGKILL halfway, resumed, and watched through a pseudo-terminal.

Tasks are in batch_tasks.py. Tests that must catch the runner mid-run synchronise on FIFOs the
task writes to; nothing sleeps.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.metadata
import json
import os
import pty
import re
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pytest

from support import still_alive

RUN_TIMEOUT = 60


def procpool(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "procpool", *args], cwd=cwd, input=stdin,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT)


def write_jsonl(path: Path, items: list[Any]) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


def read_results(path: Path) -> dict[int, dict[str, Any]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    by_index = {line["index"]: line for line in lines}
    assert len(by_index) == len(lines), "an item was written twice"
    return by_index


# ---- inputs and results ------------------------------------------------------------------------


def test_jsonl_items_become_calls_and_results_lines(tmp_path: Path) -> None:
    source = tmp_path / "items.jsonl"
    source.write_text('3\n[2, 5]\n{"a": 1, "b": 10}\n\nnot json\n[1, 2, 3]\n')
    done = procpool("run", "batch_tasks:add", "items.jsonl", "-o", "out.jsonl", cwd=tmp_path)
    assert done.returncode == 1, done.stderr  # one malformed line, one wrong call
    results = read_results(tmp_path / "out.jsonl")
    assert sorted(results) == [0, 1, 2, 3, 4]
    assert [results[i].get("result") for i in range(3)] == [3, 7, 11]
    assert results[0]["input"] == 3 and results[2]["input"] == {"a": 1, "b": 10}
    assert results[0]["attempts"] == 1 and results[0]["duration"] >= 0
    invalid = results[3]
    assert invalid["status"] == "invalid"
    assert "line 5: not valid JSON" in invalid["error"]["message"]
    assert invalid["input"] == "not json"
    wrong_call = results[4]
    assert wrong_call["status"] == "error" and wrong_call["error"]["type"] == "TypeError"
    assert "5 of 5 items, 3 ok, 2 failed" in done.stdout


def test_csv_rows_are_keyword_arguments(tmp_path: Path) -> None:
    (tmp_path / "words.csv").write_text("word,times\nhi,2\nyo,1\nbad\n")
    done = procpool("run", "batch_tasks:shout", "words.csv", cwd=tmp_path)
    assert done.returncode == 1
    results = read_results(tmp_path / "results.jsonl")
    assert results[0]["result"] == "HI!HI!" and results[1]["result"] == "YO!"
    assert results[2]["status"] == "invalid"
    assert "line 4: expected 2 fields (word, times), found 1" in results[2]["error"]["message"]


def test_a_glob_or_a_folder_gives_one_path_per_item(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for n in range(5):
        (photos / f"p{n}.jpg").write_bytes(b"x" * n)
    (photos / "notes.txt").write_text("skip me")
    done = procpool("run", "batch_tasks:size_of", "photos/*.jpg", "-o", "g.jsonl", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    results = read_results(tmp_path / "g.jsonl")
    assert [results[i]["result"] for i in range(5)] == [
        {"name": f"p{n}.jpg", "bytes": n} for n in range(5)]
    done = procpool("run", "batch_tasks:size_of", "photos", "-o", "d.jsonl", cwd=tmp_path)
    assert done.returncode == 0 and len(read_results(tmp_path / "d.jsonl")) == 6


def test_stdin_is_json_lines(tmp_path: Path) -> None:
    done = procpool("run", "batch_tasks:square", "-", "--workers", "1", cwd=tmp_path,
                    stdin="1\n2\n3\n")
    assert done.returncode == 0, done.stderr
    assert {i: r["result"] for i, r in read_results(tmp_path / "results.jsonl").items()} == {
        0: 1, 1: 4, 2: 9}


def test_each_kind_of_failure_is_recorded_for_its_item_only(
    tmp_path: Path, start_method: str
) -> None:
    write_jsonl(tmp_path / "items.jsonl", list(range(8)))
    done = procpool("run", "batch_tasks:misbehave", "items.jsonl", "--task-timeout", "1",
                    "--retries", "1", "--start-method", start_method, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    results = read_results(tmp_path / "results.jsonl")
    statuses = {i: r["status"] for i, r in results.items()}
    assert statuses == {0: "ok", 1: "error", 2: "died", 3: "timeout", 4: "error", 5: "ok",
                        6: "ok", 7: "ok"}
    assert results[1]["error"]["type"] == "ValueError"
    assert 'raise ValueError(f"item {x} is bad")' in results[1]["error"]["traceback"]
    assert "_batch/item.py" not in results[1]["error"]["traceback"]  # starts in the user's code
    died = results[2]
    assert died["attempts"] == 2 and "misbehave() on item 2 (line 3)" in died["error"]["message"]
    assert "exit code 3" in died["error"]["message"]
    assert results[3]["attempts"] == 2 and results[3]["error"]["type"] == "TaskTimeout"
    assert "cannot be written as JSON" in results[4]["error"]["message"]
    assert "8 of 8 items, 4 ok, 4 failed (1 timed out), 2 retried" in done.stdout


# ---- killed and resumed --------------------------------------------------------------------------


def _blocking_run(tmp_path: Path, start_method: str) -> tuple[list[str], Path]:
    control = tmp_path / "control"
    control.mkdir()
    for fifo in ("started", "release"):
        os.mkfifo(control / fifo)
    (control / "block").touch()
    write_jsonl(tmp_path / "items.jsonl", [{"x": x, "control": str(control)} for x in range(40)])
    command = [sys.executable, "-m", "procpool", "run", "batch_tasks:logged_square",
               "items.jsonl", "-w", "2", "--start-method", start_method]
    return command, control


def test_sigkill_halfway_then_resume_loses_nothing_and_repeats_nothing(
    tmp_path: Path, start_method: str
) -> None:
    command, control = _blocking_run(tmp_path, start_method)
    runner = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        with open(control / "started") as fifo:  # item 10 is running (and will block)
            assert fifo.read() == "started"
        workers = [child.pid for child in psutil.Process(runner.pid).children()]
        runner.kill()  # while the other worker is still going through items
        runner.wait(timeout=RUN_TIMEOUT)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        assert runner.stderr is not None
        runner.stderr.close()
    assert still_alive(workers) == [], "the runner's workers outlived it"

    journal = tmp_path / "results.jsonl.journal"
    with contextlib.closing(sqlite3.connect(journal)) as db:
        recorded_before = {idx for (idx,) in db.execute("SELECT idx FROM items")}
    assert 0 < len(recorded_before) < 40 and 10 not in recorded_before
    status = procpool("status", str(journal), cwd=tmp_path)
    assert "stopped before finishing" in status.stdout, status.stdout

    (control / "block").unlink()
    resumed = procpool("run", "batch_tasks:logged_square", "items.jsonl", "--resume",
                       cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "40 of 40 items, 40 ok" in resumed.stdout
    results = read_results(tmp_path / "results.jsonl")
    assert {i: r["result"] for i, r in results.items()} == {x: x * x for x in range(40)}
    runs = Counter(int(line) for line in (control / "runs").read_text().split())
    assert all(runs[index] == 1 for index in recorded_before), "a recorded item ran again"
    assert f"{40 - len(recorded_before)} this session" in resumed.stdout


def test_ctrl_c_stops_cleanly_and_resume_finishes(tmp_path: Path) -> None:
    command, control = _blocking_run(tmp_path, "fork")
    runner = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        with open(control / "started") as fifo:
            fifo.read()
        runner.send_signal(signal.SIGINT)
        stdout, stderr = runner.communicate(timeout=RUN_TIMEOUT)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.communicate()
    assert runner.returncode == 130, stderr
    assert "procpool run interrupted" in stdout and "--resume" in stderr
    assert "Traceback" not in stderr
    status = procpool("status", "results.jsonl.journal", cwd=tmp_path)
    assert "interrupted; continue it with --resume" in status.stdout
    (control / "block").unlink()
    resumed = procpool("run", "batch_tasks:logged_square", "items.jsonl", "--resume",
                       cwd=tmp_path)
    assert resumed.returncode == 0 and len(read_results(tmp_path / "results.jsonl")) == 40


def test_resume_repairs_the_results_file_from_the_journal(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "items.jsonl", list(range(10)))
    assert procpool("run", "batch_tasks:square", "items.jsonl", cwd=tmp_path).returncode == 0
    results = tmp_path / "results.jsonl"
    complete = results.read_bytes()
    journal = tmp_path / "results.jsonl.journal"

    with results.open("ab") as handle:  # killed while writing a line whose commit was lost
        handle.write(b'{"index": 3, "stat')
    assert procpool("run", "batch_tasks:square", "items.jsonl", "--resume",
                    cwd=tmp_path).returncode == 0
    assert results.read_bytes() == complete

    results.write_bytes(complete[: len(complete) // 2])  # the file lost lines (a power cut)
    assert procpool("run", "batch_tasks:square", "items.jsonl", "--resume",
                    cwd=tmp_path).returncode == 0
    assert results.read_bytes() == complete

    # Killed between recording an item and writing its line: written on resume, once.
    last = complete.splitlines(keepends=True)[-1]
    results.write_bytes(complete[: -len(last)])
    with contextlib.closing(sqlite3.connect(journal)) as db, db:
        db.execute("UPDATE items SET written = NULL WHERE written = (SELECT MAX(written) "
                   "FROM items)")
        db.execute("UPDATE meta SET value = ? WHERE key = 'output_offset'",
                   (str(len(complete) - len(last)),))
    assert procpool("run", "batch_tasks:square", "items.jsonl", "--resume",
                    cwd=tmp_path).returncode == 0
    assert results.read_bytes() == complete


# ---- what gets a clear error --------------------------------------------------------------------


def test_journal_problems_are_refused_never_silently_restarted(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "items.jsonl", list(range(5)))
    assert procpool("run", "batch_tasks:square", "items.jsonl", cwd=tmp_path).returncode == 0

    again = procpool("run", "batch_tasks:square", "items.jsonl", cwd=tmp_path)
    assert again.returncode == 2 and "add --resume to continue it, or --restart" in again.stderr

    other = procpool("run", "batch_tasks:add", "items.jsonl", "--resume", cwd=tmp_path)
    assert other.returncode == 2 and "belongs to another run" in other.stderr

    write_jsonl(tmp_path / "items.jsonl", [0, 1, 99, 3, 4])
    changed = procpool("run", "batch_tasks:square", "items.jsonl", "--resume", cwd=tmp_path)
    assert changed.returncode == 2
    assert "the input changed since the journal was written: item 2 (line 3)" in changed.stderr

    nothing = procpool("run", "batch_tasks:square", "items.jsonl", "--resume", "-o", "new.jsonl",
                       cwd=tmp_path)
    assert nothing.returncode == 2 and "nothing to resume" in nothing.stderr

    (tmp_path / "corrupt.journal").write_bytes(b"this is not sqlite" * 100)
    corrupt = procpool("run", "batch_tasks:square", "items.jsonl", "--resume", "--journal",
                       "corrupt.journal", cwd=tmp_path)
    assert corrupt.returncode == 2 and "not a procpool journal" in corrupt.stderr
    status = procpool("status", "corrupt.journal", cwd=tmp_path)
    assert status.returncode == 2 and "not a procpool journal" in status.stderr

    restarted = procpool("run", "batch_tasks:square", "items.jsonl", "--restart", cwd=tmp_path)
    assert restarted.returncode == 0 and read_results(tmp_path / "results.jsonl")[2][
        "result"] == 99 * 99


def test_a_journal_in_use_is_refused(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "items.jsonl", [1])
    lock = os.open(tmp_path / "results.jsonl.journal.lock", os.O_RDWR | os.O_CREAT)
    try:
        os.write(lock, b"4242")
        fcntl.flock(lock, fcntl.LOCK_EX)
        busy = procpool("run", "batch_tasks:square", "items.jsonl", cwd=tmp_path)
    finally:
        os.close(lock)
    assert busy.returncode == 2 and "another procpool run (pid 4242)" in busy.stderr


@pytest.mark.parametrize(("arguments", "message"), [
    (["nowhere:square", "items.jsonl"], "cannot import the module 'nowhere'"),
    (["batch_tasks:nope", "items.jsonl"], "'batch_tasks' has no 'nope'; callables there: add"),
    (["batch_tasks", "items.jsonl"], "expected MODULE:FUNCTION"),
    (["batch_tasks:square", "missing.jsonl"], "cannot read the input 'missing.jsonl'"),
    (["batch_tasks:square", "nothing/*.png"], "no files match 'nothing/*.png'"),
    (["batch_tasks:square", "items.jsonl", "--workers", "0"], "must be at least 1"),
    (["batch_tasks:square", "items.jsonl", "--max-memory-per-child", "lots"], "like 500M"),
])
def test_bad_arguments_get_a_clear_message(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    write_jsonl(tmp_path / "items.jsonl", [1])
    done = procpool("run", *arguments, cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not (tmp_path / "results.jsonl").exists()


# ---- watching it ---------------------------------------------------------------------------------


def test_progress_bar_and_summary_in_a_terminal(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "items.jsonl", list(range(40)))
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    runner = subprocess.Popen(
        [sys.executable, "-m", "procpool", "run", "batch_tasks:square", "items.jsonl"],
        cwd=tmp_path, stdin=terminal, stdout=terminal, stderr=terminal)
    os.close(terminal)
    output = b""
    try:
        while True:
            try:
                data = os.read(controller, 4096)
            except OSError:  # EIO: the runner exited and the terminal closed
                break
            if not data:
                break
            output += data
        assert runner.wait(timeout=RUN_TIMEOUT) == 0
    finally:
        os.close(controller)
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    text = output.decode()
    assert "square: 100%" in text and "40/40" in text and "item/s" in text
    assert "\r" in text  # redrawn in place, as a bar on a terminal is
    assert "procpool run done: 40 of 40 items, 40 ok, 0 failed" in text


@pytest.mark.parametrize("start_method", ["spawn", "fork"])
def test_workers_warnings_are_shown_whole_above_the_bar(tmp_path: Path,
                                                       start_method: str) -> None:
    write_jsonl(tmp_path / "items.jsonl", list(range(6)))
    # Forwarded by default under spawn; asked for under fork.
    asked = ["--forward-logs"] if start_method == "fork" else []
    done = procpool("run", "batch_tasks:warn_and_square", "items.jsonl", "--progress",
                    "--start-method", start_method, *asked, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # The bar is redrawn with carriage returns; each warning is a line of its own between.
    shown = re.split(r"[\r\n]", done.stderr)
    warnings = sorted(line for line in shown if "odd item" in line)
    assert len(warnings) == 3 and all(
        re.fullmatch(r"WARNING procpool-worker-\d+: odd item [135]", line) for line in warnings
    ), done.stderr
    assert "6/6" in done.stderr


def test_forwarding_needs_local_workers(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "items.jsonl", [1])
    done = procpool("run", "batch_tasks:square", "items.jsonl", "--backend", "dask",
                    "--forward-logs", cwd=tmp_path)
    assert done.returncode == 2 and "need local workers" in done.stderr


def test_no_bar_when_not_a_terminal(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "items.jsonl", [1, 2])
    done = procpool("run", "batch_tasks:square", "items.jsonl", cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == ""
    forced = procpool("run", "batch_tasks:square", "items.jsonl", "--restart", "--progress",
                      cwd=tmp_path)
    assert "2/2" in forced.stderr


def test_status_of_a_finished_run(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "items.jsonl", [1, "x", 3])
    procpool("run", "batch_tasks:square", "items.jsonl", cwd=tmp_path)
    status = procpool("status", "results.jsonl.journal", cwd=tmp_path)
    assert status.returncode == 0
    assert "batch_tasks:square over jsonl:" in status.stdout
    assert "state     finished" in status.stdout
    assert "3 of 3 recorded: 2 ok, 1 failed" in status.stdout


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "procpool"
    done = subprocess.run([str(script), "run", "--help"], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT)
    assert done.returncode == 0 and "--resume" in done.stdout


def test_the_readme_demo_task_runs_through_the_runner(tmp_path: Path) -> None:
    repository = Path(__file__).parent.parent
    photos = tmp_path / "photos"
    made = subprocess.run([sys.executable, "-m", "examples.photos", str(photos), "--count", "3",
                           "--width", "1200", "--height", "900"], cwd=repository,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert made.returncode == 0, made.stderr
    done = procpool("run", "examples.photos:resize", f"{photos}/*.jpg", "-o",
                    str(tmp_path / "resized.jsonl"), cwd=repository)
    assert done.returncode == 0, done.stderr
    results = read_results(tmp_path / "resized.jsonl")
    assert [results[i]["result"]["size"] for i in range(3)] == [[800, 600]] * 3
    assert sorted(p.name for p in (tmp_path / "resized").iterdir()) == [
        f"photo-00{i}.jpg" for i in range(3)]


def test_the_runner_runs_on_a_dask_cluster_too(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "items.jsonl", [*range(6), "oops"])
    done = procpool("run", "batch_tasks:square", "items.jsonl", "--backend", "dask",
                    "--chunksize", "2", cwd=tmp_path)
    assert done.returncode == 1, done.stderr  # "oops" * "oops" fails
    results = read_results(tmp_path / "results.jsonl")
    assert {i: r.get("result") for i, r in results.items() if r["status"] == "ok"} == {
        i: i * i for i in range(6)}
    assert results[6]["status"] == "error" and results[6]["error"]["type"] == "TypeError"


# ---- found by using it as a new user -------------------------------------------------------------


def journal_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".journal" in p.name)


def test_a_results_path_that_is_a_folder_is_refused_clearly(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "items.jsonl", [1, 2])
    (tmp_path / "out").mkdir()
    for extra in ([], ["--restart"]):
        folder = procpool("run", "batch_tasks:square", "items.jsonl", "-o", "out", *extra,
                          cwd=tmp_path)
        assert folder.returncode == 2, folder.stderr
        assert "the results file out is a folder" in folder.stderr
        assert "Traceback" not in folder.stderr
    assert journal_files(tmp_path) == []


def test_a_run_that_cannot_start_leaves_nothing_and_a_plain_retry_runs(tmp_path: Path) -> None:
    # The journal exists by the time the run finds what is wrong: a CSV header is read only
    # once the items are.
    (tmp_path / "words.csv").write_text("word,word\nhi,ho\n")
    bad = procpool("run", "batch_tasks:shout", "words.csv", "-o", "words.jsonl", cwd=tmp_path)
    assert bad.returncode == 2 and "must name each column once" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr
    assert journal_files(tmp_path) == [] and not (tmp_path / "words.jsonl").exists()
    status = procpool("status", "words.jsonl.journal", cwd=tmp_path)
    assert status.returncode == 2 and "there is no journal" in status.stderr

    (tmp_path / "words.csv").write_text("word,times\nhi,2\n")  # fixed: the same command runs
    fixed = procpool("run", "batch_tasks:shout", "words.csv", "-o", "words.jsonl", cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stderr
    assert read_results(tmp_path / "words.jsonl")[0]["result"] == "HI!HI!"


def test_a_csv_that_is_not_utf8_is_refused_without_a_journal(tmp_path: Path) -> None:
    (tmp_path / "words.csv").write_bytes(b"word,times\nhi,1\nyo,1\n\xff\xfe,1\n")
    done = procpool("run", "batch_tasks:shout", "words.csv", cwd=tmp_path)
    assert done.returncode == 2 and "cannot read the input 'words.csv'" in done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert journal_files(tmp_path) == [] and not (tmp_path / "results.jsonl").exists()


def test_an_unwritable_results_folder_is_refused_before_any_journal(tmp_path: Path) -> None:
    # /sys refuses new files to everyone, root included (a chmod'ed folder would not stop
    # root, and the suite runs as root in CI).
    write_jsonl(tmp_path / "items.jsonl", [1])
    done = procpool("run", "batch_tasks:square", "items.jsonl", "-o", "/sys/out.jsonl",
                    "--journal", "out.journal", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "cannot write the results file /sys/out.jsonl" in done.stderr, done.stderr
    assert journal_files(tmp_path) == []


def test_a_missing_results_folder_is_named(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "items.jsonl", [1])
    done = procpool("run", "batch_tasks:square", "items.jsonl", "-o", "nowhere/dir/out.jsonl",
                    cwd=tmp_path)
    assert done.returncode == 2
    assert ("cannot write the results file nowhere/dir/out.jsonl: the folder nowhere/dir does "
            "not exist") in done.stderr, done.stderr
    assert ".journal" not in done.stderr

    (tmp_path / "link.jsonl").symlink_to(tmp_path / "gone" / "out.jsonl")
    linked = procpool("run", "batch_tasks:square", "items.jsonl", "-o", "link.jsonl",
                      cwd=tmp_path)
    assert linked.returncode == 2
    assert f"the folder {tmp_path / 'gone'} does not exist" in linked.stderr, linked.stderr
    assert journal_files(tmp_path) == []

    journal = procpool("run", "batch_tasks:square", "items.jsonl", "--journal",
                       "nowhere/run.journal", cwd=tmp_path)
    assert journal.returncode == 2
    assert ("cannot create the journal nowhere/run.journal: the folder nowhere does not exist"
            in journal.stderr), journal.stderr


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"not strict JSON: {name}")


def test_every_results_line_is_strict_json_even_for_nan_and_infinity(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "items.jsonl", ["nan", "inf", "-inf", "1.5"])
    (tmp_path / "items.jsonl").write_text(
        (tmp_path / "items.jsonl").read_text() + "NaN\n")  # lenient input: a bare NaN
    done = procpool("run", "batch_tasks:as_float", "items.jsonl", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    results = {}
    for line in lines:
        result = json.loads(line, parse_constant=_refuse_constant)
        results[result["index"]] = result
    assert [results[i]["result"] for i in range(4)] == [
        ["NaN", {"value": "NaN", "NaN": "nan"}, ["NaN"]],
        ["Infinity", {"value": "Infinity", "Infinity": "inf"}, ["Infinity"]],
        ["-Infinity", {"value": "-Infinity", "-Infinity": "-inf"}, ["-Infinity"]],
        [1.5, {"value": 1.5, "1.5": "1.5"}, [1.5]],
    ]
    assert results[4]["result"][0] == "NaN" and results[4]["input"] == "NaN"
    assert [float(results[i]["result"][0]) for i in range(1, 4)] == [
        float("inf"), float("-inf"), 1.5]  # the strings read back with float()


def test_version() -> None:
    done = subprocess.run([sys.executable, "-m", "procpool", "--version"], capture_output=True,
                          text=True, timeout=RUN_TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"procpool {importlib.metadata.version('procpool')}\n"


def test_every_option_has_help() -> None:
    from procpool._batch.cli import _parser

    parser = _parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in [("procpool", parser), *commands.choices.items()]:
        for action in command._actions:
            assert action.help, f"{name} {'/'.join(action.option_strings) or action.dest}"


def test_status_accepts_the_results_file(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "items.jsonl", [1, 2])
    assert procpool("run", "batch_tasks:square", "items.jsonl", "-o", "out.jsonl",
                    cwd=tmp_path).returncode == 0
    status = procpool("status", "out.jsonl", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "journal   out.jsonl.journal" in status.stdout and "state     finished" in status.stdout

    alone = procpool("status", "items.jsonl", cwd=tmp_path)
    assert alone.returncode == 2 and "no items.jsonl.journal beside it" in alone.stderr


def test_a_finished_run_leaves_only_the_results_and_the_journal(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "items.jsonl", list(range(20)))
    assert procpool("run", "batch_tasks:square", "items.jsonl", cwd=tmp_path).returncode == 0
    assert procpool("status", "results.jsonl.journal", cwd=tmp_path).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "items.jsonl", "results.jsonl", "results.jsonl.journal"]
    # Still a journal that resumes (nothing to do) and refuses a second plain run.
    resumed = procpool("run", "batch_tasks:square", "items.jsonl", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0 and "20 of 20 items, 20 ok" in resumed.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "items.jsonl", "results.jsonl", "results.jsonl.journal"]
    again = procpool("run", "batch_tasks:square", "items.jsonl", cwd=tmp_path)
    assert again.returncode == 2 and "already holds a run" in again.stderr


# The runner with hooks: its clock is read from CONTROL/clock (which the test writes); after
# the Nth item is recorded (journal and results file) for N in PAUSE_AT, it says N on the FIFO
# CONTROL/recorded and waits for a line on the FIFO CONTROL/go; with FAIL_WRITE_AT, that
# write to the results file fails as on a full disk.
_HOOKED_RUNNER = """
import errno
import os
import sys
from pathlib import Path

import procpool._batch.journal
import procpool._batch.runner
from procpool._batch.cli import main

control, pause_at, fail_write_at = Path(sys.argv[1]), eval(sys.argv[2]), int(sys.argv[3])


def clock():
    return (control / "clock").read_text()


procpool._batch.journal.now_text = procpool._batch.runner.now_text = clock
mark_written = procpool._batch.journal.Journal.mark_written
marked = 0


def hooked_mark_written(self, index, offset):
    global marked
    mark_written(self, index, offset)
    marked += 1
    if marked in pause_at:
        with open(control / "recorded", "w") as fifo:
            fifo.write(str(marked))
        with open(control / "go") as fifo:
            fifo.read()


class FullDisk:
    writes = 0

    def __getattr__(self, name):
        return getattr(os, name)

    def pwrite(self, fd, data, offset):
        FullDisk.writes += 1
        if FullDisk.writes == fail_write_at:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.pwrite(fd, data, offset)


procpool._batch.journal.Journal.mark_written = hooked_mark_written
procpool._batch.runner.os = FullDisk()
sys.exit(main(sys.argv[4:]))
"""


def hooked_runner(control: Path, arguments: list[str], *, pause_at: tuple[int, ...] = (),
                  fail_write_at: int = 0) -> list[str]:
    control.mkdir(exist_ok=True)
    for fifo in ("recorded", "go"):
        if not (control / fifo).exists():
            os.mkfifo(control / fifo)
    if not (control / "clock").exists():
        (control / "clock").write_text("2000-01-01 00:00:00 +0000")
    return [sys.executable, "-c", _HOOKED_RUNNER, str(control), repr(pause_at),
            str(fail_write_at), *arguments]


def test_status_after_a_sigkill_shows_when_the_last_item_was_recorded(tmp_path: Path) -> None:
    control = tmp_path / "control"
    write_jsonl(tmp_path / "items.jsonl", list(range(10)))
    command = hooked_runner(control, ["run", "batch_tasks:square", "items.jsonl", "-w", "1"],
                            pause_at=(3, 4))
    started, later = "2000-01-01 00:00:00 +0000", "2000-01-01 01:30:00 +0000"
    runner = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        with open(control / "recorded") as fifo:
            assert fifo.read() == "3"
        (control / "clock").write_text(later)
        with open(control / "go", "w") as fifo:
            fifo.write("go")
        with open(control / "recorded") as fifo:  # a fourth item, recorded at the later time
            assert fifo.read() == "4"
        runner.kill()
        runner.wait(timeout=RUN_TIMEOUT)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    status = procpool("status", "results.jsonl.journal", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert f"started   {started}, last update {later}" in status.stdout, status.stdout
    assert "stopped before finishing" in status.stdout
    assert "items     4 of 10 recorded" in status.stdout


def test_a_run_stopped_by_an_error_says_why_and_resumes(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "items.jsonl", list(range(10)))
    command = hooked_runner(tmp_path / "control",
                            ["run", "batch_tasks:square", "items.jsonl", "-w", "1"],
                            fail_write_at=4)
    failed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True,
                            timeout=RUN_TIMEOUT)
    assert failed.returncode == 2, failed.stderr
    assert ("cannot write the results file results.jsonl: No space left on device"
            in failed.stderr), failed.stderr
    status = procpool("status", "results.jsonl", cwd=tmp_path)
    assert ("state     stopped by an error: cannot write the results file results.jsonl: No "
            "space left on device (once that is fixed, continue it with --resume)"
            in status.stdout), status.stdout
    assert "4 of 10 recorded" in status.stdout  # the fourth is recorded, its line not written
    resumed = procpool("run", "batch_tasks:square", "items.jsonl", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert {i: r["result"] for i, r in read_results(tmp_path / "results.jsonl").items()} == {
        x: x * x for x in range(10)}
    assert "state     finished" in procpool("status", "results.jsonl", cwd=tmp_path).stdout


def test_a_refused_resume_leaves_the_journal_as_it_was(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "items.jsonl", list(range(5)))
    assert procpool("run", "batch_tasks:square", "items.jsonl", cwd=tmp_path).returncode == 0
    before = procpool("status", "results.jsonl.journal", cwd=tmp_path).stdout
    write_jsonl(tmp_path / "items.jsonl", [0, 1, 99, 3, 4])
    changed = procpool("run", "batch_tasks:square", "items.jsonl", "--resume", cwd=tmp_path)
    assert changed.returncode == 2 and "the input changed" in changed.stderr
    after = procpool("status", "results.jsonl.journal", cwd=tmp_path).stdout
    assert after == before and "state     finished" in after
