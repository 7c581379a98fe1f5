"""The part of procpool's exception tree that workers raise (drawn in _errors.py).

Kept apart from the rest so that a worker imports neither concurrent.futures nor logging to
start: the classes that also derive from BrokenProcessPool live in _errors.py, which the
parent imports. Re-exported from there and from the package.
"""

from __future__ import annotations

import pickle

TYPE_CHECKING = False  # not typing's: a worker must not import typing to start (_messages.py)
if TYPE_CHECKING:
    from typing import Any

    # typeshed does not declare it; at run time it is the stdlib's class.
    MaybeEncodingError = Exception
else:
    from multiprocessing.pool import MaybeEncodingError


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


class ResultSerializationError(SerializationError, MaybeEncodingError):
    """A task's result could not be pickled in the worker or unpickled in the parent.

    Also a ``multiprocessing.pool.MaybeEncodingError`` with the stdlib's ``exc`` and ``value``
    attributes (both as text), so code written for the stdlib keeps working.
    """

    __module__ = "procpool"

    def __init__(self, value_repr: str, reason: str, task: str | None = None) -> None:
        self.what = "result"
        self.reason = reason
        self.exc = reason
        self.value = value_repr
        # Which task's result ("work() item 3"): the parent names it, the worker cannot.
        self.task = task
        Exception.__init__(self, reason, value_repr)

    def __str__(self) -> str:
        whose = "" if self.task is None else f"of {self.task} "
        return (
            f"cannot send the result {whose}{self.value} back from the worker: {self.exc}. "
            "Return picklable data from the task."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.value, self.exc, self.task))


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
