"""One batch run (``procpool run``): a function mapped over an input, journaled, resumable.

Owns a run from start to summary: finding MODULE:FUNCTION, creating the journal or checking
that the one to resume belongs to this run, bringing the results file in line with the journal,
feeding the pool only the items not recorded yet, and recording each outcome (journal first,
then the results file: the protocol is in journal.py). The pool does the running, with the
library's options; inputs.py reads the input; item.py is what a worker runs for each item;
cli.py is the command line around this.

A results line:
    {"index": 3, "status": "ok", "result": ..., "attempts": 1, "duration": 0.0121, "input": ...}
    {"index": 4, "status": "error", "error": {"type", "message", "traceback"}, ...}
status is ok, error (the function raised), died (its worker died), timeout (--task-timeout)
or invalid (the input line is malformed; the function was not called). Every line is strict
JSON: a NaN or infinite float is written as the string "NaN", "Infinity" or "-Infinity".

A run that fails before recording any item (the results file cannot be written, the input
turns out unreadable) leaves nothing behind: the journal it created is deleted, so the same
command works once the cause is fixed. One that fails later keeps its journal, marked failed
with the reason, for --resume.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
import queue
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._errors import TaskTimeout, WorkerDied
from .._pool import Pool
from .._progress import make_tracker
from .._streams import Outcome
from .._task import name_of
from .inputs import InputError, InputRecord, InputSource
from .item import BatchItem, ItemReport, describe_error, json_text, run_item
from .journal import Journal, JournalCounts, JournalError, holder_of, now_text


class UsageError(Exception):
    """The run cannot start or go on as asked; the message says why and what to do."""


@dataclass(frozen=True)
class RunSpec:
    """Everything ``procpool run`` was asked to do."""

    function: str  # MODULE:FUNCTION
    input: str
    output: Path
    journal: Path
    input_format: str | None = None
    resume: bool = False
    restart: bool = False
    workers: int | None = None
    task_timeout: float | None = None
    retries: int = 0
    chunksize: int = 1
    max_memory_per_child: int | None = None
    start_method: str | None = None
    backend: Any = "local"  # "local", "dask", or a procpool.DaskBackend
    progress: bool = False
    forward_logs: bool | None = None  # None: the pool's default
    forward_output: bool = False


@dataclass(frozen=True)
class RunSummary:
    counts: JournalCounts  # the whole run, this session and earlier ones
    total: int | None  # items in the input, if known
    session_items: int  # items recorded by this session
    elapsed: float  # this session's seconds
    interrupted: bool

    @property
    def exit_status(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.counts.failed else 0

    def line(self, output: Path) -> str:
        counts = self.counts
        failed = f"{counts.failed} failed"
        if counts.timed_out:
            failed += f" ({counts.timed_out} timed out)"
        rate = self.session_items / self.elapsed if self.elapsed > 0 else 0.0
        of = f" of {self.total}" if self.total is not None else ""
        head = "interrupted" if self.interrupted else "done"
        return (f"procpool run {head}: {counts.items}{of} items, {counts.ok} ok, {failed}, "
                f"{counts.retried} retried; {self.session_items} this session in "
                f"{self.elapsed:.1f} s ({rate:.1f} items/s); results in {output}")


def resolve_function(spec: str) -> Callable[..., Any]:
    """Import MODULE and find FUNCTION (dotted names allowed) in it."""
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise UsageError(f"expected MODULE:FUNCTION (for example mypackage.tasks:resize), "
                         f"not {spec!r}")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does: modules here can be found
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise UsageError(f"cannot import the module {module_name!r}: "
                         f"{type(exc).__name__}: {exc}") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            names = sorted(  # what it defines itself, not what it imported
                n for n, v in vars(target).items() if callable(v) and not n.startswith("_")
                and getattr(v, "__module__", None) == getattr(target, "__name__", None))
            raise UsageError(f"{module_name!r} has no {attribute!r}; callables there: "
                             f"{', '.join(names) or 'none'}")
        target = getattr(target, part)
    if not callable(target):
        raise UsageError(f"{spec} is a {type(target).__name__}, not a function")
    return target  # type: ignore[no-any-return]


def run_batch(spec: RunSpec) -> RunSummary:
    function = resolve_function(spec.function)
    try:
        source = InputSource(spec.input, spec.input_format)
    except InputError as exc:
        raise UsageError(str(exc)) from None
    _check_output(spec.output)
    journal, fresh = _open_journal(spec, source)
    before = {"state": journal.meta("state") or "unknown", "updated": journal.meta("updated")}
    started = time.monotonic()
    recorder = _Recorder(journal, spec.output, name_of(function))
    try:
        try:
            return _session(spec, function, source, journal, recorder, started)
        except InputError as exc:
            raise UsageError(str(exc)) from None
    except BaseException as exc:
        if fresh and journal.counts().items == 0:
            # It never started: leave nothing that would make the same command refuse to run.
            recorder.close(remove_if_created=True)
            journal.discard()
        elif not fresh and recorder.session_items == 0:
            # A resume refused (the input changed) or stopped before it ran anything: the
            # journal still tells the story of the session before it.
            journal.set_meta(**{key: value for key, value in before.items() if value})
        elif isinstance(exc, Exception):
            journal.set_meta(state="failed", updated=now_text(),
                             error=str(exc) or type(exc).__name__)
        else:
            journal.set_meta(state="interrupted", updated=now_text())
        raise
    finally:
        recorder.close()
        journal.close()


def _session(spec: RunSpec, function: Callable[..., Any], source: InputSource,
             journal: Journal, recorder: _Recorder, started: float) -> RunSummary:
    interrupted = False
    total = source.count()
    journal.set_meta(state="running", updated=now_text(),
                     **({} if total is None else {"total": total}))
    recorder.catch_up()
    feeder = _Feeder(source, journal.fingerprints())
    remaining = None if total is None else max(0, total - len(feeder.recorded))
    tracker = make_tracker(spec.progress, remaining, name_of(function))
    recorder.tracker_advance = tracker.advance if tracker else None
    try:
        with _log_records_shown(above_a_bar=tracker is not None):
            _run_items(spec, function, feeder, recorder)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if tracker is not None:
            tracker.finish()
    if interrupted:
        journal.set_meta(state="interrupted", updated=now_text())
    else:
        total = feeder.read
        journal.set_meta(state="finished", updated=now_text(), total=total)
    return RunSummary(journal.counts(), total, recorder.session_items,
                      time.monotonic() - started, interrupted)


def _run_items(spec: RunSpec, function: Callable[..., Any], feeder: _Feeder,
               recorder: _Recorder) -> None:
    pool = Pool(spec.workers, context=spec.start_method, task_timeout=spec.task_timeout,
                retries=spec.retries, max_memory_per_child=spec.max_memory_per_child,
                backend=spec.backend, forward_logs=spec.forward_logs,
                forward_output=spec.forward_output)
    with pool:
        outcomes = pool._imap_outcomes(functools.partial(run_item, function), feeder.items(),
                                       chunksize=spec.chunksize)
        for outcome in outcomes:
            recorder.invalid(feeder.take_malformed())
            record = feeder.positions.pop(outcome.index, None)
            if record is None:  # not an item: the input failed while being read
                error = outcome.value
                if isinstance(error, InputError):
                    raise UsageError(str(error))
                raise UsageError(f"cannot read the input {spec.input!r}: "
                                 f"{type(error).__name__}: {error}")
            recorder.outcome(record, outcome)
        recorder.invalid(feeder.take_malformed())
        pool.close()
        pool.join()


@contextlib.contextmanager
def _log_records_shown(*, above_a_bar: bool) -> Iterator[None]:
    """The run's log records, its workers' forwarded ones among them, go to stderr: through
    the progress bar's own writer while it is drawn, so each shows whole, above the bar."""
    root = logging.getLogger()
    added = None
    if not root.handlers:  # the program did not set up logging itself (the command line)
        added = logging.StreamHandler(sys.stderr)
        added.setFormatter(logging.Formatter("%(levelname)s %(processName)s: %(message)s"))
        root.addHandler(added)
    try:
        if above_a_bar:
            from tqdm.contrib.logging import logging_redirect_tqdm

            with logging_redirect_tqdm():
                yield
        else:
            yield
    finally:
        if added is not None:
            root.removeHandler(added)


