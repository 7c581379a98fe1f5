"""The inputs of a batch run: JSON Lines, CSV, a glob or folder of files, or stdin.

Owns reading an input lazily into numbered records (``InputRecord``), what each form means as
arguments, and the fingerprint of each record, which lets ``--resume`` prove the input has not
changed under a journal. A malformed line becomes a record with an ``error``: it fails that
item, never the run. An input that cannot be read at all raises ``InputError``.

    JSON Lines   a list is positional arguments, an object keyword arguments, anything else
                 one argument; blank lines are skipped
    CSV          a header line, then one row of keyword arguments (strings) per line
    glob/folder  each matching file's path is one argument, in sorted order
    -            JSON Lines read from stdin
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

KINDS = ("jsonl", "csv", "files")


class InputError(Exception):
    """The input cannot be read (missing, unreadable, changed, or not in the expected form)."""


@dataclass(frozen=True, slots=True)
class InputRecord:
    index: int  # the item's number in the input, from 0
    where: str  # "line 7", or the file's path: how messages name it
    fingerprint: str  # a short hash of the item's raw text
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] | None = None
    error: str | None = None  # why this record is malformed
    text: str | None = None  # a malformed record's raw text

    @property
    def shown(self) -> Any:
        """The item as the results file shows it."""
        if self.error is not None:
            return self.text
        if self.kwargs:
            return self.kwargs
        return self.args[0] if len(self.args) == 1 else list(self.args)


def fingerprint(raw: bytes) -> str:
    return hashlib.blake2b(raw, digest_size=8).hexdigest()


class InputSource:
    """An input named on the command line. ``records()`` reads it lazily, from the start."""

    def __init__(self, spec: str, kind: str | None = None) -> None:
        self.spec = spec
        self.kind = kind or _guess_kind(spec)
        if self.kind not in KINDS:
            raise InputError(f"unknown input format {self.kind!r}; use one of {', '.join(KINDS)}")
        if spec != "-" and self.kind != "files":
            _check_readable(Path(spec))
        # Listed once: a glob matched again later could name other files.
        self._files = self._paths() if self.kind == "files" else []
        if self.kind == "files" and not self._files:
            raise InputError(f"no files match {spec!r}")

    @property
    def identity(self) -> str:
        """What a journal remembers to recognise this input: its form and absolute name."""
        name = self.spec if self.spec == "-" else os.path.abspath(self.spec)
        return f"{self.kind}:{name}"

    def count(self) -> int | None:
        """How many records there are, if that can be known without consuming the input."""
        if self.spec == "-":
            return None
        if self.kind == "files":
            return len(self._files)
        try:
            if self.kind == "csv":
                with open(self.spec, newline="", encoding="utf-8") as handle:
                    return max(0, sum(1 for _ in csv.reader(handle)) - 1)
            with open(self.spec, "rb") as handle:
                return sum(1 for line in handle if line.strip())
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise InputError(f"cannot read the input {self.spec!r}: {exc}") from None

    def records(self) -> Iterator[InputRecord]:
        if self.kind == "files":
            for index, path in enumerate(self._files):
                yield InputRecord(index, path, fingerprint(path.encode()), (path,))
        elif self.kind == "csv":
            yield from self._csv_records()
        elif self.spec == "-":
            yield from _jsonl_records(sys.stdin.buffer)
        else:
            with open(self.spec, "rb") as handle:
                yield from _jsonl_records(handle)

    def _paths(self) -> list[str]:
        if os.path.isdir(self.spec):
            return sorted(str(p) for p in Path(self.spec).iterdir() if p.is_file())
        return sorted(p for p in glob.glob(self.spec, recursive=True) if os.path.isfile(p))

    def _csv_records(self) -> Iterator[InputRecord]:
        with open(self.spec, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                return
            if len(set(header)) != len(header) or not all(header):
                raise InputError(f"{self.spec}: the header line must name each column once, "
                                 f"found {header}")
            index = 0
            line = reader.line_num
            try:
                for row in reader:
                    raw = "\x1f".join(row).encode()
                    where = f"line {line + 1}"
                    if len(row) != len(header):
                        yield InputRecord(index, where, fingerprint(raw), error=(
                            f"{where}: expected {len(header)} fields "
                            f"({', '.join(header)}), found {len(row)}"), text=",".join(row))
                    else:
                        yield InputRecord(index, where, fingerprint(raw),
                                          kwargs=dict(zip(header, row, strict=True)))
                    index += 1
                    line = reader.line_num
            except (csv.Error, UnicodeDecodeError) as exc:
                raise InputError(f"{self.spec}, line {reader.line_num}: cannot read CSV: "
                                 f"{exc}") from None


def _jsonl_records(stream: BinaryIO | io.BufferedReader) -> Iterator[InputRecord]:
    index = 0
    for number, raw in enumerate(stream, 1):
        raw = raw.strip()
        if not raw:
            continue
        where = f"line {number}"
        try:
            value = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            yield InputRecord(index, where, fingerprint(raw),
                              error=f"{where}: not valid JSON ({exc})",
                              text=raw.decode(errors="replace"))
        else:
            if isinstance(value, list):
                yield InputRecord(index, where, fingerprint(raw), tuple(value))
            elif isinstance(value, dict):
                yield InputRecord(index, where, fingerprint(raw), kwargs=value)
            else:
                yield InputRecord(index, where, fingerprint(raw), (value,))
        index += 1


def _guess_kind(spec: str) -> str:
    if spec == "-":
        return "jsonl"
    if os.path.isdir(spec) or any(char in spec for char in "*?["):
        return "files"
    return "csv" if spec.lower().endswith(".csv") else "jsonl"


def _check_readable(path: Path) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise InputError(f"cannot read the input {str(path)!r}: {exc.strerror}") from None
