"""History retention racing the daemon's own writes: a retry of a run while a batch deletes
it, and a deleted run's id used again (a backfill re-creates a cron slot's run) before its
log folder is removed. Deterministic: the retry is made to arrive inside the delete's
transaction, or while the delete waits for the store's write lock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
import trio.testing
from test_retention import (
    ALL,
    NOW,
    history_config,
    make_history,
    rows,
    run_ids,
)
from test_retention import writing as writing_store

from dagd.core.config import HistoryConfig
from dagd.daemon.retention import prune_once
from dagd.daemon.store import DeletedRuns, Store
from dagd.runtime.logfiles import attempt_log

#: Something that happens on the event loop while a batch's transaction is under way.
Arrival = Callable[[], Awaitable[None]]


def runs_row(db: Path, run_id: str) -> list[tuple[object, ...]]:
    return rows(db, f"SELECT status, params, dag_version FROM runs WHERE run_id = '{run_id}'")


def call_inside_delete(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[Arrival]:
    """Make `store.delete_runs` run each callable put in the returned list on the event loop
    (`trio.from_thread.run`, async ones awaited) from inside its worker thread, with the
    write lock held, just before its transaction: what arrives while a batch is deleted."""
    arrivals: list[Arrival] = []
    original = store._delete_runs

    def deleting(run_ids: list[str], keep: frozenset[str]) -> DeletedRuns:
        for arrival in arrivals:
            trio.from_thread.run(arrival)
        return original(run_ids, keep)

    monkeypatch.setattr(store, "_delete_runs", deleting)
    return arrivals


async def test_a_retry_queued_while_a_batch_deletes_its_run_is_missed_not_half_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reviewer's race: a retry (Requeue) queued while the transaction deleting its run
    is under way. The run is deleted; its requeue finds no row and says so
    (`requeue_missed`), so the daemon refuses the retry and publishes nothing that would
    re-create a bare row; the run's log folder is removed as for any deleted run."""
    db, log_dir = await make_history(tmp_path)
    async with writing_store(db) as store:

        async def retry_arrives() -> None:
            store.record_requeue("etl-3")  # as Daemon._requeue queues it

        call_inside_delete(store, monkeypatch).append(retry_arrives)
        deleted = await store.delete_runs(["etl-3"])
        assert deleted.runs == [("etl", "etl-3")]
        await store.flush()
        assert store.requeue_missed("etl-3")
        assert not store.requeue_missed("etl-3")  # said once
        assert not store.requeue_missed("etl-4")
        pruned = await prune_once(store, history_config(tmp_path, HistoryConfig()), NOW)
    assert runs_row(db, "etl-3") == []
    assert run_ids(db, "steps") == ALL - {"etl-3", "etl-queued"}
    assert pruned.log_folders == 1
    assert not (log_dir / "etl" / "etl-3").exists()


async def test_a_retry_queued_while_the_delete_waits_for_the_lock_keeps_its_run(
    tmp_path: Path,
) -> None:
    """The retry's Requeue is still waiting for the writer when the delete gets the write
    lock (queued, no writer running): the run stays, whole, and is queued once written."""
    db, _ = await make_history(tmp_path)
    store = Store.open(db)
    try:
        async with trio.open_nursery() as nursery:
            deleted: list[DeletedRuns] = []
            async with store._write_lock:  # the writer's batch, or an earlier prune, writing

                async def delete() -> None:
                    deleted.append(await store.delete_runs(["etl-3", "etl-4"]))

                nursery.start_soon(delete)
                await trio.testing.wait_all_tasks_blocked()
                store.record_requeue("etl-3")  # the retry, as Daemon._requeue queues it
        await store._write_pending()
    finally:
        store.close()
    assert deleted[0].runs == [("etl", "etl-4")]
    assert runs_row(db, "etl-3") == [("queued", '{"day": "1"}', "v1")]
    assert "etl-3" in run_ids(db, "steps")


async def test_a_retry_the_writer_has_taken_but_not_written_keeps_its_run(
    tmp_path: Path,
) -> None:
    """The writer has taken the Requeue out of its queue and waits for the write lock behind
    the delete: the delete still sees it and leaves the run alone."""
    db, _ = await make_history(tmp_path)
    async with writing_store(db) as store:
        deleted: list[DeletedRuns] = []
        async with trio.open_nursery() as nursery, store._write_lock:

            async def delete() -> None:
                deleted.append(await store.delete_runs(["etl-3", "etl-4"]))

            nursery.start_soon(delete)
            await trio.testing.wait_all_tasks_blocked()  # first in line for the lock
            store.record_requeue("etl-3")
            await trio.testing.wait_all_tasks_blocked()  # the writer took it, waits too
            assert store._pending == []
        await store.flush()
        assert not store.requeue_missed("etl-3")
    assert deleted[0].runs == [("etl", "etl-4")]
    assert runs_row(db, "etl-3") == [("queued", '{"day": "1"}', "v1")]


async def test_a_log_folder_is_not_removed_once_its_run_id_is_used_again(
    tmp_path: Path,
) -> None:
    """A deleted run whose log folder is still to be removed (a crash, or a folder that
    could not be removed) gets its id back: a backfill re-creates the cron slot's run. Its
    folder is that run's now: it stays, and the store's list forgets the old run."""
    db, log_dir = await make_history(tmp_path)
    async with writing_store(db) as store:
        await store.delete_runs(["etl-1", "etl-2"])  # then the daemon died
    async with writing_store(db) as store:  # the next start; a backfill of etl-1's slot
        store.record_run("etl-1", "etl", {"day": "2"}, NOW, "v1")
        await store.flush()
        new_log = attempt_log(log_dir, "etl", "etl-1", "extract", 1, "out")
        new_log.write_text("the new run's output\n")
        pruned = await prune_once(store, history_config(tmp_path, HistoryConfig()), NOW)
        assert await store.log_removals() == []
    assert new_log.read_text() == "the new run's output\n"
    assert not (log_dir / "etl" / "etl-2").exists()
    assert pruned.log_folders == 1
    assert runs_row(db, "etl-1") == [("queued", '{"day": "2"}', "v1")]


async def test_log_folders_a_crash_left_moved_aside_go_in_the_next_round(
    tmp_path: Path,
) -> None:
    """A crash between moving a deleted run's folder aside and removing it: the next round
    removes it, and the aside folder with it; run folders are not touched."""
    db, log_dir = await make_history(tmp_path)
    aside = log_dir / "etl" / ".removing" / "0123456789abcdef"
    aside.mkdir(parents=True)
    (aside / "extract.1.out").write_text("old\n")
    async with writing_store(db) as store:
        pruned = await prune_once(store, history_config(tmp_path, HistoryConfig()), NOW)
    assert pruned.log_folders == 1
    assert not (log_dir / "etl" / ".removing").exists()
    assert {p.name for p in log_dir.glob("*/*")} == ALL - {"etl-queued"}
