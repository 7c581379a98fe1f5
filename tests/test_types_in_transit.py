"""Data never changes type on its way to or from a worker.

cloudpickle carries code by value (lambdas, closures, locally defined classes); it is no
fallback for data. Left to itself it would also turn an open text file into a ``StringIO`` of
its contents and a ``memoryview`` into ``bytes``. Such data must fail as the stdlib fails (the
pickler's own exception for an argument, ``MaybeEncodingError`` for a result, both naming the
problem), through every kind of call, while every other item of the call is delivered and the
pool keeps serving; and code must still travel by value, on its own and inside containers.
Runs on fork and spawn (the ``start_method`` fixture).
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable, Iterator
from multiprocessing.pool import MaybeEncodingError
from typing import Any

import pytest

import procpool

# ---- what the workers run (importable: tests/ is on every worker's path) --------------------


def _open_text() -> Any:
    return open(__file__)


def _open_binary() -> Any:
    return open(__file__, "rb")


def _memoryview() -> Any:
    return memoryview(b"some bytes")


# Data that plain pickle refuses and cloudpickle's own reductions would carry as another type
# (text file: StringIO; memoryview: bytes), and one it refuses as plain pickle does.
MAKERS: dict[str, Callable[[], Any]] = {
    "text file": _open_text,
    "binary file": _open_binary,
    "memoryview": _memoryview,
}


def arrived(value: Any) -> Any:
    """What reached the worker: an int as itself, anything else as its type's name."""
    return value if isinstance(value, int) else type(value).__name__


def make(item: int | str) -> Any:
    """An int as itself; a name from MAKERS as that object, made in the worker."""
    return item if isinstance(item, int) else MAKERS[item]()


def square(x: int) -> int:
    return x * x


def call_everything(value: Any) -> Any:
    """Call what can be called and describe the rest, through lists and dicts."""
    if isinstance(value, int):
        return value
    if isinstance(value, list):
        return [call_everything(v) for v in value]
    if isinstance(value, dict):
        return {k: call_everything(v) for k, v in value.items()}
    if callable(value):
        return value()
    return (type(value).__name__, value.number)


def make_code(offset: int) -> Any:
    """Code made in the worker, which the parent can only receive by value."""

    class Made:
        def __init__(self, number: int) -> None:
            self.number = number

        def doubled(self) -> int:
            return 2 * self.number

    def closure() -> int:
        return offset + 1

    return [closure, {"lambda": lambda: offset + 2, "instance": Made(offset + 3)}]


# ---- the calls, each over [0, <bad>, 2]; an outcome is (succeeded, value or error) ------------


def _outcome(call: Callable[[], Any]) -> tuple[bool, Any]:
    try:
        return True, call()
    except Exception as exc:
        return False, exc


def _apply_async(pool: Any, fn: Any, items: list[Any]) -> list[tuple[bool, Any]]:
    results = [pool.apply_async(fn, (item,)) for item in items]
    return [_outcome(lambda r=r: r.get(timeout=30)) for r in results]


def _map(pool: Any, fn: Any, items: list[Any]) -> list[tuple[bool, Any]]:
    # map fails as a whole on its first error, like the stdlib's; a map beside it is unaffected.
    beside = pool.map_async(fn, [items[0], items[2]], chunksize=1)
    middle = _outcome(lambda: pool.map(fn, items, chunksize=1)[1])
    first, last = beside.get(timeout=30)
    return [(True, first), middle, (True, last)]


def _imap(pool: Any, fn: Any, items: list[Any]) -> list[tuple[bool, Any]]:
    # One item per chunk: arguments that cannot be pickled fail their whole chunk.
    iterator = pool.imap(fn, items, chunksize=1)
    return [_outcome(lambda: iterator.next(timeout=30)) for _ in items]


def _submit(executor: Any, fn: Any, items: list[Any]) -> list[tuple[bool, Any]]:
    futures = [executor.submit(fn, item) for item in items]
    return [_outcome(lambda f=f: f.result(timeout=30)) for f in futures]


def _executor_map(executor: Any, fn: Any, items: list[Any]) -> list[tuple[bool, Any]]:
    # The results iterator ends at the first error (the stdlib's too): the bad item goes last.
    results = executor.map(fn, [items[0], items[2], items[1]], chunksize=1, timeout=30)
    first, last, middle = (_outcome(lambda: next(results)) for _ in range(3))
    return [first, middle, last]


POOL_CALLS = {"apply_async": _apply_async, "map": _map, "imap": _imap}
EXECUTOR_CALLS = {"submit": _submit, "executor.map": _executor_map}
CALLS = [*POOL_CALLS, *EXECUTOR_CALLS]


