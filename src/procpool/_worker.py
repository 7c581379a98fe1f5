"""The worker process: run the initializer, then receive a chunk, run it, send the outcome.

Owns nothing but its own pipe, its lifeline and its function cache. It must not import the
dispatcher or the pool faces: a worker that knows only messages starts fast and cannot deadlock
on the parent's machinery. Every failure of a task becomes data in the reply; only a crash or
sys.exit() ends the process, and the parent reads that from the exit status.

A process worker leads its own process group, so that killing the group takes every process its
tasks started, and so that Ctrl-C in a terminal (sent to the foreground group) reaches only the
parent. A thread watches the lifeline pipe: when the parent dies, the worker kills its group.
"""

from __future__ import annotations

import _thread
import contextlib
import functools
import os
import signal
import sys
import time
from collections import OrderedDict
from collections.abc import Callable

from . import _shared_memory as shared_memory
from . import _worker_identity as identity
from ._codec import (
    describe_pickle_failure,
    dumps,
    format_remote_traceback,
    loads,
    portable_exception,
    short_repr,
)
from ._framing import FrameWriter
from ._messages import (
    CallMode,
    ChunkDone,
    InitFailed,
    ItemDone,
    ItemFailure,
    Ready,
    RunChunk,
    Skipped,
    Stop,
    WorkerInit,
    WorkerSetup,
    decode,
    encode,
)
from ._on_import import when_imported
from ._worker_errors import SerializationError

TYPE_CHECKING = False  # not typing's: a worker must not import typing to start (_messages.py)
if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from typing import Any, Protocol

# How many task functions a worker keeps. The dispatcher mirrors this cache exactly (same size,
# same order of use), so it knows which functions it must send with a chunk.
FUNCTION_CACHE_SIZE = 64

try:
    import resource

    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    _RSS_UNIT = 1 if sys.platform == "darwin" else 1024

    def peak_rss() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _RSS_UNIT

except ImportError:  # pragma: no cover - not on POSIX

    def peak_rss() -> int:
        return 0


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss() -> int:
    """Resident memory now, in bytes (Linux: /proc/self/statm; elsewhere the peak)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return peak_rss()


class FunctionCache:
    """A bounded, least-recently-used map of function id -> function.

    Lives in the worker (holding functions) and in the dispatcher (holding nothing, only ids);
    both see the same sequence of uses, so they always agree on what the worker holds.
    """

    def __init__(self, size: int = FUNCTION_CACHE_SIZE) -> None:
        self._size = size
        self._entries: OrderedDict[int, Any] = OrderedDict()

    def __contains__(self, function_id: int) -> bool:
        return function_id in self._entries

    def use(self, function_id: int) -> Any:
        self._entries.move_to_end(function_id)
        return self._entries[function_id]

    def add(self, function_id: int, value: Any) -> None:
        self._entries[function_id] = value
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)


class _Unloadable:
    """Stands in the cache for a function that failed to unpickle in this worker."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


