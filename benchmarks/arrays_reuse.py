"""procpool's map of large arrays against the serial loop that reuses its memory.

    python -m benchmarks.arrays_reuse --repeats 5

The arrays target of the performance issue: 200 float64 arrays of 8 MB through ``numpy.sin``
with ``procpool.Pool(2).map`` (pool start and shutdown included, every result read page by
page, as the suite's numpy-8mb workload does), against a serial loop that reads each result
the same way and frees it before computing the next, so that every ``numpy.sin`` writes into
memory the process already has (glibc hands the freed block back) instead of paying for fresh
pages. The suite's serial time keeps its results, as most programs do, and pays for fresh
pages each time: on these VMs that alone doubles it, which is why this baseline has a script
of its own. (Keeping the results and freeing them all between passes is no baseline: glibc
returns that much memory to the system, and the next pass pays for fresh pages again.)

One interpreter, rounds alternating which goes first. Per start method: medians, and the
median of the rounds' ratios. Every pool's results are checked against the serial answer.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from typing import Any

from . import cache_bytecode
from .workloads import workloads


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--methods", default="fork,forkserver,spawn")
    parser.add_argument("--quick", action="store_true", help="a tenth of the arrays")
    args = parser.parse_args()
    cache_bytecode()
    import numpy

    import procpool

    workload = next(w for w in workloads(args.quick) if w.name == "numpy-8mb")
    arrays = workload.inputs()
    methods = args.methods.split(",")

    def serial() -> None:
        for array in arrays:
            result = numpy.sin(array)
            workload.consume([result])
            del result  # the next result reuses its memory

    def pool(method: str) -> list[Any]:
        with procpool.Pool(2, context=method) as running:
            return running.map(workload.function, arrays)

    expected = [workload.function(array) for array in arrays]
    runs: dict[str, list[float]] = {"serial": [], **{method: [] for method in methods}}
    ratios: dict[str, list[float]] = {method: [] for method in methods}
    for repeat in range(args.repeats):
        for method in methods if repeat % 2 == 0 else reversed(methods):
            for name in (("serial", method) if repeat % 2 == 0 else (method, "serial")):
                gc.collect()
                started = time.perf_counter()
                if name == "serial":
                    serial()
                    runs[name].append(time.perf_counter() - started)
                    continue
                result = pool(method)
                workload.consume(result)
                runs[name].append(time.perf_counter() - started)
                assert workload.same(result, expected), f"wrong results under {method}"
                del result
            ratios[method].append(runs[method][-1] / runs["serial"][-1])
    print(f"{len(arrays)} arrays of 8 MB, numpy.sin, {args.repeats} repeats; serial loop "
          f"freeing each result: median {statistics.median(runs['serial']):.3f} s")
    print(f"  {'procpool Pool(2)':<20}{'median s':>10}{'x serial loop':>15}")
    for method in methods:
        print(f"  {method:<20}{statistics.median(runs[method]):>10.3f}"
              f"{statistics.median(ratios[method]):>15.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
