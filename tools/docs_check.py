"""Run the Python examples of README.md and docs/*.md, and say which ones fail.

    python tools/docs_check.py [--list] [--start-method fork|spawn|forkserver]
                               [--timeout SECONDS] [MARKDOWN_FILE ...]

Every fenced block whose info string is ``python`` (or ``py``) is an example. Each one runs on
its own, as a script in a fresh temporary folder, under a timeout, with the repository's root
(for ``examples.*`` and ``benchmarks.*``) and ``tests/`` (the tests' helper modules) on
PYTHONPATH. A block that opens with a comment naming a file (``# tasks.py``) is written under
that name, so the name it tells readers to use is the one it runs under.

The blocks run under the forkserver start method by default, whatever the Python's own default
(fork on Linux up to 3.13, forkserver from 3.14): an example that starts a pool outside an
``if __name__ == "__main__":`` guard then fails here, as it would for a reader on 3.14, macOS
or Windows.

A block that is not meant to run alone (a fragment, an interactive session, one that needs a
Dask cluster) says so in the Markdown, on the last non-blank line before its fence, with an
HTML comment, which a renderer does not show:

    <!-- docs-check: skip (fragment: needs the definitions above) -->

The reason in parentheses is required. Any other ``docs-check:`` comment, or a skip comment
not followed by a Python block, is an error, so a typo cannot silently turn a check off.

Exits 0 when every block that is not skipped ran and exited 0; otherwise prints each failing
block (file, line, exit status, the end of its output) and exits 1.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_START_METHOD = "forkserver"
DEFAULT_TIMEOUT = 60.0

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
_DIRECTIVE = re.compile(r"<!--\s*docs-check:(?P<body>.*?)-->")
_SKIP = re.compile(r"^\s*skip\s*\((?P<reason>.*\S.*)\)\s*$")
_FILE_NAME = re.compile(r"^#\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*\.py)\s*$")
_PYTHON_INFO = {"python", "py", "python3"}

# Runs the block as ``__main__`` under the chosen start method. It lives beside the block, so
# that the block's folder is sys.path[0], as when a reader runs ``python block.py``.
_LAUNCHER = """\
import multiprocessing, runpy, sys
multiprocessing.set_start_method(sys.argv[1])
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


class MarkupError(Exception):
    """A ``docs-check:`` comment that cannot be understood or is in the wrong place."""


@dataclass(frozen=True)
class Block:
    """One fenced Python block of a Markdown file."""

    path: Path  # the Markdown file
    line: int  # 1-based line of the opening fence
    code: str
    skip_reason: str | None = None

    @property
    def name(self) -> str:
        """``docs/robustness.md:22``: relative to the repository when it is inside it."""
        try:
            shown = self.path.resolve().relative_to(ROOT)
        except ValueError:
            shown = self.path
        return f"{shown}:{self.line}"

    @property
    def file_name(self) -> str:
        """The name the block runs under: the one its first line names, or block.py."""
        first = self.code.splitlines()[0] if self.code.strip() else ""
        match = _FILE_NAME.match(first)
        return match["name"] if match else "block.py"


@dataclass(frozen=True)
class Outcome:
    block: Block
    returncode: int | None  # None: killed at the timeout
    output: str  # stdout and stderr, interleaved

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def report(self, tail_lines: int = 30) -> str:
        status = "timed out" if self.returncode is None else f"exit status {self.returncode}"
        tail = "\n".join(self.output.rstrip().splitlines()[-tail_lines:])
        indented = "".join("\n    " + line for line in tail.splitlines())
        return f"{self.block.name}: {status}{indented}"


