"""The janitor: a small process that cleans up after this process if it dies, even by SIGKILL.

The workers' lifeline threads (``_worker.py``) are the first line: when the parent dies, each
worker sees EOF on its lifeline, removes the parent's shared-memory segments and kills its own
process group. Two things escape them. A task stuck in C code that holds the GIL (a
``ctypes.PyDLL`` call, an extension that never releases it) keeps the lifeline thread from
running, so the worker outlives the parent for as long as the call lasts. And the lifeline
sweeps /dev/shm while the worker's main thread may still be creating a result segment, which
then stays. The janitor is the backstop for both: one process per parent process, started
with the first worker it is to watch, not subject to any worker's GIL, which on the parent's
death kills every watched worker's process group, waits until those workers have exited (so
none is still creating a segment), then removes every segment named with a watched prefix,
and exits.

The parent's side (the public functions, run by the local backend and the dispatcher):

- ``watch_worker(pid)``: a worker, which leads its own process group once it has called
  setpgid, was started by this process; ``forget_worker(pid)`` when it has been reaped.
- ``watch_segments(prefix)``: segment names starting with ``prefix`` belong to this process.
- ``janitor_pid()``: the janitor of this process, if it has one (the test suite's leak guard
  must not count it, as it does not count multiprocessing's resource tracker).

Each call writes one short line to a pipe (``w <pid>``, ``f <pid>``, ``s <prefix>``) and waits
for nothing; a prefix told before there is a janitor is remembered, and told when the first
worker starts one. The calls never raise: if the janitor cannot be started or reached, they
log at debug level and the lifelines remain. The parent remembers what it asked to watch, so
a janitor that died before it (killed by hand) is replaced and told everything again.

The janitor process is this very module, imported by ``python -I -S -c`` from its own folder
(``_RUN``): isolated from the environment and the user's code, no site, and no import of
procpool; its code is checked like the rest of the package, and its bytecode is cached, as
a script's is not (compiling it took 4-6 ms of every start). At module level it imports only
os, sys, time, select and the C halves of signal and threading (``_signal``, ``_thread``):
signal's enums, threading and contextlib took 15-20 ms of the janitor's start, which a
program's first pool waited for, its workers starting beside it on the same cores. Its start
now costs 14-18 ms of CPU, the interpreter's own about 11. What only the parent needs
(logging, multiprocessing) is imported inside the functions that use it. It is started with
``multiprocessing.util.spawnv_passfds``, as multiprocessing's resource tracker is: fork and
exec in one step (vfork where possible), whatever the pool's start method, so a large or
multithreaded parent is never forked as such.
It makes itself a session leader, so the workers' group kills and a terminal's Ctrl-C (SIGINT
to the foreground group) never reach it; SIGINT is ignored too, and blocked in the parent while
it is spawned, so a Ctrl-C before it gets there cannot kill it either.

It learns of the parent's death from a pidfd of the parent (Linux 5.3+), or from EOF on its
pipe (which also means the parent called exec), or, without pidfds, by checking every 0.5 s
whether it has been re-parented. EOF alone would not do: a child the parent forked with a
plain ``fork()`` that bypassed ``os.register_at_fork`` would hold the write end. Children
forked through ``os.fork`` or multiprocessing close their copy at once (an at-fork hook), and
a child that uses procpool gets a janitor of its own (the owner's pid is checked on each
call). It opens a pidfd for each worker as it learns of it and signals the worker through it,
so a process that reuses a dead worker's pid is not killed in its place.

A normal exit of the parent runs the same path, harmlessly: its pools have forgotten their
workers and removed their segments. The parent never waits for the janitor; it is re-parented
when the parent dies and reaped by whoever adopts it. The pipe's write end is close-on-exec;
the read end is closed in the parent as soon as the janitor is started.
"""

from __future__ import annotations

import _thread
import os
import select
import sys
import time

TYPE_CHECKING = False  # not typing's: the janitor process imports as little as it can
if TYPE_CHECKING:
    import signal
    from collections.abc import Callable
else:
    import _signal as signal  # signal's own functions and numbers, without its enums

# ---- the parent's side ---------------------------------------------------------------------

# This file, imported by the janitor. Resolved now: the program may change directory later.
_SCRIPT = os.path.abspath(__file__)
# What the janitor's interpreter runs, given this file's folder, the parent's pid and the
# pipe's read end. (-I keeps the working directory off sys.path; the folder goes last, so
# nothing in it can shadow what the janitor imports.)
_RUN = "import sys; sys.path.append(sys.argv[1]); import _janitor; _janitor.main(*sys.argv[2:])"
# A janitor that keeps dying is not started again and again: the lifelines remain.
_MAX_STARTS = 3
# How long a call may wait for another thread's (starting a janitor takes milliseconds).
_LOCK_TIMEOUT = 5.0
# Writes of at most this many bytes to a pipe are atomic: a replay is cut into such batches.
_PIPE_BUF: int = getattr(select, "PIPE_BUF", 512)

