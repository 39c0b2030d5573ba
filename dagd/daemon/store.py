"""SQLite persistence: runs, steps, the numbered event log, scheduler bookkeeping.

Why this shape:
- Every event gets its `seq` the moment it is published (so it is encoded once, with its seq),
  and is written by one writer task that gathers events for a few milliseconds and commits them
  in one transaction (a 10,000-step run: about a hundred transactions of ~200 events). The
  writes run on the event loop: in WAL mode with synchronous=NORMAL a commit only appends to the
  WAL file (no fsync), which costs less than handing the batch to a thread and fighting it for
  the GIL (measured: 2.8x engine-only time instead of 3.7x, loop stalls under 10 ms). The one
  slow part, the checkpoint that copies the WAL into the database and fsyncs, runs in a worker
  thread on its own connection (`checkpointer`), never on the loop.
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
from typing import Any, assert_never

import attrs
import trio

from dagd.core.events import (
    EVENT_TYPES,
    DagEvent,
    DagRunStatusEvent,
    StepStatusEvent,
)
from dagd.core.model import RunStatus, StepStatus
from dagd.core.protocol.events import encode_event
from dagd.core.records import RunRecord
from dagd.daemon.schema import migrate
from dagd.runtime.executor import LeftoverHandle


@attrs.frozen(slots=True)
class StoredEvent:
    """An event with its seq and its wire text, encoded once for the log and every client
    (the network layer frames the text once for all its clients: dagd/net/frames.py)."""

    seq: int
    dag_id: str
    event: DagEvent
    text: str


# ------------------------------------------------------------------ intents
# What the writer is asked to do, in publishing order: each a small record, one transaction per
# batch of them (see _write_batch).


@attrs.frozen(slots=True)
class RecordRun:
    """Create a run's row as queued (before its first event); a known run id is left alone."""

    run_id: str
    dag_id: str
    params_json: str  # the bound params as a JSON object
    queued_at: float  # UNIX seconds
    dag_version: str | None = None  # the definition it runs (a RecordDagVersion), if known


@attrs.frozen(slots=True)
class Requeue:
    """A finished run goes back to queued (a retry, before its first event)."""

    run_id: str


def _handle_json(record: RecordLeftover) -> str:
    return json.dumps(record.handle, separators=(",", ":"), allow_nan=False)


@attrs.frozen(slots=True)
class RecordLeftover:
    """What a running step may leave behind if dagd dies: the leftover handle its executor gave
    (dagd/runtime/executor.py), the step's latest, stored whole as JSON in `steps.leftover`.

    Making one encodes the handle (`handle_json`, compact), so a handle that is not JSON
    (NaN, a set, an object) raises `TypeError` or `ValueError` at its maker, not in the
    writer's transaction, and later changes to the dict are not written."""

    run_id: str
    step_id: str
    handle: LeftoverHandle
    handle_json: str = attrs.field(
        init=False, repr=False, eq=False, default=attrs.Factory(_handle_json, takes_self=True)
    )


@attrs.frozen(slots=True)
class RecordDagVersion:
    """A DAG definition runs are bound to (dagd/core/dagsnapshot.py): its JSON text, stored once
    per version; a known version is left alone."""

    version: str
    dag_id: str
    definition: str


@attrs.frozen(slots=True)
class RecordSlot:
    """The cron slot a DAG was last fired for."""

    dag_id: str
    slot: float  # UNIX seconds


#: Everything the writer writes.
Intent = StoredEvent | RecordRun | Requeue | RecordLeftover | RecordSlot | RecordDagVersion


# ------------------------------------------------------------------ records


@attrs.frozen
class StepRecord:
    """A step's row: its latest status within the run (times in UNIX seconds, `duration` in
    ms), and the leftover handle of its latest attempt that reported one, which recovery hands
    back to that handle's executor (None: never reported)."""

    run_id: str
    step_id: str
    status: StepStatus
    retry_count: int
    start_time: float | None
    end_time: float | None
    duration: int | None
    error: str | None
    leftover: LeftoverHandle | None = None
    attempt: int = 0  # the latest attempt's number over every try of the run (0: unknown)


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode, WAL with synchronous=NORMAL (see the module docstring);
    makes the file's folder if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=OFF")
    return conn


def _run_record(row: Sequence[Any]) -> RunRecord:
    run_id, dag_id, status, params, queued_at, started_at, ended_at = row
    return RunRecord(
        dag_id, run_id, RunStatus(status), json.loads(params), queued_at, started_at, ended_at
    )


