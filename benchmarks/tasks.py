"""The task functions, in a module that imports next to nothing.

Spawned and forkserver workers import the module of the function they run; start-up is
measured in milliseconds, so what this module imports would count against every library alike
and hide their differences.
"""

from __future__ import annotations

import time
from typing import Any


def square(x: int) -> int:
    return x * x


def sine(array: Any) -> Any:
    """A new array from an 8 MB one: the large-payload workload (numpy)."""
    import numpy

    return numpy.sin(array)


def spin(milliseconds: float) -> float:
    """Busy for ``milliseconds`` of CPU time (a sleep would not load the CPU)."""
    end = time.perf_counter() + milliseconds / 1000
    while time.perf_counter() < end:
        pass
    return milliseconds
