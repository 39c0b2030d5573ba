"""The state folder's lock (dagd/daemon/statelock.py) on real files, with real processes as
the other holders: refused at once while held (by another process, or by another open file of
this one), free the moment the holder dies, never inherited by a child, one line for a folder
that cannot be locked."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import mounts
import pytest

from dagd.daemon.statelock import (
    LOCK_NAME,
    StateDirError,
    StateDirInUse,
    StateLock,
    hold_state_dir,
)

# A child that takes the lock the way dagd does, says so on stdout, and waits to be killed.
HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from dagd.daemon.statelock import StateLock
    lock = StateLock.acquire(Path(sys.argv[1]))
    print("held", flush=True)
    time.sleep(600)
    """
)


@contextlib.contextmanager
def holder(state: Path, code: str = HOLDER) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline()
        assert line.strip() == "held", line + proc.stdout.read()
        yield proc
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_the_holder_writes_its_pid_and_frees_the_folder_on_release(tmp_path: Path) -> None:
    state = tmp_path / "state"
    lock = StateLock.acquire(state)  # makes the folder
    assert lock.held
    assert (state / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    lock.release()
    assert not lock.held
    lock.release()  # idempotent
    assert (state / LOCK_NAME).read_text() == ""  # no stale pid note
    with hold_state_dir(state):
        pass


def test_a_second_lock_in_the_same_process_is_refused(tmp_path: Path) -> None:
    # flock belongs to the open file description: a second open in this process conflicts
    # (a POSIX lockf lock would not, and two embedded daemons would share one folder).
    with hold_state_dir(tmp_path) as first:
        with pytest.raises(StateDirInUse) as refused:
            StateLock.acquire(tmp_path)
        assert refused.value.pid == os.getpid()
        assert str(refused.value) == (
            f"this process (pid {os.getpid()}) already runs a dagd on {tmp_path}; close that "
            "one first or give this one another state_dir"
        )
        assert first.held
    StateLock.acquire(tmp_path).release()  # free once the first is released


def test_another_process_holding_it_is_named_and_its_note_is_left_alone(tmp_path: Path) -> None:
    with holder(tmp_path) as proc:
        note = (tmp_path / LOCK_NAME).read_bytes()
        started = time.monotonic()
        with pytest.raises(StateDirInUse) as refused:
            StateLock.acquire(tmp_path)
        assert time.monotonic() - started < 1.0  # refused at once, no waiting
        assert refused.value.pid == proc.pid
        assert (
            str(refused.value)
            == f"another dagd (pid {proc.pid}) is using {tmp_path}; stop it first"
        )
        assert "\n" not in str(refused.value)
        assert (tmp_path / LOCK_NAME).read_bytes() == note  # the refused one wrote nothing


def test_kill_9_of_the_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    with holder(tmp_path) as proc:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        lock = StateLock.acquire(tmp_path)  # at once: the kernel dropped the dead one's lock
        assert (tmp_path / LOCK_NAME).read_text().split()[0] == str(os.getpid())
        lock.release()


def test_a_holder_that_wrote_no_note_is_still_refused(tmp_path: Path) -> None:
    # A lock held by a process that has not written its pid yet (or never does).
    bare = textwrap.dedent(
        """
        import fcntl, os, sys, time
        fd = os.open(os.path.join(sys.argv[1], "dagd.lock"), os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("held", flush=True)
        time.sleep(600)
        """
    )
    with holder(tmp_path, bare):
        with pytest.raises(StateDirInUse) as refused:
            StateLock.acquire(tmp_path)
        assert refused.value.pid is None
        assert str(refused.value) == f"another dagd is using {tmp_path}; stop it first"


def test_child_processes_do_not_inherit_the_lock(tmp_path: Path) -> None:
    # Steps outlive a killed daemon until recovery stops them: they must not keep the lock.
    lock = StateLock.acquire(tmp_path)
    child = subprocess.Popen(["sleep", "60"], close_fds=False)  # even when told to keep fds
    try:
        lock.release()
        StateLock.acquire(tmp_path).release()  # free although the child still runs
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()


def test_a_fork_that_outlives_its_dagd_is_pointed_at(tmp_path: Path) -> None:
    # A forked (not exec'd) child shares the lock; once its parent is gone the note's pid is
    # dead, and the message says what is really holding the folder.
    forker = textwrap.dedent(
        """
        import os, sys, time
        from pathlib import Path
        from dagd.daemon.statelock import StateLock
        lock = StateLock.acquire(Path(sys.argv[1]))
        if os.fork() == 0:
            time.sleep(600)
            os._exit(0)
        print("held", flush=True)
        time.sleep(600)
        """
    )
    with holder(tmp_path, forker) as proc:
        proc.kill()
        proc.wait()
        try:
            with pytest.raises(StateDirInUse) as refused:
                StateLock.acquire(tmp_path)
            message = str(refused.value)
            assert f"dagd pid {proc.pid} (no longer running) left behind" in message
            assert "fuser" in message and "\n" not in message
        finally:
            # The forked grandchild: the only process still holding the lock file.
            for pid in _holders(tmp_path / LOCK_NAME):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while True:
        try:
            StateLock.acquire(tmp_path).release()
            break
        except StateDirInUse:
            assert time.monotonic() < deadline, "the forked child's lock never went away"
            time.sleep(0.02)


def _holders(path: Path) -> list[int]:
    """Pids of other processes with `path` open (from /proc/<pid>/fd)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                        found.append(int(pid))
    return found


def test_a_folder_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    state = tmp_path / "file" / "state"
    with pytest.raises(StateDirError) as refused:
        StateLock.acquire(state)
    assert not isinstance(refused.value, StateDirInUse)
    assert str(refused.value) == (
        f"cannot create {state}: Not a directory; make {state} a folder dagd can write or set "
        "state_dir"
    )


def test_a_filesystem_without_locks_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As NFS mounted with `nolock` answers, or a FUSE filesystem without lock support.
    def no_locks(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(StateDirError) as refused:
        StateLock.acquire(tmp_path)
    assert str(refused.value) == (
        f"cannot lock {tmp_path / LOCK_NAME}: {os.strerror(errno.ENOLCK)} (the filesystem has "
        "no file locks); put state_dir on a local filesystem"
    )


@pytest.fixture
def read_only_mount(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs at tmp_path/ro, to be remounted read-only (needs root, as in CI)."""
    with mounts.tmpfs(tmp_path / "ro", "size=1m") as mnt:
        yield mnt


def _remount_read_only(mnt: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)


def test_a_read_only_folder_without_a_lock_file_is_one_line(read_only_mount: Path) -> None:
    _remount_read_only(read_only_mount)
    with pytest.raises(StateDirError) as refused:
        StateLock.acquire(read_only_mount)
    assert str(refused.value) == (
        f"cannot create {read_only_mount / LOCK_NAME}: Read-only file system; make "
        f"{read_only_mount} a folder dagd can write or set state_dir"
    )


def test_a_read_only_folder_with_a_lock_file_still_locks(read_only_mount: Path) -> None:
    # The lock file of an earlier run: flock works on a read-only descriptor, so the folder is
    # still kept to one process while the store reports the read-only folder itself.
    (read_only_mount / LOCK_NAME).write_text("4242 elsewhere\n")
    _remount_read_only(read_only_mount)
    with hold_state_dir(read_only_mount), pytest.raises(StateDirInUse):
        StateLock.acquire(read_only_mount)
    assert (read_only_mount / LOCK_NAME).read_text() == "4242 elsewhere\n"
