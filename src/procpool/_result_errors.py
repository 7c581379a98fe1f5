"""ResultSerializationError: a result that could not cross back to the parent.

A MaybeEncodingError too, as the stdlib raises for it, so defining it imports
multiprocessing.pool (and traceback, queue with it): a worker imports this module only when a
result cannot be pickled, not to start (_worker_errors.py). Re-exported from _errors.py and
from the package.
"""

from __future__ import annotations

from ._worker_errors import SerializationError

TYPE_CHECKING = False  # not typing's: a worker must not import typing to start (_messages.py)
if TYPE_CHECKING:
    from typing import Any

    # typeshed does not declare it; at run time it is the stdlib's class.
    MaybeEncodingError = Exception
else:
    from multiprocessing.pool import MaybeEncodingError


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