# Sends what tasks printed without a final newline, when the pool forwards their output.
_send_unfinished_lines: Callable[[], None] | None = None
def worker_main(
    conn: Connection,
    setup: WorkerSetup,
    fds_to_close: tuple[int, ...] = (),
    lifeline: Connection | None = None,
) -> None:
    """Entry point of every worker process (``lifeline`` given) and of the inline backend's
    worker threads (no lifeline: they share the parent's life)."""
    global _send_unfinished_lines
    for fd in fds_to_close:
        # Forked workers inherit the parent's ends of the other workers' pipes and lifelines;
        # holding them would keep those workers from seeing EOF when the parent dies.
        with contextlib.suppress(OSError):
            os.close(fd)
    # Before anything of the user's runs here: the initializer, a function's module import.
    # (Under spawn and forkserver they were set before the main module's import already.)
    identity.apply_env(setup.env)
    identity.become(setup.worker_index, thread_only=lifeline is None)
    if lifeline is not None:
        _become_process_group_leader()
        # Not threading.Thread: its start() waits until the new thread runs, which behind
        # the other starting workers took up to 3 ms of the worker's start.
        _thread.start_new_thread(_die_with_parent, (lifeline,))
    replies = FrameWriter(conn)
    if setup.forward_output:
        from . import _worker_output

        _worker_output.install(replies)
        _send_unfinished_lines = _worker_output.send_unfinished_lines
    if setup.log_levels is not None:
        # As soon as logging is imported (now, if it is): no record can be made before.
        when_imported("logging", lambda: _forward_logs(setup, replies))
    if setup.init is not None:
        if not _run_initializer(replies, setup.init):
            return
        if setup.log_levels is not None and "logging" in sys.modules:
            from . import _worker_logs

            _worker_logs.initializer_done(setup)
    replies.send_bytes(encode(Ready(os.getpid())))
    functions = FunctionCache()
    received = 0  # chunks, counted as the parent counts what it sends (procpool._claims)
    while True:
        try:
            message = decode(conn.recv_bytes())
        except (EOFError, OSError):
            return  # the parent closed our pipe or died: nobody wants our results
        if isinstance(message, Stop):
            if _send_unfinished_lines is not None:
                _send_unfinished_lines()
            return
        assert isinstance(message, RunChunk), message
        received += 1
        try:
            if (message.withdrawable and setup.claims is not None
                    and not setup.claims.take(received)):
                _skip_withdrawn(replies, message, functions, received)
                continue
            calling = (None if setup.claims is None or not message.report_each_item
                       else functools.partial(setup.claims.calling, message.chunk_id))
            _run_chunk(replies, message, functions, reports_rss=setup.reports_rss,
                       calling=calling)
        except (EOFError, OSError):
            return  # the parent is gone mid-chunk


def _forward_logs(setup: WorkerSetup, replies: _Sender) -> None:
    """Send the worker's log records to the parent from now on (run as logging is imported:
    what goes wrong here must not fail that import, so it is reported and forwarding is off)."""
    try:
        from . import _worker_logs

        _worker_logs.install(setup, replies)
    except Exception as exc:
        print(f"procpool: worker {setup.worker_index} cannot forward its log records: {exc!r}",
              file=sys.__stderr__)


def _become_process_group_leader() -> None:
    with contextlib.suppress(OSError):  # not permitted for a session leader: then kills
        os.setpgid(0, 0)                # reach only this process
    # Also for the window before setpgid, and a worker left in the terminal's group: the
    # parent decides what Ctrl-C means, and workers must not print tracebacks for it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Started from a thread of the parent's that blocks SIGINT (_threads.py), it inherited that
    # mask: unblocked, its own children see the parent's usual mask, SIGINT only ignored.
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    # A forked worker inherits the parent's Python-level SIGTERM handler (a program that
    # turns SIGTERM into a clean exit, say). terminate() means "die" to a worker: default.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


# The start of the names of the parent's shared-memory segments, once a chunk has said it.
_segment_prefix: str | None = None


def _die_with_parent(lifeline: Connection) -> None:
    """Block until the parent's end of the lifeline closes, then kill this process group.

    Nobody will read the shared-memory segments named after the dead parent, or remove them:
    the first worker to get here does."""
    with contextlib.suppress(EOFError, OSError):
        lifeline.recv_bytes()
    try:
        if _segment_prefix is not None:
            shared_memory.remove_all_of(_segment_prefix)
        if os.getpgid(0) == os.getpid():
            os.killpg(os.getpid(), signal.SIGKILL)  # this worker and what its tasks started
    finally:
        os._exit(1)


if TYPE_CHECKING:

    class _Sender(Protocol):
        """Where a chunk's replies go: the worker's pipe, or a list (run_detached)."""

        def send_bytes(self, data: bytes, /) -> None: ...


def _run_initializer(conn: _Sender, init: WorkerInit) -> bool:
    try:
        initializer = loads(init.function_payload)
        initializer(*init.initargs)
    except Exception as exc:
        error = portable_exception(exc)
        conn.send_bytes(encode(InitFailed(error, format_remote_traceback(exc))))
        return False
    return True


