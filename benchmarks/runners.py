"""One adapter per library: run a workload the way that library's users would, return results.

Each adapter creates its pool, runs, and shuts the pool down inside the timed region (the cost a
user pays). Peers are imported inside their adapter; a missing one is reported, not fatal.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .workloads import Workload

Runner = Callable[[Workload, list[Any], int], list[Any]]


def auto_chunksize(count: int, workers: int) -> int:
    """The stdlib Pool.map rule, given to libraries that have no automatic chunking."""
    return max(1, math.ceil(count / (4 * workers)))


def stdlib_pool(workload: Workload, inputs: list[Any], workers: int) -> list[Any]:
    import multiprocessing

    with multiprocessing.Pool(workers) as pool:
        if workload.style == "map":
            return pool.map(workload.function, inputs)
        return list(pool.imap(workload.function, inputs))


def stdlib_executor(workload: Workload, inputs: list[Any], workers: int) -> list[Any]:
    from concurrent.futures import ProcessPoolExecutor

    chunksize = auto_chunksize(len(inputs), workers) if workload.style == "map" else 1
    with ProcessPoolExecutor(workers) as executor:
        return list(executor.map(workload.function, inputs, chunksize=chunksize))


def procpool_pool(workload: Workload, inputs: list[Any], workers: int) -> list[Any]:
    import procpool

    with procpool.Pool(workers) as pool:
        if workload.style == "map":
            return pool.map(workload.function, inputs)
        return list(pool.imap(workload.function, inputs))


def procpool_executor(workload: Workload, inputs: list[Any], workers: int) -> list[Any]:
    import procpool

    with procpool.ProcessPoolExecutor(workers) as executor:
        if workload.style == "map":
            chunksize = auto_chunksize(len(inputs), workers)
            return list(executor.map(workload.function, inputs, chunksize=chunksize))
        return list(executor.map(workload.function, inputs))  # its defaults: sized chunks


def loky_executor(workload: Workload, inputs: list[Any], workers: int) -> list[Any]:
    from loky import ProcessPoolExecutor

    chunksize = auto_chunksize(len(inputs), workers) if workload.style == "map" else 1
    with ProcessPoolExecutor(workers) as executor:
        return list(executor.map(workload.function, inputs, chunksize=chunksize))


def joblib_parallel(workload: Workload, inputs: list[Any], workers: int) -> list[Any]:
    from joblib import Parallel, delayed

    return_as = "list" if workload.style == "map" else "generator"
    calls = (delayed(workload.function)(x) for x in inputs)
    return list(Parallel(n_jobs=workers, return_as=return_as)(calls))


def mpire_pool(workload: Workload, inputs: list[Any], workers: int) -> list[Any]:
    from mpire import WorkerPool

    with WorkerPool(workers) as pool:
        if workload.style == "map":
            return pool.map(workload.function, inputs, progress_bar=False,
                            concatenate_numpy_output=False)
        return list(pool.imap(workload.function, inputs, progress_bar=False))


def pebble_pool(workload: Workload, inputs: list[Any], workers: int) -> list[Any]:
    from pebble import ProcessPool

    chunksize = auto_chunksize(len(inputs), workers) if workload.style == "map" else 1
    with ProcessPool(workers) as pool:
        return list(pool.map(workload.function, inputs, chunksize=chunksize).result())


def billiard_pool(workload: Workload, inputs: list[Any], workers: int) -> list[Any]:
    import billiard

    pool = billiard.Pool(workers)
    try:
        if workload.style == "map":
            return list(pool.map(workload.function, inputs))
        return list(pool.imap(workload.function, inputs))
    finally:
        pool.terminate()
        pool.join()


RUNNERS: dict[str, Runner] = {
    "stdlib Pool": stdlib_pool,
    "stdlib executor": stdlib_executor,
    "procpool Pool": procpool_pool,
    "procpool executor": procpool_executor,
    "loky": loky_executor,
    "joblib": joblib_parallel,
    "mpire": mpire_pool,
    "pebble": pebble_pool,
    "billiard": billiard_pool,
}
