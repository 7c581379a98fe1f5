"""The dispatcher: the one thread that owns a pool's mutable state.

    caller threads --post(command)--> inbox + wake-up pipe --+
                                                              v
    worker pipes (replies) + worker sentinels (deaths) --> wait(timeout = next deadline)
                                                              |
                                                              v
                 sinks (result objects) <-- outcomes -- Scheduler (pure) --> actions:
                                                        send / start / stop / kill workers

Caller threads only post commands and wait on result objects; workers only receive, run and
reply. The dispatcher waits on every worker pipe, every worker sentinel and one wake-up pipe in a
single ``multiprocessing.connection.wait`` call whose timeout is the nearest deadline (a task
timeout, an initializer timeout, a worker slow to exit): no polling, no sleeps. It always knows
which chunk, and which item, each worker holds, so a death fails exactly that. It never runs
user code: results go to sinks, which hand callbacks to another thread.

Its parts, each with one owner: the Inbox (commands from other threads), the Scheduler (every
decision), the WorkerTable (one record per worker), Delivery (every outcome, counted once).
The dispatcher itself only waits, decodes what arrived, and carries out the scheduler's actions.

It tells the scheduler everything through ``Scheduler.handle(event, now)``. Most commands are
the scheduler's own event records (``Submitted``, ``StreamOpened``, ``StreamClosed``,
``Close``, ``Cancel``), handed over as they come; only what the dispatcher does itself
(``_Terminate``, ``_StatsRequest``) has a class here. Replies become events too
(``WorkerReady``, ``ItemFinished``, ``ChunkFinished``, ``ItemFailed``), as do deaths
(``WorkerLost``), passing time (``Tick``) and a broken pool (``Break``). Which chunk and item a
reply answers it asks first (``Scheduler.running_on``).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable

from . import _janitor as janitor
from . import _shared_memory as shared_memory
from . import _threads as threads
from ._backends import Backend
from ._callbacks import CallbackRunner
from ._codec import dumps, dumps_callable, loads
from ._delivery import Delivery, with_remote_traceback
from ._errors import (
    InitializerFailed,
    PoolBroken,
    PoolTerminated,
)
from ._forwarding import Forwarded
from ._inbox import Inbox
from ._log import logger
from ._messages import (
    ChunkDone,
    InitFailed,
    ItemDone,
    Logged,
    Printed,
    Ready,
    Skipped,
    WorkerInit,
)
from ._options import WorkerPolicy, WorkerSetupOptions
from ._poller import Poller
from ._runtime_typing import TYPE_CHECKING, NamedTuple
from ._scheduler import Scheduler
from ._scheduler_events import (
    Action,
    Break,
    BreakPool,
    Cancel,
    ChunkFinished,
    Close,
    DropChunk,
    Event,
    FailChunk,
    FirstCallBegan,
    ItemFailed,
    ItemFinished,
    KillSpared,
    KillWorker,
    QueuedWithdrawn,
    SendChunk,
    Started,
    StartWorker,
    StopWorker,
    StreamClosed,
    StreamLost,
    StreamOpened,
    Submitted,
    Tick,
    WithdrawQueued,
    WorkerExited,
    WorkerLost,
    WorkerReady,
)
from ._task import Chunk
from ._worker_setup import WorkerSetups
from ._worker_table import KILL_WAIT, TERMINATE_GRACE, WorkerRecord, WorkerTable

if TYPE_CHECKING:
    from typing import Any

    from ._stats import PoolStats


# ---- commands posted by caller threads ---------------------------------------------------
# Besides the scheduler's events that callers post as they are (see _Command), two that only
# the dispatcher acts on.


class _Terminate(NamedTuple):
    force: bool = False  # SIGKILL at once instead of SIGTERM first


class _StatsRequest:
    """Asks the dispatcher thread for a snapshot; answered exactly once, even at shut-down."""

    def __init__(self) -> None:
        self.answered = threading.Event()
        self.answer: PoolStats | None = None


# What caller threads post: the scheduler's events, handed to Scheduler.handle as they are,
# and the dispatcher's own commands.
_Command = Submitted | StreamOpened | StreamClosed | Close | Cancel | _Terminate | _StatsRequest


def _is_submission(command: _Command) -> bool:
    return isinstance(command, Submitted)


def _one_submission(run: list[_Command]) -> _Command:
    """Submissions posted one after another, as one (in their order)."""
    return Submitted(tuple(chunk for command in run if isinstance(command, Submitted)
                           for chunk in command.chunks))


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
        worker_policy: WorkerPolicy | None = None,
        *,
        worker_setup: WorkerSetupOptions | None = None,
        finish_at_exit: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._backend = backend
        # Every "now" the dispatcher acts on (deadlines, busy times) is read here: tests pass
        # a clock they move by hand.
        self._clock = clock
        # At interpreter exit: finish the submitted work (the executor's contract) or
        # terminate (the Pool's).
        self.finish_at_exit = finish_at_exit
        self._scheduler = Scheduler(processes, worker_policy, split=_split_chunk)
        # From any thread to the dispatcher thread. Submissions posted one after another (a
        # loop of apply_async, submit) reach the scheduler as one: one dispatch round for all.
        self._inbox: Inbox[_Command] = Inbox(_is_submission, _one_submission)
        # --- owned by the dispatcher thread
        self._poller = Poller()
        self._segment_prefix = (shared_memory.parent_prefix(os.getpid())
                                if backend.shares_memory else None)
        if self._segment_prefix is not None:
            janitor.watch_segments(self._segment_prefix)  # removed even if we are killed
        setups = WorkerSetups(worker_setup or WorkerSetupOptions(), backend,
                              _worker_init(initializer, tuple(initargs), backend),
                              reports_rss=worker_policy is not None
                              and worker_policy.max_memory is not None)
        self._workers = WorkerTable(backend, setups, self._segment_prefix,
                                    self._inbox.private_fds())
        self._delivery = Delivery()  # every outcome leaves through it, and is counted there
        # --- read by anyone
        self.finished = threading.Event()  # set once it has shut down
        self._owner_pid = os.getpid()
        # User callbacks (Pool callbacks, executor done-callbacks) run here, never on the
        # dispatcher thread; stopped once the dispatcher has delivered its last outcome.
        # Workers' forwarded log records and prints are handled there too.
        self.callbacks = CallbackRunner()
        self.forwarded = Forwarded(self.callbacks)
        self._thread = threading.Thread(target=self._run, name="procpool-dispatcher", daemon=True)
        try:
            # Start the first workers before the dispatcher thread exists: a fork from a
            # single-threaded parent is the safe kind. A start that fails here (too few
            # descriptors, no memory, no thread) fails the constructor, leaving nothing.
            for action in self._scheduler.handle(Started(), self._clock()):
                assert isinstance(action, StartWorker)
                self._workers.start(action.worker_id, action.place)
            threads.start(self._thread)  # with SIGINT blocked (_threads.py)
        except BaseException:
            self._workers.kill_all(force=True)
            self._shut_down()
            raise
        _live_dispatchers.add(self)

    # ---- the faces' side (any thread) ------------------------------------------------------

    @property
    def broken(self) -> BaseException | None:
        """What broke the pool (or terminated it), if anything: the scheduler's verdict, read
        from any thread."""
        return self._scheduler.broken

    @property
    def inherits_memory(self) -> bool:
        return self._backend.inherits_memory

    @property
    def imports_main(self) -> bool:
        return self._backend.imports_main

    @property
    def segment_prefix(self) -> str | None:
        """How this pool's shared-memory segments are named; None when its workers cannot map
        them (the large buffers of its payloads then travel in the pickle)."""
        return self._segment_prefix

    def worker_pids(self) -> list[int | None]:
        """From any thread: the table's published snapshot, never its live dicts."""
        return list(self._workers.pids)

    def submit(self, chunks: Iterable[Chunk]) -> None:
        self._post(Submitted(tuple(chunks)))

    def stream_opened(self) -> None:
        """A job will keep submitting (imap's input is being read); close() must wait for it."""
        self._post(StreamOpened())

    def stream_closed(self) -> None:
        self._post(StreamClosed())

    def close(self) -> None:
        """Finish every submitted chunk, then stop the workers and the dispatcher thread."""
        self._post(Close())

    def terminate(self, *, force: bool = False) -> None:
        """Fail everything not yet finished, kill the workers (SIGTERM, then SIGKILL after a
        grace period; at once with ``force``), end the dispatcher thread."""
        self._post(_Terminate(force))

    def cancel(self, chunk: Chunk) -> None:
        """Drop ``chunk`` if it has not started; kill its worker if it is running."""
        self._post(Cancel(chunk))

    def stats(self) -> PoolStats:
        """A consistent snapshot, taken by the dispatcher thread between two events."""
        if threading.current_thread() is self._thread:
            return self._stats_now()
        request = _StatsRequest()
        if self._post(request):
            request.answered.wait()  # answered by the loop, or by _shut_down if it ends first
            assert request.answer is not None
            return request.answer
        self._thread.join()  # it is ending: once it has, its state is ours to read
        return self._stats_now()

    def sync(self) -> None:
        """Return once the dispatcher thread has handled every command posted before this
        call (or has ended)."""
        self.stats()  # a round trip through the inbox, behind everything posted before it

    def join(self, timeout: float | None = None) -> bool:
        if threading.current_thread() is self._thread:
            raise RuntimeError("cannot join the pool from its own dispatcher thread")
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def defer_callbacks(self, job: Callable[[], None]) -> bool:
        """Run ``job`` (a future's done-callbacks) on the callback thread if it was called on
        the dispatcher thread, which must never run user code; False: run it yourself."""
        if threading.current_thread() is not self._thread:
            return False
        self.callbacks.post(job)
        return True

    def _post(self, command: _Command) -> bool:
        """Queue a command for the dispatcher thread; False if it has finished already (a
        submission is then failed here)."""
        accept = (self._delivery.accepting(command.chunks) if isinstance(command, Submitted)
                  else None)
        accepted = self._inbox.post(command, accept)
        if not accepted and isinstance(command, Submitted):
            error = self.broken or PoolTerminated("the pool is no longer running")
            for chunk in command.chunks:
                chunk.left_queue()
                chunk.sink.chunk_failed(chunk, error)
        return accepted

    # ---- the dispatcher thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._is_done():
                self._wait_and_handle()
        except BaseException as exc:  # a bug here must fail the work, never hang it
            logger().exception("procpool dispatcher crashed; failing all outstanding work")
            error = PoolBroken(f"internal error in the pool's dispatcher: {exc!r}")
            error.__cause__ = exc
            self._break(error)
        finally:
            self._shut_down()

    def _is_done(self) -> bool:
        return self._scheduler.is_drained() and not self._workers

    def _wait_and_handle(self) -> None:
        ready = self._poller.wait([self._inbox.waitable, *self._workers.waitables()],
                                  self._time_to_next_deadline())
        if self._inbox.waitable in ready:
            self._handle_commands()
        # Each pipe is read once a round, even if a reply moves its worker from active to
        # retiring meanwhile: a second read of a pipe the first emptied would wait. A retiring
        # worker's pipe is read too: it may log or print as it stops.
        for record in [r for r in self._workers.records() if r.handle.connection in ready]:
            if self._workers.worth_reading(record):
                self._receive(record)
        for record in list(self._workers.active.values()):
            if record.handle.sentinel in ready:
                self._worker_ended(record)
        for record in self._workers.retired(ready):
            self._drain(record)
            self._workers.release(record)
            self._tell(WorkerExited(record.worker_id), self._clock())
        # Chunks queued on busy workers this round, each worker's in one write: a worker
        # asleep on its pipe is woken once for them all. Before the deadlines: none may pass
        # for a chunk its worker has not been given.
        self._workers.flush()
        self._handle_deadlines()

    def _time_to_next_deadline(self) -> float | None:
        deadline = self._scheduler.next_deadline()  # every deadline of the pool is its
        return None if deadline is None else max(0.0, deadline - self._clock())

    def _handle_deadlines(self) -> None:
        """Tell the scheduler the time when a deadline is due (a Tick before any is due
        changes nothing, and a round of tiny chunks would pay for it twice)."""
        deadline = self._scheduler.next_deadline()
        if deadline is not None:
            now = self._clock()
            if deadline <= now:
                self._tell(Tick(), now)

    def _handle_commands(self) -> None:
        for command in self._inbox.take():
            now = self._clock()
            if isinstance(command, _Terminate):
                self._break(PoolTerminated("the pool was terminated before this task finished"),
                            force=command.force)
                self._tell(Close(abandon_streams=True), now)
            elif isinstance(command, _StatsRequest):
                _answer(command, self._stats_now())
            else:  # one of the scheduler's events
                self._tell(command, now)

    def _receive(self, record: WorkerRecord) -> None:
        """Handle every reply the worker's pipe holds now (one read: never waits). Once a
        reply has retired the worker (or broken the pool), only its forwarded records and
        lines still count. A stream found corrupt costs that worker: what it reported before
        stands, but the scheduler dooms it first, so those replies give it no more work."""
        messages, corrupt = self._workers.replies(record)
        if corrupt is not None and self._workers.is_listening(record):
            self._tell(StreamLost(record.worker_id), self._clock())
        for message in messages:
            if isinstance(message, (Logged, Printed)):
                self.forwarded.received(message)
            elif self._workers.is_listening(record):
                self._handle_reply(record, message)
        if corrupt is not None:
            self._workers.lose_stream(record, corrupt)

    def _drain(self, record: WorkerRecord) -> None:
        """Read what an ended worker's pipe still holds: a chunk it finished is not lost, nor
        what it logged last."""
        while record.listening and not record.handle.connection.closed:
            try:
                if not record.handle.connection.poll():
                    break
            except (EOFError, OSError):
                break
            self._receive(record)

    def _handle_reply(self, record: WorkerRecord, message: Any) -> None:
        worker_id = record.worker_id
        now = self._clock()
        if isinstance(message, ChunkDone):  # the commonest first
            record.peak_rss = message.peak_rss
            chunk, _ = self._scheduler.running_on(worker_id)
            actions = self._scheduler.handle(
                ChunkFinished(worker_id, message.rss, message.seconds), now)
            if record.segments is not None:
                record.segments.chunk_done(chunk)
            # Give the worker its next chunk before decoding this one's results, also one
            # queued on it earlier in this round and not written yet: it runs from now. (The
            # held messages are the last chunks sent to it: the running one is among them
            # if they outnumber the queued ones.)
            self._carry_out_all(actions)
            if len(record.unsent) > self._scheduler.queued_on(worker_id):
                self._workers.flush(record)
            if message.results_payload:
                with self._delivery.failing_on_error(chunk):
                    self._delivery.chunk_reply(chunk, message.results_payload,
                                               message.failed_positions, message.result_segments)
        elif isinstance(message, ItemDone):
            # Which item this answers, asked before the scheduler moves the worker on.
            chunk, position = self._scheduler.running_on(worker_id)
            self._tell(ItemFinished(worker_id), now)
            if record.segments is not None:
                record.segments.results_read(chunk, len(message.result_segments))
            with self._delivery.failing_on_error(chunk.part(position, 1)):
                error = self._delivery.item_reply(chunk, position, message.result_payload,
                                                  message.result_segments)
                if error is not None:  # run it again, or fail it: the scheduler's choice
                    self._tell(ItemFailed(chunk, position, error), now)
        elif isinstance(message, Skipped):
            self._workers.skipped(record, message.number)
        elif isinstance(message, Ready):
            self._tell(WorkerReady(worker_id), now)
        elif isinstance(message, InitFailed):
            error = InitializerFailed(f"{type(message.error).__qualname__}: {message.error}")
            error.__cause__ = with_remote_traceback(message.error, message.traceback_text)
            self._break(error)

    def _worker_ended(self, record: WorkerRecord) -> None:
        self._drain(record)
        if self._workers.active.get(record.worker_id) is not record:
            return  # a reply above retired it, or broke the pool
        death = self._workers.lost(record)
        self._tell(WorkerLost(record.worker_id, death), self._clock())

    def _break(self, error: BaseException, *, force: bool = False) -> None:
        """Fail all work now and later, and end every worker (SIGTERM, then SIGKILL): a worker
        that is mid-chunk would otherwise finish it and block writing a result nobody reads."""
        self._tell(Break(error), self._clock())
        self._workers.kill_all(force=force)

    def _shut_down(self) -> None:
        leftovers = self._inbox.close()
        self.finished.set()
        error = self.broken or PoolTerminated("the pool is no longer running")
        for command in leftovers:
            if isinstance(command, Submitted):
                for chunk in command.chunks:
                    self._delivery.failed(chunk, error)
        for command in leftovers:
            if isinstance(command, _StatsRequest):
                _answer(command, self._stats_now())
        self._workers.close()
        try:
            self._backend.close()  # a Dask cluster the pool started, for one
        except Exception:
            logger().exception("procpool: closing the %s backend failed", self._backend.name)
        self._delivery.close()
        self.callbacks.stop(wait=False)  # after the callbacks of the last outcomes
        _live_dispatchers.discard(self)

    def _stats_now(self) -> PoolStats:
        """The scheduler's share, each worker's pid and memory, and the delivery counts."""
        # Imported at the first stats(): the public snapshot records are dataclasses, which
        # would otherwise cost every program's first import of procpool (dataclasses).
        from ._stats import snapshot

        workers = {worker_id: (record.handle.pid, record.peak_rss)
                   for worker_id, record in self._workers.active.items()}
        return snapshot(self._scheduler.stats(self._clock()), workers,
                        self._delivery.items_done, self._delivery.items_failed)

    def _tell(self, event: Event, now: float) -> None:
        """Tell the scheduler what happened and carry out what it answers."""
        self._carry_out_all(self._scheduler.handle(event, now))

    def _carry_out_all(self, actions: list[Action]) -> None:
        for action in actions:
            self._carry_out(action)

    def _carry_out(self, action: Action) -> None:
        if isinstance(action, SendChunk):
            action.chunk.left_queue()
            self._workers.send_chunk(action.worker_id, action.chunk, later=action.queued)
        elif isinstance(action, FailChunk):
            self._delivery.failed(action.chunk, action.error)
        elif isinstance(action, DropChunk):
            self._delivery.dropped(action.chunk)
        elif isinstance(action, StartWorker):
            self._start_worker(action.worker_id, action.place)
        elif isinstance(action, StopWorker):
            self._workers.retire(action.worker_id)
        elif isinstance(action, KillWorker):
            self._kill(action)
        elif isinstance(action, WithdrawQueued):
            self._withdraw(action.worker_id, action.queued)
        elif isinstance(action, BreakPool):
            self._break(action.error)

    def _withdraw(self, worker_id: int, queued: int) -> int | None:
        """Take back what the worker has not started of the ``queued`` chunks waiting in its
        pipe, and tell the scheduler how many (counted from the last): the table's answer."""
        taken = self._workers.withdraw(worker_id, queued)
        if taken:
            self._tell(QueuedWithdrawn(worker_id, taken), self._clock())
        return taken

    def _kill(self, action: KillWorker) -> None:
        """Kill a worker, once what is queued behind its running chunk is taken back; spare
        it if it has started one of those (then the running chunk is done). For the timeout
        of a chunk's first item, only ask since when it has been called: the scheduler
        orders the kill again if it stands."""
        if action.first_call_of is not None:
            since = self._workers.first_call_since(action.worker_id, action.first_call_of)
            self._tell(FirstCallBegan(action.worker_id, since), self._clock())
            return
        if action.queued:
            taken = self._withdraw(action.worker_id, action.queued)
            if taken is not None and taken < action.queued:
                self._tell(KillSpared(action.worker_id), self._clock())
                return
        self._workers.kill(action.worker_id)  # its sentinel then reports the death

    def _start_worker(self, worker_id: int, index: int) -> None:
        try:
            self._workers.start(worker_id, index)
        except Exception as exc:
            error = PoolBroken(f"could not start a worker process: {exc!r}")
            error.__cause__ = exc
            self._break(error)


