"""Pool start to first result, shutdown, and respawn: procpool beside the stdlib, per method.

    python -m benchmarks.startup --repeats 15
    python -m benchmarks.startup --repeats 2 --methods forkserver,forkserver-cold   # a smoke run

For each start method, each library in turn (interleaved, after one warm-up round that starts
the forkserver and fills the import caches): create a pool of 2 workers, run one tiny task and
wait for its result (start to first result), then close and join, or shutdown(wait=True)
(shutdown). Medians in milliseconds, and the ratio to the stdlib Pool with the same start
method. "procpool, no logs" is the Pool with ``forward_logs=False``: the default forwards the
workers' log records under spawn and forkserver.

forkserver: a warm server, started by the same library. Before each measurement the server is
stopped and one untimed pool of that library starts a new one, as in a program that uses that
library alone (a library can preload its modules into the server only when it is the one that
starts it; procpool does). forkserver-cold: the server is stopped before each measurement, so
each pool also starts a fresh forkserver process: what a program's first pool pays. Stopping
uses ``multiprocessing.forkserver._forkserver._stop()``, private, present in CPython 3.8 to
3.15; without it the run stops.

Respawn, for the two Pools only: ``Pool(2, maxtasksperchild=25)``, started (one result waited
for, untimed), then ``map(square, range(500), chunksize=1)`` timed: 20 worker replacements.
The same map runs on a pool without recycling; "per respawn" is the difference of the two
medians over 20, what each replacement costs, and "map" the map with recycling, which also
holds 500 one-item chunks. Tasks that take microseconds leave the parent's work per chunk
and per start as the bottleneck; "per respawn, 1 ms tasks" is the same measurement with
``map(spin, [1.0] * 400, chunksize=1)`` (16 replacements), where the workers are: what a
replacement costs a program whose tasks do some work. The executors are left out: their
max_tasks_per_child exists only from Python 3.11 and refuses fork. Medians in milliseconds,
and the ratio to the stdlib Pool's with the same method.
"""

from __future__ import annotations

import functools
import multiprocessing
import sys
import time
from collections.abc import Callable
from typing import Any

from . import cache_bytecode
from .tasks import spin, square

# Each returns (seconds to the first result, seconds to shut down).
Measure = Callable[[Any], tuple[float, float]]
# Seconds for the respawn map on a started pool, with recycling and without.
Respawn = Callable[[Any], tuple[float, float]]

COLD = "forkserver-cold"
RESPAWN_TASKS = 500
RESPAWN_EVERY = 25  # maxtasksperchild: 500 tasks on 2 workers replace a worker 20 times
RESPAWN_WORKING_TASKS = 400  # of 1 ms each: 16 replacements


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


def _respawn(make: Callable[..., Any], working: bool = False) -> Respawn:
    """The map with recycling and without; ``working``: of 1 ms tasks, else of tiny ones."""
    function, inputs = ((spin, [1.0] * RESPAWN_WORKING_TASKS) if working
                        else (square, range(RESPAWN_TASKS)))

    def measure(context: Any) -> tuple[float, float]:
        times = []
        for every in (RESPAWN_EVERY, None):  # with recycling, then the same map without
            with make(2, maxtasksperchild=every, context=context) as pool:
                assert pool.apply(square, (3,)) == 9  # the pool is up: its start is not timed
                started = time.perf_counter()
                result = pool.map(function, inputs, chunksize=1)
                times.append(time.perf_counter() - started)
            assert result == [function(x) for x in inputs]
        return times[0], times[1]

    return measure


def _stdlib_pool(processes: int, context: Any, **options: Any) -> Any:
    return context.Pool(processes, **options)


def _libraries() -> dict[str, Measure]:
    from concurrent.futures import ProcessPoolExecutor

    import procpool

    return {
        "stdlib Pool": _pool(_stdlib_pool),
        "stdlib executor": _executor(ProcessPoolExecutor),
        "procpool Pool": _pool(procpool.Pool),
        "procpool executor": _executor(procpool.ProcessPoolExecutor),
        # Under spawn and forkserver the default forwards workers' log records, which costs
        # each worker the import of logging: what that costs, beside the default.
        "procpool, no logs": _pool(functools.partial(procpool.Pool, forward_logs=False)),
    }


def _respawners(working: bool = False) -> dict[str, Respawn]:
    import procpool

    return {"stdlib Pool": _respawn(_stdlib_pool, working),
            "procpool Pool": _respawn(procpool.Pool, working)}


