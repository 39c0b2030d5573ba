"""SQLite persistence: runs, steps and their attempts, the numbered event log, scheduler
bookkeeping (cron slots, paused DAGs).

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
- The runs, steps and attempts tables are folded from the same events in the same transaction:
  there is one path by which state changes, and the tables can never disagree with the log.
- `events.seq` is `INTEGER PRIMARY KEY AUTOINCREMENT`: SQLite never reuses a number, even after
  retention deletes old rows or the daemon restarts, which is what a replay cursor needs.
- WAL with synchronous=NORMAL: a crash of dagd (kill -9) loses nothing committed; a power loss may
  lose the last fraction of a second of events, in exchange for not fsyncing every batch.

When storage fails:
- At start (`Store.open`), before anything else reads or writes the file, cheap checks say in one
  line (`StateFileError`) which file is wrong, how, and what to do: the header (an SQLite file,
  as long as its header says, when no WAL is waiting to be replayed), the schema and the first
  and last entries of each table, and a write probe (a row inserted in a transaction that is
  rolled back, so nothing reaches the disk) for a read-only file or folder. Not `PRAGMA
  quick_check`: it reads every page on every start (measured on a 215 MB history: 1.7 s cold,
  0.26 s from the page cache; these checks: under 0.15 s cold, most of it opening the file),
  while a truncated copy, the usual damage, is seen from the header and the file size.
- While running, a batch whose transaction fails (disk full, I/O error, a read-only remount) is
  put back at the head of the queue: nothing committed is lost, nothing published is dropped
  (events keep their seqs and wait). The writer logs it once, reports it (`on_write_error`:
  the daemon publishes an `error` event per DAG whose events are held, delivered with them),
  and tries again after 0.1 s, doubling up to 5 s; `write_error` says what fails meanwhile, and
  `flush` raises `StorageUnavailable` rather than waiting. The first batch that commits ends it,
  and the held events reach `on_commit` in seq order. A failed checkpoint or retention prune is
  logged and tried again later; neither stops dagd.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
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
from dagd.core.model import FINISHED_RUN, RunStatus, StepStatus
from dagd.core.outputs import decode_outputs, encode_outputs
from dagd.core.protocol.events import encode_event
from dagd.core.records import AttemptRecord, RunRecord
from dagd.core.runstate import StepRecordTuple
from dagd.daemon.schema import migrate
from dagd.daemon.stats import DaemonStats
from dagd.runtime.executor import LeftoverHandle

log = logging.getLogger("dagd.store")

#: Seconds before the writer tries a failed batch again: doubled each time, up to the cap.
RETRY_FIRST = 0.1
RETRY_CAP = 5.0


class StateFileError(sqlite3.DatabaseError):
    """The state file cannot be used (found at start): `message` is one line naming the file,
    what is wrong and what to do; `path` is the file. A `sqlite3.DatabaseError`, as the errors
    `Store.open` raised before were."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


