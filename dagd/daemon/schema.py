"""The SQLite schema of the state file, as numbered migrations.

Rules this file keeps:
- `PRAGMA user_version` is the number of migrations a file has had. Opening a file runs the ones
  it lacks, in order, each in its own transaction with the version bump, so a crash mid-upgrade
  leaves the file at a whole version.
- A migration is never edited once released: a change to the schema is a new migration at the
  end of `MIGRATIONS`.
- Files written before dagd numbered its schema have `user_version` 0 but already hold tables:
  `_unnumbered_version` reads which migrations their shape already has (once per such file).
- A migration is SQL text, or a function of the connection where it must convert data. Either
  holds what it needs inline: it describes files an earlier dagd wrote, so it must not change
  when today's code does.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable


def _leftover_handles(conn: sqlite3.Connection) -> None:
    """3: a step's leftover handle (dagd/runtime/executor.py), whole, as compact JSON in
    `steps.leftover`, so any executor's handle can be stored and recovery reads one shape.

    Rows from earlier versions recorded the local executor's process group in `pgid`,
    `proc_start` (the leader's start, clock ticks since boot) and `boot_id`; each becomes the
    handle that executor makes today (dagd/runtime/local/leftovers.py), written as the store
    writes handles. The three columns stay, no longer written or read: SQLite drops columns
    poorly (ALTER TABLE DROP COLUMN exists only since SQLite 3.35 and rewrites every row; the
    alternative is copying the table), and three nullable columns cost next to nothing."""
    conn.execute("ALTER TABLE steps ADD COLUMN leftover TEXT")
    rows = conn.execute(
        "SELECT run_id, step_id, pgid, proc_start, boot_id FROM steps WHERE pgid IS NOT NULL"
    ).fetchall()
    conn.executemany(
        "UPDATE steps SET leftover=? WHERE run_id=? AND step_id=?",
        [
            (
                json.dumps(
                    {"executor": "local", "pgid": pgid, "start_ticks": start, "boot_id": boot},
                    separators=(",", ":"),
                ),
                run_id,
                step_id,
            )
            for run_id, step_id, pgid, start, boot in rows
        ],
    )


#: One migration: SQL statements separated by ";", or a function run on the connection (both
#: inside the migration's transaction).
Migration = str | Callable[[sqlite3.Connection], None]

#: Migration n (1-based) brings a file from user_version n-1 to n.
MIGRATIONS: tuple[Migration, ...] = (
    # 1: the event log, runs, steps (with process groups for recovery), scheduler slots
    """
    CREATE TABLE IF NOT EXISTS events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        dag_id TEXT NOT NULL,
        run_id TEXT,
        type TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS events_by_dag ON events (dag_id, seq);
    CREATE TABLE IF NOT EXISTS runs (
        run_id TEXT PRIMARY KEY,
        dag_id TEXT NOT NULL,
        status TEXT NOT NULL,
        params TEXT NOT NULL DEFAULT '{}',
        queued_at REAL NOT NULL,
        started_at REAL,
        ended_at REAL
    );
    CREATE INDEX IF NOT EXISTS runs_by_dag ON runs (dag_id, queued_at);
    CREATE TABLE IF NOT EXISTS steps (
        run_id TEXT NOT NULL,
        step_id TEXT NOT NULL,
        status TEXT NOT NULL,
        retry_count INTEGER NOT NULL DEFAULT 0,
        start_time REAL,
        end_time REAL,
        duration INTEGER,
        error TEXT,
        pgid INTEGER,
        proc_start INTEGER,
        boot_id TEXT,
        PRIMARY KEY (run_id, step_id)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS schedule (
        dag_id TEXT PRIMARY KEY,
        last_slot REAL NOT NULL
    );
    """,
    # 2: a step's latest attempt number over every try of its run (0: unknown), so a retry
    # numbers its attempts (and their log files) on from there
    "ALTER TABLE steps ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;",
    # 3: leftover handles as JSON (the local executor's columns converted once)
    _leftover_handles,
    # 4: the DAG definition each run was triggered with (dagd/core/dagsnapshot.py): each
    # version's JSON once in dag_versions, and the run's version in runs.dag_version (NULL for
    # runs recorded before: they kept no definition)
    """
    CREATE TABLE IF NOT EXISTS dag_versions (
        version TEXT PRIMARY KEY,
        dag_id TEXT NOT NULL,
        definition TEXT NOT NULL
    ) WITHOUT ROWID;
    ALTER TABLE runs ADD COLUMN dag_version TEXT;
    """,
    # 5: day-two operations.
    # - paused_dags: DAGs paused by `dagd pause` (their schedule does not fire), kept across
    #   restarts and edits of their files.
    # - attempts: the attempts of a step that a later one replaced in its steps row (the steps
    #   row holds the latest, now with the worker it ran on), with how each ended; runs
    #   recorded before have their latest attempt only.
    # - Retention of history ([history], dagd/daemon/retention.py): indexes to find a run's
    #   events, a DAG's finished runs by end, and whether a DAG version is still used; the
    #   replay floor (the highest seq retention deleted from the middle of the log: a replay
    #   from below it is refused); the runs whose step logs are still to be removed (noted with
    #   the runs' deletion, so a crash in between leaves no orphan folder).
    # - events_by_dag goes: no query reads the event log by DAG (a replay reads pages by seq
    #   and filters them), and every index costs each event's insert.
    """
    CREATE TABLE IF NOT EXISTS paused_dags (
        dag_id TEXT PRIMARY KEY,
        paused_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS attempts (
        run_id TEXT NOT NULL,
        step_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        status TEXT NOT NULL,
        start_time REAL,
        end_time REAL,
        duration INTEGER,
        error TEXT,
        worker TEXT,
        PRIMARY KEY (run_id, step_id, attempt)
    ) WITHOUT ROWID;
    ALTER TABLE steps ADD COLUMN worker TEXT;
    CREATE INDEX IF NOT EXISTS events_by_run ON events (run_id);
    CREATE INDEX IF NOT EXISTS runs_by_end ON runs (dag_id, ended_at);
    CREATE INDEX IF NOT EXISTS runs_by_version ON runs (dag_version);
    CREATE TABLE IF NOT EXISTS replay_floor (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS log_removals (
        dag_id TEXT NOT NULL,
        run_id TEXT NOT NULL,
        PRIMARY KEY (dag_id, run_id)
    ) WITHOUT ROWID;
    DROP INDEX IF EXISTS events_by_dag;
    """,
    # 6: a step's outputs (dagd/core/outputs.py), as the JSON object its successful attempt
    # gave (at most 64 KiB), kept with the step's row: a run retry reruns only steps that did
    # not succeed, and the steps it reruns read their upstreams' outputs from here.
    "ALTER TABLE steps ADD COLUMN outputs TEXT;",
    # 7: who made a run: the run whose sub-DAG step triggered it (`parent_run_id`), the run
    # whose success triggered it through `after` (`triggered_by`); NULL for the others.
    """
    ALTER TABLE runs ADD COLUMN parent_run_id TEXT;
    ALTER TABLE runs ADD COLUMN triggered_by TEXT;
    """,
)

VERSION = len(MIGRATIONS)


def _unnumbered_version(conn: sqlite3.Connection) -> int:
    """The version a file from before numbered migrations has: 0 if it has no tables. (Such
    files predate migration 3, so 2 is the most they can have.)"""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(steps)")}
    if not columns:
        return 0
    return 2 if "attempt" in columns else 1


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the file behind `conn` (autocommit mode) up to `VERSION`; returns the version it
    had. Raises `sqlite3.DatabaseError` for a file newer than this dagd (it would misread it)."""
    version = before = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > VERSION:
        raise sqlite3.DatabaseError(
            f"the state file has schema version {version}; this dagd knows up to {VERSION}"
        )
    if version == 0:
        version = _unnumbered_version(conn)
    for number in range(version + 1, VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            migration = MIGRATIONS[number - 1]
            if isinstance(migration, str):
                for statement in _statements(migration):
                    conn.execute(statement)
            else:
                migration(conn)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # a failed COMMIT (a full disk) may have ended it already
                conn.execute("ROLLBACK")
            raise
    if version != before and version == VERSION:  # an unnumbered file already up to date
        conn.execute(f"PRAGMA user_version = {VERSION}")
    return before


def _statements(script: str) -> list[str]:
    """A migration's statements (`executescript` would commit the open transaction)."""
    return [s.strip() for s in script.split(";") if s.strip()]