_lock = _thread.allocate_lock()  # threading.Lock itself
_owner: int | None = None  # the process the state below belongs to
_janitor: int | None = None  # the janitor's pid
_write_fd: int | None = None  # the parent's end of the janitor's pipe
_starts = 0  # janitors started by _owner
_workers: set[int] = set()  # what _owner asked to watch, to tell a replacement janitor
_prefixes: set[bytes] = set()
_spawning: tuple[int, int] | None = None  # the new pipe while a janitor is being started


def watch_worker(pid: int) -> None:
    """Kill the process group of worker ``pid`` (and the worker itself) if this process dies
    before ``forget_worker(pid)``."""

    def change() -> bytes:
        number = int(pid)
        if number <= 1 or number == os.getpid():
            raise ValueError("not a worker's pid")
        _workers.add(number)
        return b"w %d\n" % number

    _update(change, "watch worker", pid)


def forget_worker(pid: int) -> None:
    """Worker ``pid`` has been reaped: no longer kill it (its pid may be reused)."""

    def change() -> bytes | None:
        number = int(pid)
        if number not in _workers:
            return None
        _workers.discard(number)
        return b"f %d\n" % number

    _update(change, "forget worker", pid)


def watch_segments(prefix: str) -> None:
    """Remove every shared-memory segment whose name starts with ``prefix`` (a leading "/"
    optional) when this process dies."""

    def change() -> bytes | None:
        stem = os.fsencode(prefix).lstrip(b"/")
        if not stem or any(c in stem for c in b"/\n\0"):
            raise ValueError("not a segment prefix")  # an empty one would take all of /dev/shm
        if stem in _prefixes:
            return None
        _prefixes.add(stem)
        return b"s " + stem + b"\n"

    _update(change, "watch segments", prefix)


def _update(change: Callable[[], bytes | None], what: str, argument: object) -> None:
    """Apply ``change`` to what this process watches, under the lock, and tell the janitor the
    line it returns. Never raises: the lifelines remain if the janitor cannot be told."""
    try:
        lock = _acquire()
        if lock is None:
            return
        try:
            line = change()
            if line is not None:
                _tell(line)
        finally:
            lock.release()
    except Exception:
        _debug("procpool janitor: cannot %s %r", what, argument, exc_info=True)


def janitor_pid() -> int | None:
    """The pid of this process's janitor, if it has started one."""
    return _janitor if _owner == os.getpid() else None


def _acquire() -> _thread.LockType | None:
    """The state's lock, held and adopted, or None after a bounded wait. Bounded: a signal
    handler that ends a pool in the main thread while that thread held the lock here would
    otherwise wait forever for a dispatcher thread that waits for the lock."""
    lock = _lock
    if not lock.acquire(timeout=_LOCK_TIMEOUT):
        _debug("procpool janitor: still busy after %s s; not told", _LOCK_TIMEOUT)
        return None
    _adopt()
    return lock


def _adopt() -> None:
    """Make the state this process's own: after a fork that bypassed the at-fork hook, what is
    there is the parent's. Its descriptor is left alone: the child may have closed it and
    reused the number."""
    global _owner, _janitor, _write_fd, _starts
    if _owner != os.getpid():
        _owner, _janitor, _write_fd, _starts = os.getpid(), None, None, 0
        _workers.clear()
        _prefixes.clear()


def _tell(line: bytes) -> None:
    """Send ``line`` to the janitor, starting (or replacing) it if needed. Holds ``_lock``."""
    if _janitor_alive():
        assert _write_fd is not None
        try:
            os.write(_write_fd, line)
            return
        except BlockingIOError:  # 64 KiB unread: the janitor is stopped; do not wait for it
            _debug("procpool janitor: its pipe is full; dropped %r", line)
            return
        except OSError:  # it died since we looked
            _drop_janitor()
    # A janitor is started for the first worker, not before: a prefix alone names nothing yet
    # (segments are made for chunks, which go to workers), and it is remembered and replayed.
    # A pool tells its prefix as it is made, before its first worker; a janitor started then
    # started beside a forkserver's own first start and slowed it (the first worker's start
    # took 68 ms instead of 56; docs/performance.md, 2026-12-08).
    if _workers:
        _start()


