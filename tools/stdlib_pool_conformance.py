"""Run CPython's own multiprocessing.Pool tests against procpool.Pool.

    python tools/stdlib_pool_conformance.py [fork|spawn|forkserver] [-v] [-k PATTERN]

Loads ``test._test_multiprocessing`` from the running interpreter's standard library, installs
its pool test classes for the "processes" flavour in this module (at import time, as CPython's
own test_multiprocessing_* modules do, so spawned workers can import them too), and replaces
the pool they create (and ``multiprocessing.Pool`` itself, which also proves procpool never looks
it up at call time) with ``procpool.Pool``. docs/drop-in.md records the outcome and explains
every difference.
"""

from __future__ import annotations

import multiprocessing
import sys
import unittest

from _conformance import parse_args, summarize

import procpool

POOL_TEST_CLASSES = ("_TestPool", "_TestPoolWorkerErrors", "_TestPoolWorkerLifetime")

try:
    from test import _test_multiprocessing as stdlib_tests
except ImportError:  # some distributions ship Python without its test package
    stdlib_tests = None
else:
    stdlib_tests.ProcessesMixin.Pool = staticmethod(procpool.Pool)
    multiprocessing.Pool = procpool.Pool  # type: ignore[assignment,misc]
    # The start method given here only matters to setUpModule; main() sets the real one.
    try:
        stdlib_tests.install_tests_in_module_dict(globals(), "fork", only_type="processes")
    except TypeError:  # 3.10 installs every flavour; main() picks the processes classes
        stdlib_tests.install_tests_in_module_dict(globals(), "fork")


def main() -> int:
    args = parse_args()
    if stdlib_tests is None:
        print("this interpreter ships without its test package (test._test_multiprocessing)")
        return 2
    loader = unittest.TestLoader()
    if args.pattern:
        loader.testNamePatterns = [f"*{p}*" for p in args.pattern]
    suite = unittest.TestSuite()
    for name in POOL_TEST_CLASSES:
        suite.addTests(loader.loadTestsFromTestCase(globals()["WithProcesses" + name[1:]]))
    globals()["setUpModule"]()
    multiprocessing.set_start_method(args.start_method, force=True)
    try:
        result = unittest.TextTestRunner(verbosity=2 if args.verbose else 1).run(suite)
    finally:
        globals()["tearDownModule"]()
    return summarize(result)


if __name__ == "__main__":
    sys.exit(main())
