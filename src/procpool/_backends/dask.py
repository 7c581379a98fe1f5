"""Workers on a Dask distributed cluster, behind the same pipe protocol as local processes.

Owns connecting to a cluster (a client the user passes, a scheduler address or file, or a
``LocalCluster`` on loopback that the pool starts and stops), the relays, and the translation
of Dask's failures into procpool's, in one place (``_Relay._run_remotely``).

A relay is one pool "worker": a thread in this process that speaks the worker protocol on a
pipe to the dispatcher and runs each chunk it is sent as one Dask task
(``procpool._worker.run_detached``, the same code a local worker runs). So the scheduler,
chunking, ordering, streaming with bounded read-ahead, timeouts, retries, statistics and
progress are the local backend's, unchanged: the pool keeps one chunk in flight per relay, and
has as many relays as the cluster has worker threads unless told otherwise.

What Dask can and cannot do, as this backend uses it:
- every task is submitted with ``pure=False`` and a unique key: identical calls are never
  merged;
- the function travels pickled inside the task (by reference when importable, by value with
  cloudpickle when not); a module the cluster cannot import fails that chunk's items with
  ``procpool.SerializationError``, and kills no worker;
- a Dask worker that dies (a segfault, ``os._exit``, the OOM killer, a lost machine) fails the
  chunk it ran with ``procpool.WorkerDied``; the pool starts a new relay and goes on;
- a timeout or a cancel releases the task at once (its items fail with ``TaskTimeout`` or are
  cancelled), but Dask cannot stop a function that is running in a worker's thread: it runs to
  its end on the cluster, and its result is dropped.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import uuid
from collections.abc import Sequence
from multiprocessing import Pipe

from .. import _threads as threads
from .._codec import dumps, loads
from .._framing import FrameWriter
from .._messages import (
    ChunkDone,
    ItemDone,
    Ready,
    RunChunk,
    Stop,
    WorkerSetup,
    decode,
    encode,
)
from .._runtime_typing import TYPE_CHECKING
from .._worker import FunctionCache, run_detached

if TYPE_CHECKING:
    from typing import Any

# The exit status a relay reports after it was told to stop a task (timeout, cancel,
# terminate): the task was as good as killed.
_KILLED = -signal.SIGKILL
# How long reap() waits for a relay's thread; it ends at once unless Dask never answers.
_REAP_TIMEOUT = 5.0


@dataclasses.dataclass(frozen=True)
class DaskBackend:
    """Run a pool on a Dask distributed cluster: ``Pool(backend=procpool.DaskBackend(...))``.

    - ``client``: a ``distributed.Client`` you made; the pool uses it and never closes it.
    - ``address`` or ``scheduler_file``: a running scheduler; the pool connects a client of
      its own, and closes it (not the cluster) when it ends.
    - none of these (or ``backend="dask"``): the pool starts a ``LocalCluster`` of
      ``n_workers`` processes with ``threads_per_worker`` threads each, listening on 127.0.0.1
      only (its dashboard too), and stops it when the pool ends.

    Needs ``pip install procpool[dask]``; procpool must also be importable on the cluster's
    workers.
    """

    client: Any = None
    address: str | None = None
    scheduler_file: str | None = None
    n_workers: int | None = None
    threads_per_worker: int = 1

    __module__ = "procpool"

    def __post_init__(self) -> None:
        given = [name for name in ("client", "address", "scheduler_file")
                 if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"DaskBackend takes one of client, address, scheduler_file; "
                             f"got {' and '.join(given)}")

    def connect(self) -> DaskRuntime:
        """The running backend of one pool (a new one for each pool)."""
        return DaskRuntime(self)


def _distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ImportError("the dask backend needs Dask's distributed scheduler: "
                          "pip install 'procpool[dask]'") from exc
    return distributed


class DaskRuntime:
    """The backend of one pool: its client (and cluster, if it started one) and its relays."""

    name = "dask"
    inherits_memory = False  # cluster workers see nothing of this process's __main__
    imports_main = False  # a relay runs procpool's code only; the cluster runs the tasks
    shares_memory = False  # they may be on other machines
    own_processes = False  # a relay is a thread of this process

    def __init__(self, spec: DaskBackend) -> None:
        distributed = _distributed()
        self._owned_cluster: Any = None
        self._owned_client: Any = None
        if spec.client is not None:
            self.client = spec.client
        elif spec.address is not None or spec.scheduler_file is not None:
            self.client = self._owned_client = distributed.Client(
                address=spec.address, scheduler_file=spec.scheduler_file, set_as_default=False)
        else:
            import dask

            # A task that kills its Dask worker must fail, not be retried on the next worker
            # (and kill it too): procpool's own retries= decides what runs again.
            with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
                self._owned_cluster = distributed.LocalCluster(
                    n_workers=spec.n_workers, threads_per_worker=spec.threads_per_worker,
                    processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0",
                    worker_dashboard_address="127.0.0.1:0",
                    # A task that kills its worker is reported by procpool, as WorkerDied.
                    silence_logs=logging.CRITICAL,
                )
            self.client = self._owned_client = distributed.Client(
                self._owned_cluster, set_as_default=False)
        self.pool_key = uuid.uuid4().hex  # names this pool's tasks and initializer runs
        self._killed_worker = distributed.KilledWorker

    def default_processes(self) -> int:
        threads: int = sum(self.client.nthreads().values())
        return max(1, threads)

    def start_worker(self, worker_id: int, setup: WorkerSetup,
                     parent_fds: Sequence[int]) -> _Relay:
        return _Relay(worker_id, self, setup)

    def close(self) -> None:
        if self._owned_client is not None:
            self._owned_client.close()
        if self._owned_cluster is not None:
            self._owned_cluster.close()

    def describe_failure(self, error: BaseException) -> str:
        """Dask's failure of a task, as the cause of a WorkerDied."""
        if isinstance(error, self._killed_worker):
            worker = getattr(getattr(error, "last_worker", None), "address", None)
            where = f" ({worker}; its log says why)" if worker else ""
            return f"the Dask worker running it died or was lost{where}"
        return f"Dask could not run it ({type(error).__name__}: {error})"


