"""Every Python example of README.md and docs/*.md runs (tools/docs_check.py), one test each.

A block marked ``<!-- docs-check: skip (reason) -->`` in the Markdown is not run (a fragment,
or one that needs a Dask scheduler elsewhere); the reason is required and stays visible there.
The blocks run under forkserver, so an example that starts a pool without an
``if __name__ == "__main__":`` guard fails here on every Python, not only on 3.14.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

TOOL = Path(__file__).parent.parent / "tools" / "docs_check.py"


def _load_tool() -> Any:
    spec = importlib.util.spec_from_file_location("docs_check", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("docs_check", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


docs_check = _load_tool()
BLOCKS = docs_check.collect()


RUNNABLE = [block for block in BLOCKS if block.skip_reason is None]


def test_the_docs_have_examples_and_every_one_not_run_says_why() -> None:
    # A collection that finds nothing (a moved docs folder, a broken parser) must not pass.
    assert len(RUNNABLE) >= 5, BLOCKS
    assert all(block.skip_reason.strip() for block in BLOCKS if block not in RUNNABLE)


@pytest.mark.parametrize("block", RUNNABLE, ids=[block.name for block in RUNNABLE])
def test_doc_example_runs(block: Any) -> None:
    outcome = docs_check.run_block(block, timeout=45)
    assert outcome.ok, outcome.report()
