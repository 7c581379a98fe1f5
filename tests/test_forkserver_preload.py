"""A forkserver started by a procpool pool has imported the worker's loop, and not logging,
before it forks.

Each case runs a script in a fresh interpreter, where no forkserver runs yet (the test run's
own is shared by every test and was started long before). What the server imported is seen
from a child it forks that is not a procpool worker: a stdlib Pool's worker, started after the
procpool pool, imports neither ``procpool._worker`` nor ``logging`` (the script imports
neither: ``import procpool`` loads the facade only), so it holds them only if they came with
the fork from the server.
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
    assert "logging" not in sys.modules and "procpool._worker" not in sys.modules
    context = multiprocessing.get_context("forkserver")
    if sys.argv[1] == "stdlib-first":
        with context.Pool(1) as pool:
            pool.apply(len, ((),))
    elif sys.argv[1] == "program-list":
        context.set_forkserver_preload(["colorsys"])
    with procpool.Pool(1, context=context) as pool:
        assert pool.apply(len, ((),)) == 0
    with context.Pool(1) as pool:  # forked by the same server
        print(pool.apply(holds, (["procpool._worker", "logging", "colorsys"],)))
    print(forkserver._forkserver._preload_modules)
"""


@pytest.mark.parametrize("case, server_held, preload", [
    # procpool starts the server: the stdlib's default list, then the worker's loop.
    ("fresh", [True, False, False], ["__main__", "procpool._worker"]),
    # The program's own list stays, in front: what it preloads still is.
    ("program-list", [True, False, True], ["colorsys", "procpool._worker"]),
    # A server that runs already is left alone: its workers import as they start.
    ("stdlib-first", [False, False, False], ["__main__"]),
])
def test_the_worker_loop_comes_with_the_fork_when_procpool_starts_the_forkserver(
        case: str, server_held: list[bool], preload: list[str], tmp_path: Path) -> None:
    script = tmp_path / "preload_check.py"
    script.write_text(textwrap.dedent(SCRIPT))
    done = subprocess.run([sys.executable, str(script), case], capture_output=True, text=True,
                          timeout=50, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    held, listed = done.stdout.splitlines()
    assert eval(held) == server_held
    assert eval(listed) == preload
