"""Side-by-side benchmarks of procpool, the stdlib pools and their peers (``python -m benchmarks``).

Not part of the library or the test suite. See docs/performance.md for the recorded results.
"""
