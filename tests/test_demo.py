"""The main demonstration (make demo, examples/demo.py) runs and says what it promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.timeout(240)
def test_the_demo_shows_each_failure_alone_and_nothing_lost_across_a_ctrl_c(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "examples.demo", str(tmp_path), "--count", "12",
         "--task-timeout", "1", "--interrupt-after", "6"],
        cwd=ROOT, capture_output=True, text=True, timeout=230,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "procpool run interrupted: " in out  # the Ctrl-C landed mid-run
    assert "procpool run done: 17 of 17 items, 12 ok, 5 failed (1 timed out)" in out
    assert "photo-007-crash.jpg: died, 2 attempt(s)" in out and "SIGSEGV" in out
    assert "photo-015-hang.jpg: timeout" in out
    assert out.count("OSError: image file is truncated") == 3
    assert "every item was recorded exactly once" in out


@pytest.mark.timeout(120)
def test_the_workers_example_shows_logs_prints_places_and_scikit_learns_scores() -> None:
    done = subprocess.run([sys.executable, "-m", "examples.workers"], cwd=ROOT,
                          capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stdout + done.stderr
    out, err = done.stdout, done.stderr
    # Prints arrive whole (frame 5 twice: before the crash, and again); log records through
    # this process's logging, with their worker.
    frames = [line for line in out.splitlines() if line.startswith("frame")]
    assert len(frames) == 13 and all(re.fullmatch(r"frame \d+ on worker [01]", f) for f in frames)
    assert {int(f.split()[1]) for f in frames} == set(range(12))
    assert "WARNING procpool-worker-0: frame 5: the driver crashed" in err \
        or "WARNING procpool-worker-1: frame 5: the driver crashed" in err
    assert err.count("rendered on GPU") == 13  # frame 5 twice: before the crash, and again
    assert "places and the GPU each saw at import: [(0, '0'), (1, '1')]" in out
    assert "the same scores" in out