def _load_function(message: RunChunk, functions: FunctionCache) -> Callable[..., Any]:
    if message.function_payload is not None:
        try:
            loaded: Any = loads(message.function_payload)
        except Exception as exc:
            loaded = _Unloadable(
                SerializationError(
                    "function",
                    "it was pickled, but the worker could not unpickle it "
                    f"({describe_pickle_failure(exc)})",
                )
            )
        functions.add(message.function_id, loaded)
    function = functions.use(message.function_id)
    if isinstance(function, _Unloadable):
        raise function.error
    return function  # type: ignore[no-any-return]


def _skip_withdrawn(conn: _Sender, message: RunChunk, functions: FunctionCache,
                    number: int) -> None:
    """The parent took this queued chunk, the worker's ``number``-th, back while the one
    before it ran (it runs elsewhere): nothing of it runs here; the parent is told, so that
    it can let go of its claim. Its function is cached as if it had run, as the dispatcher's
    mirror of the cache expects."""
    with contextlib.suppress(Exception):  # unloadable: what a chunk that uses it will say
        _load_function(message, functions)
    conn.send_bytes(encode(Skipped(number)))


def _run_chunk(conn: _Sender, message: RunChunk, functions: FunctionCache, *,
               reports_rss: bool = True, calling: Callable[[], None] | None = None) -> None:
    """Run every item; reply with ItemDone per item (when asked) and a closing ChunkDone,
    with the resident memory now if ``reports_rss`` (else 0). ``calling`` is called once the
    function and the items are loaded, as the first item is called (its timeout counts from
    then: procpool._claims)."""
    global _segment_prefix
    started = time.perf_counter()
    results_names = None
    caught = _CAUGHT_WITH_EXIT if message.exit_fails_task else _CAUGHT
    if message.segment_prefix is not None:
        _segment_prefix = message.segment_prefix
        results_names = shared_memory.SegmentNames(
            f"{message.segment_prefix}{message.chunk_id}-r")
    arguments = shared_memory.ChunkArguments(message.items_segments)
    try:
        try:
            # The function first, always: the dispatcher's mirror of the cache counts on it.
            function = _load_function(message, functions)
            items = _load_items(message, arguments)
            call = _call_form(function, CallMode(message.mode))
        except Exception as exc:
            # Cannot run any item: the same failure for each, so every waiter gets an answer.
            outcomes, failed = [_failure(exc)] * message.size, list(range(message.size))
        else:
            if calling is not None:
                calling()
            if message.report_each_item:
                for position, item in enumerate(items):
                    payload, _, names = _encode_results(*_run_all(call, [item], caught),
                                                        results_names, caught)
                    conn.send_bytes(encode(ItemDone(message.chunk_id, position, payload,
                                                    names)))
                outcomes, failed = [], []
            else:
                outcomes, failed = _run_all(call, items, caught)
            del items  # the argument segments' mappings can go before the results are written
        if _send_unfinished_lines is not None:
            _send_unfinished_lines()  # what the chunk printed comes before its results
        payload, failed_positions, names = (
            _encode_results(outcomes, failed, results_names, caught,
                            arguments.idle() if results_names is not None else None)
            if outcomes else (b"", (), ()))
    finally:
        arguments.release()
    rss = current_rss() if reports_rss else 0
    conn.send_bytes(encode(ChunkDone(message.chunk_id, payload, failed_positions, rss,
                                    peak_rss(), time.perf_counter() - started, names)))


def _load_items(message: RunChunk, arguments: shared_memory.ChunkArguments) -> list[Any]:
    try:
        return arguments.load(message.items_payload)  # type: ignore[no-any-return]
    except Exception as exc:
        raise SerializationError(
            "arguments",
            "they were pickled, but the worker could not unpickle them "
            f"({describe_pickle_failure(exc)})",
        ) from exc


# ---- detached: one chunk as a task of another scheduler (the Dask backend) -----------------

# The pools whose initializer has run in this process (a Dask worker serves many chunks of
# many pools; each pool's initializer runs once per process, as in a pool's own worker).
_initialized_pools: set[str] = set()


