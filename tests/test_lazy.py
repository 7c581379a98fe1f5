"""LazyModule: a module the faces name at their top and import at their first call."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from procpool._lazy import LazyModule


@pytest.fixture
def fresh_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The name of a module no one has imported yet, which counts its imports."""
    name = f"procpool_lazy_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(
        "import builtins\n"
        "builtins.procpool_lazy_imports = getattr(builtins, 'procpool_lazy_imports', 0) + 1\n"
        "def double(x):\n    return 2 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("builtins.procpool_lazy_imports", 0, raising=False)
    yield name
    sys.modules.pop(name, None)


def _imports() -> int:
    import builtins

    return builtins.procpool_lazy_imports  # type: ignore[attr-defined,no-any-return]


def test_the_module_is_imported_at_the_first_name_looked_up_and_once(fresh_module: str) -> None:
    lazy = LazyModule(fresh_module)
    assert fresh_module not in sys.modules
    assert _imports() == 0
    assert lazy.double(21) == 42
    assert _imports() == 1
    assert lazy.double is sys.modules[fresh_module].double
    # The name is the stand-in's own now: a later lookup does not go through __getattr__.
    assert vars(lazy)["double"] is sys.modules[fresh_module].double
    assert lazy.double(1) == 2
    assert _imports() == 1


def test_probing_for_special_names_imports_nothing(fresh_module: str) -> None:
    lazy = LazyModule(fresh_module)
    assert not hasattr(lazy, "__wrapped__")
    assert fresh_module in repr(lazy)
    assert fresh_module not in sys.modules


def test_a_missing_name_and_a_failed_import_raise_at_the_use(fresh_module: str,
                                                             tmp_path: Path) -> None:
    with pytest.raises(AttributeError, match="triple"):
        LazyModule(fresh_module).triple  # noqa: B018
    broken = f"{fresh_module}_broken"
    (tmp_path / f"{broken}.py").write_text("raise ImportError('not today')\n")
    lazy = LazyModule(broken)
    for _ in range(2):  # not remembered as a failure: each use tries again
        with pytest.raises(ImportError, match="not today"):
            lazy.anything  # noqa: B018
