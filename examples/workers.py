"""Workers that report back: logs, prints, places and environments, a bounded queue, and
scikit-learn through joblib. ``python -m examples.workers`` (under spawn, as on macOS,
Windows, and Linux from Python 3.14).

1. A pool of two spawned workers, each given one "GPU" through ``worker_env`` (set before the
   worker imports this script, so the module-level read below sees it), forwards its tasks'
   log records to this process's logging and their prints to its stdout, and takes at most
   four queued calls at a time (``max_queued``). One task kills its own worker: its last log
   record still arrives, and its replacement takes the same place and the same GPU.
2. scikit-learn's ``cross_val_score(..., n_jobs=2)`` under
   ``joblib.parallel_config(backend="procpool")`` gives exactly loky's scores.
"""

from __future__ import annotations

import logging
import os
import signal

import procpool

log = logging.getLogger("examples.workers")

# Read as a spawned worker imports this script: worker_env is in place by then.
GPU_AT_IMPORT = os.environ.get("CUDA_VISIBLE_DEVICES")


def one_gpu_each(index: int) -> dict[str, str]:
    return {"CUDA_VISIBLE_DEVICES": str(index)}


def render(frame: int) -> tuple[int, str | None]:
    worker = procpool.current_worker()
    assert worker is not None
    print(f"frame {frame} on worker {worker.index}")
    log.info("frame %d rendered on GPU %s", frame, GPU_AT_IMPORT)
    if frame == 5 and not os.path.exists(_marker()):
        open(_marker(), "w").close()
        log.warning("frame 5: the driver crashed, taking worker %d down", worker.index)
        os.kill(os.getpid(), signal.SIGKILL)
    return worker.index, GPU_AT_IMPORT


def _marker() -> str:
    return os.path.join(os.environ["WORKERS_DEMO_DIR"], "crashed-once")


def run_pool() -> None:
    futures = []
    with procpool.ProcessPoolExecutor(2, mp_context="spawn", worker_env=one_gpu_each,
                                      forward_output=True, max_queued=4, retries=1) as pool:
        for frame in range(12):
            futures.append(pool.submit(render, frame))  # waits while 4 wait to start
        places = {future.result() for future in futures}
    print(f"places and the GPU each saw at import: {sorted(places)}")
    assert all(gpu == str(index) for index, gpu in places), places


def run_scikit_learn() -> None:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    import procpool.joblib  # noqa: F401 - registers the "procpool" backend

    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000)
    with joblib.parallel_config(backend="procpool", task_timeout=60):
        ours = cross_val_score(model, X, y, cv=5, n_jobs=2)
    with joblib.parallel_config(backend="loky"):
        lokys = cross_val_score(model, X, y, cv=5, n_jobs=2)
    print(f"cross_val_score on procpool: {ours.round(4).tolist()}")
    print(f"cross_val_score on loky:     {lokys.round(4).tolist()}")
    print("the same scores" if (ours == lokys).all() else "different scores!")


if __name__ == "__main__":
    import tempfile

    logging.basicConfig(level=logging.INFO,
                        format="%(levelname)s %(processName)s: %(message)s")
    with tempfile.TemporaryDirectory() as directory:
        os.environ["WORKERS_DEMO_DIR"] = directory
        run_pool()
    run_scikit_learn()
