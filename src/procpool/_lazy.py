"""``LazyModule``, and the modules the faces' calls are made of, each behind one.

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

The stand-ins are made here, once, and the faces import them (``from ._lazy import
_streams``). A type checker sees the modules themselves, so uses are checked as if they were
imported.
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


# What the faces' calls are made of. Not what a face needs to be defined (the defaults in its
# signature, _options), nor what a spawned worker imports anyway (_messages, _codec,
# _worker_identity): those the faces import as usual.
if TYPE_CHECKING:
    from . import _executor_map as _executor_map
    from . import _futures as _futures
    from . import _map_through_submit as _map_through_submit
    from . import _pace as _pace
    from . import _progress as _progress
    from . import _queue_bound as _queue_bound
    from . import _results as _results
    from . import _streams as _streams
    from . import _task as _task
    from . import _threads as _threads
else:
    _executor_map = LazyModule("procpool._executor_map")
    _futures = LazyModule("procpool._futures")
    _map_through_submit = LazyModule("procpool._map_through_submit")
    _pace = LazyModule("procpool._pace")
    _progress = LazyModule("procpool._progress")
    _queue_bound = LazyModule("procpool._queue_bound")
    _results = LazyModule("procpool._results")
    _streams = LazyModule("procpool._streams")
    _task = LazyModule("procpool._task")
    _threads = LazyModule("procpool._threads")
