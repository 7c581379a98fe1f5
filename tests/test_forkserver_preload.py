"""A forkserver started by a procpool pool has imported the worker's modules before it forks.

Each case runs a script in a fresh interpreter, where no forkserver runs yet (the test run's
own is shared by every test and was started long before). The script's task reports which
modules its worker holds without having imported them itself: ``procpool._worker_logs`` is
imported by a worker only when it forwards log records, and the pools here do not, so the
worker holds it only if it came with the fork from the server.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = """
import multiprocessing, sys
from multiprocessing import forkserver
import procpool

def holds(names):
    return [name in sys.modules for name in names]

if __name__ == "__main__":
    context = multiprocessing.get_context("forkserver")
    if sys.argv[1] == "stdlib-first":
        with context.Pool(1) as pool:
            pool.apply(len, ((),))
    elif sys.argv[1] == "program-list":
        context.set_forkserver_preload(["colorsys"])
    with procpool.Pool(1, context=context, forward_logs=False) as pool:
        print(pool.apply(holds, (["procpool._worker_logs", "colorsys"],)))
    print(forkserver._forkserver._preload_modules)
"""

WORKER_MODULES = ["procpool._worker", "procpool._worker_logs"]


@pytest.mark.parametrize("case, worker_holds, preload", [
    # procpool starts the server: the stdlib's default list, then the worker's modules.
    ("fresh", [True, False], ["__main__", *WORKER_MODULES]),
    # The program's own list stays, in front: what it preloads still is.
    ("program-list", [True, True], ["colorsys", *WORKER_MODULES]),
    # A server that runs already is left alone: its workers import as they start.
    ("stdlib-first", [False, False], ["__main__"]),
])
def test_the_worker_modules_come_with_the_fork_when_procpool_starts_the_forkserver(
        case: str, worker_holds: list[bool], preload: list[str], tmp_path: Path) -> None:
    script = tmp_path / "preload_check.py"
    script.write_text(textwrap.dedent(SCRIPT))
    done = subprocess.run([sys.executable, str(script), case], capture_output=True, text=True,
                          timeout=50, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    held, listed = done.stdout.splitlines()
    assert eval(held) == worker_holds
    assert eval(listed) == preload
