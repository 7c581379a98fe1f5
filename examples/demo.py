"""The main demonstration (``make demo``): procpool's failure model on a real batch job.

    python -m examples.demo [FOLDER] [--count N] [--task-timeout SECONDS]

A folder of photo-like JPEGs is resized with the batch runner (``procpool run``), the way a
real batch meets trouble: a few files are truncated (the task raises), one makes its decoder
crash the process (a segfault, as a native library does on a malformed file), one makes it
hang. Midway the run gets a Ctrl-C; ``--resume`` finishes it without redoing anything. Then
``procpool status``, what became of each bad photo, and a serial loop against a pool on the
good photos. Under a minute on two cores; everything it prints is read back from the run's
own files, not assumed.

The crash and the hang are simulated by this module's ``resize`` for two file names (real
ones would need a buggy codec); the truncated files are really truncated.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import procpool
from examples import photos

# The bad photos sort among the good ones (photo-000.jpg ...), so some come before the Ctrl-C.
CRASHES = "photo-007-crash.jpg"  # its "decoder" segfaults
HANGS = "photo-015-hang.jpg"  # its "decoder" never returns
TRUNCATED = ("photo-003-cut.jpg", "photo-012-cut.jpg", "photo-040-cut.jpg")
GOOD = re.compile(r"photo-\d{3}\.jpg")


def resize(path: str) -> dict[str, Any]:
    """photos.resize, but for the two photos that stand for a crashing and a stuck decoder."""
    name = Path(path).name
    if name == CRASHES:
        ctypes.string_at(0)  # reads address 0: SIGSEGV, as a native decoder bug would
    if name == HANGS:
        threading.Event().wait()  # blocks forever, as a decoder stuck on a bad file would
    return photos.resize(path)


def _prepare(folder: Path, count: int) -> list[Path]:
    """Fresh photos (kept between runs, they take a while to make), the bad ones, and no
    earlier results. Returns the good photos."""
    source = folder / "photos"
    photos.main([str(source), "--count", str(count)])
    good = sorted(path for path in source.iterdir() if GOOD.fullmatch(path.name))[:count]
    for path in source.iterdir():  # bad photos of an earlier demo, extra good ones
        if path not in good:
            path.unlink()
    for name in (CRASHES, HANGS):
        shutil.copyfile(good[0], source / name)
    whole = good[1].read_bytes()
    for name in TRUNCATED:
        (source / name).write_bytes(whole[: len(whole) // 3])
    for stale in ("resized", "resized.jsonl", "resized.jsonl.journal"):
        path = folder / stale
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    return good


def _time_serial_and_pool(good: list[Path]) -> tuple[float, float, int]:
    paths = [str(path) for path in good]
    started = time.perf_counter()
    for path in paths:
        photos.resize(path)
    serial = time.perf_counter() - started
    with procpool.Pool() as pool:
        started = time.perf_counter()
        pool.map(photos.resize, paths, chunksize=1)
        parallel = time.perf_counter() - started
        workers = len(pool.stats().workers)
    return serial, parallel, workers


def _runner(folder: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "procpool", "run", "examples.demo:resize",
            str(folder / "photos" / "*.jpg"), "-o", str(folder / "resized.jsonl"), *options]


def _interrupted_run(folder: Path, options: list[str], after: int) -> str:
    """Start the run, send it a Ctrl-C (SIGINT) once ``after`` results are recorded, and
    return what it printed."""
    results = folder / "resized.jsonl"
    run = subprocess.Popen(_runner(folder, *options), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while run.poll() is None and time.monotonic() < deadline:
        if results.exists() and len(results.read_bytes().splitlines()) >= after:
            run.send_signal(signal.SIGINT)
            break
        time.sleep(0.05)
    output, _ = run.communicate(timeout=120)
    return output


def _show(title: str, text: str) -> None:
    print(f"\n== {title}")
    for line in text.strip().splitlines():
        print(f"   {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=Path("build/demo"))
    parser.add_argument("--count", type=int, default=60, help="good photos (default: 60)")
    parser.add_argument("--task-timeout", type=float, default=3.0,
                        help="seconds before a stuck photo is killed (default: 3)")
    parser.add_argument("--interrupt-after", type=int, default=20,
                        help="results recorded before the Ctrl-C (default: 20)")
    args = parser.parse_args(argv)
    good = _prepare(args.folder, args.count)
    total = len(good) + 2 + len(TRUNCATED)
    print(f"\nA batch of {total} photos, {total - len(good)} of them bad as real batches are: "
          f"{len(TRUNCATED)} truncated, one that crashes its decoder ({CRASHES}), one that "
          f"hangs it ({HANGS}).")
    options = ["--task-timeout", str(args.task_timeout), "--retries", "1", "--no-progress"]
    _show(f"procpool run ... {' '.join(options)}   (a Ctrl-C after {args.interrupt_after} "
          "results)", _interrupted_run(args.folder, options, args.interrupt_after))
    resumed = subprocess.run(_runner(args.folder, "--resume", *options), capture_output=True,
                             text=True, timeout=300)
    _show("procpool run ... --resume", resumed.stdout + resumed.stderr)
    status = subprocess.run([sys.executable, "-m", "procpool", "status",
                             str(args.folder / "resized.jsonl")], capture_output=True,
                            text=True, timeout=60)
    _show("procpool status", status.stdout + status.stderr)

    records = [json.loads(line) for line in
               (args.folder / "resized.jsonl").read_text().splitlines()]
    answered = Counter(record["index"] for record in records)
    bad = [record for record in records if record["status"] != "ok"]
    lines = []
    for record in sorted(bad, key=lambda record: record["input"]):
        lines.append(f"{Path(record['input']).name}: {record['status']}, "
                     f"{record['attempts']} attempt(s)")
        error = f"{record['error']['type']}: {record['error']['message'].splitlines()[0]}"
        lines += textwrap.wrap(error, 96, initial_indent="  ", subsequent_indent="    ")
    _show("the bad photos, from the results file", "\n".join(lines))

    serial, parallel, workers = _time_serial_and_pool(good)
    once = all(count == 1 for count in answered.values()) and len(answered) == total
    print(f"\n{len(records) - len(bad)} of {total} photos resized; each bad one failed alone "
          f"with its own error; across the Ctrl-C every item was recorded "
          f"{'exactly once' if once else 'NOT exactly once'}.")
    print(f"The {len(good)} good photos: a serial loop {serial:.1f} s, procpool.Pool.map with "
          f"{workers} workers {parallel:.1f} s ({serial / parallel:.1f}x).")
    return 0 if once and resumed.returncode in (0, 1) else 1


if __name__ == "__main__":
    sys.exit(main())
