"""One process per state folder: an OS file lock on `<state_dir>/dagd.lock`.

A daemon's state folder (the SQLite history, step logs, the token) belongs to one process at a
time. Two daemons on one folder would each run crash recovery against the other's live runs,
kill its steps, write the same event numbers and fire the same cron slots; so the process
that builds a daemon takes this lock first, before the store opens or recovery runs, and holds
it until the daemon is closed or the process dies.

Rules this file keeps:
- The lock is `flock(LOCK_EX | LOCK_NB)`. The kernel drops it when the last descriptor of
  its open file description closes, so a process that dies (even by kill -9) never leaves a
  stale lock, and the lock file itself may stay on disk. `flock` locks belong to the open file
  description, not the process (POSIX `lockf`/`fcntl` locks do): a second `open_daemon` in
  the same process on the same folder is refused too.
- The descriptor is close-on-exec (Python's default), so step processes, which outlive a
  killed daemon until recovery stops them, never hold the lock.
- Nothing is written before the lock is held: a refused process has touched nothing but the
  lock file's access time. The holder writes its pid (and host) into the file, for the
  message the next one prints; that text is advice, the lock is the truth.
- A state folder whose lock cannot be taken at all (read-only and without a lock file yet,
  or on a filesystem without locks, such as NFS mounted with `nolock`) refuses too: dagd
  never runs on a folder it cannot keep to itself. Its SQLite history needs working locks as
  well. On NFS with working locks, Linux emulates `flock` with whole-file POSIX locks: two
  hosts exclude each other (the note names the host), but two daemons in one process do not.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = "dagd.lock"

# flock reports "not supported here" in several ways, depending on the filesystem.
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class StateDirError(Exception):
    """The state folder cannot be made this process's own; `str()` is one line that names the
    folder or file and says what to do. `state_dir` is the folder."""

    def __init__(self, state_dir: Path, message: str) -> None:
        super().__init__(message)
        self.state_dir = state_dir
        self.message = message


class StateDirInUse(StateDirError):
    """Another process (or another daemon in this process) holds the state folder's lock, as
    in `another dagd (pid 1234) is using /srv/dagd/state; stop it first`. `pid` is the pid the
    holder wrote into the lock file (None if it could not be read), `host` the host it named."""

    def __init__(
        self, state_dir: Path, message: str, pid: int | None, host: str | None = None
    ) -> None:
        super().__init__(state_dir, message)
        self.pid = pid
        self.host = host


class StateLock:
    """The held lock on one state folder: `StateLock.acquire(state_dir)`, then `release()`
    (or use `hold_state_dir`)."""

    def __init__(self, state_dir: Path, path: Path, fd: int) -> None:
        self.state_dir = state_dir
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, state_dir: Path) -> StateLock:
        """Take `<state_dir>/dagd.lock` for this process at once, making the folder if needed;
        never waits.

        Raises `StateDirInUse` if another process, or another open file of this one, holds it;
        `StateDirError` if the lock file cannot be created or opened (a read-only folder, no
        permission) or the filesystem cannot lock. Writes nothing else."""
        path = state_dir / LOCK_NAME
        fd = _open_lock_file(state_dir, path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise _in_use(state_dir, *holder) from None
        except OSError as exc:
            os.close(fd)
            if exc.errno in _NO_LOCKS:
                raise StateDirError(
                    state_dir,
                    f"cannot lock {path}: {exc.strerror} (the filesystem has no file locks); "
                    "put state_dir on a local filesystem",
                ) from None
            raise StateDirError(state_dir, f"cannot lock {path}: {exc.strerror}") from None
        _write_holder(fd)
        return cls(state_dir, path, fd)

    @property
    def held(self) -> bool:
        """True until `release()`."""
        return self._fd is not None

    def release(self) -> None:
        """Give the folder up: empty the pid note and close the file (which drops the lock).
        The file stays: removing it could race a process that has just opened it. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):  # a read-only lock file cannot be emptied; no matter
            os.ftruncate(fd, 0)
        os.close(fd)


@contextlib.contextmanager
def hold_state_dir(state_dir: Path) -> Iterator[StateLock]:
    """`StateLock.acquire(state_dir)` for the duration of the block (same errors)."""
    lock = StateLock.acquire(state_dir)
    try:
        yield lock
    finally:
        lock.release()


def _open_lock_file(state_dir: Path, path: Path) -> int:
    """A descriptor on the lock file (close-on-exec): read-write, created if missing; read-only
    if it exists in a folder that cannot be written (flock works on any descriptor)."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            with contextlib.suppress(OSError):
                return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        where = path if state_dir.is_dir() else state_dir
        raise StateDirError(
            state_dir,
            f"cannot create {where}: {exc.strerror}; make {state_dir} a folder dagd can write "
            "or set state_dir",
        ) from None


def _write_holder(fd: int) -> None:
    """Replace the file's text with `<pid> <host>`; a read-only lock file keeps its old text."""
    note = f"{os.getpid()} {socket.gethostname()}\n".encode()
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, note, 0)


def _read_holder(fd: int) -> tuple[int | None, str | None]:
    """(pid, host) from the lock file's note; None for what is missing or unreadable (the
    holder may not have written it yet)."""
    try:
        words = os.pread(fd, 256, 0).decode("utf-8", "replace").split()
    except OSError:
        return None, None
    pid = int(words[0]) if words and words[0].isdigit() and len(words[0]) < 10 else None
    host = words[1] if len(words) > 1 else None
    return pid, host


def _in_use(state_dir: Path, pid: int | None, host: str | None) -> StateDirInUse:
    here = host is None or host == socket.gethostname()
    if pid is None:
        who = "another dagd"
    elif pid == os.getpid() and here:
        return StateDirInUse(
            state_dir,
            f"this process (pid {pid}) already runs a dagd on {state_dir}; close that one "
            "first or give this one another state_dir",
            pid,
            host,
        )
    elif here and not _alive(pid):
        # The note's writer is gone, yet the lock is held: a process it forked (without exec)
        # still has the file open.
        return StateDirInUse(
            state_dir,
            f"{state_dir / LOCK_NAME} is still held by a process that dagd pid {pid} (no longer "
            f"running) left behind; stop it first (`fuser -v {state_dir / LOCK_NAME}` names it)",
            pid,
            host,
        )
    else:
        who = f"another dagd (pid {pid})" if here else f"another dagd (pid {pid} on {host})"
    return StateDirInUse(state_dir, f"{who} is using {state_dir}; stop it first", pid, host)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = ["LOCK_NAME", "StateDirError", "StateDirInUse", "StateLock", "hold_state_dir"]
