"""Run the workloads on procpool, the stdlib and the peers, interleaved, and report medians.

    python -m benchmarks                       # every workload, every library, 3 repeats
    python -m benchmarks --quick --repeats 1   # a tenth of the sizes: a smoke run
    python -m benchmarks --workloads tiny --libraries "stdlib Pool,procpool Pool"

Each repeat runs every library once, in turn, so machine noise spreads over all of them.
Reported: the median wall time (pool start to shutdown included), the ratio to the stdlib
Pool, and the ratio to the limit (serial time / workers). Every result is checked against the
serial answer; a library that returns something else is reported as WRONG.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import sys
import time
from typing import Any

from .runners import RUNNERS
from .workloads import Workload, workloads


def _serial(workload: Workload, inputs: list[Any]) -> tuple[float, list[Any]]:
    """The serial time, the faster of two passes: the first may pay for fresh memory that
    later runs (and the pools after it) find ready, which would flatter everyone."""
    times = []
    for _ in range(2):
        started = time.perf_counter()
        expected = [workload.function(x) for x in inputs]
        workload.consume(expected)
        times.append(time.perf_counter() - started)
    return min(times), expected


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", help="comma-separated names (default: all)")
    parser.add_argument("--libraries", help="comma-separated names (default: all installed)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--quick", action="store_true", help="a tenth of every size")
    args = parser.parse_args()

    chosen = [w for w in workloads(args.quick)
              if not args.workloads or w.name in args.workloads.split(",")]
    libraries = [name for name in RUNNERS
                 if not args.libraries or name in args.libraries.split(",")]
    print(f"python {platform.python_version()}, start method "
          f"{multiprocessing.get_start_method()}, {args.workers} workers, "
          f"{args.repeats} repeats, {os.cpu_count()} CPUs")
    for workload in chosen:
        inputs = workload.inputs()
        serial, expected = _serial(workload, inputs)
        limit = serial / args.workers
        times: dict[str, list[float]] = {name: [] for name in libraries}
        notes: dict[str, str] = {}
        for _ in range(args.repeats):
            for name in libraries:
                if name in notes:
                    continue
                try:
                    started = time.perf_counter()
                    result = RUNNERS[name](workload, inputs, args.workers)
                    workload.consume(result)
                    elapsed = time.perf_counter() - started
                except ImportError as exc:
                    notes[name] = f"not installed ({exc.name})"
                    continue
                if not workload.same(result, expected):
                    notes[name] = "WRONG RESULT"
                    continue
                times[name].append(elapsed)
        print(f"\n{workload.name}: {workload.description}; serial {serial:.3f} s, "
              f"limit {limit:.3f} s")
        print(f"  {'library':<20}{'median s':>10}{'x stdlib':>10}{'x limit':>10}")
        baseline = statistics.median(times["stdlib Pool"]) if times.get("stdlib Pool") else None
        for name in libraries:
            if name in notes:
                print(f"  {name:<20}{notes[name]:>30}")
                continue
            median = statistics.median(times[name])
            ratio = f"{median / baseline:.2f}" if baseline else "-"
            print(f"  {name:<20}{median:>10.3f}{ratio:>10}{median / limit:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
