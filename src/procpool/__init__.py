"""procpool: a process pool that never hangs, says why a worker died, and keeps serving.

The public names live here; everything else is private (underscored modules). ``procpool.Pool``
is a drop-in for ``multiprocessing.Pool``, ``procpool.ProcessPoolExecutor`` for
``concurrent.futures.ProcessPoolExecutor``; both run on the same engine.
"""

from ._backends.dask import DaskBackend
from ._errors import (
    InitializerFailed,
    PoolBroken,
    PoolTerminated,
    ProcpoolError,
    RemoteError,
    ResultSerializationError,
    SerializationError,
    TaskTimeout,
    TimeoutError,
    WorkerDied,
)
from ._executor import ProcessFuture, ProcessPoolExecutor
from ._pool import Pool
from ._progress import Progress
from ._results import ApplyResult, AsyncResult, IMapIterator, IMapUnorderedIterator, MapResult
from ._stats import PoolStats, WorkerStats

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
    "SerializationError",
    "TaskTimeout",
    "TimeoutError",
    "WorkerDied",
    "WorkerStats",
]

__version__ = "0.1.0"