class StorageUnavailable(Exception):
    """Writes to the state file fail at the moment (the writer holds what is queued and keeps
    trying); `message` is one line naming the file and SQLite's error."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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
    parent_run_id: str | None = None  # the run whose sub-DAG step made it
    triggered_by: str | None = None  # the run whose success made it (`after`)


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


@attrs.frozen(slots=True)
class RecordPaused:
    """A DAG was paused (`paused`, at `at` UNIX seconds) or unpaused."""

    dag_id: str
    paused: bool
    at: float


#: Everything the writer writes.
Intent = (
    StoredEvent
    | RecordRun
    | Requeue
    | RecordLeftover
    | RecordSlot
    | RecordDagVersion
    | RecordPaused
)


# ------------------------------------------------------------------ records


@attrs.frozen
class DeletedRuns:
    """What one `Store.delete_runs` transaction deleted: the runs, as (dag_id, run_id), whose
    step logs are now to be removed; how many step rows, attempt rows and events went with
    them; DAG versions no run uses any more; and the replay floor after it."""

    runs: list[tuple[str, str]]
    steps: int
    attempts: int
    events: int
    versions: int
    replay_floor: int


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
    outputs: dict[str, Any] | None = None  # what the step handed downstream, once it succeeded

    def restored(self) -> StepRecordTuple:
        """The row as `RunState.restore` takes a step (dagd/core/runstate.py)."""
        return (
            self.status,
            self.retry_count,
            self.start_time,
            self.end_time,
            self.error,
            self.attempt,
        )


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode, WAL with synchronous=NORMAL (see the module docstring);
    makes the file's folder if needed. Raises OSError (the folder) or sqlite3.Error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=OFF")
    except BaseException:
        conn.close()
        raise
    return conn


_SQLITE_MAGIC = b"SQLite format 3\x00"
_MOVE_ASIDE = "restore it from a backup, or move it aside to start with an empty history"


def _check_header(path: Path) -> None:
    """Refuse a file that is not SQLite, or shorter than its header says (a truncated copy).
    Reads 100 bytes; a missing or empty file is a new one. With a WAL file waiting to be
    replayed the sizes are left to SQLite: a checkpoint cut short by a crash writes page 1
    (and its page count) before the pages beyond the old end of the file."""
    try:
        with open(path, "rb") as file:
            head = file.read(100)
            size = os.fstat(file.fileno()).st_size
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StateFileError(
            path, f"cannot read the state file {path}: {exc.strerror}; make it readable"
        ) from None
    if not head:
        return
    if len(head) < 100 or not head.startswith(_SQLITE_MAGIC):
        raise StateFileError(
            path, f"{path} is not a dagd state file (not an SQLite database); {_MOVE_ASIDE}"
        )
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    wal = path.with_name(path.name + "-wal")
    if wal.is_file() and wal.stat().st_size > 0:
        return
    pages = int.from_bytes(head[28:32], "big")
    counted = pages > 0 and head[24:28] == head[92:96]  # SQLite's rule for a valid count
    if size % page_size or (counted and size < pages * page_size):
        expected = f"{pages * page_size} bytes" if counted else f"whole pages of {page_size}"
        raise StateFileError(
            path, f"{path} is truncated ({size} bytes, its header says {expected}); {_MOVE_ASIDE}"
        )


def _state_file_error(path: Path, exc: Exception) -> StateFileError:
    """One line for a failure to open, check or migrate the state file."""
    name = getattr(exc, "sqlite_errorname", None) or ""
    if isinstance(exc, OSError):
        return StateFileError(
            path,
            f"cannot create {path.parent} for the state file {path}: {exc.strerror}; make it a "
            "folder dagd can write, or set state_dir",
        )
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")):
        return StateFileError(
            path,
            f"{path} cannot be written ({exc}); dagd writes its state folder {path.parent}: "
            "make it writable (mount it read-write, fix its owner or mode), or set state_dir",
        )
    if name.startswith("SQLITE_FULL"):
        return StateFileError(
            path, f"{path} cannot be written ({exc}); free space on the disk of {path.parent}"
        )
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_FORMAT")):
        return StateFileError(path, f"{path} is damaged ({exc}); {_MOVE_ASIDE}")
    if not name:  # raised by dagd itself (schema.py: a file from a newer dagd)
        return StateFileError(path, f"{path}: {exc}")
    return StateFileError(path, f"cannot use the state file {path}: {exc} ({name})")


def _probe(conn: sqlite3.Connection) -> None:
    """Touch what a damaged file shows first, cheaply: the schema, and each table's first and
    last entries (a root-to-leaf walk each, whatever the history's size); then write a row in a
    transaction that is rolled back (in WAL mode nothing reaches the disk), which fails at once
    on a read-only file, folder or filesystem. Raises sqlite3.Error."""
    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    conn.execute("SELECT min(seq), max(seq) FROM events").fetchone()
    conn.execute("SELECT min(rowid), max(rowid), max(run_id) FROM runs").fetchone()
    conn.execute("SELECT min(run_id), max(run_id) FROM steps").fetchone()
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "INSERT OR REPLACE INTO schedule (dag_id, last_slot) VALUES ('dagd write probe', 0)"
        )
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN, the block, COMMIT on the writer's connection; on any error ROLLBACK and re-raise.
    A failed COMMIT (a full disk) may have rolled the transaction back already: a second
    ROLLBACK would raise "no transaction is active" and hide the real error, so it is only
    sent while a transaction is open, and its own failure is ignored."""
    conn.execute("BEGIN")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def _open_checked(path: Path) -> sqlite3.Connection:
    """The writer's connection, the file checked and brought up to date (see the module
    docstring); raises StateFileError."""
    _check_header(path)
    try:
        conn = connect(path)
    except (OSError, sqlite3.Error) as exc:
        raise _state_file_error(path, exc) from None
    try:
        migrate(conn)
        _probe(conn)
    except sqlite3.Error as exc:
        conn.close()
        raise _state_file_error(path, exc) from None
    return conn


def _run_record(row: Sequence[Any]) -> RunRecord:
    run_id, dag_id, status, params, queued_at, started_at, ended_at, parent, triggered_by = row
    return RunRecord(
        dag_id,
        run_id,
        RunStatus(status),
        json.loads(params),
        queued_at,
        started_at,
        ended_at,
        parent,
        triggered_by,
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
        outputs=decode_outputs(row[10]),
    )


def _attempt_record(row: Sequence[Any]) -> AttemptRecord:
    step_id, attempt, status, start_time, end_time, duration, error, worker = row
    return AttemptRecord(
        step_id, attempt, StepStatus(status), start_time, end_time, duration, error, worker
    )


_RETRYING = StepStatus.RETRYING
#: A step's status while an attempt runs, and those an attempt ends with: a steps row in one of
#: these (with an attempt number) stands for its latest attempt.
_ATTEMPT_SQL = "('running', 'success', 'failed', 'retrying', 'cancelled')"
_LAST_ATTEMPT = f"attempt > 0 AND start_time IS NOT NULL AND status IN {_ATTEMPT_SQL}"
#: Keep the latest attempt of each step of a run apart (parameter: the run id), before a retry
#: of the run resets its steps rows.
_KEEP_LAST_ATTEMPTS = f"""
    INSERT OR IGNORE INTO attempts
        (run_id, step_id, attempt, status, start_time, end_time, duration, error, worker)
    SELECT run_id, step_id, attempt, status, start_time, end_time, duration, error, worker
    FROM steps WHERE run_id = ? AND {_LAST_ATTEMPT}
"""
#: Every attempt of a run (parameter: the run id, twice): those kept apart, and each step's
#: latest, in its steps row, unless it is kept apart already (cancelled while waiting for its
#: retry, or closed out by recovery then: it ended retrying).
_ATTEMPTS_OF_RUN = f"""
    SELECT step_id, attempt, status, start_time, end_time, duration, error, worker
    FROM attempts WHERE run_id = ?1
    UNION ALL
    SELECT step_id, attempt, status, start_time, end_time, duration, error, worker
    FROM steps s WHERE run_id = ?1 AND {_LAST_ATTEMPT} AND NOT EXISTS (
        SELECT 1 FROM attempts a
        WHERE a.run_id = s.run_id AND a.step_id = s.step_id AND a.attempt = s.attempt
    )
    ORDER BY step_id, attempt
"""

_FINISHED_SQL = "(" + ", ".join(f"'{s.value}'" for s in sorted(FINISHED_RUN)) + ")"
#: Finished runs beyond history retention's limits (parameters: ended before, UNIX seconds;
#: how many to keep per DAG; either NULL for no limit), oldest end first. The scan follows
#: runs_by_end (schema.py), so only runs that ended at the same time are sorted for the rank.
_RUNS_TO_PRUNE = f"""
    SELECT run_id FROM (
        SELECT run_id, ended_at,
            row_number() OVER (PARTITION BY dag_id ORDER BY ended_at DESC, run_id DESC) AS newer
        FROM runs WHERE status IN {_FINISHED_SQL}
    ) WHERE ended_at < ?1 OR newer > ?2
    ORDER BY ended_at, run_id
"""

_RUN_COLUMNS = (
    "run_id, dag_id, status, params, queued_at, started_at, ended_at, parent_run_id, triggered_by"
)
_DEFINITION_OF_RUN = (
    "SELECT v.version, v.definition FROM runs r JOIN dag_versions v ON v.version = r.dag_version"
    " WHERE r.run_id = ?"
)
_STEP_COLUMNS = (
    "run_id, step_id, status, retry_count, start_time, end_time, duration, error, leftover,"
    " attempt, outputs"
)


class Store:
    """Open with `Store.open(path)`; run `writer()` in a nursery; `close()` at the end."""

    def __init__(
        self,
        path: Path,
        on_commit: Callable[[list[StoredEvent]], None] | None = None,
        stats: DaemonStats | None = None,
    ) -> None:
        self.path = path
        #: Told of every committed batch: its events and its transaction's seconds (/metrics).
        self.stats = stats if stats is not None else DaemonStats()
        self._wconn = _open_checked(path)
        self._wconn.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints: see checkpointer()
        self._rconn = connect(path)
        self._read_lock = threading.Lock()
        row = self._wconn.execute("SELECT seq FROM sqlite_sequence WHERE name='events'").fetchone()
        self._next_seq = (row[0] if row else 0) + 1
        self.committed_seq = self._next_seq - 1
        row = self._wconn.execute("SELECT seq FROM replay_floor").fetchone()
        #: The highest seq history retention deleted (0: none): replay from below it is
        #: refused (`oldest_seq`). Never goes down.
        self.replay_floor: int = row[0] if row else 0
        # Versions queued in this process: the daemon records each once and binds new runs to
        # it, so history retention must keep them even when no stored run uses them yet.
        self._recorded_versions: set[str] = set()
        self._wconn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS pruning (run_id TEXT PRIMARY KEY) WITHOUT ROWID"
        )
        self._pending: list[Intent] = []
        # The batch the writer took from _pending and is writing, or waiting for the write
        # lock to write: not committed yet either (see _held_run_ids).
        self._batch: list[Intent] = []
        # Runs whose committed Requeue found no row: history retention deleted them between
        # a retry's reading them and its requeue (see requeue_missed).
        self._missed_requeues: set[str] = set()
        self._wakeup = trio.Event()
        self._flushed = trio.Event()
        self._writing = False
        self._write_lock = trio.Lock()  # one user of the write connection at a time
        #: Called with each committed batch's events, in seq order (the fan-out).
        self.on_commit = on_commit
        self.batches = 0  # how many transactions the writer made (for benchmarks)
        self.gather_interval = 0.005
        self.max_batch = 500  # items per transaction (keep it well under server.send_buffer)
        #: While writes fail: one line naming the file and SQLite's error (None: they work).
        self.write_error: str | None = None
        #: Called when a batch cannot be written, with `write_error` and the ids of the DAGs
        #: whose items are held and were not reported yet in this outage (may be empty).
        self.on_write_error: Callable[[str, set[str]], None] | None = None
        self.retry_first = RETRY_FIRST
        self.retry_cap = RETRY_CAP
        self._retry_delay = RETRY_FIRST
        self._failing_since = 0.0  # trio.current_time() of the outage's first failure
        self._reported: set[str] = set()  # DAG ids reported to on_write_error in this outage

    @classmethod
    def open(
        cls,
        path: Path,
        on_commit: Callable[[list[StoredEvent]], None] | None = None,
        stats: DaemonStats | None = None,
    ) -> Store:
        """Open (or create) the state file at `path` and bring its schema up to date
        (schema.py). `on_commit` gets every committed batch of events; `stats` counts them
        and times each transaction (a new DaemonStats if not given).

        Raises `StateFileError` (a `sqlite3.DatabaseError`; its message one line naming the
        file and what to do) for a file that is not a dagd state file, is truncated or damaged,
        is newer than this dagd, or cannot be written (a read-only file, folder or filesystem,
        a full disk while migrating). The file is left as it was."""
        return cls(path, on_commit, stats)

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
        *,
        parent_run_id: str | None = None,
        triggered_by: str | None = None,
    ) -> None:
        """Queue the creation of a run row as queued (before its first event); `queued_at` in
        UNIX seconds; `dag_version` the definition it is bound to (queue that definition with
        `record_dag_version` first, or in the same batch); `parent_run_id` and `triggered_by`
        as RunRecord has them."""
        self._queue(
            RecordRun(
                run_id,
                dag_id,
                json.dumps(params),
                queued_at,
                dag_version,
                parent_run_id,
                triggered_by,
            )
        )

    def record_dag_version(self, version: str, dag_id: str, definition: str) -> None:
        """Queue a DAG definition's JSON text under its version (once per version is enough;
        a version already stored is left alone). Once per definition, not per run or event."""
        self._recorded_versions.add(version)
        self._queue(RecordDagVersion(version, dag_id, definition))

    def record_leftover(self, leftover: RecordLeftover) -> None:
        """Queue a running step's leftover handle (it replaces the step's earlier one), so a
        later start can hand it back to its executor (recovery.py)."""
        self._queue(leftover)

    def record_requeue(self, run_id: str) -> None:
        """Queue a finished run's return to `queued` (a retry, before its first event). Once
        it is committed (`flush`), ask `requeue_missed`: the run may have been deleted by
        history retention meanwhile."""
        self._queue(Requeue(run_id))

    def requeue_missed(self, run_id: str) -> bool:
        """True (once) if the committed `record_requeue` of `run_id` found no run to put back
        in the queue: history retention deleted it after the retry had read it (a retry read
        from memory or from the store, then requeued while `delete_runs` ran). Nothing was
        requeued: the retry must be refused as an unknown run, and publish no event of it (a
        status event would make a bare row for it). False once the requeue has committed
        otherwise, or before it has."""
        if run_id in self._missed_requeues:
            self._missed_requeues.discard(run_id)
            return True
        return False

    def record_slot(self, dag_id: str, slot: float) -> None:
        """Queue the cron slot (UNIX seconds) a DAG was last fired for."""
        self._queue(RecordSlot(dag_id, slot))

    def record_paused(self, dag_id: str, paused: bool, at: float | None = None) -> None:
        """Queue a DAG's pause (`paused` True, as of `at` UNIX seconds, default now) or unpause
        (False); `paused_dags` reads them back at the next start. Pausing a paused DAG keeps
        its first `paused_at`."""
        self._queue(RecordPaused(dag_id, paused, time.time() if at is None else at))

    async def writer(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Write queued items in batches until cancelled, then write what is left (one more
        try if writes fail: what is still held then is logged as lost).

        A batch that cannot be written stays queued and is tried again after `retry_first`
        seconds, doubling up to `retry_cap` (module docstring); never raises for it."""
        task_status.started()
        try:
            while True:
                await self._wakeup.wait()
                if await self._write_pending():
                    # Let the next events gather: one transaction per few ms, not per event.
                    await trio.sleep(self.gather_interval)
                else:
                    await trio.sleep(self._retry_delay)
                    self._retry_delay = min(self._retry_delay * 2, self.retry_cap)
        finally:
            with trio.CancelScope(shield=True):
                while self._pending:
                    if not await self._write_pending():
                        log.error(
                            "%d events and records were never written to %s; runs they belong"
                            " to are closed out at the next start",
                            len(self._pending),
                            self.path,
                        )
                        break

    async def checkpointer(
        self,
        interval: float = 1.0,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Copy the WAL into the database (and fsync) in a worker thread, every `interval`
        seconds while there are new writes, so the WAL stays small and the loop never syncs.

        A checkpoint that fails (on a full disk the database file cannot grow) is logged once
        and tried again at the next interval: the WAL keeps every commit meanwhile."""
        conn = connect(self.path)
        task_status.started()
        failing = False
        try:
            done = self.batches
            while True:
                await trio.sleep(interval)
                if self.batches != done:
                    batches = self.batches
                    try:
                        await trio.to_thread.run_sync(
                            conn.execute, "PRAGMA wal_checkpoint(PASSIVE)"
                        )
                    except sqlite3.Error as exc:
                        if not failing:
                            log.warning(
                                "cannot checkpoint the WAL of %s (%s); trying again every %gs",
                                self.path,
                                exc,
                                interval,
                            )
                        failing = True
                        continue
                    if failing:
                        log.info("the WAL of %s is checkpointed again", self.path)
                    failing = False
                    done = batches
        finally:
            conn.close()

    async def flush(self) -> None:
        """Wait until everything published so far is committed.

        Raises `StorageUnavailable` if writes fail (now, or while it waits): what is queued
        stays held and the writer keeps trying."""
        while self._pending or self._writing:
            if self.write_error is not None and not self._writing:
                raise StorageUnavailable(self.write_error)
            await self._flushed.wait()

    def withdraw_run(self, run_id: str) -> bool:
        """Take a run's queued creation or requeue (`record_run`, `record_requeue`) back out of
        the queue, if it is still there (a trigger or retry refused while writes fail). Returns
        False if it was already committed (or in the transaction being written)."""
        kept = [
            item
            for item in self._pending
            if not (isinstance(item, RecordRun | Requeue) and item.run_id == run_id)
        ]
        withdrawn = len(kept) != len(self._pending)
        self._pending = kept
        return withdrawn

    async def _write_pending(self) -> bool:
        """Write one batch of at most max_batch items (the writer loops for the rest). Returns
        False if the batch could not be written: it is back at the head of the queue."""
        self._wakeup = trio.Event()
        if not self._pending:
            if self.write_error is not None:  # what was held has been withdrawn: none to retry
                self._recovered()
            return True
        # At most max_batch items per transaction. When the writer falls behind (a busy event
        # loop starves the writer thread of the GIL for most of a second), the backlog goes out
        # in steps and each subscriber can drain between them, instead of getting thousands of
        # events in one call and being cut off as a slow consumer.
        batch = self._pending[: self.max_batch]
        self._pending = self._pending[self.max_batch :]
        if self._pending:
            self._wakeup.set()
        self._writing = True
        self._batch = batch
        try:
            # Shielded: the batch has left _pending, so a cancellation at the lock or at the
            # thread call's checkpoint would drop it (the writer's final flush never sees it).
            with trio.CancelScope(shield=True):
                async with self._write_lock:
                    began = time.perf_counter()
                    missed = self._write_batch(batch)
                    took = time.perf_counter() - began
        except sqlite3.Error as exc:
            # Disk full, an I/O error, a read-only remount: keep the batch, first in line (its
            # events keep their seqs), and let the writer try again later.
            self._pending[:0] = batch
            self._wakeup.set()
            self._writing = False
            self._failed(exc)
            return False
        finally:
            self._writing = False
            self._batch = []
        self._missed_requeues.update(missed)
        if self.write_error is not None:
            self._recovered()
        self.batches += 1
        events = [item for item in batch if type(item) is StoredEvent]
        self.stats.committed(events, took)
        if events:
            self.committed_seq = events[-1].seq
            if self.on_commit is not None:
                self.on_commit(events)
        flushed, self._flushed = self._flushed, trio.Event()
        flushed.set()
        return True

    def _failed(self, exc: sqlite3.Error) -> None:
        """A batch could not be written: log the first failure of an outage, report the DAGs
        whose items are held, wake `flush` waiters (they raise)."""
        error = f"cannot write the state file {self.path}: {exc}"
        if self.write_error is None:
            self._failing_since = trio.current_time()
            self._retry_delay = self.retry_first
            self._reported = set()
            log.error(
                "%s; holding %d events and records in memory and trying again (new triggers and"
                " retries are refused until a write succeeds)",
                error,
                len(self._pending),
            )
        elif error != self.write_error:
            log.warning("%s (still holding %d)", error, len(self._pending))
        self.write_error = error
        if self.on_write_error is not None:
            held = {dag_id for item in self._pending if (dag_id := getattr(item, "dag_id", None))}
            new = held - self._reported
            self._reported |= new
            self.on_write_error(error, new)
        flushed, self._flushed = self._flushed, trio.Event()
        flushed.set()

    def _recovered(self) -> None:
        took = trio.current_time() - self._failing_since
        log.warning(
            "the state file %s can be written again after %.1fs; the held events follow",
            self.path,
            took,
        )
        self.write_error = None
        self._retry_delay = self.retry_first

    def _write_batch(self, batch: list[Intent]) -> list[str]:
        """One transaction for a batch: the events with one executemany, and the steps table
        with one upsert per step (its latest status in the batch), not one per event. Returns
        the run ids whose Requeue found no run row."""
        conn = self._wconn
        missed: list[str] = []
        events: list[tuple[Any, ...]] = []
        steps: dict[tuple[str, str], tuple[Any, ...]] = {}
        # Attempts that a later one of their step will replace in the steps row: kept whole
        # in the attempts table (see get_attempts).
        superseded: dict[tuple[tuple[str, str], int], tuple[Any, ...]] = {}
        with _transaction(conn):
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
                        step = (ev.run_id, ev.step_id)
                        row = (
                            ev.run_id,
                            ev.step_id,
                            ev.status.value,
                            ev.retry_count,
                            ev.start_time,
                            ev.end_time,
                            ev.duration,
                            ev.error,
                            ev.attempt,
                            ev.worker,
                            None if ev.outputs is None else encode_outputs(ev.outputs),
                        )
                        steps[step] = row
                        # The attempt failed and another follows: the next one's running
                        # event will overwrite the steps row, so this one is kept apart.
                        if ev.status is _RETRYING and ev.attempt:
                            superseded.setdefault((step, ev.attempt), row)
                    elif type(ev) is DagRunStatusEvent:
                        if ev.status is RunStatus.QUEUED:
                            # A retried run: its steps are about to be reset, and their
                            # attempts so far are kept apart first (a new run has no steps).
                            self._write_steps(conn, steps)
                            self._write_superseded(conn, superseded)
                            conn.execute(_KEEP_LAST_ATTEMPTS, (ev.run_id,))
                        self._write_run_status(conn, ev)
                    continue
                match item:
                    case RecordRun(
                        run_id, dag_id, params_json, queued_at, dag_version, parent, triggered_by
                    ):
                        conn.execute(
                            "INSERT OR IGNORE INTO runs (run_id, dag_id, status, params,"
                            " queued_at, dag_version, parent_run_id, triggered_by)"
                            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (
                                run_id,
                                dag_id,
                                RunStatus.QUEUED.value,
                                params_json,
                                queued_at,
                                dag_version,
                                parent,
                                triggered_by,
                            ),
                        )
                    case RecordDagVersion(version, dag_id, definition):
                        conn.execute(
                            "INSERT OR IGNORE INTO dag_versions (version, dag_id, definition)"
                            " VALUES (?, ?, ?)",
                            (version, dag_id, definition),
                        )
                    case Requeue(run_id):
                        cur = conn.execute(
                            "UPDATE runs SET status=?, ended_at=NULL WHERE run_id=?",
                            (RunStatus.QUEUED.value, run_id),
                        )
                        if cur.rowcount == 0:  # deleted by history retention meanwhile
                            missed.append(run_id)
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
                    case RecordPaused(dag_id, paused, at):
                        if paused:
                            conn.execute(
                                "INSERT OR IGNORE INTO paused_dags (dag_id, paused_at)"
                                " VALUES (?, ?)",
                                (dag_id, at),
                            )
                        else:
                            conn.execute("DELETE FROM paused_dags WHERE dag_id=?", (dag_id,))
                    case _:
                        assert_never(item)
            conn.executemany(
                "INSERT INTO events (seq, ts, dag_id, run_id, type, body)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                events,
            )
            self._write_steps(conn, steps)
            self._write_superseded(conn, superseded)
        return missed

    @staticmethod
    def _write_steps(
        conn: sqlite3.Connection, steps: dict[tuple[str, str], tuple[Any, ...]]
    ) -> None:
        if steps:
            conn.executemany(
                "INSERT INTO steps (run_id, step_id, status, retry_count, start_time, end_time,"
                " duration, error, attempt, worker, outputs)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (run_id, step_id) DO UPDATE SET status=excluded.status,"
                " retry_count=excluded.retry_count, start_time=excluded.start_time,"
                " end_time=excluded.end_time, duration=excluded.duration, error=excluded.error,"
                " attempt=max(attempt, excluded.attempt), worker=excluded.worker,"
                " outputs=excluded.outputs",
                list(steps.values()),
            )
            steps.clear()

    @staticmethod
    def _write_superseded(
        conn: sqlite3.Connection, superseded: dict[tuple[tuple[str, str], int], tuple[Any, ...]]
    ) -> None:
        """Attempts that ended retrying, as steps rows with the worker (retry_count, ?4, and
        outputs, ?11, are not kept: a retrying attempt gave none). An attempt already kept
        stays as it was: how an attempt ended is the first thing said about it."""
        if superseded:
            conn.executemany(
                "INSERT OR IGNORE INTO attempts (run_id, step_id, status, start_time, end_time,"
                " duration, error, attempt, worker) VALUES (?1, ?2, ?3, ?5, ?6, ?7, ?8, ?9, ?10)",
                [row[:10] for row in superseded.values()],
            )
            superseded.clear()

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
        """The lowest seq from which the log is whole, None if it is empty: a replay of every
        event after `since` is possible when `since >= oldest_seq() - 1`. Event-log retention
        deletes the oldest events, history retention the events of the runs it deletes
        (`replay_floor`), so this is the lowest seq in the log or the floor + 1, whichever is
        higher."""
        rows = await self.read("SELECT min(seq) FROM events")
        oldest: int | None = rows[0][0]
        if oldest is None:
            return None
        return max(oldest, self.replay_floor + 1)

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

    async def run_ids_between(self, dag_id: str, low: str, high: str) -> list[str]:
        """The ids of `dag_id`'s runs that sort strictly between `low` and `high` (text order),
        in that order: one range read of the runs table's primary key."""
        rows = await self.read(
            "SELECT run_id FROM runs WHERE run_id > ? AND run_id < ? AND dag_id = ?"
            " ORDER BY run_id",
            (low, high, dag_id),
        )
        return [run_id for (run_id,) in rows]

    async def get_run(self, run_id: str) -> tuple[RunRecord, list[StepRecord]] | None:
        """A run's row and its steps' rows (steps that never started have none), or None."""
        rows = await self.read(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id=?", (run_id,))
        if not rows:
            return None
        steps = await self.read(f"SELECT {_STEP_COLUMNS} FROM steps WHERE run_id=?", (run_id,))
        return _run_record(rows[0]), [_step_record(s) for s in steps]

    async def get_attempts(self, run_id: str) -> list[AttemptRecord]:
        """Every recorded attempt of the run's steps, by step id, then attempt number: how
        each ended (`running` while it runs), its times (UNIX seconds), duration (ms), error
        and worker. Empty for an unknown run. Runs recorded before dagd kept attempts
        (schema.py, migration 5) have only each step's latest one. Read in a worker thread.

        A step's latest attempt is its steps row; the writer keeps an attempt apart, in the
        attempts table, when a later one is about to replace it there: when it ends retrying,
        and when the run is retried (its queued status event)."""
        rows = await self.read(_ATTEMPTS_OF_RUN, (run_id,))
        return [_attempt_record(r) for r in rows]

    def paused_dags(self) -> set[str]:
        """The ids of the DAGs paused now (`record_paused`), read at startup."""
        return {dag_id for (dag_id,) in self._read("SELECT dag_id FROM paused_dags")}

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
        """Delete events beyond the newest `keep_count` or older than `max_age` seconds;
        returns how many. A delete that fails (a full disk) is logged and counts 0.

        What stays is always the newest part of the log: an event older than `max_age` takes
        every event before it along, whatever their timestamps (a clock set back makes them
        out of order), so `oldest_seq` never hides a gap from a replay."""
        now = time.time() if now is None else now

        def work() -> int:
            conn = self._wconn
            floor = self.committed_seq - keep_count
            cur = conn.execute("DELETE FROM events WHERE seq <= ?", (floor,))
            deleted = cur.rowcount
            if max_age is not None:
                cur = conn.execute(
                    "DELETE FROM events WHERE seq <= (SELECT max(seq) FROM events WHERE ts < ?)",
                    (now - max_age,),
                )
                deleted += cur.rowcount
            return deleted

        async with self._write_lock:
            try:
                return await trio.to_thread.run_sync(work)
            except sqlite3.Error as exc:  # a full disk: the next round tries again
                log.warning("event log retention: cannot delete from %s (%s)", self.path, exc)
                return 0

    async def finished_runs_to_prune(
        self, ended_before: float | None, keep_runs: int | None
    ) -> list[str]:
        """Ids of the finished runs that history retention removes, oldest end first: those
        that ended before `ended_before` (UNIX seconds), and those beyond the newest
        `keep_runs` finished runs of their DAG (newest by end time); None: no limit of that
        kind. Queued and running runs are never among them. One read of the runs table, in a
        worker thread on a connection of its own, so other reads do not wait for it."""
        if ended_before is None and keep_runs is None:
            return []

        def work() -> list[str]:
            conn = connect(self.path)
            try:
                rows = conn.execute(_RUNS_TO_PRUNE, (ended_before, keep_runs)).fetchall()
            finally:
                conn.close()
            return [run_id for (run_id,) in rows]

        return await trio.to_thread.run_sync(work)

    async def delete_runs(self, run_ids: Sequence[str]) -> DeletedRuns:
        """Delete finished runs with their steps, attempts and events, and the DAG versions
        no run uses any more, in one transaction in a worker thread under the write lock (the
        writer waits for it: keep `run_ids` to a few hundred). A run that is not finished (a
        retry put it back in the queue), unknown, or that items not yet committed are about
        (queued for the writer, or in the batch it is about to write) when the lock is
        taken, is left alone. A retry requeued while the transaction runs finds the run gone
        (`requeue_missed`). The runs deleted are noted as having step logs to remove
        (`log_removals`), and the replay floor rises to the highest seq deleted.

        Raises `sqlite3.Error` if the transaction fails (nothing is deleted then)."""
        async with self._write_lock:
            # Looked at under the lock, not before: a retry queued while this waited for
            # the lock keeps its run (no await between this look and the thread's start).
            keep = frozenset(self._recorded_versions)
            held = self._held_run_ids()
            wanted = [run_id for run_id in run_ids if run_id not in held]
            deleted = await trio.to_thread.run_sync(self._delete_runs, wanted, keep)
        self.replay_floor = deleted.replay_floor
        return deleted

    def _held_run_ids(self) -> set[str]:
        """The runs that items not committed yet are about: queued for the writer, or in the
        batch it took and waits for the write lock to write."""
        held: set[str] = set()
        for item in (*self._batch, *self._pending):
            source = item.event if isinstance(item, StoredEvent) else item
            run_id = getattr(source, "run_id", None)
            if run_id is not None:
                held.add(run_id)
        return held

    def _delete_runs(self, run_ids: list[str], keep_versions: frozenset[str]) -> DeletedRuns:
        conn = self._wconn
        chosen = "(SELECT run_id FROM temp.pruning)"
        with _transaction(conn):
            conn.execute("DELETE FROM temp.pruning")
            conn.executemany(
                "INSERT OR IGNORE INTO temp.pruning (run_id) VALUES (?)", [(r,) for r in run_ids]
            )
            conn.execute(
                "DELETE FROM temp.pruning WHERE NOT EXISTS (SELECT 1 FROM runs"
                f" WHERE runs.run_id = pruning.run_id AND runs.status IN {_FINISHED_SQL})"
            )
            runs = conn.execute(
                f"SELECT dag_id, run_id FROM runs WHERE run_id IN {chosen} ORDER BY run_id"
            ).fetchall()
            versions = [
                version
                for (version,) in conn.execute(
                    f"SELECT DISTINCT dag_version FROM runs WHERE run_id IN {chosen}"
                    " AND dag_version IS NOT NULL"
                )
                if version not in keep_versions
            ]
            (top,) = conn.execute(
                f"SELECT max(seq) FROM events WHERE run_id IN {chosen}"
            ).fetchone()
            events = conn.execute(f"DELETE FROM events WHERE run_id IN {chosen}").rowcount
            attempts = conn.execute(f"DELETE FROM attempts WHERE run_id IN {chosen}").rowcount
            steps = conn.execute(f"DELETE FROM steps WHERE run_id IN {chosen}").rowcount
            conn.execute(
                "INSERT OR IGNORE INTO log_removals (dag_id, run_id)"
                f" SELECT dag_id, run_id FROM runs WHERE run_id IN {chosen}"
            )
            conn.execute(f"DELETE FROM runs WHERE run_id IN {chosen}")
            gone_versions = 0
            for version in versions:
                gone_versions += conn.execute(
                    "DELETE FROM dag_versions WHERE version = ?"
                    " AND NOT EXISTS (SELECT 1 FROM runs WHERE dag_version = ?)",
                    (version, version),
                ).rowcount
            floor = self.replay_floor
            if top is not None and top > floor:
                floor = top
                conn.execute(
                    "INSERT INTO replay_floor (id, seq) VALUES (1, ?)"
                    " ON CONFLICT (id) DO UPDATE SET seq = excluded.seq",
                    (floor,),
                )
        return DeletedRuns(
            [(dag_id, run_id) for dag_id, run_id in runs],
            steps,
            attempts,
            events,
            gone_versions,
            floor,
        )

    async def log_removals(self) -> list[tuple[str, str]]:
        """(dag_id, run_id) of deleted runs whose step logs are still to be removed (a crash
        or a failed removal between `delete_runs` and `take_log_removals`)."""
        rows = await self.read("SELECT dag_id, run_id FROM log_removals ORDER BY dag_id, run_id")
        return [(dag_id, run_id) for dag_id, run_id in rows]

    async def take_log_removals(self, detach: Callable[[str, str], bool]) -> int:
        """Hand over the step logs of deleted runs (`log_removals`) for removal: for each
        (dag_id, run_id) on the list whose run does not exist (again), `detach(dag_id,
        run_id)` moves its log folder out of the way, where no run writes, and returns True
        (it had none, or it is moved), or False if it could not (the run stays on the list
        for the next round). A run that exists again (a backfill re-creates a deleted cron
        slot's run id) is taken off the list with its folder left alone: the folder is that
        run's now. Returns how many runs went off the list.

        Why under the write lock, in one worker thread: no run row can be committed between
        the look and the move, and a run that re-uses a deleted run's id starts its steps,
        which make its log folder, only once its row is committed (a backfill waits for that
        commit, a retry of a deleted run is refused: `requeue_missed`, and the scheduler never
        fires a cron slot twice). So `detach` must be quick (a rename), and the slow removal
        of what it moved happens afterwards, outside the lock.

        Raises `sqlite3.Error` if the list cannot be read or written (what `detach` moved
        meanwhile stays moved; the runs stay on the list, and the next round finds no folder
        to move for them)."""

        def work() -> int:
            conn = self._wconn
            with _transaction(conn):
                listed = conn.execute(
                    "SELECT dag_id, run_id, EXISTS (SELECT 1 FROM runs"
                    " WHERE runs.run_id = log_removals.run_id)"
                    " FROM log_removals ORDER BY dag_id, run_id"
                ).fetchall()
                done = [
                    (dag_id, run_id)
                    for dag_id, run_id, exists in listed
                    if exists or detach(dag_id, run_id)
                ]
                conn.executemany("DELETE FROM log_removals WHERE dag_id = ? AND run_id = ?", done)
            return len(done)

        async with self._write_lock:
            return await trio.to_thread.run_sync(work)
