"""procpool against an earlier procpool: the same workloads, interleaved, in fresh interpreters.

    python -m benchmarks.versions BASELINE_REV --repeats 5
    python -m benchmarks.versions BASELINE_REV --quick --repeats 1   # a smoke run

Exports ``src/`` of BASELINE_REV from git into a temporary folder. Then, for each repeat, runs
every workload once with the stdlib Pool, the baseline's Pool and executor, and this checkout's
Pool and executor, each in a fresh interpreter that imports that procpool (PYTHONPATH), in an
order that rotates from one repeat to the next, so machine noise spreads over all of them.
Each workload runs under each start method of ``--methods``, and start-up (pool start to first
result, after a warm-up pool in the same interpreter) is measured the same way. Reports medians,
and this checkout's time as a ratio of the baseline's: below 1.00 is faster.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

from . import cache_bytecode

ROOT = Path(__file__).resolve().parent.parent
LIBRARIES = ["stdlib Pool", "procpool Pool", "procpool executor"]


def export_source(revision: str, into: Path) -> Path:
    """``src/`` of ``revision``, exported from git into ``into``; its path."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "src"],
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def _child(arguments: list[str], source: Path) -> float:
    """Run this module in child mode with ``source``'s procpool; the seconds it printed."""
    environment = {**os.environ, "PYTHONPATH": str(source)}
    done = subprocess.run([sys.executable, "-m", "benchmarks.versions", "--child", *arguments],
                          cwd=ROOT, env=environment, capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"child {arguments} failed:\n{done.stderr[-3000:]}")
    return float(done.stdout.split()[-1])


def _run_child(kind: str, name: str, library: str, quick: bool, workers: int,
               method: str) -> float:
    import procpool

    assert Path(procpool.__file__).resolve().is_relative_to(
        Path(os.environ["PYTHONPATH"]).resolve()), procpool.__file__
    if kind == "startup":
        return _startup(method, library)
    from .runners import RUNNERS
    from .workloads import workloads

    [workload] = [w for w in workloads(quick) if w.name == name]
    inputs = workload.inputs()
    started = time.perf_counter()
    result = RUNNERS[library](workload, inputs, workers, method)
    workload.consume(result)
    elapsed = time.perf_counter() - started
    if len(result) != len(inputs):
        raise SystemExit(f"WRONG RESULT: {len(result)} results for {len(inputs)} inputs")
    if workload.name.startswith("tiny") and result != [x * x for x in inputs]:
        raise SystemExit("WRONG RESULT")
    return elapsed


def _startup(method: str, library: str) -> float:
    import multiprocessing

    from .startup import _libraries

    measure = _libraries()[library]
    context = multiprocessing.get_context(method)
    measure(context)  # warm-up: the forkserver, imports, page cache
    return statistics.median(measure(context)[0] for _ in range(3))


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        kind, name, library, quick, workers, method = sys.argv[2:8]
        print(_run_child(kind, name, library, quick == "quick", int(workers), method))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", help="a git revision of this repository")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a tenth of every size")
    parser.add_argument("--workloads", help="comma-separated names (default: all)")
    parser.add_argument("--methods", default="fork,spawn,forkserver")
    args = parser.parse_args()
    from .workloads import workloads

    names = [w.name for w in workloads(args.quick)
             if not args.workloads or w.name in args.workloads.split(",")]
    workers = len(os.sched_getaffinity(0))
    methods = [method for method in args.methods.split(",") if method]
    rows = [("workload", name, method) for name in names for method in methods] + [
        ("startup", "", method) for method in methods]
    with tempfile.TemporaryDirectory() as folder:
        versions = {"before": export_source(args.baseline, Path(folder)), "after": ROOT / "src"}
        for source in versions.values():
            cache_bytecode(source)  # as an installed procpool has it (benchmarks/__init__.py)
        runs = [(version, library) for library in LIBRARIES[1:] for version in versions]
        runs.insert(0, ("after", LIBRARIES[0]))  # the stdlib needs one version
        print(f"python {sys.version.split()[0]}, {workers} workers, {args.repeats} repeats, "
              f"baseline {args.baseline}; medians in seconds (start-up: milliseconds)")
        for kind, name, method in rows:
            times: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
            for repeat in range(args.repeats):
                shift = repeat % len(runs)
                for version, library in runs[shift:] + runs[:shift]:
                    seconds = _child([kind, name, library, "quick" if args.quick else "full",
                                      str(workers), method], versions[version])
                    times[(version, library)].append(seconds)
            _report(kind, f"{name} {method}".strip(), times)
    return 0


def _report(kind: str, name: str, times: dict[tuple[str, str], list[float]]) -> None:
    scale, unit = (1000, "ms") if kind == "startup" else (1, "s")
    medians = {run: statistics.median(values) * scale for run, values in times.items()}
    stdlib = medians[("after", LIBRARIES[0])]
    print(f"\n{kind} {name}: stdlib Pool {stdlib:.3f} {unit}")
    print(f"  {'library':<20}{'before':>10}{'after':>10}{'after/before':>14}"
          f"{'before x stdlib':>17}{'after x stdlib':>16}")
    for library in LIBRARIES[1:]:
        before, after = medians[("before", library)], medians[("after", library)]
        print(f"  {library:<20}{before:>10.3f}{after:>10.3f}{after / before:>14.2f}"
              f"{before / stdlib:>17.2f}{after / stdlib:>16.2f}")


if __name__ == "__main__":
    sys.exit(main())
