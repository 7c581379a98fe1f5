"""Pure scheduling decisions: which chunk goes to which worker, who is replaced, when to stop.

Owns the queue of pending chunks and the record of what each worker holds. It is told what
happened (submitted, done, lost, closing) and answers with actions for the dispatcher to carry
out. No threads, pipes, processes or clocks: tests drive it directly (tests/test_scheduler.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from ._task import Chunk

# ---- actions --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartWorker:
    worker_id: int


@dataclass(frozen=True, slots=True)
class SendChunk:
    worker_id: int
    chunk: Chunk


@dataclass(frozen=True, slots=True)
class StopWorker:
    """Ask a worker to exit once idle (recycling or shutdown); its exit is not a death."""

    worker_id: int


@dataclass(frozen=True, slots=True)
class FailChunk:
    chunk: Chunk
    error: BaseException


Action = StartWorker | SendChunk | StopWorker | FailChunk


@dataclass(slots=True)
class _WorkerSlot:
    running: Chunk | None = None
    chunks_done: int = 0


class Scheduler:
    """Keeps ``processes`` workers busy with chunks in submission order (FIFO).

    A worker holds at most one chunk, so when it dies exactly that chunk is lost.
    """

    def __init__(self, processes: int, max_tasks_per_worker: int | None = None) -> None:
        self.processes = processes
        self.max_tasks_per_worker = max_tasks_per_worker
        self.pending: deque[Chunk] = deque()
        self.workers: dict[int, _WorkerSlot] = {}
        self._idle: deque[int] = deque()
        self._next_worker_id = 0
        self.open_streams = 0
        self.closing = False
        self.broken: BaseException | None = None

    # ---- queries -------------------------------------------------------------------------

    @property
    def running(self) -> dict[int, Chunk]:
        return {wid: s.running for wid, s in self.workers.items() if s.running is not None}

    def has_work(self) -> bool:
        return bool(self.pending) or self.open_streams > 0 or any(
            s.running is not None for s in self.workers.values()
        )

    def is_drained(self) -> bool:
        """Closing, nothing left to run, and every worker asked to stop."""
        return self.closing and not self.has_work() and not self.workers

    # ---- events --------------------------------------------------------------------------

    def start(self) -> list[Action]:
        return [self._new_worker() for _ in range(self.processes)]

    def submit(self, chunks: Iterable[Chunk]) -> list[Action]:
        if self.broken is not None:
            return [FailChunk(chunk, self.broken) for chunk in chunks]
        self.pending.extend(chunks)
        return self._dispatch()

    def stream_opened(self) -> None:
        self.open_streams += 1

    def stream_closed(self) -> list[Action]:
        self.open_streams = max(0, self.open_streams - 1)
        return self._dispatch()

    def chunk_done(self, worker_id: int) -> tuple[Chunk, list[Action]]:
        slot = self.workers[worker_id]
        chunk = slot.running
        assert chunk is not None, f"worker {worker_id} reported a chunk it was not given"
        slot.running = None
        slot.chunks_done += 1
        actions: list[Action] = []
        limit = self.max_tasks_per_worker
        if limit is not None and slot.chunks_done >= limit:
            del self.workers[worker_id]
            actions.append(StopWorker(worker_id))
            if not self.closing or self.has_work():
                actions.append(self._new_worker())
        else:
            self._idle.append(worker_id)
        actions += self._dispatch()
        return chunk, actions

    def worker_lost(self, worker_id: int, error: BaseException) -> list[Action]:
        """A worker ended without being asked to; fail what it held and replace it."""
        slot = self.workers.pop(worker_id, None)
        if slot is None:
            return []  # it was retiring already
        if worker_id in self._idle:
            self._idle.remove(worker_id)
        actions: list[Action] = []
        if slot.running is not None:
            actions.append(FailChunk(slot.running, error))
        if self.broken is None and (not self.closing or self.has_work()):
            actions.append(self._new_worker())
        actions += self._dispatch()
        return actions

    def break_pool(self, error: BaseException) -> list[Action]:
        """Nothing can run any more: fail every chunk, pending or running; stop all workers."""
        self.broken = error
        actions: list[Action] = [FailChunk(chunk, error) for chunk in self.pending]
        self.pending.clear()
        for worker_id, slot in self.workers.items():
            if slot.running is not None:
                actions.append(FailChunk(slot.running, error))
            actions.append(StopWorker(worker_id))
        self.workers.clear()
        self._idle.clear()
        return actions

    def close(self, *, abandon_streams: bool = False) -> list[Action]:
        """Stop once the work is done; with ``abandon_streams``, open streams no longer count
        (terminate: whatever they still submit fails at once)."""
        self.closing = True
        if abandon_streams:
            self.open_streams = 0
        return self._dispatch()

    # ---- internals -----------------------------------------------------------------------

    def _new_worker(self) -> StartWorker:
        worker_id = self._next_worker_id
        self._next_worker_id += 1
        self.workers[worker_id] = _WorkerSlot()
        self._idle.append(worker_id)
        return StartWorker(worker_id)

    def _dispatch(self) -> list[Action]:
        actions: list[Action] = []
        # Work waiting means a full complement of workers, even if they were all stopped
        # already (a submission racing with close() from another thread).
        while self.pending and self.broken is None and len(self.workers) < self.processes:
            actions.append(self._new_worker())
        while self.pending and self._idle:
            worker_id = self._idle.popleft()
            chunk = self.pending.popleft()
            self.workers[worker_id].running = chunk
            actions.append(SendChunk(worker_id, chunk))
        if self.closing and not self.has_work():
            actions += [StopWorker(worker_id) for worker_id in self.workers]
            self.workers.clear()
            self._idle.clear()
        return actions
