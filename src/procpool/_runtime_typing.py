"""What procpool's modules use of ``typing`` at run time, without importing typing.

Owns the run-time stand-ins for ``NamedTuple``, ``Generic``, ``Protocol``, ``TypedDict``,
``TypeVar`` and ``ParamSpec``. A type checker sees typing's own names here (the
``TYPE_CHECKING`` branch), so modules import these as they would from typing and are checked
the same way. At run time:

- ``NamedTuple``: a class statement deriving from it makes a tuple class with the annotated
  names as its fields, the values given them as their defaults, and the rest of the body (its
  methods, properties, docstring) as it is: what ``typing.NamedTuple`` makes, with the
  ``collections.namedtuple`` methods procpool uses (``_make``, ``_replace``, ``_asdict``,
  ``_fields``, ``__match_args__``), and a type-strict equality left to the caller.
- ``Generic[T]`` as a base makes the class subscriptable (``AsyncResult[int]``), as the stdlib
  makes its own result classes; ``TypeVar`` and ``ParamSpec`` are names and nothing more;
  ``Protocol`` is a plain base; ``TypedDict`` a dict whose subclasses keep their
  ``__annotations__``.

Why: a program's first pool paid for importing typing (4-7 ms here) and for defining the
named tuples through it (about 170 us each, 40 of them; ``collections.namedtuple`` compiles
their constructor, about 110 us; this module's takes about 15 us, and compiles a constructor
only for a class called with names or defaults, once for each number of fields). A spawned
worker imports the messages' named tuples first thing. Nothing here may import typing, or
anything that does.
"""

from __future__ import annotations

import types

TYPE_CHECKING = False  # not typing's: importing typing is what this module avoids
if TYPE_CHECKING:
    from typing import Generic as Generic
    from typing import NamedTuple as NamedTuple
    from typing import ParamSpec as ParamSpec
    from typing import Protocol as Protocol
    from typing import TypedDict as TypedDict
    from typing import TypeVar as TypeVar
else:
    try:
        from _collections import _tuplegetter  # the fields' getters collections uses
    except ImportError:  # another implementation of Python
        from operator import itemgetter

        def _tuplegetter(index, doc):
            return property(itemgetter(index), doc=doc)

    def TypeVar(name, *constraints, **options):
        return name

    ParamSpec = TypeVar

    class Generic:
        __slots__ = ()
        __class_getitem__ = classmethod(types.GenericAlias)

    class Protocol:
        __slots__ = ()

    class TypedDict(dict):
        def __init_subclass__(cls, total=True, **options):
            super().__init_subclass__(**options)

    class _NamedTupleType(type):
        def __new__(mcs, name, bases, namespace):
            if not bases:
                return super().__new__(mcs, name, bases, namespace)  # NamedTuple itself
            if "__annotate__" in namespace and "__annotations__" not in namespace:
                raise TypeError(f"{name}: a module that defines a NamedTuple of procpool's "
                                f"starts with `from __future__ import annotations`, which "
                                f"keeps the fields' names readable as the class is made")
            return _named_tuple(name, namespace)

    class NamedTuple(metaclass=_NamedTupleType):
        pass

    def _named_tuple(name, namespace):
        fields = tuple(namespace.get("__annotations__", {}))
        if "_cls" in fields:  # the constructor's first parameter (_compiled)
            raise TypeError(f"{name}: no field may be named _cls")
        defaults = tuple(namespace[field] for field in fields if field in namespace)
        if any(field not in namespace for field in fields[len(fields) - len(defaults):]):
            raise TypeError(f"{name}: a field without a default follows one with a default")
        body = {key: value for key, value in namespace.items()
                if key not in fields and key != "__annotations__"}
        body.update(
            __slots__=(), _fields=fields, __match_args__=fields,
            _field_defaults=dict(zip(fields[len(fields) - len(defaults):], defaults,
                                     strict=True)),
            __new__=_constructor(fields, defaults), __getnewargs__=_values,
            __repr__=_repr, _make=classmethod(_make), _replace=_replace, _asdict=_asdict,
        )
        for index, field in enumerate(fields):
            body[field] = _tuplegetter(index, f"{name}.{field}")
        return type(name, (tuple,), body)

    def _constructor(fields, defaults):
        """The class's ``__new__`` while it is called with every field in order. Called
        otherwise (a field by name, or left to its default), it gives way for good to one
        compiled for these fields, which takes any call a function would (``_compiled``): the
        classes built only by position never pay for compiling one."""
        count = len(fields)
        new_tuple = tuple.__new__

        def __new__(cls, *values, **named):
            if len(values) == count and not named:
                return new_tuple(cls, values)
            compiled = _compiled(cls.__qualname__, fields, defaults)
            cls.__new__ = compiled
            return compiled(cls, *values, **named)

        return __new__

    _templates = {}  # number of fields -> a compiled __new__ taking that many

    def _compiled(qualname, fields, defaults):
        """A ``__new__`` with ``fields`` as its parameters and ``defaults`` for the last of
        them: a template compiled once for each number of fields (as collections.namedtuple
        compiles one for each class), with its parameters renamed."""
        template = _templates.get(len(fields))
        if template is None:
            parameters = "".join(f"_{place}, " for place in range(len(fields)))
            scope = {"_tuple_new": tuple.__new__, "__builtins__": {}}
            exec(f"def __new__(_cls, {parameters}): return _tuple_new(_cls, ({parameters}))",
                 scope)
            template = _templates[len(fields)] = scope["__new__"]
        names = {"co_varnames": ("_cls", *fields), "co_name": "__new__"}
        if hasattr(template.__code__, "co_qualname"):  # 3.11+
            names["co_qualname"] = f"{qualname}.__new__"
        constructor = types.FunctionType(template.__code__.replace(**names),
                                         template.__globals__, "__new__", defaults or None)
        constructor.__qualname__ = f"{qualname}.__new__"
        return constructor

    def _values(self):
        return tuple(self)

    def _repr(self):
        pairs = ", ".join(f"{field}={value!r}"
                          for field, value in zip(self._fields, self, strict=True))
        return f"{type(self).__name__}({pairs})"

    def _make(cls, iterable):
        made = tuple.__new__(cls, iterable)
        if len(made) != len(cls._fields):
            raise TypeError(f"expected {len(cls._fields)} values, got {len(made)}")
        return made

    def _replace(self, **changes):
        made = self._make(changes.pop(field, value)
                          for field, value in zip(self._fields, self, strict=True))
        if changes:
            raise ValueError(f"got unexpected field names: {list(changes)!r}")
        return made

    def _asdict(self):
        return dict(zip(self._fields, self, strict=True))
