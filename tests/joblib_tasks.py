"""Tasks the joblib backend's tests run through ``joblib.Parallel``.

Module-level, so that spawn and forkserver workers can import them (conftest puts tests/ on
PYTHONPATH). Faults that must happen once only (a kill that a retry then survives) claim a
marker file with O_EXCL, as faulty_tasks.py does: exactly one process wins, whatever the start
method. Tasks that must hang block on a FIFO nobody writes to, never on a sleep.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import joblib

from faulty_tasks import claim

# Set by a test in its own process before a pool starts: a fork worker inherits the new value,
# a spawn or forkserver worker imports this module afresh and sees this one.
INHERITED = "imported"

# What the initializer a test passes through parallel_config leaves for the tasks to read.
INITIALIZED: Any = None


def square(x: int) -> int:
    return x * x


def kill_own_worker_if(x: int, bad: int, marker: str | None = None) -> int:
    """Return ``x * x``, except that item ``bad`` SIGKILLs its own worker: always without a
    ``marker``, and on the first attempt only (the one that claims ``marker``) with one."""
    if x == bad and (marker is None or claim(marker)):
        os.kill(os.getpid(), signal.SIGKILL)
    return x * x


def block_forever_if(x: int, bad: int, fifo: str) -> int:
    """Return ``x * x``, except that item ``bad`` opens ``fifo`` for reading, which blocks
    until a writer opens it: nobody ever does."""
    if x == bad:
        with open(fifo) as never_written:
            never_written.read()
    return x * x


def announce_then_block(started_fifo: str, release_fifo: str) -> int:
    """Say so on ``started_fifo``, then wait on ``release_fifo`` (for ever, if nobody writes)."""
    with open(started_fifo, "w") as started:
        started.write(str(os.getpid()))
    with open(release_fifo) as release:
        release.read()
    return os.getpid()


def raise_once_started(started_fifo: str) -> None:
    """Wait until another task (announce_then_block) says it has started, then fail the
    call, naming that task's worker."""
    with open(started_fifo) as started:
        pid = started.read()
    raise ValueError(f"failed while the batch in worker {pid} was running")


def remember(value: Any) -> None:
    """An initializer: keep ``value`` for ``initialized`` to return."""
    global INITIALIZED
    INITIALIZED = value


def initialized(_: object = None) -> Any:
    return INITIALIZED


def worker_facts(_: object = None) -> dict[str, Any]:
    """Where this task ran: its worker's pid and parent pid, and what it inherited."""
    return {"pid": os.getpid(), "parent": os.getppid(), "inherited": INHERITED}


def nested_parallel(n_jobs: int) -> dict[str, Any]:
    """Run a Parallel call inside the task, as a scikit-learn estimator with its own n_jobs
    does, and report where its tasks ran and on which backend."""
    backend, _ = joblib.parallel.get_active_backend()
    pids = joblib.Parallel(n_jobs=n_jobs)(joblib.delayed(os.getpid)() for _ in range(4))
    return {"pid": os.getpid(), "inner_pids": pids, "backend": type(backend).__name__}


# ---- scikit-learn: the same model selection on whatever joblib backend is active ------------

def cross_val_scores() -> list[float]:
    """``cross_val_score`` of a logistic regression on iris (bundled with scikit-learn)."""
    from sklearn.model_selection import cross_val_score

    model, features, labels = _iris_problem()
    return [float(score) for score in cross_val_score(model, features, labels, cv=5, n_jobs=2)]


def grid_search_scores() -> dict[str, list[Any]]:
    """A small ``GridSearchCV`` on the same problem: every number it reports except timings."""
    from sklearn.model_selection import GridSearchCV

    model, features, labels = _iris_problem()
    search = GridSearchCV(model, {"C": [0.1, 1.0, 10.0]}, cv=3, n_jobs=2, refit=False)
    results = search.fit(features, labels).cv_results_
    kept = ["params", "mean_test_score", "std_test_score", "rank_test_score",
            *(f"split{n}_test_score" for n in range(3))]
    return {key: [_plain(value) for value in results[key]] for key in kept}


def _iris_problem() -> tuple[Any, Any, Any]:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    return LogisticRegression(max_iter=1000), features, labels


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python number it holds (JSON carries those exactly)."""
    return value.item() if hasattr(value, "item") else value
