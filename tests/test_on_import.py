"""when_imported: a function run right after a module's first import, before the importer."""

from __future__ import annotations

import importlib
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


def test_the_function_runs_once_after_the_modules_code_and_before_the_import_returns(
        fresh_module: str) -> None:
    seen: list[object] = []
    when_imported(fresh_module, lambda: seen.append(sys.modules[fresh_module].VALUE))
    assert seen == []
    module = importlib.import_module(fresh_module)
    assert seen == [42]
    importlib.reload(module)
    importlib.import_module(fresh_module)
    assert seen == [42]
    assert not any(isinstance(finder, _Watch) for finder in sys.meta_path)
    assert type(module.__loader__).__name__ == "SourceFileLoader"  # its own, not the wrapper
    assert module.__spec__ is not None and module.__spec__.loader is module.__loader__


def test_an_imported_module_runs_it_at_once_and_a_missing_one_never(fresh_module: str) -> None:
    seen: list[str] = []
    when_imported("os", lambda: seen.append("os"))
    assert seen == ["os"]
    when_imported(fresh_module + "_missing", lambda: seen.append("missing"))
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(fresh_module + "_missing")
    assert seen == ["os"]
    assert not any(isinstance(finder, _Watch) for finder in sys.meta_path)
