"""Serialization of everything that crosses a process boundary: functions, data, exceptions.

Owns the choice between plain pickle (protocol 5, fast, by reference) and cloudpickle (by value,
for lambdas, closures and interactively defined code). Imported by the worker, so it must stay
small: cloudpickle is imported only when it is needed.

cloudpickle carries code by value; it is never a fallback for data. Its pickler also converts
some objects that plain pickle refuses into something else (an open text file into a StringIO of
its contents, a memoryview into bytes): ``dumps_by_value`` uses a subclass that keeps only the
reductions that rebuild an object of the same type, so such data fails with the error the
stdlib raises (``TypeError: cannot pickle '_io.TextIOWrapper' object``) instead of arriving as
another type.
"""

from __future__ import annotations

import io
import pickle
import sys
import types

from ._worker_errors import RemoteError

TYPE_CHECKING = False  # not typing's: a worker must not import typing to start (_messages.py)
if TYPE_CHECKING:
    from typing import Any

PROTOCOL = 5


def dumps(obj: Any) -> bytes:
    """Pickle ``obj``, falling back to cloudpickle for what plain pickle cannot carry.

    Raises what ``dumps_by_value`` raises when neither can pickle it: for data plain pickle
    refuses, the stdlib's own exception.
    """
    try:
        return pickle.dumps(obj, PROTOCOL)
    except Exception:  # pickle raises PicklingError, TypeError, AttributeError, ...
        pass
    return dumps_by_value(obj)  # outside the handler: its error is the only one reported


def pickled_size(obj: Any) -> int:
    """How many bytes ``obj`` takes to send: its pickle and its buffers, whichever way they
    travel (no segment is written); 0 when it cannot be pickled (its sending says why)."""
    buffers = 0

    def measure(buffer: pickle.PickleBuffer) -> bool:
        nonlocal buffers
        buffers += memoryview(buffer).nbytes
        return False  # out of band: measured, not copied

    try:
        return len(pickle.dumps(obj, PROTOCOL, buffer_callback=measure)) + buffers
    except Exception:
        return 0


def dumps_by_value(obj: Any, buffer_callback: Any = None) -> bytes:
    """Pickle ``obj`` with cloudpickle: functions, classes and modules that cannot be named
    travel by value; everything else exactly as plain pickle would carry it, or not at all.

    ``buffer_callback`` is pickle's (protocol 5 out-of-band buffers).
    """
    file = io.BytesIO()
    _by_value_pickler()(file, PROTOCOL, buffer_callback=buffer_callback).dump(obj)
    return file.getvalue()


_ByValuePickler: Any = None


def _by_value_pickler() -> Any:
    """cloudpickle's Pickler, less the reductions that change the type of what they carry.

    cloudpickle's own reductions are its ``reducer_override`` (functions and classes by value,
    which is what it is for) and its ``dispatch_table`` (by exact type). Two entries of that
    table turn data plain pickle refuses into data of another type: a text file opened for
    reading becomes a ``StringIO`` of its contents, a ``memoryview`` becomes ``bytes``. Those
    are left out, so such data is pickled as plain pickle does it, which raises the stdlib's
    error; every reduction that code travelling by value needs is kept.
    """
    global _ByValuePickler
    if _ByValuePickler is None:
        import copyreg
        from collections import ChainMap

        import cloudpickle

        table = {kind: reduce for kind, reduce in cloudpickle.Pickler.dispatch_table.items()
                 if kind not in (io.TextIOWrapper, memoryview)}
        table[io.TextIOWrapper] = _standard_stream_reduce

        class ByValuePickler(cloudpickle.Pickler):  # type: ignore[misc]
            dispatch_table = ChainMap(table, copyreg.dispatch_table)
            dispatch = dispatch_table  # cloudpickle's alias, kept in step

        _ByValuePickler = ByValuePickler
    return _ByValuePickler


def _standard_stream_reduce(stream: Any) -> Any:
    """sys.stdout and sys.stderr go by name (the receiver's own), as cloudpickle sends them;
    any other text file fails as plain pickle fails on it."""
    if stream is sys.stdout:
        return getattr, (sys, "stdout")
    if stream is sys.stderr:
        return getattr, (sys, "stderr")
    return stream.__reduce_ex__(PROTOCOL)  # raises the stdlib's TypeError


loads = pickle.loads


def _main_module_is_importable() -> bool:
    # Under spawn and forkserver multiprocessing re-imports the parent's main *file* in each
    # child; code typed at a prompt, piped to stdin or passed with -c exists nowhere to import.
    main = sys.modules.get("__main__")
    return bool(getattr(main, "__file__", None))


def dumps_callable(fn: Any, *, inherits_memory: bool, imports_main: bool) -> tuple[bytes, bool]:
    """Pickle a task function; return the payload and whether it went by reference.

    ``inherits_memory`` is true when workers are forked copies of this process (they can look
    up anything defined in ``__main__``); ``imports_main`` when each worker imports the
    parent's main module as it starts (spawn, forkserver), so it can look up what is defined
    in a main *file*. Workers of a Dask cluster do neither: a function of the user's script
    goes to them by value, as Dask's own client sends it. A by-reference payload names an
    importable object, so it may be cached across calls; a by-value one is a snapshot and
    must not be.
    """
    by_reference_ok = (
        inherits_memory
        or getattr(fn, "__module__", None) != "__main__"
        or (imports_main and _main_module_is_importable())
    )
    if by_reference_ok:
        try:
            return pickle.dumps(fn, PROTOCOL), isinstance(fn, _NAMED_CALLABLES)
        except Exception:
            pass
    return dumps_by_value(fn), False


# Objects that plain pickle stores as "module.qualname" (it fails for anything it cannot look
# up), so two pickles of the same object are interchangeable.
_NAMED_CALLABLES = (types.FunctionType, types.BuiltinFunctionType, type)


def add_note(exc: BaseException, note: str) -> BaseException:
    """Attach ``note`` to ``exc`` where Python supports notes (3.11+); return ``exc``.

    Used where the stdlib raises the pickler's own exception: code that catches that type keeps
    working, and the traceback still says what procpool was doing and what to do about it.
    """
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    return exc


def describe_pickle_failure(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def short_repr(obj: Any, limit: int = 120) -> str:
    """A repr that is safe to put in an error message: bounded, and never raises."""
    try:
        text = repr(obj)
    except Exception as exc:
        text = f"<{type(obj).__qualname__} object; repr() failed: {exc!r}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def portable_exception(exc: BaseException) -> BaseException:
    """Return ``exc`` if it survives a pickle round trip, else a RemoteError that stands in.

    The round trip is checked in the worker because an exception whose class cannot be rebuilt
    (cpython gh-79492: an ``__init__`` that needs more than ``args``) would otherwise fail in the
    parent, where the stdlib pool hangs on it.
    """
    try:
        pickle.loads(dumps(exc))
    except Exception:
        tb_text = format_remote_traceback(exc)
        message = _safe_str(exc)
        return RemoteError(type(exc).__qualname__, message[:500], tb_text)
    return exc


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<str() of the {type(exc).__qualname__} failed>"


def format_remote_traceback(exc: BaseException) -> str:
    import traceback  # here: a worker needs it only once a task fails (about 3 ms to import)

    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
