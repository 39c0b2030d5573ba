"""A state file dagd cannot use, met at start by a real `dagd serve`: one line that names the
file, what is wrong and what to do, exit 1, never "ready", and the file left as it was.

Read-only folders: as root (CI) permissions do not stop writes, so the folder is bind-mounted
read-only on itself; otherwise its mode is taken away.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from clienthelp import DaemonProc

from dagd.daemon.store import Store

DAGS = {"quick": '[steps.one]\ncommand = "true"\n'}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def serve_once(proc: DaemonProc, timeout: float = 20.0) -> tuple[int, list[str]]:
    """Start `dagd serve` and wait for it to give up: (exit code, non-empty output lines)."""
    proc.start()
    assert proc.proc is not None
    try:
        code = proc.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.close()
        raise AssertionError(f"dagd started on a bad state file:\n{proc.output()}") from None
    return code, [line for line in proc.output().splitlines() if line.strip()]


def assert_one_line(code: int, lines: list[str], path: Path, *words: str) -> None:
    assert code == 1, lines
    assert len(lines) == 1, "\n".join(lines)
    assert str(path) in lines[0], lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    assert "ready" not in lines[0]


def history(proc: DaemonProc, events: int = 2000) -> None:
    """A state file with some history, written by dagd's own store and closed cleanly, and
    the state folder's lock file (any earlier dagd leaves it)."""
    import trio

    from dagd.core.events import ErrorEvent

    async def write() -> None:
        store = Store.open(proc.db)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(store.writer)
                for i in range(events):
                    store.publish(ErrorEvent("quick", None, None, f"event {i} " + "x" * 200, 1.0))
                await store.flush()
                nursery.cancel_scope.cancel()
        finally:
            store.close()

    trio.run(write)
    (proc.state / "dagd.lock").touch()


@pytest.fixture
def proc(tmp_path: Path) -> Iterator[DaemonProc]:
    with DaemonProc(tmp_path, DAGS) as daemon:
        daemon.state.mkdir()
        yield daemon


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """`folder` read-only for this user: a read-only bind mount as root, else its mode."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.iterdir()]}
        for p in modes:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    done = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot bind-mount {folder} (needed read-only as root): {done.stderr!r}")
    try:
        subprocess.run(
            ["mount", "-o", "remount,ro,bind", str(folder)], check=True, capture_output=True
        )
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_random_bytes(proc: DaemonProc) -> None:
    proc.db.write_bytes(random.Random(1).randbytes(3 * 4096))
    before = digest(proc.db)
    code, lines = serve_once(proc)
    assert_one_line(code, lines, proc.db, "not a dagd state file", "move it aside")
    assert digest(proc.db) == before


@pytest.mark.parametrize("cut", ["half", "page"])
def test_a_truncated_copy(proc: DaemonProc, cut: str) -> None:
    """A copy cut short (mid-page, or at a page boundary, which only the header's page count
    tells): SQLite itself opens it and fails later, on the pages that are missing."""
    history(proc)
    data = proc.db.read_bytes()
    size = len(data) // 2 if cut == "half" else (len(data) // 2) // 4096 * 4096
    proc.db.write_bytes(data[:size])
    before = digest(proc.db)
    code, lines = serve_once(proc)
    assert_one_line(code, lines, proc.db, "is truncated", "restore it from a backup")
    assert digest(proc.db) == before


def test_damaged_pages(proc: DaemonProc) -> None:
    """A whole-sized file whose pages after the first are garbage."""
    history(proc)
    data = bytearray(proc.db.read_bytes())
    data[4096:] = random.Random(2).randbytes(len(data) - 4096)
    proc.db.write_bytes(bytes(data))
    before = digest(proc.db)
    code, lines = serve_once(proc)
    assert_one_line(code, lines, proc.db, "is damaged", "restore it from a backup")
    assert digest(proc.db) == before


def test_a_file_from_a_newer_dagd(proc: DaemonProc) -> None:
    history(proc, events=1)
    conn = sqlite3.connect(proc.db)
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    before = digest(proc.db)
    code, lines = serve_once(proc)
    assert_one_line(code, lines, proc.db, "999")
    assert digest(proc.db) == before


def test_a_read_only_state_folder(proc: DaemonProc) -> None:
    history(proc)
    before = digest(proc.db)
    with read_only(proc.state):
        code, lines = serve_once(proc)
    assert_one_line(code, lines, proc.db, "cannot be written", "make it writable")
    assert digest(proc.db) == before


def test_kill_9_then_a_read_only_folder_with_the_wal_left(proc: DaemonProc) -> None:
    """It used to print "ready", accept clients and die on the first trigger."""
    proc.start()
    proc.wait_ready()
    proc.stop(signal.SIGKILL)
    wal = proc.state / "dagd.sqlite3-wal"
    assert wal.is_file() and wal.stat().st_size > 0  # left behind, to be replayed
    before = digest(proc.db), digest(wal)
    with read_only(proc.state):
        code, lines = serve_once(proc)
    assert_one_line(code, lines, proc.db, "cannot be written")
    assert (digest(proc.db), digest(wal)) == before
    proc.start()  # writable again: it starts, replaying the WAL
    proc.wait_ready()