def _janitor_alive() -> bool:
    """Whether the janitor runs; reaps it if it died (it never does while this process lives,
    unless it is killed). Looking first also spares a program that restored SIGPIPE's default
    action from dying of a write to a pipe nobody reads."""
    if _janitor is None:
        return False
    try:
        if os.waitpid(_janitor, os.WNOHANG) == (0, 0):
            return True
    except ChildProcessError:  # reaped by someone else (os.wait() in the program)
        pass
    _drop_janitor()
    return False


def _drop_janitor() -> None:
    global _janitor, _write_fd
    if _write_fd is not None:
        _close(_write_fd)
    _janitor, _write_fd = None, None


def _start() -> None:
    """Start a janitor and tell it everything this process watches. Holds ``_lock``."""
    global _janitor, _write_fd, _starts, _spawning
    if _starts >= _MAX_STARTS:
        return
    _starts += 1
    executable = sys.executable
    # A frozen program's executable is the program itself, not an interpreter.
    if not executable or getattr(sys, "frozen", False) or not os.path.exists(_SCRIPT):
        _debug("procpool janitor: no interpreter to run %s with", _SCRIPT)
        return
    from multiprocessing.util import spawnv_passfds

    read_fd, write_fd = os.pipe()  # both close-on-exec; the janitor gets read_fd by passfds
    _spawning = (read_fd, write_fd)  # for the at-fork hook, if another thread forks now
    try:
        # SIGINT blocked across the spawn: the janitor inherits the mask, so a Ctrl-C before
        # it has ignored SIGINT and left the terminal's process group cannot kill it.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            pid = spawnv_passfds(os.fsencode(executable), [
                executable, "-I", "-S", "-c", _RUN, os.path.dirname(_SCRIPT), str(os.getpid()),
                str(read_fd)], [read_fd])
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    except BaseException:
        _close(write_fd)
        raise
    finally:
        _close(read_fd)
        _spawning = None
    os.set_blocking(write_fd, False)
    _janitor, _write_fd = pid, write_fd
    _replay(write_fd)


def _replay(write_fd: int) -> None:
    """Tell a new janitor everything this process watches, in atomic writes of whole lines."""
    lines = [b"w %d\n" % worker for worker in sorted(_workers)]
    lines += [b"s " + stem + b"\n" for stem in sorted(_prefixes)]
    batches = [b""]
    for line in lines:
        if len(batches[-1]) + len(line) > _PIPE_BUF:
            batches.append(b"")
        batches[-1] += line
    try:
        for batch in batches:
            os.write(write_fd, batch)
    except BlockingIOError:  # over 64 KiB: thousands of workers, not a case worth more code
        _debug("procpool janitor: could not tell it everything")


def _after_fork_in_child() -> None:
    """In a child forked by this process: the janitor and its pipe are the parent's. Close the
    child's copy of the pipe (a worker must not hold it) and start afresh."""
    global _lock, _spawning
    _lock = _thread.allocate_lock()  # another thread may have held it at the fork
    if _owner == os.getppid():  # else inherited through a fork that bypassed this hook: the
        for fd in (_write_fd, *(_spawning or ())):  # numbers may name other files by now
            if fd is not None:
                _close(fd)
    _spawning = None
    _adopt()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _close(fd: int) -> None:
    _quietly(os.close, fd)


def _quietly(call: Callable[..., object], *args: object) -> None:
    """``call(*args)``, an OSError ignored (``contextlib.suppress`` would cost the janitor's
    start the import of contextlib)."""
    try:  # noqa: SIM105
        call(*args)
    except OSError:
        pass


def _debug(message: str, *args: object, exc_info: bool = False) -> None:
    import logging  # here: the janitor process runs this file and must not pay for logging

    logging.getLogger("procpool").debug(message, *args, exc_info=exc_info)


# ---- the janitor process -------------------------------------------------------------------

# How long the janitor waits for the workers it killed to exit before it removes the segments
# anyway (a process in uninterruptible sleep can take a while to die).
_EXIT_WAIT = 5.0
# Without pidfds: how often the janitor checks whether it has been re-parented.
_ORPHAN_CHECK = 0.5
# A worker that had already been reaped when the janitor heard of it: kill its group only.
_GONE = -1


def main(parent_pid: str, read_fd: str) -> None:
    """The janitor process (``_RUN``): wait for ``parent_pid`` to die, learning what to clean
    from ``read_fd``; then clean."""
    _janitor_main(int(parent_pid), int(read_fd))