@pytest.fixture
def run(start_method: str) -> Iterator[Callable[[str, Any, list[Any]], list[tuple[bool, Any]]]]:
    """Runs one of CALLS on a pool (or executor) of this start method, then checks that it
    still serves."""
    with procpool.Pool(2, context=start_method) as pool, \
            procpool.ProcessPoolExecutor(2, mp_context=start_method) as executor:

        def run(call: str, fn: Any, items: list[Any]) -> list[tuple[bool, Any]]:
            if call in POOL_CALLS:
                outcomes = POOL_CALLS[call](pool, fn, items)
            else:
                outcomes = EXECUTOR_CALLS[call](executor, fn, items)
            assert pool.map(square, range(6)) == [x * x for x in range(6)]
            assert list(executor.map(square, range(6))) == [x * x for x in range(6)]
            return outcomes

        yield run


def _stdlib_error(name: str) -> Exception:
    """What plain pickle raises for the data MAKERS[name] makes."""
    data = MAKERS[name]()
    try:
        pickle.dumps(data, 5)
    except Exception as exc:
        return exc
    finally:
        if hasattr(data, "close"):
            data.close()
    raise AssertionError(f"plain pickle carries the {name}")


def _the_others_arrived(outcomes: list[tuple[bool, Any]]) -> tuple[bool, Any]:
    assert outcomes[0] == (True, 0)
    assert outcomes[2] == (True, 2)
    return outcomes[1]


# ---- data that would change type fails as in the stdlib --------------------------------------


@pytest.fixture(params=list(MAKERS))
def bad_argument(request: pytest.FixtureRequest) -> Iterator[tuple[str, Any]]:
    name = str(request.param)
    data = MAKERS[name]()
    yield name, data
    if hasattr(data, "close"):
        data.close()


@pytest.mark.parametrize("call", CALLS)
def test_an_argument_that_would_change_type_fails_as_in_the_stdlib(
        run: Any, call: str, bad_argument: tuple[str, Any]) -> None:
    name, data = bad_argument
    expected = _stdlib_error(name)
    succeeded, error = _the_others_arrived(run(call, arrived, [0, data, 2]))
    assert not succeeded, f"the {name} arrived as {error!r}"
    assert type(error) is type(expected), repr(error)  # the pickler's own exception
    assert str(error) == str(expected)
    if sys.version_info >= (3, 11):  # the note says which item could not be sent
        (note,) = [n for n in error.__notes__ if n.startswith("procpool:")]
        assert "cannot send the arguments" in note and repr(data)[:20] in note, note


@pytest.mark.parametrize("name", list(MAKERS))
@pytest.mark.parametrize("call", CALLS)
def test_a_result_that_would_change_type_fails_as_in_the_stdlib(
        run: Any, call: str, name: str) -> None:
    succeeded, error = _the_others_arrived(run(call, make, [0, name, 2]))
    assert not succeeded, f"the {name} arrived as {error!r}"
    assert isinstance(error, MaybeEncodingError), repr(error)  # the stdlib Pool's type
    assert isinstance(error, procpool.ResultSerializationError)
    expected = _stdlib_error(name)
    assert f"{type(expected).__name__}: {expected}" in str(error)


# ---- code still travels by value -------------------------------------------------------------


@pytest.mark.parametrize("call", CALLS)
def test_lambdas_closures_and_local_classes_still_travel(run: Any, call: str) -> None:
    offset = 10

    class Local:
        def __init__(self, number: int) -> None:
            self.number = number

    def closure() -> int:
        return offset

    # As the function.
    outcomes = run(call, lambda x: x + offset, [0, 1, 2])
    assert outcomes == [(True, 10), (True, 11), (True, 12)]
    # As arguments, inside containers: [0, <code>, 2] so that every call shape is the same.
    code = [lambda: 1, closure, {"instance": Local(5), "nested": [lambda: offset + 1]}]
    succeeded, value = _the_others_arrived(run(call, call_everything, [0, code, 2]))
    assert succeeded, value
    assert value == [1, 10, {"instance": ("Local", 5), "nested": [11]}]
    # As results, made in the worker.
    succeeded, value = _the_others_arrived(run(call, _make_code_or_int, [0, 20, 2]))
    assert succeeded, value
    made_closure, made = value
    assert made_closure() == 21 and made["lambda"]() == 22
    assert type(made["instance"]).__name__ == "Made" and made["instance"].doubled() == 46


def _make_code_or_int(item: int) -> Any:
    return make_code(item) if item == 20 else item
