"""The journal of a batch run: an SQLite file that makes ``procpool run --resume`` exact.

Owns the journal's schema, its checks (is this a procpool journal, of this run, intact?), the
lock that keeps two runners off one journal, and the protocol that writes each finished item
to the results file exactly once, whatever moment the runner is killed at:

1. the item's outcome (and the very line the results file will hold) is committed, marked
   unwritten;
2. the line is appended to the results file;
3. the item is marked written, with the file's new length, and committed.

On resume the results file is cut back to the last committed length (dropping a line whose
step 3 never happened, or half a line), rebuilt from the journal if it is shorter than that
(it lost data the journal kept), and every committed but unwritten line is written. A finished
item is therefore never run again and never written twice.

WAL mode with ``synchronous=NORMAL``: a commit survives the runner being killed at any point;
after a power cut the last commits may be lost, and those items simply run again. Closing the
journal (a run that finishes, is interrupted or fails) checkpoints it back into a single file
(rollback-journal mode; the next runner turns WAL on again) and removes the lock file, so a
run that ended leaves only the results file and the journal; ``procpool status`` then reads it
without creating any file beside it.

Every recorded item also stamps ``updated`` in the same commit, so after a ``kill -9`` the
journal still says when the last item was recorded.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = "procpool-journal/1"


class JournalError(Exception):
    """The journal cannot be used: missing, corrupt, locked, or from another run."""


@dataclass(frozen=True, slots=True)
class JournalCounts:
    items: int  # recorded items
    ok: int
    failed: int  # every status other than ok
    timed_out: int
    retried: int  # items that took more than one attempt


_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (
    idx INTEGER PRIMARY KEY,      -- the item's number in the input
    fingerprint TEXT NOT NULL,    -- hash of its raw input, to detect a changed input
    status TEXT NOT NULL,         -- ok, error, died, timeout, invalid
    attempts INTEGER NOT NULL,
    duration REAL,
    line TEXT NOT NULL,           -- the exact results-file line, newline included
    written INTEGER               -- order in the results file; NULL until written
);
"""


class Journal:
    """One open journal, used from one thread (the runner's)."""

    def __init__(self, path: Path, connection: sqlite3.Connection, lock_fd: int | None) -> None:
        self.path = path
        self._db = connection
        self._lock_fd = lock_fd
        self._closed = False
        self._written = self._db.execute("SELECT COALESCE(MAX(written), 0) FROM items"
                                         ).fetchone()[0]

    # ---- opening ---------------------------------------------------------------------------

    @classmethod
    def create(cls, path: Path, run: dict[str, Any]) -> Journal:
        """A new journal for ``run`` (what the run is: function, input, output, options)."""
        if path.exists():
            raise JournalError(f"a journal already exists at {path}")
        lock_fd = _lock(path)
        try:
            if path.exists():  # created by a runner that held the lock just before this one
                raise JournalError(f"a journal already exists at {path}")
            try:
                connection = _connect(path)
                try:
                    with connection:
                        connection.executescript(_SCHEMA)
                        created = now_text()
                        meta = {"format": FORMAT, "run": json.dumps(run, sort_keys=True),
                                "created": created, "updated": created, "output_offset": "0"}
                        connection.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
                except BaseException:
                    connection.close()
                    raise
            except BaseException:
                _remove_database(path)  # nothing half-made stays behind
                raise
        except sqlite3.Error as exc:
            _unlock(path, lock_fd)
            raise JournalError(f"cannot create the journal {path}: {exc}") from None
        except BaseException:
            _unlock(path, lock_fd)
            raise
        return cls(path, connection, lock_fd)

    @classmethod
    def open(cls, path: Path, *, read_only: bool = False) -> Journal:
        """An existing journal, checked to be an intact procpool journal, and locked unless
        it is opened ``read_only`` (``procpool status``, which may read a running one)."""
        if not path.exists():
            raise JournalError(f"there is no journal at {path}")
        lock_fd = None if read_only else _lock(path)
        try:
            connection = _connect(path, read_only)
            try:
                _check(path, connection)
            except BaseException:
                connection.close()
                raise
        except BaseException:
            if lock_fd is not None:
                _unlock(path, lock_fd)
            raise
        return cls(path, connection, lock_fd)

    def close(self) -> None:
        """Close the journal; the runner's copy is checkpointed into one file and unlocked."""
        if self._closed:
            return
        self._closed = True
        if self._lock_fd is not None:
            # Back to a single file: the WAL is checkpointed into the database and it and its
            # index (-wal, -shm) are removed. A reader (procpool status) that holds it open
            # makes this fail after a moment: the journal then simply stays in WAL mode.
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA busy_timeout = 1000")
                self._db.execute("PRAGMA journal_mode = DELETE")
        self._db.close()
        if self._lock_fd is not None:
            _unlock(self.path, self._lock_fd)
            self._lock_fd = None

    def discard(self) -> None:
        """Close and delete the journal: a run that failed before recording anything."""
        if self._closed:
            return
        self._closed = True
        self._db.close()
        _remove_database(self.path)
        if self._lock_fd is not None:
            _unlock(self.path, self._lock_fd)
            self._lock_fd = None

    # ---- what the run is ---------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, **values: Any) -> None:
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                 [(key, str(value)) for key, value in values.items()])

    @property
    def run(self) -> dict[str, Any]:
        return json.loads(self.meta("run") or "{}")  # type: ignore[no-any-return]

    # ---- items -------------------------------------------------------------------------------

    def fingerprints(self) -> dict[int, str]:
        """Every recorded item's fingerprint, by index."""
        return dict(self._db.execute("SELECT idx, fingerprint FROM items"))

    def record(self, index: int, fingerprint: str, status: str, attempts: int,
               duration: float | None, line: str) -> None:
        """Step 1: the item finished; its line is not in the results file yet."""
        with self._db:
            self._db.execute("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, NULL)",
                             (index, fingerprint, status, attempts, duration, line))

    def mark_written(self, index: int, output_offset: int) -> None:
        """Step 3: the line is in the results file, which is now ``output_offset`` bytes.
        Also stamps ``updated``: the time of the last recorded item, even after a kill -9."""
        self._written += 1
        with self._db:
            self._db.execute("UPDATE items SET written = ? WHERE idx = ?",
                             (self._written, index))
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'output_offset'",
                             (str(output_offset),))
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'updated'", (now_text(),))

    def output_offset(self) -> int:
        return int(self.meta("output_offset") or 0)

    def written_lines(self) -> Iterator[str]:
        """The results file's lines, in order, as the journal knows them."""
        for (line,) in self._db.execute(
                "SELECT line FROM items WHERE written IS NOT NULL ORDER BY written"):
            yield line

    def unwritten(self) -> list[tuple[int, str]]:
        """Items recorded (step 1) whose line never reached the results file (step 3)."""
        return list(self._db.execute(
            "SELECT idx, line FROM items WHERE written IS NULL ORDER BY idx"))

    def counts(self) -> JournalCounts:
        row = self._db.execute("""
            SELECT COUNT(*),
                   COALESCE(SUM(status = 'ok'), 0),
                   COALESCE(SUM(status = 'timeout'), 0),
                   COALESCE(SUM(attempts > 1), 0)
            FROM items""").fetchone()
        items, ok, timed_out, retried = row
        return JournalCounts(items, ok, items - ok, timed_out, retried)


