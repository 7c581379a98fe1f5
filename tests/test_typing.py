"""What a type checker says of calls into procpool: what typeshed checks for the stdlib's pools
(a map's function against its items, a submitted call's arguments against its function), and
procpool's own per-call options, typed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

# Every line marked "# error" must be flagged by mypy --strict, and no other line.
PROGRAM = """\
import asyncio

import procpool


def square(x: int) -> int:
    return x * x


def add(x: int, y: int) -> int:
    return x + y


def main() -> None:
    with procpool.Pool(2) as pool:
        squares: list[int] = pool.map(square, [1, 2])
        more: list[int] = pool.map(square, range(3), task_timeout=5, retries=1)
        sums: list[int] = pool.starmap(add, [(1, 2)], retry_on=(ValueError,))
        one: int = pool.apply(add, (1, 2), task_timeout=None)
        lazy = list(pool.imap(square, [1], chunksize=2, buffersize=4, retries=2))
        unordered = list(pool.imap_unordered(square, [1], task_timeout=1.5))
        later = pool.map_async(square, [1], retries=0).get()
        print(squares, more, sums, one, lazy, unordered, later)
        pool.map(square, ["not", "ints"])  # error
        pool.map(square, [1], task_timeout="5")  # error
        pool.imap(square, [1], retries="2")  # error
        pool.map(square, [1], retires=1)  # error
        pool.apply_async(square, (1,), task_timeout="5")  # error
    with procpool.ProcessPoolExecutor(2) as executor:
        done: int = executor.submit(add, 1, 2).result()
        mapped: list[int] = list(executor.map(square, [1, 2], task_timeout=5, retries=1))
        print(done, mapped)
        executor.submit(add, 1, "two")  # error
        executor.submit(add, 1)  # error
        executor.map(square, [1], task_timeout="5")  # error

        async def awaited() -> int:
            value: int = await executor.run(add, 1, 2)
            await executor.run(add, "one", 2)  # error
            return value

        asyncio.run(awaited())
"""


@pytest.mark.timeout(180)
def test_mypy_checks_functions_against_their_items_and_the_per_call_options(
    tmp_path: Path,
) -> None:
    program = tmp_path / "program.py"
    program.write_text(PROGRAM)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir",
         str(tmp_path / "cache"), "--config-file", "/dev/null", str(program)],
        capture_output=True, text=True, timeout=170,
    )
    flagged = {int(line) for line in re.findall(r"program\.py:(\d+): error", done.stdout)}
    marked = {number for number, text in enumerate(PROGRAM.splitlines(), 1)
              if text.endswith("# error")}
    assert len(marked) == 9
    assert flagged == marked, done.stdout
