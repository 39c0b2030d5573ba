"""The store alone: the writer's batches, the intents it writes, the records it reads back."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

import pytest
import trio
from daemonhelp import wait_until

from dagd.core.events import DagRunStatusEvent, ErrorEvent, StepStatusEvent
from dagd.core.model import RunStatus, StepStatus
from dagd.core.records import AttemptRecord, RunRecord
from dagd.daemon.hub import Hub
from dagd.daemon.recovery import INTERRUPTED, interrupted_events
from dagd.daemon.store import RecordLeftover, Store, StoredEvent

HANDLE = {"executor": "local", "pgid": 4242, "start_ticks": 99, "boot_id": "boot"}


async def test_every_kind_of_intent_is_written_in_one_batch(tmp_path: Path) -> None:
    """A run, its events, a step's leftover record, a requeue and a cron slot, published
    together, land in one transaction, each in its table."""
    committed: list[list[StoredEvent]] = []
    store = Store.open(tmp_path / "db.sqlite3", on_commit=committed.append)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.writer)
            store.record_run("r1", "d", {"x": "1"}, 10.0)
            store.publish(DagRunStatusEvent("d", "r1", RunStatus.RUNNING, 11.0))
            store.publish(
                StepStatusEvent("d", "r1", "s", StepStatus.RUNNING, 11.0, None, None, 0, None, 11.0)
            )
            store.record_leftover(RecordLeftover("r1", "s", HANDLE))
            store.publish(
                StepStatusEvent(
                    "d", "r1", "s", StepStatus.FAILED, 11.0, 12.0, 1000, 0, "exit 1", 12.0
                )
            )
            store.publish(DagRunStatusEvent("d", "r1", RunStatus.FAILED, 12.0))
            store.record_requeue("r1")
            store.record_slot("d", 1234.5)
            await store.flush()
            assert store.batches == 1
            assert [s.seq for s in committed[0]] == [1, 2, 3, 4]
            found = await store.get_run("r1")
            nursery.cancel_scope.cancel()
    finally:
        store.close()
    assert found is not None
    run, [step] = found
    assert run == RunRecord("d", "r1", RunStatus.QUEUED, {"x": "1"}, 10.0, 11.0, None)
    assert type(run.status) is RunStatus and type(step.status) is StepStatus
    assert (step.status, step.error, step.duration) == (StepStatus.FAILED, "exit 1", 1000)
    assert step.leftover == HANDLE
    conn = sqlite3.connect(tmp_path / "db.sqlite3")
    # The handle whole, as compact JSON; the columns of earlier schema versions stay empty.
    assert conn.execute("SELECT leftover, pgid, proc_start, boot_id FROM steps").fetchall() == [
        ('{"executor":"local","pgid":4242,"start_ticks":99,"boot_id":"boot"}', None, None, None)
    ]
    assert conn.execute("SELECT dag_id, last_slot FROM schedule").fetchall() == [("d", 1234.5)]
    bodies = [json.loads(b) for (b,) in conn.execute("SELECT body FROM events ORDER BY seq")]
    assert [b["seq"] for b in bodies] == [1, 2, 3, 4]
    conn.close()


async def test_unfinished_reads_the_runs_left_queued_or_running(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "db.sqlite3")
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.writer)
            for run_id, status in [("q", RunStatus.QUEUED), ("r", RunStatus.RUNNING)]:
                store.record_run(run_id, "d", {}, 1.0)
                store.publish(DagRunStatusEvent("d", run_id, status, 2.0))
                store.publish(
                    StepStatusEvent(
                        "d", run_id, "s", StepStatus.RUNNING, 2.0, None, None, 0, None, 2.0
                    )
                )
            store.record_run("done", "d", {}, 1.0)
            store.publish(DagRunStatusEvent("d", "done", RunStatus.SUCCESS, 3.0))
            await store.flush()
            nursery.cancel_scope.cancel()
        runs, steps = store.unfinished()
    finally:
        store.close()
    assert sorted((r.run_id, r.status) for r in runs) == [
        ("q", RunStatus.QUEUED),
        ("r", RunStatus.RUNNING),
    ]
    assert sorted((s.run_id, s.status) for s in steps) == [
        ("q", StepStatus.RUNNING),
        ("r", StepStatus.RUNNING),
    ]


def seq_of(item: object) -> int:
    assert isinstance(item, StoredEvent)
    return item.seq


async def test_a_backlog_is_written_in_steps_a_draining_subscriber_keeps_up(
    tmp_path: Path,
) -> None:
    """Thousands of events published at once (as after a stall of the writer) reach a
    subscriber with a 1024-event buffer in batches of at most max_batch, so a consumer that
    drains is never cut off; cancelling the writer still commits everything."""
    store = Store.open(tmp_path / "db.sqlite3")
    hub = Hub()
    store.on_commit = hub.publish
    sub = hub.subscribe(None, 1024)
    got: list[int] = []

    async def drain() -> None:
        # Greedy, as a sender should be: everything queued at each wake-up.
        with contextlib.suppress(trio.EndOfChannel):
            while True:
                got.append(seq_of(await sub.get()))
                with contextlib.suppress(trio.WouldBlock):
                    while True:
                        got.append(seq_of(sub.get_nowait()))

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain)
            await nursery.start(store.writer)
            for i in range(5000):
                store.publish(ErrorEvent("d", None, None, f"e{i}", 1.0))
            await store.flush()
            await wait_until(lambda: len(got) == 5000)
            assert not sub.overflowed
            assert store.batches >= 5000 // store.max_batch
            for i in range(1200):  # more than one batch pending when the writer is cancelled
                store.publish(ErrorEvent("d", None, None, f"late{i}", 1.0))
            nursery.cancel_scope.cancel()
        assert store._pending == []
        assert store.committed_seq == 6200
        assert got[:5000] == list(range(1, 5001))
    finally:
        store.close()
    conn = sqlite3.connect(tmp_path / "db.sqlite3")
    assert conn.execute("SELECT count(*), min(seq), max(seq) FROM events").fetchone() == (
        6200,
        1,
        6200,
    )
    conn.close()


async def test_an_event_published_just_before_the_writer_is_cancelled_is_kept(
    tmp_path: Path,
) -> None:
    """The writer wakes for the event, is cancelled before it runs, and must still commit it
    (it used to take the batch and then lose it at the lock's checkpoint)."""
    store = Store.open(tmp_path / "db.sqlite3")
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.writer)
            await trio.sleep(0.05)
            store.publish(ErrorEvent("d", None, None, "last words", 1.0))
            nursery.cancel_scope.cancel()
    finally:
        store.close()
    conn = sqlite3.connect(tmp_path / "db.sqlite3")
    assert conn.execute("SELECT seq, type FROM events").fetchall() == [(1, "error")]
    conn.close()


