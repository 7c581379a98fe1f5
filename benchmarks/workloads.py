"""The workloads: their inputs, sizes and checks (the task functions live in tasks.py).

A workload's inputs are a sequence, usually a list; "tiny-range" hands the pools the ``range``
itself, which a pool may cut into slices that travel as their bounds instead of their items.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .tasks import sine, spin, square

__all__ = ["Workload", "sine", "spin", "square", "workloads"]


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    function: Callable[[Any], Any]
    inputs: Callable[[], Sequence[Any]]
    # "map": eager map with the stdlib's automatic chunksize; "stream": each library's
    # lazy/streaming call with its default arguments, consumed in order; "calls": one
    # submission per input (apply_async, submit), every result then waited for in order.
    style: str
    # Whether a library's results are the serial answer (numpy arrays need array_equal).
    same: Callable[[list[Any], list[Any]], bool] = lambda a, b: a == b
    # What the caller does with the results, inside the timed region: arrays that arrive as
    # mappings (procpool's shared memory) pay for their page faults when first read.
    consume: Callable[[list[Any]], object] = lambda results: None


def _arrays(count: int) -> list[Any]:
    import numpy

    return [numpy.random.default_rng(seed).random(1_000_000) for seed in range(count)]


def _read_every_page(results: list[Any]) -> float:
    return sum(float(array[::512].sum()) for array in results)  # 512 float64s: one 4 KiB page


def _same_arrays(results: list[Any], expected: list[Any]) -> bool:
    import numpy

    return len(results) == len(expected) and all(
        numpy.array_equal(a, b) for a, b in zip(results, expected, strict=True))


def _heavy_tailed(count: int) -> list[float]:
    # Most tasks short, a few long: 2 ms mostly, every 20th 60 ms (deterministic).
    return [60.0 if i % 20 == 0 else 2.0 for i in range(count)]


def workloads(quick: bool) -> list[Workload]:
    scale = 10 if quick else 1
    return [
        Workload("tiny", f"{1_000_000 // scale:,} calls of x*x, map", square,
                 lambda: list(range(1_000_000 // scale)), "map"),
        # The same calls on the range object itself: the serial answer is tiny's.
        Workload("tiny-range", f"{1_000_000 // scale:,} calls of x*x on a range, map", square,
                 lambda: range(1_000_000 // scale), "map"),
        # The same calls through each library's streaming call with its default arguments
        # (imap, the executor's map): what handing out results one by one costs. Fewer items:
        # the stdlib's defaults send one item per chunk.
        Workload("tiny-stream", f"{200_000 // scale:,} calls of x*x, streamed with default "
                 "arguments", square, lambda: list(range(200_000 // scale)), "stream"),
        # What a loop of apply_async or submit costs per call: the pool's own overhead.
        Workload("calls", f"{10_000 // scale:,} calls of x*x, each submitted on its own",
                 square, lambda: list(range(10_000 // scale)), "calls"),
        Workload("imap-1ms", f"{10_000 // scale:,} tasks of 1 ms, streamed with default "
                 "arguments", spin, lambda: [1.0] * (10_000 // scale), "stream"),
        Workload("cpu-10ms", f"{400 // scale} tasks of 10 ms, map", spin,
                 lambda: [10.0] * (400 // scale), "map"),
        Workload("heavy-tail", f"{400 // scale} tasks, mostly 2 ms, every 20th 60 ms, map",
                 spin, lambda: _heavy_tailed(400 // scale), "map"),
        Workload("numpy-8mb", f"{200 // scale} numpy arrays of 8 MB in, sine, 8 MB out, map",
                 sine, lambda: _arrays(200 // scale), "map", _same_arrays, _read_every_page),
    ]
