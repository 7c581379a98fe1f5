"""Functions the batch-runner tests run with ``procpool run batch_tasks:NAME``.

Importable by workers (tests/ is on PYTHONPATH, see conftest.py). Each logs nothing and sleeps
never; the ones that wait do so on FIFOs the test controls.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any


def square(x: int) -> int:
    return x * x


def add(a: int, b: int = 0) -> int:
    return a + b


def shout(word: str, times: str = "1") -> str:
    return (word.upper() + "!") * int(times)


def size_of(path: str) -> dict[str, Any]:
    return {"name": Path(path).name, "bytes": os.path.getsize(path)}


def misbehave(x: int) -> Any:
    """Item 1 raises, item 2 kills its worker, item 3 hangs, item 4 returns a non-JSON value;
    every other item returns its square."""
    if x == 1:
        raise ValueError(f"item {x} is bad")
    if x == 2:
        os._exit(3)
    if x == 3:
        threading.Event().wait()
    if x == 4:
        return object()
    return x * x


def logged_square(x: int, control: str) -> int:
    """Append x to CONTROL/runs (one write, so lines never interleave); if CONTROL/block
    exists, item 10 announces itself on the FIFO CONTROL/started and then blocks reading the
    FIFO CONTROL/release."""
    fd = os.open(os.path.join(control, "runs"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{x}\n".encode())
    os.close(fd)
    if x == 10 and os.path.exists(os.path.join(control, "block")):
        with open(os.path.join(control, "started"), "w") as fifo:
            fifo.write("started")
        with open(os.path.join(control, "release")) as fifo:
            fifo.read()
    return x * x


def as_float(x: str) -> Any:
    """float(x) as a plain value, inside a list, a dict (as a value and as a key) and a set
    (which the results encoder converts): "nan", "inf" and "-inf" give non-finite floats."""
    value = float(x)
    return [value, {"value": value, value: x}, {value}]


def warn_and_square(x: int) -> int:
    """Logs a warning for odd items (the runner shows it above its bar)."""
    import logging

    if x % 2:
        logging.getLogger("batch_tasks").warning("odd item %d", x)
    return x * x