def _janitor_main(parent_pid: int, read_fd: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _quietly(os.setsid)  # the workers' group kills and a terminal's signals stay out
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked by the parent
    os.chdir("/")  # hold no directory (a mount) busy
    null = os.open(os.devnull, os.O_RDWR)  # nor the parent's stdin and stdout (stderr stays,
    os.dup2(null, 0)                        # for a traceback)
    os.dup2(null, 1)
    os.close(null)
    os.set_blocking(read_fd, False)

    workers: dict[int, int | None] = {}  # pid -> its pidfd, None without pidfds, or _GONE
    prefixes: set[bytes] = set()
    parent = _pidfd(parent_pid)
    if parent == _GONE:
        parent = None
    # The janitor is the parent's child: re-parented means the parent is dead (perhaps before
    # the pidfd was opened, which then names another process or none).
    alive = os.getppid() == parent_pid
    poller = select.poll()
    poller.register(read_fd, select.POLLIN)
    if parent is not None:
        poller.register(parent, select.POLLIN)
    pending = b""
    while alive:
        events = poller.poll(None if parent is not None else _ORPHAN_CHECK * 1000)
        pending, eof = _obey(read_fd, pending, workers, prefixes, parent_pid)
        alive = (not eof and not any(fd == parent for fd, _ in events)
                 and (parent is not None or os.getppid() == parent_pid))
    _obey(read_fd, pending, workers, prefixes, parent_pid)  # what it said just before dying
    _kill_and_wait(workers)
    _remove_segments(prefixes)


def _obey(read_fd: int, pending: bytes, workers: dict[int, int | None], prefixes: set[bytes],
          parent_pid: int) -> tuple[bytes, bool]:
    """Read what the pipe holds and apply each whole line; the unfinished rest, and EOF."""
    chunks = [pending]
    eof = False
    while True:
        try:
            data = os.read(read_fd, 65536)
        except BlockingIOError:
            break
        except OSError:
            eof = True
            break
        if not data:
            eof = True
            break
        chunks.append(data)
    *lines, rest = b"".join(chunks).split(b"\n")
    for line in lines:
        kind, _, value = line.partition(b" ")
        try:
            if kind == b"w":
                pid = int(value)
                if pid > 1 and pid not in workers and pid not in (parent_pid, os.getpid()):
                    workers[pid] = _pidfd(pid)
            elif kind == b"f":
                fd = workers.pop(int(value), None)
                if fd is not None and fd >= 0:
                    os.close(fd)
            elif kind == b"s" and value and b"/" not in value:
                prefixes.add(value)
        except (ValueError, OSError):
            pass
    return rest, eof


def _pidfd(pid: int) -> int | None:
    """A pidfd for ``pid``; _GONE if there is no such process; None without pidfds."""
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return _GONE
    except (AttributeError, OSError):  # before Linux 5.3 or Python's support; out of fds
        return None


def _kill_and_wait(workers: dict[int, int | None]) -> None:
    """SIGKILL each worker's process group and the worker itself (it may not lead its group
    yet), then wait, a bounded time, until every worker has exited."""
    for pid, fd in workers.items():
        _kill(pid, fd)
    deadline = time.monotonic() + _EXIT_WAIT
    poller = select.poll()
    waiting = {fd for fd in workers.values() if fd is not None and fd >= 0}
    for fd in waiting:
        poller.register(fd, select.POLLIN)  # readable once the process has exited
    by_pid = [pid for pid, fd in workers.items() if fd is None]
    while waiting or by_pid:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        timeout = min(left, 0.01) if by_pid else left  # processes without pidfds: polled
        if waiting:
            for fd, _ in poller.poll(timeout * 1000):
                waiting.discard(fd)
                poller.unregister(fd)
        else:
            time.sleep(timeout)
        by_pid = [pid for pid in by_pid if _exists(pid)]


def _kill(pid: int, fd: int | None) -> None:
    _quietly(os.killpg, pid, signal.SIGKILL)
    if fd == _GONE:
        return
    if fd is not None:
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            return
        except ProcessLookupError:  # it has exited
            return
        except (AttributeError, OSError):  # a sandbox that refuses it: by pid, then
            pass
    _quietly(os.kill, pid, signal.SIGKILL)


def _exists(pid: int) -> bool:
    """Whether ``pid`` has not exited yet (a zombie has: nobody may reap it soon)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:  # "pid (name) state ..."
            return stat.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _remove_segments(prefixes: set[bytes]) -> None:
    """Remove every /dev/shm entry whose name starts with one of ``prefixes`` (Linux)."""
    if not prefixes:
        return
    try:
        entries = os.listdir(b"/dev/shm")
    except OSError:
        return
    stems = tuple(prefixes)
    for entry in entries:
        if entry.startswith(stems):
            _quietly(os.unlink, b"/dev/shm/" + entry)

