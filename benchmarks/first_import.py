"""A fresh program's first pool: importing the pool, starting it, its first result.

    python -m benchmarks.first_import --repeats 9 [--baseline REV] [--methods fork,spawn] [--inline]
    python -m benchmarks.first_import --repeats 9 --respawn [--baseline REV]
    python -m benchmarks.first_import --repeats 9 --worker [--baseline REV]

The other start-up measures (``benchmarks.startup``, the start-up rows of
``benchmarks.versions``) time a pool started after a warm-up pool in the same interpreter: what a
program's second pool costs. Its first also pays for importing the pool's modules and, under
forkserver, for starting the server. Here every case runs in a fresh interpreter, in an order
that rotates from one repeat to the next, and reports two times, each from the script's first
line: ``import`` (importing the face) and ``first result`` (the import, the pool's constructor
and one call answered). The stdlib's Pool and ProcessPoolExecutor run beside procpool's (this
checkout's; with ``--baseline``, an earlier revision's too, exported from git as
``benchmarks.versions`` does). Bytecode is written first, as an installed package has it.
Medians, and each time as a ratio of the stdlib face's.

Each case is a program file, written as users write one: the face imported at the top, the
pool made under ``if __name__ == "__main__":``. Under spawn every worker imports that file
again as its main module (and so the face), and under forkserver the server does, before it
forks the first worker: that import is part of what a program's first result waits for.
``--inline`` runs the same lines with ``python -c`` instead, where there is no main module to
import (how this benchmark ran before 2026-12-08, for comparison with those records).

``--respawn``: a program that recycles its workers, the Pools only (the executors'
``max_tasks_per_child`` exists from 3.11 and refuses fork): ``Pool(2, maxtasksperchild=25)``,
its first result, then ``map(square, range(500), chunksize=1)`` of the program's own function,
timed alone: 20 replacements, each of which imports the program again under spawn. Reported:
the first result and that map, as ratios of the stdlib Pool's.

``--worker``: what one worker cost its own process up to its first task, read by that task
(the Pools only, one worker): its CPU time, and its page faults, which unlike times do not
vary with the machine's load (a fault is a page the process touched first: memory written,
modules imported). Under spawn this is the worker's whole start: the interpreter, the
program's import, the pool's worker modules.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from . import cache_bytecode
from .versions import ROOT, export_source

# Each prints two numbers: seconds to import, and to the first result. The pool is ended
# after the clock stops (terminate: no waiting for idle workers).
_STDLIB_POOL = """
import time; started = time.perf_counter()
import multiprocessing
imported = time.perf_counter()
if __name__ == "__main__":
    pool = multiprocessing.get_context({method!r}).Pool(2)
    pool.apply(abs, (-1,))
    print(imported - started, time.perf_counter() - started)
    pool.terminate(); pool.join()
"""
_STDLIB_EXECUTOR = """
import time; started = time.perf_counter()
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
imported = time.perf_counter()
if __name__ == "__main__":
    executor = ProcessPoolExecutor(2, multiprocessing.get_context({method!r}))
    executor.submit(abs, -1).result()
    print(imported - started, time.perf_counter() - started)
    executor.shutdown()
"""
_PROCPOOL_POOL = """
import time; started = time.perf_counter()
from procpool import Pool
imported = time.perf_counter()
if __name__ == "__main__":
    pool = Pool(2, context={method!r})
    pool.apply(abs, (-1,))
    print(imported - started, time.perf_counter() - started)
    pool.terminate(); pool.join()
"""
_PROCPOOL_EXECUTOR = """
import time; started = time.perf_counter()
from procpool import ProcessPoolExecutor
imported = time.perf_counter()
if __name__ == "__main__":
    executor = ProcessPoolExecutor(2, mp_context={method!r})
    executor.submit(abs, -1).result()
    print(imported - started, time.perf_counter() - started)
    executor.shutdown()
"""
_RESPAWN = """
import time; started = time.perf_counter()
{imports}


def square(x):
    return x * x


if __name__ == "__main__":
    pool = {pool}
    pool.apply(square, (1,))
    first = time.perf_counter() - started
    mapped = time.perf_counter()
    pool.map(square, range(500), chunksize=1)
    print(first, time.perf_counter() - mapped)
    pool.terminate(); pool.join()
