"""Run CPython's own concurrent.futures tests for ProcessPoolExecutor against procpool's.

    python tools/stdlib_executor_conformance.py [fork|spawn|forkserver] [-v] [-k PATTERN]

Replaces ``concurrent.futures.ProcessPoolExecutor`` with ``procpool.ProcessPoolExecutor`` before
the stdlib's test modules are imported (their mixins bind the class when they are defined), then
runs every test class whose name says it tests a process pool with the given start method.
Works with the single-file layout (3.10, 3.11) and the package layout (3.12+). docs/drop-in.md
records the outcome and explains the differences.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import multiprocessing.util
import re
import sys
import unittest

from _conformance import parse_args, summarize

import procpool

concurrent.futures.ProcessPoolExecutor = procpool.ProcessPoolExecutor  # type: ignore[misc]
PACKAGE_MODULES = ("test_process_pool", "test_as_completed", "test_wait", "test_shutdown",
                   "test_init", "test_deadlock", "test_executor")


def _load(pattern: list[str] | None, method: str) -> tuple[unittest.TestSuite, object]:
    loader = unittest.TestLoader()
    if pattern:
        loader.testNamePatterns = [f"*{p}*" for p in pattern]
    suite = unittest.TestSuite()
    try:
        package = importlib.import_module("test.test_concurrent_futures")
        modules = []
        for name in PACKAGE_MODULES:
            try:
                modules.append(importlib.import_module(f"{package.__name__}.{name}"))
            except ImportError:
                continue
        setup = importlib.import_module(f"{package.__name__}.util").setup_module
    except ImportError:
        single = importlib.import_module("test.test_concurrent_futures")
        modules, setup = [single], getattr(single, "setUpModule", lambda: None)
    # ProcessPoolFork... but not ProcessPoolForkserver... for "fork": one start method's classes.
    wanted = re.compile(f"ProcessPool{method.capitalize()}[A-Z]")
    for module in modules:
        for name in dir(module):
            case = getattr(module, name)
            if (isinstance(case, type) and issubclass(case, unittest.TestCase)
                    and wanted.match(name)):
                suite.addTests(loader.loadTestsFromTestCase(case))
    return suite, setup


def _end_leaked_pools() -> None:
    """Failing tests can leave executors running; end them so this process can exit."""
    from procpool._engine import kill_live_pools

    kill_live_pools(timeout=10)


def main() -> int:
    args = parse_args()
    try:
        suite, setup = _load(args.pattern, args.start_method)
    except ImportError:
        print("this interpreter ships without its test package (test.test_concurrent_futures)")
        return 2
    # The stdlib's module cleanup stops the resource tracker and forkserver and waits for them;
    # workers of pools leaked by failing tests hold their pipes open, so end those first.
    original_cleanup = multiprocessing.util._cleanup_tests  # type: ignore[attr-defined]

    def cleanup() -> None:
        _end_leaked_pools()
        original_cleanup()

    multiprocessing.util._cleanup_tests = cleanup  # type: ignore[attr-defined]
    setup()  # type: ignore[operator]
    result = unittest.TextTestRunner(verbosity=2 if args.verbose else 1).run(suite)
    _end_leaked_pools()
    return summarize(result)


if __name__ == "__main__":
    sys.exit(main())
