"""``LazyModule``: a module the faces name at their top and import at their first call.

A program's main module imports a face (``from procpool import Pool``), and under spawn every
worker imports that module again before its first task, as a forkserver does before its first
fork. What the face's calls are made of (results, streams, progress, chunk sizes, the bound on
queued calls: about 2.5 ms of imports) is then paid by every such start, for a pool it never
makes. So the faces name those modules through this stand-in, and a program pays for each at
its first use, once.

The stand-in imports its module at the first name looked up on it, and keeps each name it
hands out as its own attribute: later lookups are plain attribute reads, which never reach
``__getattr__``. Only for the classes and functions a module defines, which it never rebinds:
a module's changing state is read from the module itself. Safe from any thread: the import
system serializes the import, and two threads that race here store the same object.

A type checker sees the module itself (``if TYPE_CHECKING: from . import _streams as
streams``), so uses are checked as if it were imported.
"""

from __future__ import annotations

import importlib

from ._runtime_typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any


class LazyModule:
    """Module ``name`` (absolute), imported at the first name looked up on this."""

    def __init__(self, name: str) -> None:
        self._lazy_name = name

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__") or attribute == "_lazy_name":
            # What tools probe objects for (__wrapped__, ...), or a copy made without
            # __init__: never a reason to import.
            raise AttributeError(attribute)
        value = getattr(importlib.import_module(self._lazy_name), attribute)
        setattr(self, attribute, value)
        return value

    def __repr__(self) -> str:
        return f"<module {self._lazy_name!r}, imported at its first use>"
