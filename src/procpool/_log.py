"""The ``procpool`` logger: the one place its name is written (but in the janitor, which
imports nothing of procpool), fetched when something is to be logged.

A program's main module imports a face (``from procpool import Pool``), and under spawn every
worker imports that module again, as a forkserver does before its first fork. The faces, and
the results, streams, progress and callbacks they are made of, must then not import
``logging`` (about 4 ms of each such start; docs/performance.md, "a program's import of the
faces"). They ask for the logger here when they have something to log, which is on a pool's
own threads or callers', after the engine has imported ``logging`` anyway.
"""

from __future__ import annotations

from ._runtime_typing import TYPE_CHECKING

if TYPE_CHECKING:
    import logging


def logger() -> logging.Logger:
    import logging

    return logging.getLogger("procpool")