def _step_record(row: Sequence[Any]) -> StepRecord:
    leftover = None if row[8] is None else json.loads(row[8])
    return StepRecord(
        row[0],
        row[1],
        StepStatus(row[2]),
        row[3],
        row[4],
        row[5],
        row[6],
        row[7],
        leftover=leftover,
        attempt=row[9],
    )


_RUN_COLUMNS = "run_id, dag_id, status, params, queued_at, started_at, ended_at"
_DEFINITION_OF_RUN = (
    "SELECT v.version, v.definition FROM runs r JOIN dag_versions v ON v.version = r.dag_version"
    " WHERE r.run_id = ?"
)
_STEP_COLUMNS = (
    "run_id, step_id, status, retry_count, start_time, end_time, duration, error, leftover, attempt"
)


class Store:
    """Open with `Store.open(path)`; run `writer()` in a nursery; `close()` at the end."""

    def __init__(
        self, path: Path, on_commit: Callable[[list[StoredEvent]], None] | None = None
    ) -> None:
        self.path = path
        self._wconn = connect(path)
        migrate(self._wconn)
        self._wconn.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints: see checkpointer()
        self._rconn = connect(path)
        self._read_lock = threading.Lock()
        row = self._wconn.execute("SELECT seq FROM sqlite_sequence WHERE name='events'").fetchone()
        self._next_seq = (row[0] if row else 0) + 1
        self.committed_seq = self._next_seq - 1
        self._pending: list[Intent] = []
        self._wakeup = trio.Event()
        self._flushed = trio.Event()
        self._writing = False
        self._write_lock = trio.Lock()  # one user of the write connection at a time
        #: Called with each committed batch's events, in seq order (the fan-out).
        self.on_commit = on_commit
        self.batches = 0  # how many transactions the writer made (for benchmarks)
        self.gather_interval = 0.005
        self.max_batch = 500  # items per transaction (keep it well under server.send_buffer)

    @classmethod
    def open(
        cls, path: Path, on_commit: Callable[[list[StoredEvent]], None] | None = None
    ) -> Store:
        """Open (or create) the state file at `path` and bring its schema up to date
        (schema.py). `on_commit` gets every committed batch of events.

        Raises `sqlite3.DatabaseError` for a file that is not a dagd state file or is newer
        than this dagd."""
        return cls(path, on_commit)

    def close(self) -> None:
        """Close both connections. Call it after the writer has stopped."""
        self._wconn.close()
        self._rconn.close()

    # ---------------------------------------------------------------- writing

    def publish(self, event: DagEvent) -> StoredEvent:
        """Number the event and queue it for the writer. Never blocks."""
        seq = self._next_seq
        self._next_seq += 1
        # The event is a fresh value handed over by its producer: numbering it in place is
        # safe and costs a tenth of attrs.evolve (this runs for every event).
        object.__setattr__(event, "seq", seq)
        text = encode_event(event)
        stored = StoredEvent(seq, event.dag_id, event, text)
        self._queue(stored)
        return stored

    def _queue(self, intent: Intent) -> None:
        self._pending.append(intent)
        self._wakeup.set()

    def record_run(
        self,
        run_id: str,
        dag_id: str,
        params: dict[str, str],
        queued_at: float,
        dag_version: str | None = None,
    ) -> None:
        """Queue the creation of a run row as queued (before its first event); `queued_at` in
        UNIX seconds; `dag_version` the definition it is bound to (queue that definition with
        `record_dag_version` first, or in the same batch)."""
        self._queue(RecordRun(run_id, dag_id, json.dumps(params), queued_at, dag_version))

    def record_dag_version(self, version: str, dag_id: str, definition: str) -> None:
        """Queue a DAG definition's JSON text under its version (once per version is enough;
        a version already stored is left alone). Once per definition, not per run or event."""
        self._queue(RecordDagVersion(version, dag_id, definition))

    def record_leftover(self, leftover: RecordLeftover) -> None:
        """Queue a running step's leftover handle (it replaces the step's earlier one), so a
        later start can hand it back to its executor (recovery.py)."""
        self._queue(leftover)

    def record_requeue(self, run_id: str) -> None:
        """Queue a finished run's return to `queued` (a retry, before its first event)."""
        self._queue(Requeue(run_id))

    def record_slot(self, dag_id: str, slot: float) -> None:
        """Queue the cron slot (UNIX seconds) a DAG was last fired for."""
        self._queue(RecordSlot(dag_id, slot))

    async def writer(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Write queued items in batches until cancelled, then write what is left."""
        task_status.started()
        try:
            while True:
                await self._wakeup.wait()
                await self._write_pending()
                # Let the next events gather: one transaction per few ms, not per event.
                await trio.sleep(self.gather_interval)
        finally:
            with trio.CancelScope(shield=True):
                while self._pending:
                    await self._write_pending()

    async def checkpointer(
        self,
        interval: float = 1.0,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Copy the WAL into the database (and fsync) in a worker thread, every `interval`
        seconds while there are new writes, so the WAL stays small and the loop never syncs."""
        conn = connect(self.path)
        task_status.started()
        try:
            done = self.batches
            while True:
                await trio.sleep(interval)
                if self.batches != done:
                    done = self.batches
                    await trio.to_thread.run_sync(conn.execute, "PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

    async def flush(self) -> None:
        """Wait until everything published so far is committed."""
        while self._pending or self._writing:
            await self._flushed.wait()

    async def _write_pending(self) -> None:
        """Write one batch of at most max_batch items (the writer loops for the rest)."""
        self._wakeup = trio.Event()
        if not self._pending:
            return
        # At most max_batch items per transaction. When the writer falls behind (a busy event
        # loop starves the writer thread of the GIL for most of a second), the backlog goes out
        # in steps and each subscriber can drain between them, instead of getting thousands of
        # events in one call and being cut off as a slow consumer.
        batch = self._pending[: self.max_batch]
        self._pending = self._pending[self.max_batch :]
        if self._pending:
            self._wakeup.set()
        self._writing = True
        try:
            # Shielded: the batch has left _pending, so a cancellation at the lock or at the
            # thread call's checkpoint would drop it (the writer's final flush never sees it).
            with trio.CancelScope(shield=True):
                async with self._write_lock:
                    self._write_batch(batch)
        finally:
            self._writing = False
        self.batches += 1
        events = [item for item in batch if type(item) is StoredEvent]
        if events:
            self.committed_seq = events[-1].seq
            if self.on_commit is not None:
                self.on_commit(events)
        flushed, self._flushed = self._flushed, trio.Event()
        flushed.set()

    def _write_batch(self, batch: list[Intent]) -> None:
        """One transaction for a batch: the events with one executemany, and the steps table
        with one upsert per step (its latest status in the batch), not one per event."""
        conn = self._wconn
        events: list[tuple[Any, ...]] = []
        steps: dict[tuple[str, str], tuple[Any, ...]] = {}
        conn.execute("BEGIN")
        try:
            for item in batch:
                # Nearly every item is an event: they take an isinstance test first, since a
                # class pattern costs 0.3 us more per item (measured: 340 vs 55 us per batch of
                # 500 events, the string dispatch it replaced 50).
                if isinstance(item, StoredEvent):
                    ev = item.event
                    events.append(
                        (
                            item.seq,
                            ev.timestamp,
                            ev.dag_id,
                            getattr(ev, "run_id", None),
                            EVENT_TYPES[type(ev)],
                            item.text,
                        )
                    )
                    if type(ev) is StepStatusEvent:
                        steps[(ev.run_id, ev.step_id)] = (
                            ev.run_id,
                            ev.step_id,
                            ev.status.value,
                            ev.retry_count,
                            ev.start_time,
                            ev.end_time,
                            ev.duration,
                            ev.error,
                            ev.attempt,
                        )
                    elif type(ev) is DagRunStatusEvent:
                        self._write_run_status(conn, ev)
                    continue
                match item:
                    case RecordRun(run_id, dag_id, params_json, queued_at, dag_version):
                        conn.execute(
                            "INSERT OR IGNORE INTO runs (run_id, dag_id, status, params,"
                            " queued_at, dag_version) VALUES (?, ?, ?, ?, ?, ?)",
                            (
                                run_id,
                                dag_id,
                                RunStatus.QUEUED.value,
                                params_json,
                                queued_at,
                                dag_version,
                            ),
                        )
                    case RecordDagVersion(version, dag_id, definition):
                        conn.execute(
                            "INSERT OR IGNORE INTO dag_versions (version, dag_id, definition)"
                            " VALUES (?, ?, ?)",
                            (version, dag_id, definition),
                        )
                    case Requeue(run_id):
                        conn.execute(
                            "UPDATE runs SET status=?, ended_at=NULL WHERE run_id=?",
                            (RunStatus.QUEUED.value, run_id),
                        )
                    case RecordLeftover(run_id, step_id, handle_json=handle_json):
                        self._write_steps(conn, steps)  # the step's row must exist first
                        # Not the pgid/proc_start/boot_id columns of files before schema
                        # version 3 (schema.py): they stay in the table, unused.
                        conn.execute(
                            "UPDATE steps SET leftover=? WHERE run_id=? AND step_id=?",
                            (handle_json, run_id, step_id),
                        )
                    case RecordSlot(dag_id, slot):
                        conn.execute(
                            "INSERT INTO schedule (dag_id, last_slot) VALUES (?, ?)"
                            " ON CONFLICT (dag_id) DO UPDATE SET last_slot=excluded.last_slot",
                            (dag_id, slot),
                        )
                    case _:
                        assert_never(item)
            conn.executemany(
                "INSERT INTO events (seq, ts, dag_id, run_id, type, body)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                events,
            )
            self._write_steps(conn, steps)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _write_steps(
        conn: sqlite3.Connection, steps: dict[tuple[str, str], tuple[Any, ...]]
    ) -> None:
        if steps:
            conn.executemany(
                "INSERT INTO steps (run_id, step_id, status, retry_count, start_time, end_time,"
                " duration, error, attempt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (run_id, step_id) DO UPDATE SET status=excluded.status,"
                " retry_count=excluded.retry_count, start_time=excluded.start_time,"
                " end_time=excluded.end_time, duration=excluded.duration, error=excluded.error,"
                " attempt=max(attempt, excluded.attempt)",
                list(steps.values()),
            )
            steps.clear()

    @staticmethod
    def _write_run_status(conn: sqlite3.Connection, ev: DagRunStatusEvent) -> None:
        status = ev.status
        conn.execute(
            "INSERT INTO runs (run_id, dag_id, status, queued_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (run_id) DO UPDATE SET status=excluded.status",
            (ev.run_id, ev.dag_id, status.value, ev.timestamp),
        )
        if status is RunStatus.QUEUED:  # a retried run waits again: it has not ended
            conn.execute("UPDATE runs SET ended_at=NULL WHERE run_id=?", (ev.run_id,))
        elif status is RunStatus.RUNNING:
            conn.execute(
                "UPDATE runs SET started_at=coalesce(started_at, ?), ended_at=NULL WHERE run_id=?",
                (ev.timestamp, ev.run_id),
            )
        elif status.finished:
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
        """The lowest seq still in the log (retention deletes older ones), None if empty."""
        rows = await self.read("SELECT min(seq) FROM events")
        oldest: int | None = rows[0][0]
        return oldest

    async def list_runs(self, dag_id: str | None = None, limit: int = 20) -> list[RunRecord]:
        """The newest `limit` runs (of `dag_id`, or of every DAG), newest queued first."""
        if dag_id is None:
            rows = await self.read(
                f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY queued_at DESC, run_id DESC LIMIT ?",
                (limit,),
            )
        else:
            rows = await self.read(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE dag_id=?"
                " ORDER BY queued_at DESC, run_id DESC LIMIT ?",
                (dag_id, limit),
            )
        return [_run_record(r) for r in rows]

    async def get_run(self, run_id: str) -> tuple[RunRecord, list[StepRecord]] | None:
        """A run's row and its steps' rows (steps that never started have none), or None."""
        rows = await self.read(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id=?", (run_id,))
        if not rows:
            return None
        steps = await self.read(f"SELECT {_STEP_COLUMNS} FROM steps WHERE run_id=?", (run_id,))
        return _run_record(rows[0]), [_step_record(s) for s in steps]

    def schedule_slots(self) -> dict[str, float]:
        """The last fired cron slot (UNIX seconds) by DAG id (read at startup)."""
        return dict(self._read("SELECT dag_id, last_slot FROM schedule"))

    def run_definitions(self, run_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
        """(version, definition JSON) of the given runs that have one stored, by run id (runs
        recorded before dagd kept definitions have none). Read on the loop: for startup."""
        found: dict[str, tuple[str, str]] = {}
        for run_id in run_ids:
            rows = self._read(_DEFINITION_OF_RUN, (run_id,))
            if rows:
                found[run_id] = (rows[0][0], rows[0][1])
        return found

    async def run_definition(self, run_id: str) -> tuple[str, str] | None:
        """(version, definition JSON) the run is bound to, None if it has none stored (or no
        such run). Read in a worker thread."""
        rows = await self.read(_DEFINITION_OF_RUN, (run_id,))
        return (rows[0][0], rows[0][1]) if rows else None

    def unfinished(self) -> tuple[list[RunRecord], list[StepRecord]]:
        """Runs and steps a previous process left queued or running (read at startup)."""
        unfinished = [s.value for s in RunStatus if not s.finished]
        marks = ", ".join("?" * len(unfinished))
        runs = self._read(f"SELECT {_RUN_COLUMNS} FROM runs WHERE status IN ({marks})", unfinished)
        steps = self._read(
            f"SELECT {_STEP_COLUMNS} FROM steps WHERE run_id IN"
            f" (SELECT run_id FROM runs WHERE status IN ({marks}))",
            unfinished,
        )
        return [_run_record(r) for r in runs], [_step_record(s) for s in steps]

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
