"""The ``procpool`` command: ``procpool run`` (a resumable batch run) and ``procpool status``.

Owns the command line only: arguments, their checks and help, messages, exit statuses. The run
itself is runner.py.

Exit status: 0 every item ok; 1 some item failed; 2 the run could not start or go on (bad
arguments, unreadable input, a journal of another run); 130 interrupted (resume with --resume).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from .inputs import KINDS
from .journal import Journal, JournalError, holder_of
from .runner import RunSpec, UsageError, run_batch

EXAMPLES = """\
examples:
  procpool run mytasks:resize 'photos/*.jpg' -o resized.jsonl
  procpool run mytasks:score items.jsonl --task-timeout 60 --retries 2
  procpool run mytasks:score items.jsonl --resume      # after Ctrl-C, a kill or a reboot
  procpool status resized.jsonl       # or its journal, resized.jsonl.journal
"""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return _run(parser, args)
        return _status(Path(args.journal))
    except UsageError as exc:
        print(f"procpool {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before the first item or after the last: nothing to summarise
        print(f"procpool {args.command}: interrupted", file=sys.stderr)
        return 130


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    output = Path(args.output)
    backend = _backend(args)
    if (args.forward_logs or args.forward_output) and backend != "local":
        parser.error("--forward-logs and --forward-output need local workers: Dask forwards "
                     "its workers' logs itself (Client.forward_logging())")
    spec = RunSpec(
        function=args.function,
        input=args.input,
        output=output,
        journal=Path(args.journal) if args.journal else Path(f"{output}.journal"),
        input_format=args.format,
        resume=args.resume,
        restart=args.restart,
        workers=args.workers,
        task_timeout=args.task_timeout,
        retries=args.retries,
        chunksize=args.chunksize,
        max_memory_per_child=args.max_memory_per_child,
        start_method=args.start_method,
        backend=backend,
        progress=sys.stderr.isatty() if args.progress is None else args.progress,
        forward_logs=args.forward_logs,
        forward_output=args.forward_output,
    )
    # A plain `kill` stops the run as Ctrl-C does: the journal is closed cleanly either way
    # (and a SIGKILL loses nothing recorded), but this way the summary is printed.
    signal.signal(signal.SIGTERM, _interrupt_this_process())
    summary = run_batch(spec)
    print(summary.line(output), flush=True)
    if summary.interrupted:
        print(f"continue with the same command and --resume (journal: {spec.journal})",
              file=sys.stderr)
    return summary.exit_status


def _backend(args: argparse.Namespace) -> Any:
    if args.dask_address or args.dask_scheduler_file:
        from .._backends.dask import DaskBackend

        return DaskBackend(address=args.dask_address, scheduler_file=args.dask_scheduler_file)
    return args.backend


def _status(path: Path) -> int:
    path = _journal_path(path)
    try:
        journal = Journal.open(path, read_only=True)
    except JournalError as exc:
        raise UsageError(str(exc)) from None
    try:
        run = journal.run
        counts = journal.counts()
        total = journal.meta("total")
        state = journal.meta("state") or "unknown"
        holder = holder_of(path)
        if holder is not None:
            state = f"running now (pid {holder})"
        elif state == "running":
            state = "stopped before finishing (killed?); continue it with --resume"
        elif state == "interrupted":
            state = "interrupted; continue it with --resume"
        elif state == "failed":
            state = (f"stopped by an error: {journal.meta('error')} (once that is fixed, "
                     f"continue it with --resume)")
        failed = f"{counts.failed} failed"
        if counts.timed_out:
            failed += f" ({counts.timed_out} timed out)"
        lines = [
            f"journal   {path}",
            f"run       {run.get('function')} over {run.get('input')}",
            f"results   {run.get('output')}",
            f"started   {journal.meta('created')}, last update {journal.meta('updated')}",
            f"state     {state}",
            f"items     {counts.items}{f' of {total}' if total else ''} recorded: "
            f"{counts.ok} ok, {failed}, {counts.retried} retried",
        ]
        print("\n".join(lines))
    finally:
        journal.close()
    return 0


def _journal_path(path: Path) -> Path:
    """The journal ``procpool status PATH`` means: PATH, or, when PATH is a run's results file,
    the journal beside it (OUTPUT.journal)."""
    if _is_sqlite(path):
        return path
    beside = Path(f"{path}.journal")
    if beside.exists():
        return beside
    if path.is_file() and not path.name.endswith(".journal"):
        raise UsageError(f"{path} is not a journal, and there is no {beside} beside it (the "
                         f"journal of a run with -o {path}); pass the --journal path the run "
                         f"used")
    return path


def _is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


class _VersionAction(argparse.Action):
    """``--version``: the installed distribution's version, looked up only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        print(f"procpool {version()}")
        parser.exit()


