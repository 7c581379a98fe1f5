"""One adapter per library: run a workload the way that library's users would, return results.

Each adapter creates its pool with the start method it is given, runs, and shuts the pool down
inside the timed region (the cost a user pays). Peers are imported inside their adapter; a
missing one is reported, not fatal. An adapter that cannot start workers with a method raises
``Unsupported``, reported as n/a for that method.

joblib is the exception: its default (loky) backend has no start-method switch (a context given
as Parallel's backend selects its other, multiprocessing, backend), so it runs with its own
method, ``OWN_METHOD``, whatever method it is given; the report says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from .workloads import Workload

# (workload, inputs, workers, start method) -> results
Runner = Callable[[Workload, Sequence[Any], int, str], list[Any]]

# Libraries that start their workers their own way, whatever method they are asked for.
# loky's own method: each worker a fresh interpreter (fork then exec), like spawn.
OWN_METHOD = {"joblib": "loky"}


class Unsupported(Exception):
    """This library cannot start workers with this start method (n/a, not an error)."""


def auto_chunksize(count: int, workers: int) -> int:
    """The stdlib Pool.map rule, given to libraries that have no automatic chunking."""
    return max(1, math.ceil(count / (4 * workers)))


def _context(module: Any, method: str) -> Any:
    """``module.get_context(method)`` (multiprocessing's or billiard's); Unsupported if absent."""
    try:
        return module.get_context(method)
    except ValueError as exc:
        raise Unsupported(f"{module.__name__} has no start method {method!r}") from exc


def stdlib_pool(workload: Workload, inputs: Sequence[Any], workers: int,
                method: str) -> list[Any]:
    import multiprocessing

    with _context(multiprocessing, method).Pool(workers) as pool:
        return _pool_call(pool, workload, inputs)


def _pool_call(pool: Any, workload: Workload, inputs: Sequence[Any]) -> list[Any]:
    """A workload on a pool with the stdlib Pool's API (the stdlib's, procpool's, billiard's)."""
    if workload.style == "map":
        return list(pool.map(workload.function, inputs))
    if workload.style == "calls":
        pending = [pool.apply_async(workload.function, (x,)) for x in inputs]
        return [result.get() for result in pending]
    return list(pool.imap(workload.function, inputs))


def _executor_calls(executor: Any, workload: Workload, inputs: Sequence[Any]) -> list[Any]:
    """The "calls" workload on a concurrent.futures executor: one submit per input."""
    futures = [executor.submit(workload.function, x) for x in inputs]
    return [future.result() for future in futures]


def stdlib_executor(workload: Workload, inputs: Sequence[Any], workers: int,
                    method: str) -> list[Any]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    chunksize = auto_chunksize(len(inputs), workers) if workload.style == "map" else 1
    context = _context(multiprocessing, method)
    with ProcessPoolExecutor(workers, mp_context=context) as executor:
        if workload.style == "calls":
            return _executor_calls(executor, workload, inputs)
        return list(executor.map(workload.function, inputs, chunksize=chunksize))


def procpool_pool(workload: Workload, inputs: Sequence[Any], workers: int,
                  method: str) -> list[Any]:
    import multiprocessing

    import procpool

    with procpool.Pool(workers, context=_context(multiprocessing, method)) as pool:
        return _pool_call(pool, workload, inputs)


def procpool_executor(workload: Workload, inputs: Sequence[Any], workers: int,
                      method: str) -> list[Any]:
    import multiprocessing

    import procpool

    context = _context(multiprocessing, method)
    with procpool.ProcessPoolExecutor(workers, mp_context=context) as executor:
        if workload.style == "calls":
            return _executor_calls(executor, workload, inputs)
        if workload.style == "map":
            chunksize = auto_chunksize(len(inputs), workers)
            return list(executor.map(workload.function, inputs, chunksize=chunksize))
        return list(executor.map(workload.function, inputs))  # its defaults: sized chunks


def loky_executor(workload: Workload, inputs: Sequence[Any], workers: int,
                  method: str) -> list[Any]:
    import multiprocessing

    from loky import ProcessPoolExecutor

    # loky takes any multiprocessing context. Its own get_context(method) is the same one,
    # plus a warning that fork "does not respect POSIX": measured here all the same.
    chunksize = auto_chunksize(len(inputs), workers) if workload.style == "map" else 1
    context = _context(multiprocessing, method)
    with ProcessPoolExecutor(workers, context=context) as executor:
        if workload.style == "calls":
            return _executor_calls(executor, workload, inputs)
        return list(executor.map(workload.function, inputs, chunksize=chunksize))


def joblib_parallel(workload: Workload, inputs: Sequence[Any], workers: int,
                    method: str) -> list[Any]:
    from joblib import Parallel, delayed

    del method  # OWN_METHOD: the loky backend always starts its workers with loky's method
    if workload.style == "calls":
        raise Unsupported("joblib has no call-at-a-time API (Parallel batches its calls)")
    return_as = "list" if workload.style == "map" else "generator"
    calls = (delayed(workload.function)(x) for x in inputs)
    return list(Parallel(n_jobs=workers, return_as=return_as)(calls))


def mpire_pool(workload: Workload, inputs: Sequence[Any], workers: int,
               method: str) -> list[Any]:
    from mpire import WorkerPool

    with WorkerPool(workers, start_method=method) as pool:
        if workload.style == "calls":
            pending = [pool.apply_async(workload.function, (x,)) for x in inputs]
            return [result.get() for result in pending]
        if workload.style == "map":
            return pool.map(workload.function, inputs, progress_bar=False,
                            concatenate_numpy_output=False)
        return list(pool.imap(workload.function, inputs, progress_bar=False))


def pebble_pool(workload: Workload, inputs: Sequence[Any], workers: int,
                method: str) -> list[Any]:
    import multiprocessing

    from pebble import ProcessPool

    chunksize = auto_chunksize(len(inputs), workers) if workload.style == "map" else 1
    with ProcessPool(workers, context=_context(multiprocessing, method)) as pool:
        if workload.style == "calls":
            futures = [pool.schedule(workload.function, (x,)) for x in inputs]
            return [future.result() for future in futures]
        return list(pool.map(workload.function, inputs, chunksize=chunksize).result())


def billiard_pool(workload: Workload, inputs: Sequence[Any], workers: int,
                  method: str) -> list[Any]:
    import billiard

    pool = _context(billiard, method).Pool(workers)
    try:
        return _pool_call(pool, workload, inputs)
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
