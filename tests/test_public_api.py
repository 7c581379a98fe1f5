"""The public surface: what ``import procpool`` offers, and nothing private leaking out."""

from __future__ import annotations

import subprocess
import sys

import procpool


def test_all_lists_exactly_the_public_names() -> None:
    public = {name for name in vars(procpool) if not name.startswith("_")}
    assert set(procpool.__all__) == public


def test_public_classes_report_the_package_as_their_module() -> None:
    for name in procpool.__all__:
        obj = getattr(procpool, name)
        if isinstance(obj, type) and name != "TimeoutError":
            assert obj.__module__ == "procpool", name


def test_timeout_error_is_the_stdlib_class() -> None:
    import multiprocessing

    assert procpool.TimeoutError is multiprocessing.TimeoutError


def test_import_is_light() -> None:
    # Optional heavy dependencies are imported only where used.
    heavy = "{'cloudpickle', 'numpy', 'tqdm'}"
    code = f"import sys, procpool; print(sorted({heavy} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
