"""when_imported: a function run right after a module's first import, before the importer."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from procpool._on_import import _Watch, when_imported


@pytest.fixture
def fresh_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The name of a module no one has imported yet."""
    name = f"procpool_fresh_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text("VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _Watch)]


def _watches() -> list[_Watch]:
    return [finder for finder in sys.meta_path if isinstance(finder, _Watch)]


def test_the_function_runs_once_after_the_modules_code_and_before_the_import_returns(
        fresh_module: str) -> None:
    seen: list[object] = []
    when_imported(fresh_module, lambda: seen.append(sys.modules[fresh_module].VALUE))
    assert seen == []
    module = importlib.import_module(fresh_module)
    assert seen == [42]
    importlib.reload(module)
    sys.modules.pop(fresh_module)
    importlib.import_module(fresh_module)
    assert seen == [42]
    assert type(module.__loader__).__name__ == "SourceFileLoader"  # its own, not the wrapper
    assert module.__spec__ is not None and module.__spec__.loader is module.__loader__
    # It stays in the path, inert: taking it out could make another thread's import skip a
    # finder as the list shifts under its walk.
    assert len(_watches()) == 1 and _watches()[0].find_spec(fresh_module) is None


def test_looking_a_module_up_without_importing_it_fires_nothing(fresh_module: str) -> None:
    seen: list[str] = []
    when_imported(fresh_module, lambda: seen.append("fired"))
    assert importlib.util.find_spec(fresh_module) is not None
    assert seen == []
    importlib.import_module(fresh_module)
    assert seen == ["fired"]


def test_an_imported_module_runs_it_at_once_and_a_missing_one_never(fresh_module: str) -> None:
    seen: list[str] = []
    when_imported("os", lambda: seen.append("os"))
    assert seen == ["os"]
    when_imported(fresh_module + "_missing", lambda: seen.append("missing"))
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(fresh_module + "_missing")
    assert seen == ["os"]


def test_a_process_forked_before_the_import_imports_without_firing(fresh_module: str) -> None:
    # A task that forks before anything imported logging: its child must not install the
    # worker's forwarding, which would write into the worker's reply pipe.
    seen: list[int] = []
    when_imported(fresh_module, lambda: seen.append(os.getpid()))
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            importlib.import_module(fresh_module)
            os.write(write_end, b"fired" if seen else b"quiet")
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        assert os.read(read_end, 16) == b"quiet"
    finally:
        os.close(read_end)
        os.waitpid(child, 0)
    importlib.import_module(fresh_module)
    assert seen == [os.getpid()]