def _stop_forkserver() -> None:
    """Stop this process's forkserver, if running: the next pool starts a fresh one."""
    from multiprocessing import forkserver

    stop = getattr(getattr(forkserver, "_forkserver", None), "_stop", None)
    if stop is None:
        raise SystemExit(f"{COLD}: this Python has no multiprocessing.forkserver._forkserver"
                         "._stop() (private, CPython 3.8-3.14) to stop the forkserver with")
    stop()


def _method(name: str) -> tuple[Any, Callable[[Measure | None], None]]:
    """The context for a --methods name, and what to do before each of its measurements,
    given what is measured next (None: a respawn, whose own pool start is not timed)."""
    if name not in (COLD, "forkserver"):
        return multiprocessing.get_context(name), lambda measure: None
    _stop_forkserver()  # fails here, before any measurement, if this Python cannot
    context = multiprocessing.get_context("forkserver")

    def fresh_server(measure: Measure | None) -> None:
        _stop_forkserver()
        if name != COLD and measure is not None:
            measure(context)  # untimed: this library starts the server the next pool uses

    return context, fresh_server


def _ratio(values: list[float], base: list[float]) -> str:
    import statistics

    return f"{statistics.median(values) / statistics.median(base):.2f}"


def main() -> int:
    # Imported here, not above: every spawned and forkserver worker imports this module (the
    # program's main module) as it starts, and what it imports counts against every library.
    import argparse
    import statistics

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--methods", default=f"fork,spawn,forkserver,{COLD}")
    args = parser.parse_args()
    cache_bytecode()  # as an installed procpool has it (benchmarks/__init__.py)
    libraries = _libraries()
    # (respawners, replacements per map) for tiny tasks and for tasks of 1 ms
    kinds = {"tiny": (_respawners(), RESPAWN_TASKS // RESPAWN_EVERY),
             "1 ms": (_respawners(working=True), RESPAWN_WORKING_TASKS // RESPAWN_EVERY)}
    print(f"python {sys.version.split()[0]}, 2 workers, {args.repeats} repeats; medians in ms; "
          f"respawn: maxtasksperchild={RESPAWN_EVERY}, {RESPAWN_TASKS} tiny tasks or "
          f"{RESPAWN_WORKING_TASKS} of 1 ms")
    for method in args.methods.split(","):
        context, before = _method(method)
        for measure in libraries.values():
            before(measure)
            measure(context)  # warm-up: imports, page cache
        # (Respawn needs no warm-up of its own: its pool's start is not timed.)
        firsts: dict[str, list[float]] = {name: [] for name in libraries}
        shutdowns: dict[str, list[float]] = {name: [] for name in libraries}
        recycling: dict[tuple[str, str], list[float]] = {}
        plain: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.repeats):
            for name, measure in libraries.items():
                before(measure)
                first, shutdown = measure(context)
                firsts[name].append(first)
                shutdowns[name].append(shutdown)
            for kind, (respawners, _) in kinds.items():
                for name, respawn in respawners.items():
                    before(None)
                    with_recycling, without = respawn(context)
                    recycling.setdefault((kind, name), []).append(with_recycling)
                    plain.setdefault((kind, name), []).append(without)
        print(f"\n{method}:")
        print(f"  {'library':<20}{'first result':>14}{'x stdlib':>10}{'shutdown':>10}"
              f"{'x stdlib':>10}")
        for name in libraries:
            print(f"  {name:<20}{statistics.median(firsts[name]) * 1000:>14.1f}"
                  f"{_ratio(firsts[name], firsts['stdlib Pool']):>10}"
                  f"{statistics.median(shutdowns[name]) * 1000:>10.1f}"
                  f"{_ratio(shutdowns[name], shutdowns['stdlib Pool']):>10}")
        print(f"  {'respawn':<20}{'tasks':>8}{'map':>10}{'x stdlib':>10}{'per respawn':>13}"
              f"{'x stdlib':>10}")
        for kind, (respawners, replacements) in kinds.items():
            per_respawn = {name: (statistics.median(recycling[(kind, name)])
                                  - statistics.median(plain[(kind, name)])) / replacements
                           for name in respawners}
            for name in respawners:
                print(f"  {name:<20}{kind:>8}"
                      f"{statistics.median(recycling[(kind, name)]) * 1000:>10.1f}"
                      f"{_ratio(recycling[(kind, name)], recycling[(kind, 'stdlib Pool')]):>10}"
                      f"{per_respawn[name] * 1000:>13.2f}"
                      f"{per_respawn[name] / per_respawn['stdlib Pool']:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