def version() -> str:
    """The installed procpool's version; from a source tree that is not installed, the
    package's own ``__version__``."""
    try:
        return importlib.metadata.version("procpool")
    except importlib.metadata.PackageNotFoundError:
        from .. import __version__

        return __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="procpool", description="Run a Python function over many inputs in parallel.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_VersionAction,
                        help="print procpool's version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     help="run or status; procpool COMMAND -h for its options")

    run = commands.add_parser(
        "run", help="map MODULE:FUNCTION over the items of INPUT, with a resumable journal",
        description="Map MODULE:FUNCTION over the items of INPUT in parallel. Each finished "
                    "item is recorded in a journal (SQLite) and written as one JSON line to "
                    "the results file; --resume continues an interrupted run without redoing "
                    "or rewriting a finished item.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("function", metavar="MODULE:FUNCTION",
                     help="the function to call; MODULE is imported (the current directory "
                          "is searched first)")
    run.add_argument("input", metavar="INPUT",
                     help="a JSON Lines file (a list is positional arguments, an object "
                          "keyword arguments, anything else one argument), a CSV file (a "
                          "header, then one row of keyword arguments per line), a glob or "
                          "folder of files (each path one argument), or - for JSON Lines "
                          "on stdin")
    run.add_argument("-o", "--output", default="results.jsonl",
                     help="the results file, one JSON line per item (default: %(default)s)")
    run.add_argument("--journal", help="the journal file (default: OUTPUT.journal)")
    again = run.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the run recorded in the journal")
    again.add_argument("--restart", action="store_true",
                       help="discard an existing journal and results file, and start over")
    run.add_argument("--format", choices=KINDS,
                     help="how to read INPUT (default: from its name: .csv is CSV, a glob or "
                          "folder is files, anything else JSON Lines)")
    run.add_argument("-w", "--workers", type=_positive_int,
                     help="worker processes (default: the CPUs this process may use)")
    run.add_argument("--task-timeout", type=_positive_float, metavar="SECONDS",
                     help="kill an item that runs longer, and record it as timed out")
    run.add_argument("--retries", type=_non_negative_int, default=0,
                     help="run an item again after its worker died or it timed out "
                          "(default: %(default)s)")
    run.add_argument("--chunksize", type=_positive_int, default=1,
                     help="items sent to a worker at once (default: %(default)s)")
    run.add_argument("--max-memory-per-child", type=_size, metavar="SIZE",
                     help="replace a worker whose memory grows past SIZE (bytes, or 500M, 2G)")
    run.add_argument("--start-method", choices=("fork", "spawn", "forkserver"),
                     help="how worker processes start (default: the platform's)")
    run.add_argument("--backend", choices=("local", "dask"), default="local",
                     help="where items run: local processes, or a Dask cluster (default: "
                          "%(default)s; with dask and no address, a cluster on this machine)")
    cluster = run.add_mutually_exclusive_group()
    cluster.add_argument("--dask-address", metavar="ADDRESS",
                         help="the Dask scheduler to use (implies --backend dask)")
    cluster.add_argument("--dask-scheduler-file", metavar="PATH",
                         help="the Dask scheduler file to use (implies --backend dask)")
    logs = run.add_mutually_exclusive_group()
    logs.add_argument("--forward-logs", action="store_true", default=None,
                      help="show the workers' log records here, above the progress bar "
                           "(default: with spawn and forkserver, whose workers have no "
                           "logging set up of their own)")
    logs.add_argument("--no-forward-logs", dest="forward_logs", action="store_false",
                      help="leave the workers' logging as it is")
    run.add_argument("--forward-output", action="store_true",
                     help="write what the function prints to this command's output, whole "
                          "lines at a time")
    shown = run.add_mutually_exclusive_group()
    shown.add_argument("--progress", action="store_true", default=None,
                       help="show a progress bar (default: when stderr is a terminal)")
    shown.add_argument("--no-progress", dest="progress", action="store_false",
                       help="never show a progress bar, even when stderr is a terminal")

    status = commands.add_parser(
        "status", help="say where a run stands",
        description="Print where the run recorded in JOURNAL stands: its function, input and "
                    "results file, when it started and last recorded an item, whether it "
                    "finished, and how many items are recorded.")
    status.add_argument("journal", metavar="JOURNAL",
                        help="the run's journal, or its results file (then the journal is "
                             "OUTPUT.journal beside it)")
    return parser


def _positive_int(text: str) -> int:
    value: int = _parse(int, text, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def _non_negative_int(text: str) -> int:
    value: int = _parse(int, text, "a whole number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _positive_float(text: str) -> float:
    value: float = _parse(float, text, "a number")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def _size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if match is None:
        raise argparse.ArgumentTypeError(f"expected bytes or a size like 500M or 2G, not {text}")
    size = int(float(match[1]) * _UNITS[match[2].upper()])
    if size < 1:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return size


def _parse(kind: Any, text: str, what: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, not {text!r}") from None


def _interrupt_this_process() -> Callable[[int, object], NoReturn]:
    """A SIGTERM handler that raises KeyboardInterrupt in this process only."""
    runner = os.getpid()

    def handler(signum: int, frame: object) -> NoReturn:
        if os.getpid() != runner:
            # A worker forked before it set its own handlers (the pool stops it as it
            # starts): it dies of the signal, as without this handler, with no traceback.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        raise KeyboardInterrupt

    return handler
