"""procpool: a process pool that never hangs, says why a worker died, and keeps serving.

The public names live here; everything else is private (underscored modules). ``procpool.Pool``
is a drop-in for ``multiprocessing.Pool``, ``procpool.ProcessPoolExecutor`` for
``concurrent.futures.ProcessPoolExecutor``; both run on the same engine.
"""

import importlib as _importlib

# Not typing.TYPE_CHECKING: importing typing costs a spawned worker about 10 ms (_messages.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._backends.dask import DaskBackend
    from ._errors import (
        InitializerFailed,
        PoolBroken,
        PoolTerminated,
        ProcpoolError,
        RemoteError,
        ResultSerializationError,
        ResultUnpicklingError,
        SerializationError,
        TaskTimeout,
        TaskUnpicklingError,
        TimeoutError,
        WorkerDied,
        WorkerStartFailed,
    )
    from ._executor import ProcessPoolExecutor
    from ._futures import ProcessFuture
    from ._pool import Pool
    from ._results import ApplyResult, AsyncResult, MapResult
    from ._stats import PoolStats, Progress, WorkerStats
    from ._streams import IMapIterator, IMapUnorderedIterator
    from ._worker_identity import WorkerInfo, current_worker

del TYPE_CHECKING  # not a public name

# Where each public name lives. They are imported on first use (PEP 562), not here: a spawned
# worker imports procpool._worker, which runs this file, and must not pay for the faces
# (asyncio, concurrent.futures, the dispatcher) it never uses. It starts several times faster.
_HOMES = {
    "DaskBackend": "._backends.dask",
    **dict.fromkeys(["InitializerFailed", "PoolBroken", "PoolTerminated", "ProcpoolError",
                     "RemoteError", "ResultSerializationError", "ResultUnpicklingError",
                     "SerializationError", "TaskTimeout", "TaskUnpicklingError",
                     "TimeoutError", "WorkerDied", "WorkerStartFailed"], "._errors"),
    "ProcessFuture": "._futures",
    "ProcessPoolExecutor": "._executor",
    "Pool": "._pool",
    "Progress": "._stats",
    **dict.fromkeys(["ApplyResult", "AsyncResult", "MapResult"], "._results"),
    **dict.fromkeys(["IMapIterator", "IMapUnorderedIterator"], "._streams"),
    "PoolStats": "._stats",
    "WorkerStats": "._stats",
    "WorkerInfo": "._worker_identity",
    "current_worker": "._worker_identity",
}


def __getattr__(name: str) -> "Any":
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'procpool' has no attribute {name!r}")
    value = getattr(_importlib.import_module(home, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])


__all__ = [
    "ApplyResult",
    "AsyncResult",
    "DaskBackend",
    "IMapIterator",
    "IMapUnorderedIterator",
    "InitializerFailed",
    "MapResult",
    "Pool",
    "PoolBroken",
    "PoolStats",
    "PoolTerminated",
    "ProcessFuture",
    "ProcessPoolExecutor",
    "ProcpoolError",
    "Progress",
    "RemoteError",
    "ResultSerializationError",
    "ResultUnpicklingError",
    "SerializationError",
    "TaskTimeout",
    "TaskUnpicklingError",
    "TimeoutError",
    "WorkerDied",
    "WorkerInfo",
    "WorkerStartFailed",
    "WorkerStats",
    "current_worker",
]

__version__ = "0.1.0"
