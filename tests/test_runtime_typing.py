"""procpool._runtime_typing: the stand-ins behave as the typing names they replace do, where
procpool relies on them (its records, subscriptable results, per-call options)."""

from __future__ import annotations

import copy
import pickle
import re

import pytest

from procpool._runtime_typing import Generic, NamedTuple, TypedDict, TypeVar

T = TypeVar("T")


class Pair(NamedTuple):
    """Two numbers."""

    left: int
    right: int = 0
    note: str | None = None

    @property
    def total(self) -> int:
        return self.left + self.right

    def swapped(self) -> Pair:
        return Pair(self.right, self.left, self.note)


class Empty(NamedTuple):
    """No fields."""


def test_a_named_tuple_takes_its_fields_by_position_name_or_default() -> None:
    assert tuple(Pair(1, 2, "a")) == (1, 2, "a")
    assert tuple(Pair(1)) == (1, 0, None)
    assert tuple(Pair(1, note="b")) == (1, 0, "b")
    assert tuple(Pair(right=3, left=4)) == (4, 3, None)
    assert (Pair(5, 6).left, Pair(5, 6).right, Pair(5, 6).note) == (5, 6, None)
    assert tuple(Empty()) == ()
    assert isinstance(Pair(1), tuple)


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    ((), {}, "missing 1 required positional argument: 'left'"),
    ((1, 2, 3, 4), {}, "takes from 2 to 4 positional arguments but 5 were given"),
    ((1,), {"left": 2}, "got multiple values for argument 'left'"),
    ((1,), {"middle": 2}, "got an unexpected keyword argument 'middle'"),
])
def test_a_named_tuple_refuses_a_call_its_signature_would(
        args: tuple[int, ...], kwargs: dict[str, int], message: str) -> None:
    # The messages are Python's own for a function (3.11+ name it Pair.__new__()); the count
    # of positional arguments includes the class, as for any __new__.
    with pytest.raises(TypeError, match=re.escape(message)):
        Pair(*args, **kwargs)  # type: ignore[arg-type,call-arg,misc]


def test_a_named_tuple_built_by_position_only_compiles_no_constructor() -> None:
    class Point(NamedTuple):
        x: int
        y: int = 0

    built_by_position = Point.__new__
    assert tuple(Point(1, 2)) == (1, 2) and Point.__new__ is built_by_position
    # Any other call compiles one for good, which takes every call as a function would.
    assert tuple(Point(3)) == (3, 0) and Point.__new__ is not built_by_position
    assert (Point(4, 5), Point(y=6, x=7), Point(8)) == ((4, 5), (7, 6), (8, 0))
    assert type(Point(1)) is Point


def test_a_named_tuple_refuses_a_field_without_a_default_after_one_with_a_default() -> None:
    with pytest.raises(TypeError, match="a field without a default follows one with a default"):
        class Wrong(NamedTuple):
            first: int = 0
            second: int


def test_a_named_tuple_keeps_its_body_and_has_what_namedtuple_gives() -> None:
    pair = Pair(1, 2)
    assert pair.total == 3 and pair.swapped() == Pair(2, 1)
    assert Pair.__doc__ == "Two numbers."
    assert Pair.__module__ == __name__ and Pair.__qualname__ == "Pair"
    assert Pair._fields == Pair.__match_args__ == ("left", "right", "note")
    assert Pair._field_defaults == {"right": 0, "note": None}
    assert repr(pair) == "Pair(left=1, right=2, note=None)"
    assert pair._replace(note="c") == Pair(1, 2, "c")
    assert pair._asdict() == {"left": 1, "right": 2, "note": None}
    assert Pair._make([7, 8, None]) == Pair(7, 8)
    with pytest.raises(TypeError):
        Pair._make([7, 8])
    with pytest.raises(ValueError):
        pair._replace(middle=1)  # type: ignore[call-arg]
    with pytest.raises(AttributeError):
        pair.left = 5  # type: ignore[misc]
    match pair:
        case Pair(left, right):
            assert (left, right) == (1, 2)
        case _:
            pytest.fail("a class pattern did not match its own record")


def test_a_named_tuple_pickles_and_copies_as_itself() -> None:
    pair = Pair(1, 2, "n")
    for copied in (pickle.loads(pickle.dumps(pair, protocol)) for protocol in range(2, 6)):
        assert type(copied) is Pair and copied == pair
    assert type(copy.copy(pair)) is Pair and copy.deepcopy(pair) == pair


class Box(Generic[T]):
    def __init__(self, value: T) -> None:
        self.value = value


class Options(TypedDict, total=False):
    timeout: float
    retries: int


def test_generic_classes_are_subscriptable_and_typed_dicts_keep_their_keys() -> None:
    assert Box[int](3).value == 3
    assert Box[int].__origin__ is Box  # type: ignore[attr-defined]
    assert list(Options.__annotations__) == ["timeout", "retries"]
    assert Options(timeout=1.0) == {"timeout": 1.0}