def _connect(path: Path, read_only: bool = False) -> sqlite3.Connection:
    if read_only:
        return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
    except sqlite3.DatabaseError as exc:
        connection.close()
        raise JournalError(f"{path} is not a procpool journal, or it is corrupt ({exc})"
                           ) from None
    return connection


def _check(path: Path, connection: sqlite3.Connection) -> None:
    """Refuse a file that is not an intact procpool journal."""
    try:
        ok = connection.execute("PRAGMA quick_check").fetchone()[0]
        meta = dict(connection.execute("SELECT key, value FROM meta"))
    except sqlite3.DatabaseError as exc:
        raise JournalError(f"{path} is not a procpool journal, or it is corrupt ({exc})"
                           ) from None
    if ok != "ok" or meta.get("format") != FORMAT or "run" not in meta:
        raise JournalError(f"{path} is not a procpool journal ({FORMAT}), or it is corrupt")


def _lock(path: Path) -> int:
    """Hold an exclusive lock on ``path``.lock for as long as the journal is open.

    The holder removes the lock file when it closes the journal (``_unlock``), so a lock taken
    on a file that has just been removed guards nothing: it is dropped and taken again on the
    file now at that path."""
    lock_path = Path(f"{path}.lock")
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            folder = path.parent
            if not folder.is_dir():
                raise JournalError(f"cannot create the journal {path}: the folder {folder} "
                                   f"does not exist") from None
            raise JournalError(f"cannot use the journal {path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = ""
            with contextlib.suppress(OSError):
                holder = os.pread(fd, 32, 0).decode().strip()
            os.close(fd)
            raise JournalError(f"another procpool run (pid {holder or '?'}) is using the "
                               f"journal {path}; wait for it, or stop it first") from None
        try:
            current = os.stat(lock_path)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(os.fstat(fd), current):
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _unlock(path: Path, fd: int) -> None:
    """Remove the lock file, then let go of the lock (see ``_lock``)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(f"{path}.lock")
    os.close(fd)


def _remove_database(path: Path) -> None:
    for name in (str(path), f"{path}-wal", f"{path}-shm", f"{path}-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def holder_of(path: Path) -> int | None:
    """The pid of the runner holding ``path``'s lock now, if one does."""
    try:
        fd = os.open(f"{path}.lock", os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text.isdigit() else -1
    else:
        return None
    finally:
        os.close(fd)


def now_text() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %z")