class _Feeder:
    """Turns the input into the items the pool runs: it skips what the journal has (checking
    it is the same item), sets malformed records aside, and remembers which input record each
    submitted item is. Runs in the pool's feeder thread; the runner takes from it."""

    def __init__(self, source: InputSource, recorded: dict[int, str]) -> None:
        self._source = source
        self.recorded = recorded
        self.positions: dict[int, InputRecord] = {}  # stream position -> record
        self._malformed: queue.SimpleQueue[InputRecord] = queue.SimpleQueue()
        self.read = 0  # records read so far

    def items(self) -> Iterator[BatchItem]:
        position = 0
        for record in self._source.records():
            self.read += 1
            known = self.recorded.get(record.index)
            if known is not None:
                if known != record.fingerprint:
                    raise InputError(
                        f"the input changed since the journal was written: item "
                        f"{record.index} ({record.where}) is not the one recorded. Resume with "
                        f"the same input, or start over with --restart")
                continue
            if record.error is not None:
                self._malformed.put(record)
                continue
            self.positions[position] = record
            position += 1
            yield BatchItem(record.args, record.kwargs or {})
        if self.recorded and max(self.recorded) >= self.read:
            raise InputError(f"the input has {self.read} items but the journal recorded item "
                             f"{max(self.recorded)}: it is not the input of this run")

    def take_malformed(self) -> list[InputRecord]:
        taken = []
        while True:
            try:
                taken.append(self._malformed.get_nowait())
            except queue.Empty:
                return taken


