"""SQLite persistence: runs, steps, the numbered event log, scheduler bookkeeping.

Why this shape:
- Every event gets its `seq` the moment it is published (so it is encoded once, with its seq),
  and is written in a batch by one writer task whose SQL runs in a worker thread: the event loop
  never waits on the disk, and a burst of 10,000 events is a handful of transactions.
- `on_commit` (the fan-out) is called only after the batch's transaction committed, so no client
  ever sees an event the log could lose.
- The runs and steps tables are folded from the same events in the same transaction: there is
  one path by which state changes, and the tables can never disagree with the log.
- `events.seq` is `INTEGER PRIMARY KEY AUTOINCREMENT`: SQLite never reuses a number, even after
  retention deletes old rows or the daemon restarts, which is what a replay cursor needs.
- WAL with synchronous=NORMAL: a crash of dagd (kill -9) loses nothing committed; a power loss may
  lose the last fraction of a second of events, in exchange for not fsyncing every batch.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from dagd.core.events import (
    EVENT_TYPES,
    DagEvent,
    DagRunStatusEvent,
    StepStatusEvent,
)
from dagd.core.protocol import encode_event, text_frame

SCHEMA = """
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
"""

FINISHED_RUN = ("success", "failed", "cancelled")


@attrs.frozen(slots=True)
class StoredEvent:
    """An event with its seq and its wire text, encoded once for the log and every client."""

    seq: int
    dag_id: str
    event: DagEvent
    text: str
    frame: bytes  # the text as a ready-made WebSocket frame


@attrs.frozen
class RunRecord:
    run_id: str
    dag_id: str
    status: str
    params: dict[str, str]
    queued_at: float
    started_at: float | None
    ended_at: float | None


@attrs.frozen
class StepRecord:
    run_id: str
    step_id: str
    status: str
    retry_count: int
    start_time: float | None
    end_time: float | None
    duration: int | None
    error: str | None
    pgid: int | None = None
    proc_start: int | None = None
    boot_id: str | None = None


def connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=OFF")
    return conn


def _run_record(row: Sequence[Any]) -> RunRecord:
    return RunRecord(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5], row[6])


class Store:
    """Open with `Store.open(path)`; run `writer()` in a nursery; `close()` at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._wconn = connect(path)
        self._wconn.executescript(SCHEMA)
        self._rconn = connect(path)
        self._read_lock = threading.Lock()
        row = self._wconn.execute("SELECT seq FROM sqlite_sequence WHERE name='events'").fetchone()
        self._next_seq = (row[0] if row else 0) + 1
        self.committed_seq = self._next_seq - 1
        self._pending: list[tuple[str, Any]] = []
        self._wakeup = trio.Event()
        self._flushed = trio.Event()
        self._writing = False
        self._write_lock = trio.Lock()  # one user of the write connection at a time
        self.on_commit: Callable[[list[StoredEvent]], None] | None = None
        self.batches = 0  # how many transactions the writer made (for benchmarks)

    @classmethod
    def open(cls, path: Path) -> Store:
        return cls(path)

    def close(self) -> None:
        self._wconn.close()
        self._rconn.close()

    # ---------------------------------------------------------------- writing

    def publish(self, event: DagEvent) -> StoredEvent:
        """Number the event and queue it for the writer. Never blocks."""
        seq = self._next_seq
        self._next_seq += 1
        event = attrs.evolve(event, seq=seq)
        text = encode_event(event)
        stored = StoredEvent(seq, event.dag_id, event, text, text_frame(text.encode()))
        self._pending.append(("event", stored))
        self._wakeup.set()
        return stored

    def record_run(
        self, run_id: str, dag_id: str, params: dict[str, str], queued_at: float
    ) -> None:
        """Queue the creation of a run row (before its first event)."""
        self._pending.append(("run", (run_id, dag_id, json.dumps(params), queued_at)))
        self._wakeup.set()

    def record_process(
        self, run_id: str, step_id: str, pgid: int, proc_start: int | None, boot_id: str | None
    ) -> None:
        """Queue the process group of a running step, so a later start can clean it up."""
        self._pending.append(("proc", (pgid, proc_start, boot_id, run_id, step_id)))
        self._wakeup.set()

    def record_slot(self, dag_id: str, slot: float) -> None:
        self._pending.append(("slot", (dag_id, slot)))
        self._wakeup.set()

    async def writer(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Write queued items in batches until cancelled, then write what is left."""
        task_status.started()
        try:
            while True:
                await self._wakeup.wait()
                await self._write_pending()
        finally:
            with trio.CancelScope(shield=True):
                await self._write_pending()

    async def flush(self) -> None:
        """Wait until everything published so far is committed."""
        while self._pending or self._writing:
            await self._flushed.wait()

    async def _write_pending(self) -> None:
        self._wakeup = trio.Event()
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        self._writing = True
        try:
            async with self._write_lock:
                await trio.to_thread.run_sync(self._write_batch, batch)
        finally:
            self._writing = False
        self.batches += 1
        events = [item for kind, item in batch if kind == "event"]
        if events:
            self.committed_seq = events[-1].seq
            if self.on_commit is not None:
                self.on_commit(events)
        flushed, self._flushed = self._flushed, trio.Event()
        flushed.set()

    def _write_batch(self, batch: list[tuple[str, Any]]) -> None:
        conn = self._wconn
        conn.execute("BEGIN")
        try:
            for kind, item in batch:
                if kind == "event":
                    self._write_event(conn, item)
                elif kind == "run":
                    conn.execute(
                        "INSERT OR IGNORE INTO runs (run_id, dag_id, status, params, queued_at)"
                        " VALUES (?, ?, 'queued', ?, ?)",
                        item,
                    )
                elif kind == "proc":
                    conn.execute(
                        "UPDATE steps SET pgid=?, proc_start=?, boot_id=?"
                        " WHERE run_id=? AND step_id=?",
                        item,
                    )
                elif kind == "slot":
                    conn.execute(
                        "INSERT INTO schedule (dag_id, last_slot) VALUES (?, ?)"
                        " ON CONFLICT (dag_id) DO UPDATE SET last_slot=excluded.last_slot",
                        item,
                    )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _write_event(conn: sqlite3.Connection, stored: StoredEvent) -> None:
        ev = stored.event
        conn.execute(
            "INSERT INTO events (seq, ts, dag_id, run_id, type, body) VALUES (?, ?, ?, ?, ?, ?)",
            (
                stored.seq,
                ev.timestamp,
                ev.dag_id,
                getattr(ev, "run_id", None),
                EVENT_TYPES[type(ev)],
                stored.text,
            ),
        )
        if type(ev) is StepStatusEvent:
            conn.execute(
                "INSERT INTO steps (run_id, step_id, status, retry_count, start_time, end_time,"
                " duration, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (run_id, step_id) DO UPDATE SET status=excluded.status,"
                " retry_count=excluded.retry_count, start_time=excluded.start_time,"
                " end_time=excluded.end_time, duration=excluded.duration, error=excluded.error",
                (
                    ev.run_id,
                    ev.step_id,
                    ev.status.value,
                    ev.retry_count,
                    ev.start_time,
                    ev.end_time,
                    ev.duration,
                    ev.error,
                ),
            )
        elif type(ev) is DagRunStatusEvent:
            status = ev.status.value
            conn.execute(
                "INSERT INTO runs (run_id, dag_id, status, queued_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (run_id) DO UPDATE SET status=excluded.status",
                (ev.run_id, ev.dag_id, status, ev.timestamp),
            )
            if status == "running":
                conn.execute(
                    "UPDATE runs SET started_at=coalesce(started_at, ?), ended_at=NULL"
                    " WHERE run_id=?",
                    (ev.timestamp, ev.run_id),
                )
            elif status in FINISHED_RUN:
                conn.execute("UPDATE runs SET ended_at=? WHERE run_id=?", (ev.timestamp, ev.run_id))

    # ---------------------------------------------------------------- reading

    def _read(self, sql: str, args: Iterable[Any] = ()) -> list[Any]:
        with self._read_lock:
            return self._rconn.execute(sql, tuple(args)).fetchall()

    async def read(self, sql: str, args: Iterable[Any] = ()) -> list[Any]:
        """Run a short read query in a worker thread."""
        return await trio.to_thread.run_sync(self._read, sql, tuple(args))

    async def events_page(
        self, since: int, until: int | None = None, limit: int = 1000
    ) -> list[tuple[int, str, str]]:
        """(seq, dag_id, wire text) of stored events with since < seq <= until, oldest first,
        at most `limit` of them (page on with the last seq)."""
        until = self.committed_seq if until is None else until
        return await self.read(
            "SELECT seq, dag_id, body FROM events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
            (since, until, limit),
        )

    async def oldest_seq(self) -> int | None:
        rows = await self.read("SELECT min(seq) FROM events")
        return rows[0][0]

    async def list_runs(self, dag_id: str | None = None, limit: int = 20) -> list[RunRecord]:
        cols = "run_id, dag_id, status, params, queued_at, started_at, ended_at"
        if dag_id is None:
            rows = await self.read(
                f"SELECT {cols} FROM runs ORDER BY queued_at DESC, run_id DESC LIMIT ?", (limit,)
            )
        else:
            rows = await self.read(
                f"SELECT {cols} FROM runs WHERE dag_id=? ORDER BY queued_at DESC, run_id DESC"
                " LIMIT ?",
                (dag_id, limit),
            )
        return [_run_record(r) for r in rows]

    async def get_run(self, run_id: str) -> tuple[RunRecord, list[StepRecord]] | None:
        rows = await self.read(
            "SELECT run_id, dag_id, status, params, queued_at, started_at, ended_at FROM runs"
            " WHERE run_id=?",
            (run_id,),
        )
        if not rows:
            return None
        steps = await self.read(
            "SELECT run_id, step_id, status, retry_count, start_time, end_time, duration, error,"
            " pgid, proc_start, boot_id FROM steps WHERE run_id=?",
            (run_id,),
        )
        return _run_record(rows[0]), [StepRecord(*s) for s in steps]

    def schedule_slots(self) -> dict[str, float]:
        return dict(self._read("SELECT dag_id, last_slot FROM schedule"))

    def unfinished(self) -> tuple[list[RunRecord], list[StepRecord]]:
        """Runs and steps a previous process left queued or running (read at startup)."""
        runs = self._read(
            "SELECT run_id, dag_id, status, params, queued_at, started_at, ended_at FROM runs"
            " WHERE status IN ('queued', 'running')"
        )
        steps = self._read(
            "SELECT s.run_id, step_id, s.status, retry_count, start_time, end_time, duration,"
            " error, pgid, proc_start, boot_id FROM steps s JOIN runs r USING (run_id)"
            " WHERE r.status IN ('queued', 'running')"
        )
        return [_run_record(r) for r in runs], [StepRecord(*s) for s in steps]

    # --------------------------------------------------------------- retention

    async def prune(self, keep_count: int, max_age: float | None, now: float | None = None) -> int:
        """Delete events beyond the newest `keep_count` or older than `max_age` seconds."""
        now = time.time() if now is None else now

        def work() -> int:
            conn = self._wconn
            floor = self.committed_seq - keep_count
            cur = conn.execute("DELETE FROM events WHERE seq <= ?", (floor,))
            deleted = cur.rowcount
            if max_age is not None:
                cur = conn.execute("DELETE FROM events WHERE ts < ?", (now - max_age,))
                deleted += cur.rowcount
            return deleted

        async with self._write_lock:
            return await trio.to_thread.run_sync(work)