@pytest.mark.parametrize("handle", [{"x": float("nan")}, {"ids": {1, 2}}, {"at": object()}])
def test_a_leftover_handle_that_is_not_json_is_refused_at_once(handle: dict[str, object]) -> None:
    """Encoded when the intent is made, so the writer's transaction never meets it."""
    with pytest.raises((TypeError, ValueError)):
        RecordLeftover("r", "s", handle)


def test_a_leftover_intent_keeps_the_handle_as_it_was_given() -> None:
    handle: dict[str, object] = {"executor": "cluster", "job": 7}
    record = RecordLeftover("r", "s", handle)
    handle["job"] = 8
    assert record.handle_json == '{"executor":"cluster","job":7}'


def step_event(
    step_id: str,
    status: StepStatus,
    attempt: int,
    *,
    start: float | None = 10.0,
    end: float | None = None,
    error: str | None = None,
    worker: str | None = None,
) -> StepStatusEvent:
    duration = None if start is None or end is None else round((end - start) * 1000)
    return StepStatusEvent(
        "d",
        "r1",
        step_id,
        status,
        start,
        end,
        duration,
        max(0, attempt - 1),
        error,
        end or start or 10.0,
        attempt=attempt,
        worker=worker,
    )


#: A run's step events in publishing order: `s` fails once and succeeds on a second attempt
#: (on a named worker); `t` fails, waits for its retry and is cancelled meanwhile; `u` never
#: runs (upstream failed).
ATTEMPT_STORY = [
    step_event("s", StepStatus.RUNNING, 1),
    step_event("t", StepStatus.RUNNING, 1),
    step_event("s", StepStatus.RETRYING, 1, end=11.0, error="exit 1"),
    step_event("t", StepStatus.RETRYING, 1, end=11.5, error="exit 2"),
    step_event("s", StepStatus.RUNNING, 2, start=12.0),
    step_event("s", StepStatus.SUCCESS, 2, start=12.0, end=12.25, worker="tcp://10.0.0.7:4000"),
    step_event("t", StepStatus.CANCELLED, 1, end=13.0, error="cancelled by user"),
    step_event("u", StepStatus.UPSTREAM_FAILED, 0, start=None, end=13.0),
]


