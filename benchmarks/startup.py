"""Pool start to first result, and shutdown: procpool beside the stdlib, per start method.

    python -m benchmarks.startup --repeats 15

For each start method, each library in turn (interleaved, after one warm-up round that starts
the forkserver and fills the import caches): create a pool of 2 workers, run one tiny task and
wait for its result (start to first result), then close and join, or shutdown(wait=True)
(shutdown). Medians in milliseconds, and the ratio to the stdlib Pool with the same start
method. "procpool, no logs" is the Pool with ``forward_logs=False``: the default forwards the
workers' log records under spawn and forkserver.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from .workloads import square

# Each returns (seconds to the first result, seconds to shut down).
Measure = Callable[[Any], tuple[float, float]]


def _pool(make: Callable[..., Any]) -> Measure:
    def measure(context: Any) -> tuple[float, float]:
        started = time.perf_counter()
        pool = make(2, context=context)
        assert pool.apply(square, (3,)) == 9
        first = time.perf_counter()
        pool.close()
        pool.join()
        return first - started, time.perf_counter() - first

    return measure


def _executor(make: Callable[..., Any]) -> Measure:
    def measure(context: Any) -> tuple[float, float]:
        started = time.perf_counter()
        executor = make(2, mp_context=context)
        assert executor.submit(square, 3).result() == 9
        first = time.perf_counter()
        executor.shutdown(wait=True)
        return first - started, time.perf_counter() - first

    return measure


def _libraries() -> dict[str, Measure]:
    from concurrent.futures import ProcessPoolExecutor

    import procpool

    def stdlib_pool(processes: int, context: Any) -> Any:
        return context.Pool(processes)

    return {
        "stdlib Pool": _pool(stdlib_pool),
        "stdlib executor": _executor(ProcessPoolExecutor),
        "procpool Pool": _pool(procpool.Pool),
        "procpool executor": _executor(procpool.ProcessPoolExecutor),
        # Under spawn and forkserver the default forwards workers' log records, which costs
        # each worker the import of logging: what that costs, beside the default.
        "procpool, no logs": _pool(functools.partial(procpool.Pool, forward_logs=False)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--methods", default="fork,spawn,forkserver")
    args = parser.parse_args()
    libraries = _libraries()
    print(f"python {sys.version.split()[0]}, 2 workers, {args.repeats} repeats; medians in ms")
    for method in args.methods.split(","):
        context = multiprocessing.get_context(method)
        for measure in libraries.values():
            measure(context)  # warm-up: the forkserver, imports, page cache
        firsts: dict[str, list[float]] = {name: [] for name in libraries}
        shutdowns: dict[str, list[float]] = {name: [] for name in libraries}
        for _ in range(args.repeats):
            for name, measure in libraries.items():
                first, shutdown = measure(context)
                firsts[name].append(first)
                shutdowns[name].append(shutdown)
        print(f"\n{method}:")
        print(f"  {'library':<20}{'first result':>14}{'x stdlib':>10}{'shutdown':>10}"
              f"{'x stdlib':>10}")
        base_first = statistics.median(firsts["stdlib Pool"])
        base_shutdown = statistics.median(shutdowns["stdlib Pool"])
        for name in libraries:
            first = statistics.median(firsts[name])
            shutdown = statistics.median(shutdowns[name])
            print(f"  {name:<20}{first * 1000:>14.1f}{first / base_first:>10.2f}"
                  f"{shutdown * 1000:>10.1f}{shutdown / base_shutdown:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
