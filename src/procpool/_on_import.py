"""Run a function the moment a module is first imported: ``when_imported``.

A worker forwards log records through a handler on ``logging``; importing ``logging`` to set
that handler up costs a spawned worker about 4 ms of its start, for records that a program
which never imports ``logging`` cannot make. So the handler is set up when ``logging`` is
first imported, by whatever imports it (the main module, the initializer, a library, a task's
own body), before that import returns: no record can be made earlier, none is missed.

How: a finder at the front of ``sys.meta_path`` that only watches. Asked for the module, it
lets the other finders find it and wraps the loader, so that the function runs right after the
module's code, while the import is still in progress (the module is complete then, and
``sys.modules`` holds it). It stays in the path once it has fired, inert: taking it out would
change the list while another thread's import may be walking it (the import lock is released
between finders), and that import would skip a finder. A spec asked for without an import
(``importlib.util.find_spec``) fires nothing. In a process forked from the one that asked it
stays inert too: the function belongs to the process that asked. Imported by workers: standard
library only.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not typing's: a worker must not import typing to start (_messages.py)
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any


def when_imported(name: str, then: Callable[[], object]) -> None:
    """Call ``then()`` now if module ``name`` is imported, else once its first import has run
    the module's code (in the importing thread, before the import returns), in this process."""
    if name in sys.modules:
        then()
    else:
        sys.meta_path.insert(0, _Watch(name, then))


class _Watch:
    """A meta path finder that finds nothing itself: it wraps the loader the others find."""

    def __init__(self, name: str, then: Callable[[], object]) -> None:
        self._name = name
        self._then = then
        self._pid = os.getpid()
        self._fired = False

    def find_spec(self, name: str, path: Sequence[str] | None = None,
                  target: Any = None) -> Any:
        if name != self._name or self._fired or os.getpid() != self._pid:
            return None
        for finder in list(sys.meta_path):  # a copy: other threads may change the path
            find_spec = None if finder is self else getattr(finder, "find_spec", None)
            spec = None if find_spec is None else find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None  # not found: the import fails as it would have
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _ThenLoader(spec.loader, self._fire)
        return spec  # (a loader without exec_module, which no stdlib module has: unwatched)

    def _fire(self) -> None:
        if not self._fired:
            self._fired = True
            self._then()


class _ThenLoader:
    """A module's own loader, followed by a function once the module's code has run."""

    def __init__(self, loader: Any, then: Callable[[], object]) -> None:
        self._loader = loader
        self._then = then

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        module.__loader__ = self._loader  # what the module's own code and tools expect
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        self._then()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)  # get_source, is_package, ... (tracebacks)
