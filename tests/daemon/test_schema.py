"""The state file's schema: numbered migrations counted by PRAGMA user_version."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from dagd.daemon.schema import MIGRATIONS, VERSION, migrate
from dagd.daemon.store import connect

#: A state file written by dagd before it kept attempt numbers (and before user_version): made
#: by that dagd's own daemon running a DAG a -> b -> c where b fails.
OLD_FILE = Path(__file__).parent / "data" / "state-before-attempt-numbers.sqlite3"


def columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def test_a_new_file_gets_every_migration(tmp_path: Path) -> None:
    conn = connect(tmp_path / "new.sqlite3")
    assert migrate(conn) == 0
    assert user_version(conn) == VERSION == len(MIGRATIONS)
    assert "attempt" in columns(conn, "steps")
    assert migrate(conn) == VERSION  # a second open changes nothing
    assert user_version(conn) == VERSION


def test_a_file_from_before_attempt_numbers_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    shutil.copy(OLD_FILE, path)
    conn = connect(path)
    assert user_version(conn) == 0
    assert "attempt" not in columns(conn, "steps")
    assert migrate(conn) == 0
    assert user_version(conn) == VERSION
    rows = conn.execute("SELECT step_id, status, attempt FROM steps ORDER BY step_id").fetchall()
    assert rows == [("a", "success", 0), ("b", "failed", 0), ("c", "upstream_failed", 0)]


def test_an_unnumbered_file_that_already_has_every_column_is_stamped(tmp_path: Path) -> None:
    # What dagd wrote between adding the attempt column and numbering its migrations.
    conn = connect(tmp_path / "between.sqlite3")
    for script in MIGRATIONS:
        conn.executescript(script)
    assert user_version(conn) == 0
    assert migrate(conn) == 0
    assert user_version(conn) == VERSION
    assert columns(conn, "steps").count("attempt") == 1


def test_a_file_from_a_newer_dagd_is_refused(tmp_path: Path) -> None:
    conn = connect(tmp_path / "future.sqlite3")
    migrate(conn)
    conn.execute(f"PRAGMA user_version = {VERSION + 1}")
    with pytest.raises(sqlite3.DatabaseError, match="knows up to"):
        migrate(conn)


def test_a_failed_migration_leaves_the_file_at_the_last_whole_version(tmp_path: Path) -> None:
    conn = connect(tmp_path / "half.sqlite3")
    conn.executescript(MIGRATIONS[0])
    conn.execute("PRAGMA user_version = 1")
    # A column that migration 2 is about to add, under a clashing definition: it fails.
    conn.execute("ALTER TABLE steps ADD COLUMN attempt TEXT")
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn)
    assert user_version(conn) == 1