class _Replies:
    """Stands in for the pipe: collects the messages a chunk would have sent."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    def send_bytes(self, data: bytes) -> None:
        self.messages.append(data)


def run_detached(pool_key: str, init: WorkerInit | None, message: RunChunk,
                 index: int = 0) -> tuple[int | None, list[bytes]]:
    """Run one chunk in this process as pool worker ``index`` would, returning its replies
    (Ready aside).

    The first value is an exit status when the task called sys.exit(), which in a pool's own
    worker ends the process; here the process belongs to another scheduler, so the caller is
    told instead. ``message`` carries its function's payload.
    """
    replies = _Replies()
    identity.become(index, thread_only=True)  # the process serves other pools' chunks too
    try:
        if init is not None and pool_key not in _initialized_pools:
            if not _run_initializer(replies, init):
                return None, replies.messages
            _initialized_pools.add(pool_key)
        _run_chunk(replies, message, FunctionCache())
    except SystemExit as exc:
        code = exc.code
        return (code if isinstance(code, int) else 0 if code is None else 1), replies.messages
    finally:
        identity.leave_thread()
    return None, replies.messages


def _call_form(function: Callable[..., Any], mode: CallMode) -> Callable[[Any], Any]:
    """One callable per chunk that takes an item, so the item loop makes no decisions."""
    if mode is CallMode.ONE_ARG:
        return function
    if mode is CallMode.STAR_ARGS:
        return lambda item: function(*item)
    return lambda item: function(*item[0], **item[1])


# What a task may raise and still fail alone: its exceptions, and with exit_fails_task its
# SystemExit too (anything else, KeyboardInterrupt say, ends the worker).
_CAUGHT: tuple[type[BaseException], ...] = (Exception,)
_CAUGHT_WITH_EXIT: tuple[type[BaseException], ...] = (Exception, SystemExit)


def _run_all(call: Callable[[Any], Any], items: list[Any],
             caught: tuple[type[BaseException], ...] = _CAUGHT,
             ) -> tuple[list[Any], list[int]]:
    """Each item's value or ItemFailure, and the positions that failed.

    The hot loop for chunks of tiny tasks runs in C: ``list.extend`` over ``map``. When a call
    raises, extend has kept every value before it, and the map object goes on with the next
    item, so the failure is recorded at its position and the loop resumes where it stopped.
    """
    outcomes: list[Any] = []
    failed: list[int] = []
    calls = map(call, items)
    while True:
        try:
            outcomes.extend(calls)
            return outcomes, failed
        except caught as exc:
            failed.append(len(outcomes))
            outcomes.append(_failure(exc))


def _failure(exc: BaseException) -> ItemFailure:
    return ItemFailure(portable_exception(exc), format_remote_traceback(exc))


def _encode_results(outcomes: list[Any], failed: list[int],
                    names: shared_memory.SegmentNames | None = None,
                    caught: tuple[type[BaseException], ...] = _CAUGHT,
                    reusable: list[str] | None = None,
                    ) -> tuple[bytes, tuple[int, ...], tuple[str, ...]]:
    """Pickle the outcomes; return the payload, the positions that hold failures, and the
    shared-memory segments of their large buffers (only when ``names`` are given; written over
    the ``reusable`` argument segments while they last). Pickling runs the results' own code:
    what it raises, of ``caught``, fails that result alone."""
    try:
        if names is None:
            return dumps(outcomes), tuple(failed), ()
        payload, segments = shared_memory.dumps(outcomes, names, reusable)
        return payload, tuple(failed), segments
    except caught:
        pass
    # Find the culprits one by one, so only they fail and every other item is delivered.
    checked: list[Any] = []
    for value in outcomes:
        try:
            dumps(value)
        except caught as exc:
            # A SystemExit (caught with exit_fails_task) is the task's own error, as in
            # concurrent.futures; anything else, a result that cannot travel.
            from ._result_errors import ResultSerializationError  # not at start: heavy

            value = _failure(exc) if isinstance(exc, SystemExit) else ItemFailure(
                ResultSerializationError(short_repr(value), describe_pickle_failure(exc)), "")
        checked.append(value)
    return (dumps(checked), tuple(i for i, v in enumerate(checked) if type(v) is ItemFailure),
            ())
