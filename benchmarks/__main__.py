"""Run the workloads on procpool, the stdlib and the peers, per start method, and report medians.

    python -m benchmarks                       # every workload, library and method, 3 repeats
    python -m benchmarks --quick --repeats 1   # a tenth of the sizes: a smoke run
    python -m benchmarks --workloads tiny --libraries "stdlib Pool,procpool Pool"
    python -m benchmarks --methods forkserver  # one start method (default: fork,forkserver,spawn)

Each start method is a column group: fork, forkserver (Python 3.14's default on Linux) and
spawn. Each repeat runs, for each method, every library once, in turn, so machine noise spreads
over all of them. Reported per method: the median wall time (pool start to shutdown included),
the ratio to the stdlib Pool with the same method, and the ratio to the limit (serial time /
workers, the same for every method). Every result is checked against the serial answer; a
library that returns something else is reported as WRONG, one that cannot use a method as n/a.

Under forkserver, the first pool of the run starts the server and every later one shares it.
Under spawn and forkserver each worker imports the task's module (and numpy, for numpy-8mb):
a real cost of those methods, kept in the times. joblib's loky backend has no start-method
switch: its row is its own method (loky's) in every column, as a note under the table says.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from . import cache_bytecode
from .runners import OWN_METHOD, RUNNERS, Unsupported
from .workloads import Workload, workloads

GROUP = 26  # the width of one method's columns: median s, x stdlib, x limit


def _serial(workload: Workload, inputs: Sequence[Any]) -> tuple[float, list[Any]]:
    """The serial time, the faster of two passes: the first may pay for fresh memory that
    later runs (and the pools after it) find ready, which would flatter everyone."""
    times = []
    for _ in range(2):
        started = time.perf_counter()
        expected = [workload.function(x) for x in inputs]
        workload.consume(expected)
        times.append(time.perf_counter() - started)
    return min(times), expected


def _measure(workload: Workload, inputs: Sequence[Any], expected: list[Any], workers: int,
             libraries: list[str], methods: list[str], repeats: int,
             ) -> tuple[dict[tuple[str, str], list[float]], dict[tuple[str, str], str]]:
    """Seconds per (library, method), and a note where there is no time (n/a, WRONG...)."""
    times: dict[tuple[str, str], list[float]] = {
        (name, method): [] for name in libraries for method in methods}
    notes: dict[tuple[str, str], str] = {}
    for _ in range(repeats):
        for method in methods:
            for name in libraries:
                if (name, method) in notes:
                    continue
                try:
                    started = time.perf_counter()
                    result = RUNNERS[name](workload, inputs, workers, method)
                    workload.consume(result)
                    elapsed = time.perf_counter() - started
                except ImportError as exc:
                    for each in methods:  # missing under one method: missing under all
                        notes[(name, each)] = f"not installed ({exc.name})"
                    continue
                except Unsupported:
                    notes[(name, method)] = "n/a"
                    continue
                if not workload.same(result, expected):
                    notes[(name, method)] = "WRONG RESULT"
                    continue
                times[(name, method)].append(elapsed)
    return times, notes


def _report(workload: Workload, serial: float, limit: float, libraries: list[str],
            methods: list[str], times: dict[tuple[str, str], list[float]],
            notes: dict[tuple[str, str], str]) -> None:
    print(f"\n{workload.name}: {workload.description}; serial {serial:.3f} s, "
          f"limit {limit:.3f} s")
    print(f"  {'':<20}" + "".join(f"{method:^{GROUP}}" for method in methods))
    print(f"  {'library':<20}" + f"{'median s':>9}{'x stdlib':>9}{'x limit':>8}" * len(methods))
    for name in libraries:
        if all(notes.get((name, method), "").startswith("not installed") for method in methods):
            print(f"  {name:<20}{notes[(name, methods[0])]:>{GROUP}}")
            continue
        cells = []
        for method in methods:
            if (name, method) in notes:
                cells.append(f"{notes[(name, method)]:>{GROUP}}")
                continue
            median = statistics.median(times[(name, method)])
            base = times.get(("stdlib Pool", method))
            ratio = f"{median / statistics.median(base):.2f}" if base else "-"
            cells.append(f"{median:>9.3f}{ratio:>9}{median / limit:>8.2f}")
        print(f"  {name:<20}" + "".join(cells))
    for name, own in OWN_METHOD.items():
        if name in libraries:
            print(f"  {name}: no start-method switch; every column is its own method ({own}), "
                  "not the column's")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", help="comma-separated names (default: all)")
    parser.add_argument("--libraries", help="comma-separated names (default: all installed)")
    parser.add_argument("--methods", default="fork,forkserver,spawn",
                        help="comma-separated start methods (default: fork,forkserver,spawn)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--quick", action="store_true", help="a tenth of every size")
    args = parser.parse_args()
    cache_bytecode()  # as an installed procpool has it (benchmarks/__init__.py)

    methods = [method for method in args.methods.split(",") if method]
    unknown = set(methods) - set(multiprocessing.get_all_start_methods())
    if unknown or not methods:
        parser.error(f"--methods: choose from {multiprocessing.get_all_start_methods()}")
    chosen = [w for w in workloads(args.quick)
              if not args.workloads or w.name in args.workloads.split(",")]
    libraries = [name for name in RUNNERS
                 if not args.libraries or name in args.libraries.split(",")]
    print(f"python {platform.python_version()}, start methods {', '.join(methods)} "
          f"(this Python's default: {multiprocessing.get_start_method()}), {args.workers} workers, "
          f"{args.repeats} repeats, {os.cpu_count()} CPUs")
    for workload in chosen:
        inputs = workload.inputs()
        serial, expected = _serial(workload, inputs)
        limit = serial / args.workers
        times, notes = _measure(workload, inputs, expected, args.workers, libraries, methods,
                                args.repeats)
        _report(workload, serial, limit, libraries, methods, times, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
