"""What both stdlib-conformance runners share: the one-line summary the tests parse."""

from __future__ import annotations

import argparse
import unittest


def summarize(result: unittest.TestResult) -> int:
    """Print "ran N; not passed: a b c" (or "none") and return the process exit status."""
    not_passed = sorted(
        f"{type(test).__name__}.{getattr(test, '_testMethodName', test)}"
        for test, _ in (*result.failures, *result.errors, *result.unexpectedSuccesses)
    )
    print(f"ran {result.testsRun}; not passed: {' '.join(not_passed) or 'none'}")
    return 0 if result.wasSuccessful() else 1


def parse_args() -> argparse.Namespace:
    """The command line both runners take: a start method, -v, and -k patterns."""
    parser = argparse.ArgumentParser()
    parser.add_argument("start_method", nargs="?", default="fork",
                        choices=["fork", "spawn", "forkserver"])
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("-k", dest="pattern", action="append", help="run tests matching this")
    return parser.parse_args()
