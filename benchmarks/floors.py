"""What the work itself costs on this machine, below which no pool can go.

    python -m benchmarks.floors --repeats 5

Two workloads of the suite, taken apart in one process, each step timed on its own (medians):

- tiny: a million ``x*x`` results must be made as int objects in the parent and put in a
  list, whatever carries them; the workers must compute them and encode them. "parent" is
  unpickling eight chunks' results (pickled as a worker does) into a list of a million, in
  fresh memory as a pool's parent meets it; "workers" is computing and pickling them, for both
  workers together; "serial" is ``list(map(square, range(1_000_000)))``.
- numpy-8mb, per array of 8 MB: the serial loop ``[numpy.sin(a) for a in arrays]`` run a
  second time (it reuses the memory the first pass freed: the baseline of the arrays target),
  ``numpy.sin`` alone, writing 8 MB into a new shared-memory segment and into one whose pages
  exist, and mapping a segment and reading every page.

Each step runs in a fresh interpreter (``--child``), so memory is as fresh as a pool's first
map finds it. docs/performance.md turns these into the floor of each target.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

CHUNKS = 8  # the stdlib's map cuts a million items for 2 workers into 8 chunks
ITEMS = 1_000_000
ARRAYS = 50


def _timed(step: Callable[[], object]) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def _tiny() -> dict[str, float]:
    import pickle

    from .tasks import square

    size = ITEMS // CHUNKS
    payloads: list[bytes] = []

    def compute_and_pickle() -> None:
        for start in range(0, ITEMS, size):
            payloads.append(pickle.dumps(list(map(square, range(start, start + size))), 5))

    times = {"tiny: workers compute and pickle (both)": _timed(compute_and_pickle)}
    copies = [bytes(payload) for payload in payloads]

    def unpickle_into_a_list() -> None:
        results: list[object] = [None] * ITEMS
        for number, payload in enumerate(copies):
            results[number * size:(number + 1) * size] = pickle.loads(payload)

    times["tiny: parent unpickles into a list"] = _timed(unpickle_into_a_list)
    times["tiny: serial list(map(square, range))"] = _timed(
        lambda: list(map(square, range(ITEMS))))
    return times


def _arrays() -> dict[str, float]:
    import _posixshmem  # type: ignore[import-not-found]
    import mmap

    import numpy

    arrays = [numpy.random.default_rng(seed).random(1_000_000) for seed in range(ARRAYS)]
    names = [f"/procpool-floor-{os.getpid()}-{number}" for number in range(ARRAYS)]
    out = numpy.empty(1_000_000)

    def write(name: str, array: object, flags: int) -> None:
        fd = _posixshmem.shm_open(name, flags, 0o600)
        try:
            os.pwrite(fd, memoryview(array).cast("B"), 0)  # type: ignore[arg-type]
        finally:
            os.close(fd)

    def map_and_read(name: str) -> None:
        fd = _posixshmem.shm_open(name, os.O_RDONLY, 0o600)
        mapping = mmap.mmap(fd, 8_000_000, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
        os.close(fd)
        view = numpy.frombuffer(mapping, dtype=float)
        float(view[::512].sum())  # one float64 in each 4 KiB page
        del view
        mapping.close()

    def per_array(step: Callable[[int], object]) -> float:
        return statistics.median(_timed(lambda n=n: step(n)) for n in range(ARRAYS))

    def serial_loop() -> list[object]:
        return [numpy.sin(array) for array in arrays]

    serial_loop()  # the first pass frees its results: the second reuses that memory
    try:
        return {
            "array: serial loop that reuses memory": _timed(serial_loop) / ARRAYS,
            "array: sin, result freed at once": per_array(lambda n: numpy.sin(arrays[n])),
            "array: sin into reused memory": per_array(lambda n: numpy.sin(arrays[n], out=out)),
            "array: write a new segment": per_array(lambda n: write(
                names[n], arrays[n], os.O_CREAT | os.O_EXCL | os.O_RDWR)),
            "array: write a segment's existing pages": per_array(
                lambda n: write(names[n], arrays[n], os.O_RDWR)),
            "array: map a segment, read every page": per_array(lambda n: map_and_read(names[n])),
        }
    finally:
        for name in names:
            _posixshmem.shm_unlink(name)


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        measured = _tiny() if sys.argv[2] == "tiny" else _arrays()
        for name, seconds in measured.items():
            print(f"{name}\t{seconds}")
        return 0
    import argparse

    from . import cache_bytecode

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cache_bytecode()
    times: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for kind in ("tiny", "arrays"):
            done = subprocess.run([sys.executable, "-m", "benchmarks.floors", "--child", kind],
                                  capture_output=True, text=True, check=True, timeout=600)
            for line in done.stdout.splitlines():
                name, seconds = line.split("\t")
                times.setdefault(name, []).append(float(seconds))
    print(f"python {sys.version.split()[0]}, {args.repeats} repeats, each in a fresh "
          f"interpreter; medians in ms (arrays: per array of 8 MB)")
    for name, values in times.items():
        print(f"  {name:<48}{statistics.median(values) * 1000:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