class _Ended(Exception):
    def __init__(self, exitcode: int | None, cause: str | None = None) -> None:
        super().__init__(exitcode, cause)
        self.exitcode = exitcode
        self.cause = cause


class _Relay:
    """One pool worker whose chunks run as Dask tasks. The WorkerHandle of this backend."""

    def __init__(self, worker_id: int, runtime: DaskRuntime, setup: WorkerSetup) -> None:
        self.worker_id = worker_id
        self._index = setup.worker_index  # what procpool.current_worker() says in its chunks
        self.pid: int | None = None  # no process of ours
        self.loss_cause: str | None = None
        self._runtime = runtime
        self._init = setup.init
        self.connection, self._relay_end = Pipe(duplex=True)
        # Its write end closes when the relay's thread ends: a sentinel like a process's.
        self.sentinel, self._done_write = os.pipe()
        self._exitcode: int | None = None
        self._lock = threading.Lock()
        self._task: Any = None  # the Dask future of the chunk running now
        self._killed = False
        self._thread = threading.Thread(target=self._run, name=f"procpool-dask-relay-{worker_id}",
                                        daemon=True)
        threads.start(self._thread)  # with SIGINT blocked (_threads.py)

    # ---- the dispatcher's side -------------------------------------------------------------

    def kill(self, *, force: bool) -> None:
        """Release the running task (Dask cannot stop its thread) and end the relay."""
        with self._lock:
            self._killed = True
            task = self._task
        if task is not None:
            task.cancel()
        if not self.connection.closed:
            self.connection.close()  # a relay waiting for its next chunk sees EOF

    def private_fds(self) -> list[int]:
        return []  # nothing is forked

    def reap(self) -> int | None:
        self._thread.join(_REAP_TIMEOUT)
        return self._exitcode

    def close(self) -> None:
        if not self.connection.closed:
            self.connection.close()
        os.close(self.sentinel)

    # ---- the relay thread --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._exitcode = self._serve()
        except _Ended as ended:
            self._exitcode, self.loss_cause = ended.exitcode, ended.cause
        except BaseException as exc:  # a bug here must end the relay, which fails its chunk
            self._exitcode, self.loss_cause = None, f"procpool's Dask relay failed: {exc!r}"
        finally:
            self._relay_end.close()
            os.close(self._done_write)

    def _serve(self) -> int:
        pipe = self._relay_end
        replies = FrameWriter(pipe)
        # The payloads of the functions the dispatcher believes this worker holds (it keeps
        # the mirror image of this cache and sends a payload only once).
        functions = FunctionCache()
        replies.send_bytes(encode(Ready(os.getpid())))
        while True:
            try:
                message = decode(pipe.recv_bytes())
            except (EOFError, OSError):
                return _KILLED  # killed while idle
            if isinstance(message, Stop):
                return 0
            assert isinstance(message, RunChunk)
            if message.function_payload is not None:
                functions.add(message.function_id, message.function_payload)
            message = message._replace(function_payload=functions.use(message.function_id))
            if message.report_each_item:
                self._run_each_item(replies, message)
            else:
                for reply in self._run_remotely(message):
                    replies.send_bytes(reply)

    def _run_each_item(self, replies: FrameWriter, message: RunChunk) -> None:
        """One Dask task per item, one after another, each reported as it ends: the
        dispatcher then times each item and knows which one a loss or timeout hit."""
        seconds = 0.0
        for position, item in enumerate(loads(message.items_payload)):
            single = message._replace(items_payload=dumps([item]), size=1,
                                      report_each_item=False)
            task_replies = self._run_remotely(single)
            done = decode(task_replies[-1])
            if not isinstance(done, ChunkDone):  # the initializer failed: the pool breaks
                for reply in task_replies:
                    replies.send_bytes(reply)
                return
            seconds += done.seconds
            replies.send_bytes(encode(ItemDone(message.chunk_id, position,
                                              done.results_payload)))
        replies.send_bytes(encode(ChunkDone(message.chunk_id, b"", (), 0, 0, seconds)))

    def _run_remotely(self, message: RunChunk) -> list[bytes]:
        """Run the chunk as a Dask task; its replies, or _Ended: Dask's failures become
        procpool's here, and only here."""
        runtime = self._runtime
        task = runtime.client.submit(run_detached, runtime.pool_key, self._init, message,
                                     self._index,
                                     pure=False,  # never merge two calls that look alike
                                     key=f"procpool-{runtime.pool_key}-{uuid.uuid4().hex}")
        with self._lock:
            killed = self._killed
            self._task = None if killed else task
        if killed:
            task.cancel()
            raise _Ended(_KILLED)
        try:
            exitcode, replies = task.result()
        except BaseException as exc:
            if self._killed:
                raise _Ended(_KILLED) from None
            raise _Ended(None, self._runtime.describe_failure(exc)) from None
        finally:
            with self._lock:
                self._task = None
        if exitcode is not None:  # the task called sys.exit(): as a local worker, it ends
            raise _Ended(exitcode)
        return replies  # type: ignore[no-any-return]