@pytest.mark.parametrize("per_batch", [len(ATTEMPT_STORY), 1], ids=["one batch", "per event"])
async def test_each_attempt_keeps_how_it_ended(tmp_path: Path, per_batch: int) -> None:
    """Whether an attempt's running event and its end share a transaction or not, its row
    says how it ended; a cancel while the step waits for its retry leaves the failed
    attempt's row as it was, and a step that never ran has none."""
    store = Store.open(tmp_path / "db.sqlite3")
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.writer)
            store.record_run("r1", "d", {}, 1.0)
            for i in range(0, len(ATTEMPT_STORY), per_batch):
                for event in ATTEMPT_STORY[i : i + per_batch]:
                    store.publish(event)
                await store.flush()
            attempts = await store.get_attempts("r1")
            assert await store.get_attempts("nosuchrun") == []
            found = await store.get_run("r1")
            nursery.cancel_scope.cancel()
    finally:
        store.close()
    assert attempts == [
        AttemptRecord("s", 1, StepStatus.RETRYING, 10.0, 11.0, 1000, "exit 1"),
        AttemptRecord("s", 2, StepStatus.SUCCESS, 12.0, 12.25, 250, None, "tcp://10.0.0.7:4000"),
        AttemptRecord("t", 1, StepStatus.RETRYING, 10.0, 11.5, 1500, "exit 2"),
    ]
    assert all(type(a.status) is StepStatus for a in attempts)
    # The steps table still has each step's latest status.
    assert found is not None
    assert {s.step_id: s.status for s in found[1]} == {
        "s": StepStatus.SUCCESS,
        "t": StepStatus.CANCELLED,
        "u": StepStatus.UPSTREAM_FAILED,
    }


async def test_recovery_closes_the_attempt_a_dead_daemon_left_running(tmp_path: Path) -> None:
    """The attempt row a killed daemon left running is closed by the close-out events the
    next start publishes (recovery.py), with their error."""
    path = tmp_path / "db.sqlite3"
    store = Store.open(path)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.writer)
            store.record_run("r1", "d", {}, 1.0)
            store.publish(DagRunStatusEvent("d", "r1", RunStatus.RUNNING, 10.0))
            store.publish(step_event("s", StepStatus.RUNNING, 3))
            await store.flush()
            nursery.cancel_scope.cancel()
    finally:
        store.close()
    store = Store.open(path)  # the next start
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.writer)
            runs, steps = store.unfinished()
            for event in interrupted_events(runs, steps, 20.0):
                store.publish(event)
            await store.flush()
            attempts = await store.get_attempts("r1")
            nursery.cancel_scope.cancel()
    finally:
        store.close()
    assert attempts == [
        AttemptRecord("s", 3, StepStatus.FAILED, 10.0, 20.0, 10_000, INTERRUPTED),
    ]


async def test_paused_dags_are_kept_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    store = Store.open(path)
    try:
        assert store.paused_dags() == set()
        async with trio.open_nursery() as nursery:
            await nursery.start(store.writer)
            store.record_paused("etl", True, at=100.0)
            store.record_paused("report", True, at=100.0)
            await store.flush()
            store.record_paused("report", False)
            store.record_paused("etl", True, at=200.0)  # already paused: since 100 still
            store.record_paused("never-paused", False)
            await store.flush()
            nursery.cancel_scope.cancel()
    finally:
        store.close()
    store = Store.open(path)
    try:
        assert store.paused_dags() == {"etl"}
    finally:
        store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT dag_id, paused_at FROM paused_dags").fetchall() == [("etl", 100.0)]
    conn.close()


#: A run fails (s), is retried, and s succeeds on its second attempt; t succeeded in the first
#: try and is kept as it was.
RETRY_STORY = [
    DagRunStatusEvent("d", "r1", RunStatus.RUNNING, 10.0),
    step_event("s", StepStatus.RUNNING, 1),
    step_event("t", StepStatus.RUNNING, 1),
    step_event("t", StepStatus.SUCCESS, 1, end=10.5, worker="w1"),
    step_event("s", StepStatus.FAILED, 1, end=11.0, error="exit 1", worker="w2"),
    DagRunStatusEvent("d", "r1", RunStatus.FAILED, 11.0),
    DagRunStatusEvent("d", "r1", RunStatus.QUEUED, 20.0),
    step_event("s", StepStatus.PENDING, 1, start=None),
    DagRunStatusEvent("d", "r1", RunStatus.RUNNING, 21.0),
    step_event("s", StepStatus.RUNNING, 2, start=21.0),
    step_event("s", StepStatus.SUCCESS, 2, start=21.0, end=21.5),
]


@pytest.mark.parametrize("per_batch", [len(RETRY_STORY), 1], ids=["one batch", "per event"])
async def test_a_retried_run_keeps_the_attempts_of_its_earlier_try(
    tmp_path: Path, per_batch: int
) -> None:
    store = Store.open(tmp_path / "db.sqlite3")
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.writer)
            store.record_run("r1", "d", {}, 1.0)
            for i in range(0, len(RETRY_STORY), per_batch):
                for event in RETRY_STORY[i : i + per_batch]:
                    store.publish(event)
                await store.flush()
            attempts = await store.get_attempts("r1")
            nursery.cancel_scope.cancel()
    finally:
        store.close()
    assert attempts == [
        AttemptRecord("s", 1, StepStatus.FAILED, 10.0, 11.0, 1000, "exit 1", "w2"),
        AttemptRecord("s", 2, StepStatus.SUCCESS, 21.0, 21.5, 500, None),
        AttemptRecord("t", 1, StepStatus.SUCCESS, 10.0, 10.5, 500, None, "w1"),
    ]
