"""The state file's schema: numbered migrations counted by PRAGMA user_version."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from dagd.core.model import StepStatus
from dagd.core.records import AttemptRecord
from dagd.daemon.schema import MIGRATIONS, VERSION, migrate
from dagd.daemon.store import Store, connect

#: A state file written by dagd before it kept attempt numbers (and before user_version): made
#: by that dagd's own daemon running a DAG a -> b -> c where b fails.
OLD_FILE = Path(__file__).parent / "data" / "state-before-attempt-numbers.sqlite3"


def version_2_file(path: Path) -> sqlite3.Connection:
    """A file as dagd wrote it at schema version 2 (numbered, before leftover handles)."""
    conn = connect(path)
    for migration in MIGRATIONS[:2]:
        assert isinstance(migration, str)
        conn.executescript(migration)
    conn.execute("PRAGMA user_version = 2")
    return conn


def leftovers(conn: sqlite3.Connection) -> dict[str, str | None]:
    return dict(conn.execute("SELECT step_id, leftover FROM steps ORDER BY step_id"))


def columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def test_a_new_file_gets_every_migration(tmp_path: Path) -> None:
    conn = connect(tmp_path / "new.sqlite3")
    assert migrate(conn) == 0
    assert user_version(conn) == VERSION == len(MIGRATIONS)
    assert {"attempt", "leftover"} <= set(columns(conn, "steps"))
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
    # Its process groups became the local executor's handles (c never started: none).
    boot = "29d3d2a3-b0f9-47f5-b74d-760cb42be645"
    assert leftovers(conn) == {
        "a": f'{{"executor":"local","pgid":26245,"start_ticks":66594,"boot_id":"{boot}"}}',
        "b": f'{{"executor":"local","pgid":26246,"start_ticks":66595,"boot_id":"{boot}"}}',
        "c": None,
    }


def test_a_version_2_file_gets_its_process_groups_as_handles(tmp_path: Path) -> None:
    conn = version_2_file(tmp_path / "v2.sqlite3")
    conn.executemany(
        "INSERT INTO steps (run_id, step_id, status, pgid, proc_start, boot_id)"
        " VALUES ('r', ?, 'running', ?, ?, ?)",
        [("full", 4242, 99, "boot"), ("unread", 4343, None, None), ("none", None, None, None)],
    )
    assert migrate(conn) == 2
    assert user_version(conn) == VERSION
    stored = leftovers(conn)
    # Compact JSON, as the store writes handles (store.RecordLeftover).
    assert stored["full"] == '{"executor":"local","pgid":4242,"start_ticks":99,"boot_id":"boot"}'
    assert stored["unread"] is not None
    assert json.loads(stored["unread"]) == {
        "executor": "local",
        "pgid": 4343,
        "start_ticks": None,
        "boot_id": None,
    }
    assert stored["none"] is None
    # The old columns stay (SQLite drops columns poorly), their values untouched.
    assert conn.execute("SELECT pgid FROM steps WHERE step_id = 'full'").fetchone() == (4242,)


def test_an_unnumbered_file_that_already_has_the_attempt_column_is_stamped(
    tmp_path: Path,
) -> None:
    # What dagd wrote between adding the attempt column and numbering its migrations (so
    # before migration 3): taken as version 2, then upgraded.
    conn = version_2_file(tmp_path / "between.sqlite3")
    conn.execute("PRAGMA user_version = 0")
    assert migrate(conn) == 0
    assert user_version(conn) == VERSION
    assert columns(conn, "steps").count("attempt") == 1
    assert columns(conn, "steps").count("leftover") == 1


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


def test_a_failed_conversion_leaves_the_file_at_version_2(tmp_path: Path) -> None:
    conn = version_2_file(tmp_path / "half.sqlite3")
    conn.execute(
        "INSERT INTO steps (run_id, step_id, status, pgid) VALUES ('r', 's', 'running', 4242)"
    )
    # A trigger that refuses the conversion's update: migration 3 fails after its ALTER TABLE.
    conn.execute(
        "CREATE TRIGGER refuse BEFORE UPDATE OF leftover ON steps"
        " BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    with pytest.raises(sqlite3.IntegrityError, match="refused"):
        migrate(conn)
    assert user_version(conn) == 2
    assert "leftover" not in columns(conn, "steps")


def file_at_version(path: Path, version: int) -> sqlite3.Connection:
    """A file as dagd wrote it at schema `version` (its migrations applied one by one)."""
    conn = connect(path)
    for migration in MIGRATIONS[:version]:
        if isinstance(migration, str):
            conn.executescript(migration)
        else:
            migration(conn)
    conn.execute(f"PRAGMA user_version = {version}")
    return conn


async def test_a_version_4_file_is_upgraded_and_shows_each_steps_latest_attempt(
    tmp_path: Path,
) -> None:
    """The last released schema gets migration 5 whole. Its runs kept no attempts apart: each
    step's row is its latest attempt (a step whose start_time is NULL made none in its run's
    latest try), with no worker known."""
    path = tmp_path / "v4.sqlite3"
    conn = file_at_version(path, 4)
    conn.executemany(
        "INSERT INTO steps (run_id, step_id, status, retry_count, start_time, end_time,"
        " duration, error, attempt) VALUES ('r', ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            ("ok", "success", 0, 1.0, 2.0, 1000, None, 1),
            ("flaky", "failed", 2, 5.0, 6.0, 1000, "exit 1", 3),
            ("live", "running", 0, 7.0, None, None, None, 1),
            # Pending again after a run retry (its earlier attempt's times were cleared), and
            # never run at all: no attempt to show.
            ("again", "pending", 0, None, None, None, None, 2),
            ("never", "upstream_failed", 0, None, 8.0, None, None, 0),
            # Written before dagd numbered attempts: number unknown.
            ("old", "success", 0, 1.0, 2.0, 1000, None, 0),
        ],
    )
    conn.execute(
        "INSERT INTO events (ts, dag_id, run_id, type, body) VALUES (1.0, 'd', 'r', 'x', '{}')"
    )
    conn.close()
    store = Store.open(path)
    try:
        attempts = await store.get_attempts("r")
        assert store.paused_dags() == set()
        assert store.replay_floor == 0
        assert await store.oldest_seq() == 1
    finally:
        store.close()
    conn = connect(path)
    assert user_version(conn) == VERSION
    indexes = {
        name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")
    }
    assert {"events_by_run", "runs_by_end", "runs_by_version"} <= indexes
    assert "events_by_dag" not in indexes  # no query used it; each insert paid for it
    assert "worker" in columns(conn, "steps")
    conn.close()
    assert attempts == [
        AttemptRecord("flaky", 3, StepStatus.FAILED, 5.0, 6.0, 1000, "exit 1"),
        AttemptRecord("live", 1, StepStatus.RUNNING, 7.0, None, None, None),
        AttemptRecord("ok", 1, StepStatus.SUCCESS, 1.0, 2.0, 1000, None),
    ]