class _Recorder:
    """Writes each outcome to the journal, then to the results file (see journal.py)."""

    def __init__(self, journal: Journal, output: Path, function_name: str) -> None:
        self._journal = journal
        self._function_name = function_name
        self._output = output
        self._fd = -1
        self._size = 0
        self._created = False  # this session created the results file
        self.session_items = 0
        self.tracker_advance: Callable[..., None] | None = None

    def catch_up(self) -> None:
        """Make the results file hold exactly the journal's written lines, then write the
        lines recorded but not written before the last run stopped."""
        journal = self._journal
        try:
            try:
                self._fd = os.open(self._output, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                self._created = True
            except FileExistsError:
                self._fd = os.open(self._output, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UsageError(f"cannot write the results file {self._output}: "
                             f"{exc.strerror}") from None
        size, committed = os.fstat(self._fd).st_size, journal.output_offset()
        if size < committed:  # the file lost lines the journal kept: write them again
            os.ftruncate(self._fd, 0)
            self._size = 0
            for line in journal.written_lines():
                self._append(line)
            journal.set_meta(output_offset=self._size)
        else:
            os.ftruncate(self._fd, committed)  # drop a line whose commit never happened
            self._size = committed
        for index, line in journal.unwritten():
            self._append(line)
            journal.mark_written(index, self._size)

    def outcome(self, record: InputRecord, outcome: Outcome) -> None:
        fields: dict[str, Any] = {}
        duration = None
        attempts = outcome.attempt
        if outcome.ok:
            report: ItemReport = outcome.value
            duration = report.duration
            if report.ok:
                status = "ok"
                fields["result"] = _Raw(report.result_json or "null")
            else:
                status, fields["error"] = "error", report.error
        else:
            error = outcome.value
            attempts = getattr(error, "attempts", None) or attempts
            status = "error"
            if isinstance(error, (TaskTimeout, WorkerDied)):
                # The pool numbers the items it was given; the input's numbering is what
                # the user knows (the pool skipped items recorded earlier).
                status = "timeout" if isinstance(error, TaskTimeout) else "died"
                error = error.naming(f"{self._function_name}() on item {record.index} "
                                     f"({record.where})")
            fields["error"] = describe_error(error)
        self._record(record, status, attempts, duration, fields)

    def invalid(self, records: list[InputRecord]) -> None:
        for record in records:
            error = {"type": "InvalidInput", "message": record.error or "", "traceback": ""}
            self._record(record, "invalid", 0, None, {"error": error})

    def _record(self, record: InputRecord, status: str, attempts: int,
                duration: float | None, fields: dict[str, Any]) -> None:
        line = _line(record, status, attempts, duration, fields)
        self._journal.record(record.index, record.fingerprint, status, attempts, duration, line)
        self._append(line)
        self._journal.mark_written(record.index, self._size)
        self.session_items += 1
        if self.tracker_advance is not None:
            self.tracker_advance(1, 0 if status == "ok" else 1)

    def _append(self, line: str) -> None:
        data = line.encode()
        view = memoryview(data)
        while view:
            try:
                written = os.pwrite(self._fd, view, self._size)
            except OSError as exc:  # a full disk: what is recorded is written on --resume
                raise UsageError(f"cannot write the results file {self._output}: "
                                 f"{exc.strerror}") from None
            view = view[written:]
            self._size += written

    def close(self, *, remove_if_created: bool = False) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if remove_if_created and self._created:
            self._output.unlink(missing_ok=True)
            self._created = False


class _Raw:
    """JSON text already encoded in the worker, placed into a line as it is."""

    def __init__(self, text: str) -> None:
        self.text = text


def _line(record: InputRecord, status: str, attempts: int, duration: float | None,
          fields: dict[str, Any]) -> str:
    parts = [f'"index": {record.index}', f'"status": "{status}"']
    for key, value in fields.items():
        text = value.text if isinstance(value, _Raw) else json_text(value, str)
        parts.append(f'"{key}": {text}')
    parts.append(f'"attempts": {attempts}')
    parts.append(f'"duration": {"null" if duration is None else round(duration, 6)}')
    parts.append(f'"input": {json_text(record.shown, str)}')
    return "{" + ", ".join(parts) + "}\n"


def _check_output(output: Path) -> None:
    """Refuse, before any journal exists, a results file that cannot be written."""
    if output.is_dir():
        raise UsageError(f"the results file {output} is a folder; name a file with -o, for "
                         f"example -o {output / 'results.jsonl'}")
    real, named = output, str(output)
    if output.is_symlink():
        real = Path(os.path.realpath(output))
        named = f"{output} (a link to {real})"
    folder = real.parent
    if not folder.exists():
        raise UsageError(f"cannot write the results file {named}: the folder {folder} does "
                         f"not exist")
    if not folder.is_dir():
        raise UsageError(f"cannot write the results file {named}: {folder} is not a folder")
    if real.exists():
        if not real.is_file():
            raise UsageError(f"the results file {named} is not a regular file (results are "
                             f"rewritten in place on --resume); name a file with -o")
        if not os.access(real, os.W_OK):
            raise UsageError(f"cannot write the results file {named}: permission denied")
    elif not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write the results file {named}: the folder {folder} is "
                         f"not writable")


def _open_journal(spec: RunSpec, source: InputSource) -> tuple[Journal, bool]:
    """The journal of this run, and whether it was created now (not resumed)."""
    run = {"function": spec.function, "input": source.identity,
           "output": str(spec.output.resolve())}
    path = spec.journal
    if path.is_dir():
        raise UsageError(f"the journal {path} is a folder; name a file with --journal")
    if spec.restart:
        holder = holder_of(path)
        if holder is not None:
            raise UsageError(f"another procpool run (pid {holder}) is using the journal {path}; "
                             f"stop it before --restart")
        for stale in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), spec.output):
            stale.unlink(missing_ok=True)
    try:
        if path.exists():
            if not spec.resume:
                raise UsageError(f"{path} already holds a run; add --resume to continue it, or "
                                 f"--restart to discard it and its results and start over")
            journal = Journal.open(path)
            if journal.run != run:
                theirs = journal.run
                journal.close()
                raise UsageError(
                    f"the journal {path} belongs to another run: {theirs.get('function')} over "
                    f"{theirs.get('input')} into {theirs.get('output')}; this is "
                    f"{run['function']} over {run['input']} into {run['output']}. Resume with "
                    f"the same arguments, or use another --output/--journal")
            return journal, False
        if spec.resume:
            raise UsageError(f"nothing to resume: there is no journal at {path}")
        if spec.output.exists() and spec.output.stat().st_size:
            raise UsageError(f"the results file {spec.output} exists and has no journal; "
                             f"choose another --output, or pass --restart to overwrite it")
        return Journal.create(path, run), True
    except JournalError as exc:
        raise UsageError(str(exc)) from None

