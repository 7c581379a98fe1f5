"""Does a 10-million-item generator stream in bounded memory? procpool's imap beside the stdlib's.

    python -m benchmarks.streaming_memory                   # 10,000,000 items, chunksize 1000
    python -m benchmarks.streaming_memory --items 1000000

Each library runs in a fresh child process (so peaks do not mix), consuming
``imap_unordered(square, generator, chunksize)`` and checking the sum of the results. Reported:
the child's peak resident memory (ru_maxrss) and its wall time. The input is a generator, so
any memory that grows with the input is the pool's read-ahead.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import json, resource, sys, time
from benchmarks.workloads import square

library, items, chunksize = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if library == "procpool":
    import procpool as pool_module
    make_pool = pool_module.Pool
else:
    import multiprocessing
    make_pool = multiprocessing.Pool
if __name__ == "__main__":
    started = time.perf_counter()
    with make_pool(2) as pool:
        total = sum(pool.imap_unordered(square, (i for i in range(items)), chunksize))
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"total": total, "seconds": elapsed, "peak_rss": peak}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000_000)
    parser.add_argument("--chunksize", type=int, default=1000)
    args = parser.parse_args()
    expected = sum(i * i for i in range(args.items))
    print(f"{args.items:,} items from a generator, imap_unordered(x*x), chunksize "
          f"{args.chunksize}, 2 workers; peak RSS of the consuming process")
    for library in ("stdlib", "procpool"):
        done = subprocess.run([sys.executable, "-c", CHILD, library, str(args.items),
                               str(args.chunksize)], capture_output=True, text=True, check=True)
        report = json.loads(done.stdout)
        ok = "ok" if report["total"] == expected else "WRONG RESULT"
        print(f"  {library:<10}{report['peak_rss'] / 2**20:>10.0f} MiB"
              f"{report['seconds']:>10.2f} s  {ok}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