"""
_STDLIB_RESPAWN = _RESPAWN.format(
    imports="import multiprocessing",
    pool="multiprocessing.get_context({method!r}).Pool(2, maxtasksperchild=25)")
_PROCPOOL_RESPAWN = _RESPAWN.format(
    imports="from procpool import Pool",
    pool="Pool(2, maxtasksperchild=25, context={method!r})")


_WORKER = """
{imports}


def cost(_):
    import resource
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime, used.ru_minflt


if __name__ == "__main__":
    pool = {pool}
    print(*pool.apply(cost, (None,)))
    pool.terminate(); pool.join()
"""
_STDLIB_WORKER = _WORKER.format(imports="import multiprocessing",
                                pool="multiprocessing.get_context({method!r}).Pool(1)")
_PROCPOOL_WORKER = _WORKER.format(imports="from procpool import Pool",
                                  pool="Pool(1, context={method!r})")


def _run(script: str, source: Path | None, folder: Path, inline: bool) -> tuple[float, float]:
    environment = dict(os.environ)
    if source is not None:
        environment["PYTHONPATH"] = str(source)
    if inline:
        command = [sys.executable, "-c", script]
    else:
        program = folder / "first_pool.py"  # a folder of its own: nothing else to import
        program.write_text(script)
        command = [sys.executable, str(program)]
    done = subprocess.run(command, cwd=folder, env=environment, capture_output=True,
                          text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"a run failed:\n{done.stderr[-3000:]}")
    earlier, later = (float(word) for word in done.stdout.split())
    return earlier, later


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--methods", default="fork,forkserver,spawn")
    parser.add_argument("--baseline", help="an earlier revision of procpool to run beside")
    parser.add_argument("--inline", action="store_true",
                        help="run each case with python -c: no main module for workers to import")
    parser.add_argument("--respawn", action="store_true",
                        help="a program whose Pool recycles its workers (maxtasksperchild=25)")
    parser.add_argument("--worker", action="store_true",
                        help="a worker's CPU time and page faults up to its first task")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="procpool-first-import-") as folder:
        sources: dict[str, Path] = {"": ROOT / "src"}
        if args.baseline:
            sources = {f" ({args.baseline})": export_source(args.baseline, Path(folder)),
                       " (this checkout)": ROOT / "src"}
        for source in sources.values():
            cache_bytecode(source)
        program_folder = Path(folder) / "program"
        program_folder.mkdir()
        cases: list[tuple[str, str, str, Path | None]] = []  # face, label, script, source
        if args.respawn:
            faces: tuple[tuple[str, str, str], ...] = (
                ("Pool", _STDLIB_RESPAWN, _PROCPOOL_RESPAWN),)
            columns, units = ("first result", "recycling map"), (1000, 1000)  # ms
        elif args.worker:
            faces = (("Pool", _STDLIB_WORKER, _PROCPOOL_WORKER),)
            columns, units = ("worker CPU ms", "page faults"), (1000, 1)
        else:
            faces = (("Pool", _STDLIB_POOL, _PROCPOOL_POOL),
                     ("executor", _STDLIB_EXECUTOR, _PROCPOOL_EXECUTOR))
            columns, units = ("import", "first result"), (1000, 1000)
        for face, stdlib, ours in faces:
            cases.append((face, f"stdlib {face}", stdlib, None))
            cases += [(face, f"procpool {face}{suffix}", ours, source)
                      for suffix, source in sources.items()]
        for method in args.methods.split(","):
            times: dict[str, list[tuple[float, float]]] = {label: [] for _, label, _, _ in cases}
            for repeat in range(args.repeats):
                shift = repeat % len(cases)
                for _, label, script, source in cases[shift:] + cases[:shift]:
                    times[label].append(_run(script.format(method=method), source,
                                             program_folder, args.inline))
            print(f"\n{method}: medians of {args.repeats} fresh interpreters, and x the "
                  f"stdlib face's")
            print(f"{'':34} {columns[0]:>13} {'x':>6} {columns[1]:>13} {'x':>6}")
            for face, label, _, _ in cases:
                earlier = statistics.median(t[0] for t in times[label])
                later = statistics.median(t[1] for t in times[label])
                base = times[f"stdlib {face}"]
                base_earlier = statistics.median(t[0] for t in base)
                base_later = statistics.median(t[1] for t in base)
                print(f"{label:34} {units[0] * earlier:13.1f} {earlier / base_earlier:6.2f} "
                      f"{units[1] * later:13.1f} {later / base_later:6.2f}", flush=True)


if __name__ == "__main__":
    main()