def _worker_init(
    initializer: Callable[..., object] | None, initargs: tuple[Any, ...], backend: Backend
) -> WorkerInit | None:
    if initializer is None:
        return None
    function_payload, _ = dumps_callable(initializer, inherits_memory=backend.inherits_memory,
                                         imports_main=backend.imports_main)
    return WorkerInit(function_payload, initargs)


def _split_chunk(chunk: Chunk, position: int, size: int, attempt: int) -> Chunk:
    """A runnable chunk of ``size`` items of ``chunk`` from ``position`` (retries, requeues).

    Only chunks that report each item are split, and those keep their items in the pickle
    (Engine.make_chunk), so the parent still has them here."""
    assert chunk.segments is None, "a chunk with shared-memory items cannot be split"
    if position == 0 and size == chunk.size:
        payload = chunk.items_payload
    else:
        payload = dumps(loads(chunk.items_payload)[position : position + size])
    return chunk.part(position, size, payload, attempt)


def _answer(request: _StatsRequest, stats: PoolStats) -> None:
    request.answer = stats
    request.answered.set()


# Pools still running at interpreter exit are ended before multiprocessing's own exit handler
# joins their (daemon) workers: that join would hang on a task ignoring SIGTERM. Executors
# first finish what was submitted, as the stdlib's do.
_live_dispatchers: weakref.WeakSet[Dispatcher] = weakref.WeakSet()


def live_dispatchers() -> list[Dispatcher]:
    """The pools this process runs: only those it made (a child forked by user code inherits
    copies)."""
    return [d for d in list(_live_dispatchers) if d._owner_pid == os.getpid()]


@atexit.register
def _end_live_pools() -> None:
    mine = live_dispatchers()
    # A program ended by Ctrl-C (an uncaught KeyboardInterrupt, which the interpreter keeps
    # in sys.last_value) wants its work stopped, not finished: executors too are terminated.
    interrupted = isinstance(getattr(sys, "last_value", None), KeyboardInterrupt)
    finishing = [d for d in mine if d.finish_at_exit and not interrupted]
    for dispatcher in mine:
        if dispatcher in finishing:
            dispatcher.close()
        else:
            dispatcher.terminate()
    for dispatcher in mine:
        dispatcher.join(None if dispatcher in finishing else KILL_WAIT + TERMINATE_GRACE + 1)
