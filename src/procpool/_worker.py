"""The worker process: run the initializer, then receive a chunk, run it, send the outcome.

Owns nothing but its own pipe and its function cache. It must not import the dispatcher or the
pool faces: a worker that knows only messages starts fast and cannot deadlock on the parent's
machinery. Every failure of a task becomes data in the reply; only a crash or sys.exit() ends
the process, and the parent reads that from the exit status.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._codec import (
    describe_pickle_failure,
    dumps,
    format_remote_traceback,
    loads,
    portable_exception,
    short_repr,
)
from ._errors import ResultSerializationError, SerializationError
from ._task import CallMode, ChunkDone, InitFailed, ItemFailure, Ready, RunChunk, Stop

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

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


def worker_main(
    conn: Connection, init_payload: bytes | None, fds_to_close: tuple[int, ...] = ()
) -> None:
    """Entry point of every worker process (and of the inline backend's worker thread)."""
    for fd in fds_to_close:
        # Forked workers inherit the parent's ends of the other workers' pipes; holding them
        # would keep those workers from ever seeing EOF when the parent dies.
        with contextlib.suppress(OSError):
            os.close(fd)
    if fds_to_close or _is_process_main():
        # Ctrl-C in a terminal reaches the whole process group; the parent decides what a
        # KeyboardInterrupt means, workers must not print a traceback for it.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if init_payload is not None and not _run_initializer(conn, init_payload):
        return
    conn.send_bytes(dumps(Ready(os.getpid())))
    functions = FunctionCache()
    while True:
        try:
            message = loads(conn.recv_bytes())
        except (EOFError, OSError):
            return  # the parent closed our pipe or died: nobody wants our results
        if isinstance(message, Stop):
            return
        assert isinstance(message, RunChunk), message
        results = _run_chunk(message, functions)
        reply = ChunkDone(message.chunk_id, _encode_results(results), peak_rss())
        try:
            conn.send_bytes(dumps(reply))
        except (EOFError, OSError):
            return


def _is_process_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _run_initializer(conn: Connection, init_payload: bytes) -> bool:
    try:
        function_payload, initargs = loads(init_payload)
        initializer = loads(function_payload)
        initializer(*initargs)
    except Exception as exc:
        error = portable_exception(exc)
        conn.send_bytes(dumps(InitFailed(error, format_remote_traceback(exc))))
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
                    f"({describe_pickle_failure(exc)}); is its module importable in the "
                    "worker process?",
                )
            )
        functions.add(message.function_id, loaded)
    function = functions.use(message.function_id)
    if isinstance(function, _Unloadable):
        raise function.error
    return function  # type: ignore[no-any-return]


def _run_chunk(message: RunChunk, functions: FunctionCache) -> list[Any]:
    try:
        function = _load_function(message, functions)
        try:
            items = loads(message.items_payload)
        except Exception as exc:
            raise SerializationError(
                "arguments",
                "they were pickled, but the worker could not unpickle them "
                f"({describe_pickle_failure(exc)})",
            ) from exc
    except Exception as exc:
        # Cannot run any item: report it once per item so every waiter gets an answer.
        failure = ItemFailure(portable_exception(exc), format_remote_traceback(exc))
        return [failure] * message.size
    results: list[Any] = []
    append = results.append
    mode = message.mode
    for item in items:
        try:
            if mode is CallMode.ONE_ARG:
                append(function(item))
            elif mode is CallMode.STAR_ARGS:
                append(function(*item))
            else:
                args, kwargs = item
                append(function(*args, **kwargs))
        except Exception as exc:
            append(ItemFailure(portable_exception(exc), format_remote_traceback(exc)))
    return results


def _encode_results(results: list[Any]) -> bytes:
    try:
        return dumps(results)
    except Exception:
        pass
    # Find the culprits one by one, so only they fail and every other item is delivered.
    checked: list[Any] = []
    for value in results:
        try:
            dumps(value)
        except Exception as exc:
            value = ItemFailure(
                ResultSerializationError(short_repr(value), describe_pickle_failure(exc)), ""
            )
        checked.append(value)
    return dumps(checked)
