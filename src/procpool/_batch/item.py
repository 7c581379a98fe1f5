"""What a worker runs for one item of a batch run (``procpool run``).

Owns the call of the user's function on one item, its timing, and turning its outcome into JSON
text in the worker, so that the parent only journals and writes text. An exception the function
raises becomes an ``error`` record here (with its traceback); a worker death or a timeout never
reaches this code and is reported by the pool instead. Kept small: workers import it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One input item as the function is called with it: ``function(*args, **kwargs)``."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ItemReport:
    """What came of one call: ``result_json`` on success, ``error`` otherwise."""

    ok: bool
    duration: float
    result_json: str | None = None
    error: dict[str, str] | None = None


def run_item(function: Callable[..., Any], item: BatchItem) -> ItemReport:
    started = time.perf_counter()
    try:
        result = function(*item.args, **item.kwargs)
    except Exception as exc:
        # The traceback starts in the user's function: this frame is procpool's, not theirs.
        exc.__traceback__ = exc.__traceback__.tb_next if exc.__traceback__ else None
        return ItemReport(False, time.perf_counter() - started, error=describe_error(exc))
    duration = time.perf_counter() - started
    try:
        return ItemReport(True, duration, result_json=json_text(result, _plain))
    except (TypeError, ValueError) as exc:
        error = TypeError(
            f"the result ({type(result).__qualname__}) cannot be written as JSON: {exc}. Return "
            f"plain data (dict, list, str, numbers, bool, None; paths, sets, dataclasses and "
            f"numpy values are converted)"
        )
        return ItemReport(False, duration, error=describe_error(error))


def json_text(value: Any, default: Callable[[Any], Any]) -> str:
    """``value`` as strict JSON text. NaN, inf and -inf, which JSON has no numbers for, are
    written as the strings "NaN", "Infinity" and "-Infinity" (what ``float()`` reads back), as
    protobuf's JSON mapping and OPC UA's JSON encoding do, instead of the bare ``NaN`` that
    ``json.dumps`` writes and strict JSON readers (jq, JavaScript, ``json.loads`` with
    ``parse_constant`` raising) reject."""
    text = json.dumps(value, default=default)
    if "NaN" not in text and "Infinity" not in text:  # the usual case: nothing to replace
        return text

    def finite_default(item: Any) -> Any:
        return _finite(default(item))

    return json.dumps(_finite(value), default=finite_default, allow_nan=False)


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float (numpy's too, once converted) as a string."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, dict):
        return {_finite(key) if isinstance(key, float) else key: _finite(item)
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def describe_error(error: BaseException) -> dict[str, str]:
    """An error as the results file shows it: type, message and formatted traceback."""
    return {
        "type": type(error).__qualname__,
        "message": str(error),
        "traceback": "".join(traceback.format_exception(error)),
    }


def _plain(value: Any) -> Any:
    """JSON for the common non-JSON results; anything else is refused (a clear error)."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    raise TypeError(f"{type(value).__qualname__} is not JSON serializable")
