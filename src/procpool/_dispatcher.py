"""The dispatcher: the one thread that owns a pool's mutable state.

    caller threads --post(command)--> inbox + wake-up pipe --+
                                                              v
    worker pipes (replies) + worker sentinels (deaths) --> wait() --> Scheduler --> actions
                                                              |
                 sinks (result objects) <-- outcomes ---------+--> send / start / stop workers

Caller threads only post commands and wait on result objects; workers only receive, run and
reply. The dispatcher waits on every worker pipe, every worker sentinel and one wake-up pipe in a
single ``multiprocessing.connection.wait`` call: no polling, no sleeps, and it always knows which
chunk each worker holds, so a death fails exactly that chunk. It never runs user code: results
go to sinks, which hand callbacks to another thread.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.pool import RemoteTraceback  # type: ignore[attr-defined]
from typing import Any

from ._backends import Backend, WorkerHandle
from ._codec import describe_pickle_failure, dumps, dumps_callable, loads
from ._errors import (
    InitializerFailed,
    PoolBroken,
    PoolTerminated,
    ResultSerializationError,
    WorkerDied,
    describe_exit,
)
from ._scheduler import (
    Action,
    FailChunk,
    Scheduler,
    SendChunk,
    StartWorker,
    StopWorker,
)
from ._task import Chunk, ChunkDone, InitFailed, ItemFailure, Ready, RunChunk, Stop
from ._worker import FunctionCache

logger = logging.getLogger("procpool")

# terminate(): how long workers get to exit after SIGTERM before SIGKILL, and how long after
# SIGKILL before the dispatcher gives up on them (only a thread worker can outlive that).
TERMINATE_GRACE = 1.0
KILL_WAIT = 5.0

_ids = itertools.count()


def next_id() -> int:
    """Process-wide unique ids for chunks and task functions (next() on count is atomic)."""
    return next(_ids)


# ---- commands posted by caller threads ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Submit:
    chunks: tuple[Chunk, ...]


@dataclass(frozen=True, slots=True)
class _StreamOpened:
    pass


@dataclass(frozen=True, slots=True)
class _StreamClosed:
    pass


@dataclass(frozen=True, slots=True)
class _Close:
    pass


@dataclass(frozen=True, slots=True)
class _Terminate:
    pass


_Command = _Submit | _StreamOpened | _StreamClosed | _Close | _Terminate


class Dispatcher:
    """Runs one pool: its workers, its queue, its dispatcher thread.

    The faces (Pool, executor) call the public methods from any thread; everything else happens
    on the dispatcher thread.
    """

    def __init__(
        self,
        backend: Backend,
        processes: int,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        max_tasks_per_worker: int | None = None,
    ) -> None:
        self._backend = backend
        self._scheduler = Scheduler(processes, max_tasks_per_worker)
        self._init_payload = _initializer_payload(initializer, tuple(initargs), backend)
        # --- shared with caller threads, under _lock
        self._lock = threading.Lock()
        self._inbox: deque[_Command] = deque()
        self._wake_pending = False
        self._wake_read, self._wake_write = os.pipe()
        # --- owned by the dispatcher thread
        self._workers: dict[int, WorkerHandle] = {}
        self._retiring: dict[int, WorkerHandle] = {}
        self._function_caches: dict[int, FunctionCache] = {}
        self._ready: set[int] = set()
        self._peak_rss: dict[int, int] = {}
        self._eof: set[int] = set()  # workers whose pipe closed; only the sentinel matters now
        # --- read by anyone
        self.broken: BaseException | None = None
        self.finished = threading.Event()
        # Start the first workers before the dispatcher thread exists: a fork from a
        # single-threaded parent is the safe kind.
        for action in self._scheduler.start():
            self._carry_out(action)
        self._thread = threading.Thread(target=self._run, name="procpool-dispatcher", daemon=True)
        self._thread.start()
        self._owner_pid = os.getpid()
        _live_dispatchers.add(self)

    # ---- the faces' side (any thread) ------------------------------------------------------

    @property
    def inherits_memory(self) -> bool:
        return self._backend.inherits_memory

    @property
    def processes(self) -> int:
        return self._scheduler.processes

    def worker_pids(self) -> list[int | None]:
        while True:  # read from another thread: retry if the dispatcher changed the dict
            try:
                return [handle.pid for handle in list(self._workers.values())]
            except RuntimeError:
                continue

    def submit(self, chunks: Iterable[Chunk]) -> None:
        self._post(_Submit(tuple(chunks)))

    def stream_opened(self) -> None:
        """A job will keep submitting (imap's input is being read); close() must wait for it."""
        self._post(_StreamOpened())

    def stream_closed(self) -> None:
        self._post(_StreamClosed())

    def close(self) -> None:
        """Finish every submitted chunk, then stop the workers and the dispatcher thread."""
        self._post(_Close())

    def terminate(self) -> None:
        """Fail everything not yet finished, kill the workers, end the dispatcher thread."""
        self._post(_Terminate())

    def join(self, timeout: float | None = None) -> bool:
        if threading.current_thread() is self._thread:
            raise RuntimeError("cannot join the pool from its own dispatcher thread")
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _post(self, command: _Command) -> None:
        with self._lock:
            accepted = not self.finished.is_set()
            if accepted:
                self._inbox.append(command)
                if not self._wake_pending:
                    self._wake_pending = True
                    # Under the lock, so _shut_down cannot close the pipe in between. One byte
                    # at most is ever unread, so this write never blocks.
                    os.write(self._wake_write, b"!")
        if not accepted and isinstance(command, _Submit):
            error = self.broken or PoolTerminated("the pool is no longer running")
            for chunk in command.chunks:
                chunk.sink.chunk_failed(chunk, error)

    # ---- the dispatcher thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._is_done():
                self._wait_and_handle()
        except BaseException as exc:  # a bug here must fail the work, never hang it
            logger.exception("procpool dispatcher crashed; failing all outstanding work")
            error = PoolBroken(f"internal error in the pool's dispatcher: {exc!r}")
            error.__cause__ = exc
            self._break(error, kill=True)
        finally:
            self._shut_down()

    def _is_done(self) -> bool:
        return self._scheduler.is_drained() and not self._workers and not self._retiring

    def _wait_and_handle(self) -> None:
        waitables: list[Any] = [self._wake_read]
        for worker_id, handle in self._workers.items():
            if worker_id not in self._eof:
                waitables.append(handle.connection)
            waitables.append(handle.sentinel)
        waitables += [handle.sentinel for handle in self._retiring.values()]
        ready = wait(waitables)
        if self._wake_read in ready:
            self._handle_commands()
        for worker_id, handle in list(self._workers.items()):
            if handle.connection in ready and worker_id not in self._eof:
                self._receive(worker_id, handle)
        for worker_id, handle in list(self._workers.items()):
            if handle.sentinel in ready:
                self._worker_ended(worker_id, handle)
        for worker_id, handle in list(self._retiring.items()):
            if handle.sentinel in ready:
                self._release(self._retiring.pop(worker_id))

    def _handle_commands(self) -> None:
        os.read(self._wake_read, 4096)
        with self._lock:
            commands = list(self._inbox)
            self._inbox.clear()
            self._wake_pending = False
        for command in commands:
            if isinstance(command, _Submit):
                self._carry_out_all(self._scheduler.submit(command.chunks))
            elif isinstance(command, _StreamOpened):
                self._scheduler.stream_opened()
            elif isinstance(command, _StreamClosed):
                self._carry_out_all(self._scheduler.stream_closed())
            elif isinstance(command, _Close):
                self._carry_out_all(self._scheduler.close())
            elif isinstance(command, _Terminate):
                self._terminate_now()

    def _receive(self, worker_id: int, handle: WorkerHandle) -> None:
        try:
            message = loads(handle.connection.recv_bytes())
        except (EOFError, OSError):
            self._eof.add(worker_id)  # it is ending; its sentinel will say how
            return
        except Exception:
            logger.exception("unreadable message from worker pid %s; killing it", handle.pid)
            self._eof.add(worker_id)
            handle.kill(force=True)
            return
        if isinstance(message, ChunkDone):
            self._peak_rss[worker_id] = message.peak_rss
            chunk, actions = self._scheduler.chunk_done(worker_id)
            # Give the worker its next chunk before decoding this one's results.
            self._carry_out_all(actions)
            _deliver(chunk, message.results_payload)
        elif isinstance(message, Ready):
            self._ready.add(worker_id)
        elif isinstance(message, InitFailed):
            error = InitializerFailed(f"{type(message.error).__qualname__}: {message.error}")
            error.__cause__ = _with_remote_traceback(message.error, message.traceback_text)
            self._break(error, kill=True)

    def _worker_ended(self, worker_id: int, handle: WorkerHandle) -> None:
        # Replies it sent before dying still count: a chunk it finished is not lost.
        while worker_id not in self._eof and worker_id in self._workers:
            try:
                if not handle.connection.poll():
                    break
            except (EOFError, OSError):
                break
            self._receive(worker_id, handle)
        if worker_id not in self._workers:
            return  # a reply above retired or broke it
        del self._workers[worker_id]
        exitcode = handle.reap()
        if worker_id not in self._ready and self.broken is None:
            signal_name, cause = describe_exit(exitcode)
            how = f"killed by {signal_name}" if signal_name else f"exit code {exitcode}"
            self._break(InitializerFailed(f"worker pid {handle.pid} died during start-up, "
                                          f"{how}: {cause}"), kill=True)
        else:
            slot = self._scheduler.workers.get(worker_id)
            running = slot.running if slot else None
            error = WorkerDied(
                handle.pid,
                exitcode,
                running.description if running else "",
                self._peak_rss.get(worker_id),
            )
            self._carry_out_all(self._scheduler.worker_lost(worker_id, error))
        self._release(handle)

    def _break(self, error: BaseException, *, kill: bool = False) -> None:
        """Fail all work now and later. With ``kill``, end the workers at once: a worker that
        is mid-chunk would otherwise finish it and block writing a result nobody reads."""
        self.broken = error
        self._carry_out_all(self._scheduler.break_pool(error))
        if kill:
            self._kill_all()

    def _terminate_now(self) -> None:
        self._break(PoolTerminated("the pool was terminated before this task finished"))
        self._carry_out_all(self._scheduler.close(abandon_streams=True))
        self._kill_all()

    def _kill_all(self) -> None:
        handles = {**self._workers, **self._retiring}
        self._workers.clear()
        self._retiring.clear()
        for handle in handles.values():
            handle.kill(force=False)
        alive = _wait_for_exit(handles.values(), TERMINATE_GRACE)
        for handle in alive:
            handle.kill(force=True)  # ignored SIGTERM
        for handle in _wait_for_exit(alive, KILL_WAIT):
            logger.error("worker pid %s did not exit after SIGKILL", handle.pid)
        for handle in handles.values():
            self._release(handle)

    def _release(self, handle: WorkerHandle) -> None:
        handle.reap()
        handle.close()
        worker_id = handle.worker_id
        self._function_caches.pop(worker_id, None)
        self._ready.discard(worker_id)
        self._peak_rss.pop(worker_id, None)
        self._eof.discard(worker_id)

    def _shut_down(self) -> None:
        with self._lock:
            self.finished.set()
            leftovers = list(self._inbox)
            self._inbox.clear()
        error = self.broken or PoolTerminated("the pool is no longer running")
        for command in leftovers:
            if isinstance(command, _Submit):
                for chunk in command.chunks:
                    chunk.sink.chunk_failed(chunk, error)
        os.close(self._wake_read)
        os.close(self._wake_write)
        _live_dispatchers.discard(self)

    # ---- actions -----------------------------------------------------------------------------

    def _carry_out_all(self, actions: list[Action]) -> None:
        for action in actions:
            self._carry_out(action)

    def _carry_out(self, action: Action) -> None:
        if isinstance(action, SendChunk):
            self._send_chunk(action.worker_id, action.chunk)
        elif isinstance(action, FailChunk):
            action.chunk.sink.chunk_failed(action.chunk, action.error)
        elif isinstance(action, StartWorker):
            self._start_worker(action.worker_id)
        elif isinstance(action, StopWorker):
            self._stop_worker(action.worker_id)

    def _start_worker(self, worker_id: int) -> None:
        private_fds = [self._wake_read, self._wake_write]
        private_fds += [h.connection.fileno() for h in self._workers.values()]
        try:
            handle = self._backend.start_worker(worker_id, self._init_payload, private_fds)
        except Exception as exc:
            error = PoolBroken(f"could not start a worker process: {exc!r}")
            error.__cause__ = exc
            self._break(error, kill=True)
            return
        self._workers[worker_id] = handle
        self._function_caches[worker_id] = FunctionCache()

    def _stop_worker(self, worker_id: int) -> None:
        handle = self._workers.pop(worker_id, None)
        if handle is None:
            return  # died before it could be asked
        self._retiring[worker_id] = handle
        try:
            handle.connection.send_bytes(dumps(Stop()))
        except OSError:
            handle.kill(force=True)

    def _send_chunk(self, worker_id: int, chunk: Chunk) -> None:
        handle = self._workers.get(worker_id)
        if handle is None:
            return  # the pool broke while carrying out earlier actions; the chunk failed then
        cache = self._function_caches[worker_id]
        function = chunk.function
        payload: bytes | None = None
        if function.function_id in cache:
            cache.use(function.function_id)
        else:
            cache.add(function.function_id, None)
            payload = function.payload
        message = RunChunk(
            chunk.chunk_id, function.function_id, payload, chunk.items_payload, chunk.mode,
            chunk.size,
        )
        # If the worker is dying the send fails; its sentinel then fails the chunk with the
        # exit status, which says far more than a broken pipe.
        with contextlib.suppress(OSError):
            handle.connection.send_bytes(dumps(message))


def _initializer_payload(
    initializer: Callable[..., object] | None, initargs: tuple[Any, ...], backend: Backend
) -> bytes | None:
    if initializer is None:
        return None
    function_payload, _ = dumps_callable(initializer, inherits_memory=backend.inherits_memory)
    return dumps((function_payload, initargs))


def _with_remote_traceback(error: BaseException, traceback_text: str) -> BaseException:
    # The stdlib's convention (multiprocessing.pool.ExceptionWithTraceback): the worker's
    # formatted traceback rides along as __cause__.
    if traceback_text:
        error.__cause__ = RemoteTraceback(traceback_text)
    return error


def _deliver(chunk: Chunk, results_payload: bytes) -> None:
    try:
        values = loads(results_payload)
    except Exception as exc:
        error = ResultSerializationError(
            f"<results of {chunk.description or 'a chunk'}>",
            f"the parent could not unpickle them ({describe_pickle_failure(exc)})",
        )
        error.__cause__ = exc
        chunk.sink.chunk_failed(chunk, error)
        return
    failures = {
        position: _with_remote_traceback(value.error, value.traceback_text)
        for position, value in enumerate(values)
        if type(value) is ItemFailure
    }
    chunk.sink.chunk_done(chunk, values, failures)


def _wait_for_exit(handles: Iterable[WorkerHandle], timeout: float) -> list[WorkerHandle]:
    """Wait until every handle's sentinel fires or ``timeout`` passes; return the survivors."""
    pending = {handle.sentinel: handle for handle in handles}
    deadline = time.monotonic() + timeout
    while pending:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        for sentinel in wait(list(pending), remaining):
            del pending[sentinel]
    return list(pending.values())


# Pools still running at interpreter exit are terminated before multiprocessing's own exit
# handler joins their (daemon) workers: that join would hang on a task ignoring SIGTERM.
_live_dispatchers: weakref.WeakSet[Dispatcher] = weakref.WeakSet()


@atexit.register
def _terminate_live_pools() -> None:
    # Only in the process that made them: a child forked by user code inherits copies.
    mine = [d for d in list(_live_dispatchers) if d._owner_pid == os.getpid()]
    for dispatcher in mine:
        dispatcher.terminate()
    for dispatcher in mine:
        dispatcher.join(KILL_WAIT + TERMINATE_GRACE + 1)