def default_files(root: Path = ROOT) -> list[Path]:
    """README.md, then every docs/*.md, sorted."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def parse(path: Path) -> list[Block]:
    """Every Python block of one Markdown file, with the skip reason its comment gives."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    pending_skip: tuple[int, str] | None = None  # (line, reason) of a skip not yet used
    index = 0
    while index < len(lines):
        line = lines[index]
        fence = _FENCE.match(line)
        if fence is None:
            for directive in _DIRECTIVE.finditer(line):
                if pending_skip is not None:
                    raise MarkupError(f"{path}:{pending_skip[0]}: a skip comment must be "
                                      "followed by a Python block")
                skip = _SKIP.match(directive["body"])
                if skip is None:
                    raise MarkupError(f"{path}:{index + 1}: not understood: {directive[0]!r} "
                                      "(expected <!-- docs-check: skip (reason) -->)")
                pending_skip = (index + 1, skip["reason"].strip())
            if line.strip() and pending_skip is not None and pending_skip[0] != index + 1:
                raise MarkupError(f"{path}:{pending_skip[0]}: a skip comment must be the last "
                                  "non-blank line before a Python block")
            index += 1
            continue
        # A fenced block: find its end (the same character, at least as long, nothing after).
        marker = fence["fence"]
        indent = len(fence["indent"])
        language = fence["info"].split()[0].lower() if fence["info"].strip() else ""
        body: list[str] = []
        end = index + 1
        while end < len(lines):
            closing = lines[end].strip()
            if closing.startswith(marker) and set(closing) == {marker[0]}:
                break
            text = lines[end]
            # Content lines lose up to the fence's own indentation (CommonMark).
            strip = min(indent, len(text) - len(text.lstrip(" ")))
            body.append(text[strip:])
            end += 1
        if language in _PYTHON_INFO:
            reason = pending_skip[1] if pending_skip is not None else None
            blocks.append(Block(path, index + 1, "\n".join(body) + "\n", reason))
        elif pending_skip is not None:
            raise MarkupError(f"{path}:{pending_skip[0]}: a skip comment must be followed by "
                              f"a Python block, not a {language or 'plain'} block")
        pending_skip = None
        index = end + 1
    if pending_skip is not None:
        raise MarkupError(f"{path}:{pending_skip[0]}: a skip comment must be followed by a "
                          "Python block")
    return blocks


def collect(files: list[Path] | None = None) -> list[Block]:
    """The Python blocks of ``files`` (default: README.md and docs/*.md), in order."""
    blocks: list[Block] = []
    for path in files if files is not None else default_files():
        blocks += parse(path)
    return blocks


def _environment() -> dict[str, str]:
    environment = dict(os.environ)
    paths = [str(ROOT), str(ROOT / "tests")]
    if environment.get("PYTHONPATH"):
        paths.append(environment["PYTHONPATH"])
    environment["PYTHONPATH"] = os.pathsep.join(paths)
    environment.setdefault("PYTHONUNBUFFERED", "1")
    return environment


def run_block(block: Block, *, start_method: str = DEFAULT_START_METHOD,
              timeout: float = DEFAULT_TIMEOUT, python: str = sys.executable) -> Outcome:
    """Run one block as a script in a temporary folder; its output is captured."""
    with tempfile.TemporaryDirectory(prefix="procpool-docs-") as folder:
        script = Path(folder) / block.file_name
        script.write_text(block.code, encoding="utf-8")
        launcher = Path(folder) / "_docs_check_launcher.py"
        launcher.write_text(_LAUNCHER, encoding="utf-8")
        command = [python, str(launcher), start_method, str(script)]
        try:
            done = subprocess.run(command, cwd=folder, env=_environment(), timeout=timeout,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        except subprocess.TimeoutExpired as expired:
            output = expired.output or ""
            if isinstance(output, bytes):
                output = output.decode(errors="replace")
            return Outcome(block, None, output)
        return Outcome(block, done.returncode, done.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path,
                        help="Markdown files (default: README.md and docs/*.md)")
    parser.add_argument("--list", action="store_true",
                        help="list the blocks and whether each runs or is skipped; run none")
    parser.add_argument("--start-method", choices=["fork", "spawn", "forkserver"],
                        default=DEFAULT_START_METHOD,
                        help=f"how the blocks' pools start workers (default: "
                             f"{DEFAULT_START_METHOD})")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"seconds one block may run (default: {DEFAULT_TIMEOUT:g})")
    arguments = parser.parse_args(argv)
    try:
        blocks = collect(arguments.files or None)
    except MarkupError as error:
        print(f"docs-check: {error}", file=sys.stderr)
        return 2
    if arguments.list:
        for block in blocks:
            print(f"{block.name}: " + (f"skip ({block.skip_reason})" if block.skip_reason
                                       else f"runs as {block.file_name}"))
        return 0
    failures: list[Outcome] = []
    ran = skipped = 0
    for block in blocks:
        if block.skip_reason is not None:
            skipped += 1
            print(f"skip  {block.name} ({block.skip_reason})")
            continue
        outcome = run_block(block, start_method=arguments.start_method,
                            timeout=arguments.timeout)
        ran += 1
        print(f"{'ok  ' if outcome.ok else 'FAIL'}  {block.name}", flush=True)
        if not outcome.ok:
            failures.append(outcome)
    for outcome in failures:
        print("\n" + outcome.report())
    print(f"\ndocs-check: {ran} block{'' if ran == 1 else 's'} ran "
          f"({arguments.start_method}), {len(failures)} failed, {skipped} skipped")
    if failures:
        print("failed: " + " ".join(outcome.block.name for outcome in failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
