"""Side-by-side benchmarks of procpool, the stdlib pools and their peers (``python -m benchmarks``).

Not part of the library or the test suite. See docs/performance.md for the recorded results.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing's costs every spawned worker, which imports this package
if TYPE_CHECKING:
    from pathlib import Path


def cache_bytecode(source: Path | None = None) -> None:
    """Write the bytecode of procpool's modules (of the package under ``source``, or the one
    imported) and of these benchmarks, as installing a wheel does.

    The stdlib's modules come with theirs. From a checkout, and with PYTHONDONTWRITEBYTECODE
    set (as on these machines), every spawned or forkserver worker would otherwise compile
    procpool's modules from source as it starts: about 12 ms that no installed copy pays.
    compileall writes the files even when that variable is set, and Python reads them.
    """
    import compileall  # here: spawned workers import this package, and must not pay for it
    from pathlib import Path

    if source is None:
        import procpool

        package = Path(procpool.__file__).parent
    else:
        package = source / "procpool"
    for folder in (package, Path(__file__).parent):
        compileall.compile_dir(folder, quiet=1)
