"""The part of procpool's exception tree that workers raise (drawn in _errors.py).

Kept apart from the rest so that a worker imports neither concurrent.futures nor logging to
start: the classes that also derive from BrokenProcessPool live in _errors.py, which the
parent imports. ResultSerializationError, a MaybeEncodingError too, lives in _result_errors.py:
defining it imports multiprocessing.pool (with traceback and queue), which a worker needs only
once a result cannot be pickled. Re-exported from _errors.py and from the package.
"""

from __future__ import annotations

import pickle

TYPE_CHECKING = False  # not typing's: a worker must not import typing to start (_messages.py)
if TYPE_CHECKING:
    from typing import Any


class ProcpoolError(Exception):
    """Base class of every error procpool raises on its own account."""

    __module__ = "procpool"


class SerializationError(ProcpoolError, pickle.PicklingError):
    """A function or its arguments could not be moved to the worker, so the task never ran.

    ``what`` names the object ("function", "arguments", ...); the pickling error is ``__cause__``.
    """

    __module__ = "procpool"

    def __init__(self, what: str, reason: str) -> None:
        self.what = what
        self.reason = reason
        if what == "function":
            advice = ("Its module must be importable in the worker processes (installed "
                      "where they run, or on their sys.path).")
        else:
            advice = ("Pass picklable objects (module-level functions, plain data), or create "
                      "the resource inside the task or the pool initializer.")
        stop = "" if reason.endswith((".", "?", "!")) else "."
        # Exception.__init__ directly: in ResultSerializationError the next class in the MRO
        # is MaybeEncodingError, whose __init__ wants other arguments.
        Exception.__init__(
            self, f"cannot send the {what} to a worker process: {reason}{stop} {advice}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.what, self.reason))


class RemoteError(ProcpoolError):
    """Stands in for an exception raised by a task that could not cross the process boundary.

    Its class could not be pickled or rebuilt (for example an ``__init__`` with required
    arguments that ``args`` does not hold). Carries what can be kept: the type's qualified name,
    its message and the formatted remote traceback.
    """

    __module__ = "procpool"

    def __init__(self, type_name: str, message: str, traceback_text: str) -> None:
        self.type_name = type_name
        self.message = message
        self.traceback_text = traceback_text
        super().__init__(f"{type_name}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.type_name, self.message, self.traceback_text))
