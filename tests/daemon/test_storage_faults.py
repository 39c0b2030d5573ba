"""Storage failures while dagd runs: a write that fails (a full disk) never stops the daemon.

The store's writer keeps the batch (its events keep their seqs), reports it, tries again with
a backoff and carries on when writes work again; the checkpointer and retention survive a
failure too; a trigger or retry meanwhile is refused with `storage_unavailable`. Here the
failing disk is injected (a write connection that raises `database or disk is full` for a
while, as SQLite does); tests/daemon/test_storage_disk.py uses a real, full tmpfs.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from storefaults import FULL, failing
from wshelp import make_config, remember, trio_client, url_of

import dagd.daemon.store as store_module
from dagd.app import open_app
from dagd.core.events import DagRunStatusEvent, ErrorEvent
from dagd.core.model import RunStatus
from dagd.daemon.daemon import STORAGE_FAILED
from dagd.daemon.errors import DaemonError
from dagd.daemon.store import StorageUnavailable, Store


def error(i: int) -> ErrorEvent:
    return ErrorEvent("d", None, None, f"e{i}", 1.0)


def stored_seqs(path: Path) -> list[int]:
    conn = sqlite3.connect(path)
    try:
        return [seq for (seq,) in conn.execute("SELECT seq FROM events ORDER BY seq")]
    finally:
        conn.close()


async def test_a_failing_write_is_held_and_retried_with_a_backoff_nothing_lost(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Five failed commits: the writer lives on, tries again after 0.1, 0.2, 0.4, 0.8, 1.6 s,
    reports the outage once per DAG, then commits everything, in seq order, once."""
    committed: list[int] = []
    reports: list[tuple[str, set[str]]] = []
    store = Store.open(
        tmp_path / "db.sqlite3", on_commit=lambda b: committed.extend(e.seq for e in b)
    )
    store.on_write_error = lambda text, dags: reports.append((text, dags))
    conn = failing(store, 5)
    caplog.set_level(logging.WARNING, "dagd.store")
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.writer)
            for i in range(3):
                store.publish(error(i))
            await trio.sleep(0.05)
            assert store.write_error is not None and FULL in store.write_error
            assert str(store.path) in store.write_error
            assert committed == []
            with pytest.raises(StorageUnavailable):
                await store.flush()
            store.publish(error(3))  # published during the outage: numbered, held, in order
            await trio.sleep(10)
            assert store.write_error is None
            await store.flush()
            nursery.cancel_scope.cancel()
    finally:
        store.close()
    gaps = [round(b - a, 3) for a, b in zip(conn.commits, conn.commits[1:], strict=False)]
    assert gaps[:5] == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert committed == [1, 2, 3, 4]
    assert stored_seqs(tmp_path / "db.sqlite3") == [1, 2, 3, 4]
    assert [dags for _, dags in reports] == [{"d"}] + [set()] * 4  # each DAG reported once
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and FULL in errors[0].getMessage()  # logged once
    assert any("can be written again" in r.getMessage() for r in caplog.records)


async def test_the_real_error_is_not_hidden_by_a_rollback(tmp_path: Path) -> None:
    """A COMMIT that SQLite rolled back itself: the error is the disk's, not `cannot rollback -
    no transaction is active`."""
    store = Store.open(tmp_path / "db.sqlite3")
    failing(store, 1)
    try:
        stored = store.publish(error(0))
        with pytest.raises(sqlite3.OperationalError, match=FULL):
            store._write_batch([stored])
        store._write_batch([stored])  # the connection is usable again
    finally:
        store.close()
    assert stored_seqs(tmp_path / "db.sqlite3") == [1]


async def test_a_refused_run_record_is_withdrawn_never_written(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    store = Store.open(tmp_path / "db.sqlite3")
    failing(store, 2)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.writer)
            store.record_run("r1", "d", {}, 1.0)
            store.publish(DagRunStatusEvent("d", "r0", RunStatus.FAILED, 1.0))
            with pytest.raises(StorageUnavailable):
                await store.flush()
            assert store.withdraw_run("r1")
            assert not store.withdraw_run("r1")
            await trio.sleep(5)
            await store.flush()
            nursery.cancel_scope.cancel()
        assert await store.get_run("r1") is None
        assert (await store.get_run("r0")) is not None
    finally:
        store.close()


class FailingCheckpoints:
    """A connection whose checkpoints fail while `failures` is above zero."""

    def __init__(self, conn: sqlite3.Connection, failures: int) -> None:
        self.conn = conn
        self.failures = failures
        self.done = 0

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql.startswith("PRAGMA wal_checkpoint"):
            if self.failures > 0:
                self.failures -= 1
                raise sqlite3.OperationalError(FULL)
            self.done += 1
        return self.conn.execute(sql, *args)

    def close(self) -> None:
        self.conn.close()


