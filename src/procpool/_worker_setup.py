"""What each new worker is told before it runs anything of the user's: its ``WorkerSetup``.

Owns the pool's worker options as the backend can honour them (which are refused, what the
defaults come to) and the making of each worker's setup as it starts: its index, the
environment for that index, the parent's logging levels as they are at that moment, the
initializer. Runs in the parent (the constructor, then the dispatcher thread); the worker's
side is _worker.py, _worker_identity.py and _worker_output.py.
"""

from __future__ import annotations

import logging

from ._messages import LogLevels, WorkerInit, WorkerSetup
from ._options import WorkerSetupOptions, env_items
from ._runtime_typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._backends import Backend


class WorkerSetups:
    """Makes the setup of each worker a pool starts (``for_index``)."""

    def __init__(self, options: WorkerSetupOptions, backend: Backend,
                 init: WorkerInit | None, *, reports_rss: bool = False) -> None:
        check_supported(options, backend.name)
        self._env = options.env
        self._init = init
        in_parent = backend.name == "inline"  # its workers are threads of this process
        # By default, logs are forwarded where a worker cannot use the parent's handlers: it
        # did not inherit them (spawn, forkserver). Under fork it holds copies of them, as
        # with the stdlib's pools; inline workers are the parent.
        default = not backend.inherits_memory and backend.name == "local"
        self._forward_logs = default if options.forward_logs is None else options.forward_logs
        self._forward_logs = self._forward_logs and not in_parent
        self._logs_yield_to_initializer = options.forward_logs is None
        self._forward_output = options.forward_output and not in_parent
        self._reports_rss = reports_rss

    @property
    def forwards(self) -> bool:
        """Whether workers send log records or output lines to the parent."""
        return self._forward_logs or self._forward_output

    def for_index(self, index: int) -> WorkerSetup:
        """The setup of a worker starting now with ``index``. Runs the pool's worker_env
        function, if it has one: what that raises fails the worker's start."""
        env = self._env(index) if callable(self._env) else self._env
        return WorkerSetup(
            worker_index=index,
            env=() if env is None else tuple(env_items(env, index if callable(self._env)
                                                       else None)),
            log_levels=_log_levels_now() if self._forward_logs else None,
            logs_yield_to_initializer=self._logs_yield_to_initializer,
            forward_output=self._forward_output,
            init=self._init,
            reports_rss=self._reports_rss,
        )

    def forget_init(self) -> None:
        """The initializer may hold Locks and Queues: let them go with the pool."""
        self._init = None


def check_supported(options: WorkerSetupOptions, backend_name: str) -> None:
    """Refuse what the backend's workers cannot be given, saying what to do instead. Checked
    before the backend starts (a Dask cluster, say), and again once it has."""
    if options.env is not None and backend_name in ("inline", "dask"):
        where = ("threads of this process, which share its environment: set os.environ "
                 "yourself" if backend_name == "inline" else
                 "tasks of Dask workers that serve other work too: give the Dask workers "
                 "their environment when they start (e.g. LocalCluster(env=...), or the "
                 "environment of `dask worker`)")
        raise ValueError(f"worker_env is not supported on the {backend_name!r} backend: its "
                         f"workers are {where}")
    if backend_name == "dask" and (options.forward_logs or options.forward_output):
        raise ValueError("forward_logs and forward_output are not supported on the 'dask' "
                         "backend: use Dask's own Client.forward_logging() for log records; "
                         "a Dask worker's prints go to its own output")


def _log_levels_now() -> LogLevels:
    """The parent's logging levels: a worker forwards only records the parent would handle."""
    named = tuple((name, logger.level)
                  for name, logger in list(logging.root.manager.loggerDict.items())
                  if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET)
    return LogLevels(logging.root.level, named, logging.root.manager.disable)
