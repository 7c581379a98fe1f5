"""procpool on Dask against plain Dask, side by side on one cluster.

    python -m benchmarks.dask_compare                 # 3 repeats, a 2-worker LocalCluster
    python -m benchmarks.dask_compare --repeats 5 --workers 2

One LocalCluster (``--workers`` processes of one thread, on 127.0.0.1) serves every library,
so the comparison is of the client side only: how each one turns a map into Dask tasks.

- ``Client.map``: one Dask task per item, as plain Dask code does it.
- ``get_executor().map``: Dask's concurrent.futures executor, one future per item.
- ``procpool Pool``: ``procpool.Pool(backend=DaskBackend(client=...)).map`` (chunks, one task
  per chunk, at most one chunk in flight per worker thread).
- ``procpool executor``: ``procpool.ProcessPoolExecutor(...).map`` with the stdlib chunksize.

Each repeat runs every library once, in turn; reported are medians, the ratio to
``Client.map``, and the ratio to the limit (serial time / workers). Results are checked.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from .runners import auto_chunksize
from .workloads import Workload, spin, square

Runner = Callable[[Any, Workload, list[Any]], list[Any]]


def client_map(client: Any, workload: Workload, inputs: list[Any]) -> list[Any]:
    return client.gather(client.map(workload.function, inputs, pure=False))  # type: ignore[no-any-return]


def dask_executor(client: Any, workload: Workload, inputs: list[Any]) -> list[Any]:
    with client.get_executor(pure=False) as executor:
        return list(executor.map(workload.function, inputs))


def procpool_pool(client: Any, workload: Workload, inputs: list[Any]) -> list[Any]:
    import procpool

    with procpool.Pool(backend=procpool.DaskBackend(client=client)) as pool:
        return pool.map(workload.function, inputs)


def procpool_executor(client: Any, workload: Workload, inputs: list[Any]) -> list[Any]:
    import procpool

    with procpool.ProcessPoolExecutor(backend=procpool.DaskBackend(client=client)) as executor:
        chunksize = auto_chunksize(len(inputs), executor._max_workers)
        return list(executor.map(workload.function, inputs, chunksize=chunksize))


RUNNERS: dict[str, Runner] = {
    "Client.map": client_map,
    "get_executor().map": dask_executor,
    "procpool Pool": procpool_pool,
    "procpool executor": procpool_executor,
}


def dask_workloads() -> list[Workload]:
    # Smaller than benchmarks.workloads: one Dask task per item costs about a millisecond.
    return [
        Workload("tiny", "20,000 calls of x*x, map", square, lambda: list(range(20_000)),
                 "map"),
        Workload("1ms", "2,000 tasks of 1 ms, map", spin, lambda: [1.0] * 2_000, "map"),
        Workload("cpu-10ms", "400 tasks of 10 ms, map", spin, lambda: [10.0] * 400, "map"),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    import dask
    import distributed

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1,
                                     host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                     silence_logs=50) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        print(f"dask {dask.__version__}, distributed {distributed.__version__}: LocalCluster "
              f"of {args.workers} single-threaded workers, {args.repeats} repeats")
        for workload in dask_workloads():
            inputs = workload.inputs()
            started = time.perf_counter()
            expected = [workload.function(x) for x in inputs]
            limit = (time.perf_counter() - started) / args.workers
            times: dict[str, list[float]] = {name: [] for name in RUNNERS}
            wrong: set[str] = set()
            for _ in range(args.repeats):
                for name, runner in RUNNERS.items():
                    started = time.perf_counter()
                    result = runner(client, workload, inputs)
                    times[name].append(time.perf_counter() - started)
                    if result != expected:
                        wrong.add(name)
            print(f"\n{workload.name}: {workload.description}; limit {limit:.3f} s")
            print(f"  {'library':<22}{'median s':>10}{'x Client.map':>14}{'x limit':>10}")
            baseline = statistics.median(times["Client.map"])
            for name in RUNNERS:
                median = statistics.median(times[name])
                note = "  WRONG RESULT" if name in wrong else ""
                print(f"  {name:<22}{median:>10.3f}{median / baseline:>14.2f}"
                      f"{median / limit:>10.2f}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