async def test_a_failing_checkpoint_is_logged_and_tried_again(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The checkpointer used to die with the traceback that took the daemon down a second
    after a run on a full disk."""
    store = Store.open(tmp_path / "db.sqlite3")
    made: list[FailingCheckpoints] = []

    def connect(path: Path) -> Any:
        made.append(FailingCheckpoints(sqlite3.connect(path, check_same_thread=False), 3))
        return made[-1]

    monkeypatch.setattr(store_module, "connect", connect)
    caplog.set_level(logging.INFO, "dagd.store")
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.writer)
            await nursery.start(store.checkpointer)
            store.publish(error(0))
            await store.flush()
            for _ in range(50):  # real threads run the checkpoints: let them
                await trio.sleep(1)
                await trio.to_thread.run_sync(lambda: None)
                if made and made[0].done:
                    break
            nursery.cancel_scope.cancel()
    finally:
        store.close()
    assert made[0].failures == 0 and made[0].done >= 1
    warned = [r for r in caplog.records if "cannot checkpoint" in r.getMessage()]
    assert len(warned) == 1 and str(tmp_path / "db.sqlite3") in warned[0].getMessage()


# ------------------------------------------------------------------ the daemon


DAGS = {
    "flaky": '[steps.one]\ncommand = "true"\n[steps.two]\ncommand = "false"\n'
    'depends_on = ["one"]\n',
}


async def test_while_writes_fail_the_daemon_serves_refuses_runs_and_catches_up(
    tmp_path: Path,
) -> None:
    """The daemon with a real WebSocket client: a run ends while its events cannot be
    written; the client stays connected (pings answered, queries served), a trigger and a retry
    are refused with `storage_unavailable`; when writes work again the held events arrive in
    seq order with no gap, with the DAG's storage `error` event among them, and triggers work."""
    config = make_config(tmp_path, dags=DAGS)
    async with open_app(config, websocket=True) as app, trio.open_nursery() as nursery:
        daemon = remember(app)
        store = daemon.store
        client = await trio_client(nursery, url_of(daemon))
        answer = await client.request({"type": "subscribe", "dagIds": ["*"], "requestId": 1})
        assert answer["type"] == "subscribed", answer
        first = store.committed_seq
        conn = failing(store, 0)
        store.retry_cap = 0.2  # real time here: keep the retries quick
        run_id = await daemon.trigger("flaky")  # its record is committed
        conn.failures = 10**6  # the disk is full from here on: the queued event is held too
        with trio.fail_after(10):
            while run_id in daemon.active or not daemon.run_states():
                await trio.sleep(0.02)
        assert store.write_error is not None
        assert store.committed_seq == first
        answer = await client.request({"type": "trigger", "dagId": "flaky", "requestId": 2})
        assert answer["type"] == "error" and answer["code"] == "storage_unavailable", answer
        assert str(store.path) in answer["message"]
        answer = await client.request({"type": "retry", "runId": run_id, "requestId": 3})
        assert answer["code"] == "storage_unavailable", answer
        assert (await client.request({"type": "ping", "requestId": 4}))["type"] == "pong"
        answer = await client.request({"type": "list_runs", "requestId": 5})
        assert answer["type"] == "runs", answer
        assert [r["status"] for r in answer["runs"]] == ["queued"]  # as committed
        conn.failures = 0  # space is back
        seqs: list[int] = []
        kinds: list[str] = []
        notices = 0
        with trio.fail_after(10):
            while "dag_run_status:failed" not in kinds or not notices:
                frame = await client.recv()
                if "seq" in frame:
                    seqs.append(frame["seq"])
                    kinds.append(f"{frame['type']}:{frame['data'].get('status', '')}")
                    if frame["type"] == "error" and frame["data"]["stepId"] is None:
                        assert frame["data"]["error"].startswith(STORAGE_FAILED)
                        assert str(store.path) in frame["data"]["error"]
                        notices += 1
        assert seqs == list(range(first + 1, first + 1 + len(seqs)))  # in order, no gap
        assert kinds[0] == "dag_run_status:queued"
        assert notices == 1 and kinds.count("error:") == 2  # the failed step's, the notice
        assert store.write_error is None
        assert (await client.request({"type": "retry", "runId": run_id, "requestId": 6}))[
            "type"
        ] == "retry_accepted"
        nursery.cancel_scope.cancel()


async def test_a_trigger_whose_own_record_fails_is_refused_and_never_runs(
    tmp_path: Path,
) -> None:
    """The disk fills between the trigger's check and its commit: the caller gets
    storage_unavailable, and the run is neither started nor written once space returns."""
    config = make_config(tmp_path, dags=DAGS)
    async with open_app(config) as app:
        daemon = app.daemon
        store = daemon.store
        conn = failing(store, 3)
        store.retry_cap = 0.05
        with pytest.raises(DaemonError) as refused:
            await daemon.trigger("flaky")
        assert refused.value.code == "storage_unavailable"
        assert str(store.path) in refused.value.message
        assert not daemon.active and not daemon.run_states()
        with trio.fail_after(10):
            while store.write_error is not None or conn.failures:
                await trio.sleep(0.02)
        await store.flush()
        assert await daemon.list_runs() == []
        run_id = await daemon.trigger("flaky")
        assert [r.run_id for r in await daemon.list_runs()] == [run_id]
