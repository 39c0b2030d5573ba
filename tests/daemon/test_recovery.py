"""Crash recovery alone: closing out what a dead daemon left, and handing its leftovers back
to the executors that made them. (The real kill -9 of a daemon process is in
test_daemon_process.py.)"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Collection
from pathlib import Path

import attrs
import proctools as procs
import pytest
import trio

from dagd.core.config import Config
from dagd.core.dagsnapshot import dag_to_json, dag_version
from dagd.core.events import (
    DagEvent,
    DagRunProgressEvent,
    DagRunStatusEvent,
    ErrorEvent,
    StepStatusEvent,
)
from dagd.core.model import HandlerKind, RunStatus, StepSpec, StepStatus
from dagd.core.records import RunRecord
from dagd.core.spec import parse_dag
from dagd.daemon.daemon import Daemon
from dagd.daemon.hub import Hub
from dagd.daemon.recovery import (
    INTERRUPTED,
    LeftoverRecorder,
    interrupted_events,
    kill_leftovers,
    recover,
)
from dagd.daemon.schema import MIGRATIONS
from dagd.daemon.store import StepRecord, Store, connect
from dagd.runtime.executor import (
    AttemptResult,
    Leftover,
    LeftoverHandle,
    LeftoverSink,
    StepContext,
    StepExecutor,
    executor_registry,
)
from dagd.runtime.local.executor import LocalExecutor
from dagd.runtime.local.leftovers import leftover_handle
from dagd.runtime.local.procs import boot_id, process_start

NOW = 1000.0


def local_only() -> dict[str, StepExecutor]:
    return executor_registry(LocalExecutor())


def run_record(run_id: str, status: RunStatus = RunStatus.RUNNING) -> RunRecord:
    return RunRecord("d", run_id, status, {}, 1.0, 2.0, None)


def step_record(run_id: str, step_id: str, status: StepStatus) -> StepRecord:
    return StepRecord(run_id, step_id, status, 1, 990.0, None, None, None)


@pytest.mark.parametrize(
    ("left", "closed"),
    [
        (StepStatus.RUNNING, StepStatus.FAILED),
        (StepStatus.RETRYING, StepStatus.FAILED),
        (StepStatus.PENDING, StepStatus.CANCELLED),
        (StepStatus.SUCCESS, None),
        (StepStatus.FAILED, None),
        (StepStatus.UPSTREAM_FAILED, None),
        (StepStatus.SKIPPED, None),
        (StepStatus.CANCELLED, None),
    ],
)
def test_an_unfinished_step_gets_a_final_status_a_finished_one_keeps_its_own(
    left: StepStatus, closed: StepStatus | None
) -> None:
    events = interrupted_events([run_record("r")], [step_record("r", "s", left)], NOW)
    steps = [e for e in events if isinstance(e, StepStatusEvent)]
    if closed is None:
        assert steps == []
    else:
        assert steps == [
            StepStatusEvent("d", "r", "s", closed, 990.0, NOW, 10_000, 1, INTERRUPTED, NOW)
        ]


def test_each_run_ends_failed_after_an_error_naming_the_interruption() -> None:
    runs = [run_record("r1"), run_record("r2", RunStatus.QUEUED)]
    steps = [step_record("r2", "s", StepStatus.PENDING), step_record("r1", "s", StepStatus.RUNNING)]
    events = interrupted_events(runs, steps, NOW)
    # (issue 10, item 6: a progress event now comes before the run's final status)
    assert [(type(e).__name__, e.run_id) for e in events] == [
        ("StepStatusEvent", "r1"),
        ("ErrorEvent", "r1"),
        ("DagRunProgressEvent", "r1"),
        ("DagRunStatusEvent", "r1"),
        ("StepStatusEvent", "r2"),
        ("ErrorEvent", "r2"),
        ("DagRunProgressEvent", "r2"),
        ("DagRunStatusEvent", "r2"),
    ]
    assert events[1] == ErrorEvent("d", "r1", None, INTERRUPTED, NOW)
    assert events[2] == DagRunProgressEvent("d", "r1", 1, 0, 0, 1, 0, 0.0, NOW)
    assert events[3] == DagRunStatusEvent("d", "r1", RunStatus.FAILED, NOW)


# Issue 10, item 6: a run's steps that never started have no row, yet they belong to the run.
CHAIN = parse_dag(
    '[steps.a]\ncommand = "true"\n[steps.b]\ncommand = "true"\ndepends_on = ["a"]\n'
    '[steps.c]\ncommand = "true"\ndepends_on = ["b"]\n',
    "d.toml",
    default_id="d",
)


def closed_steps(events: list[DagEvent]) -> dict[str, tuple[StepStatus, str | None]]:
    return {e.step_id: (e.status, e.error) for e in events if isinstance(e, StepStatusEvent)}


def last_progress(events: list[DagEvent]) -> DagRunProgressEvent:
    return [e for e in events if isinstance(e, DagRunProgressEvent)][-1]


def test_steps_without_a_row_are_closed_out_from_the_runs_definition() -> None:
    # a succeeded, b was running, c never started: 1/3 done, 2 failed, nothing pending
    rows = [
        attrs.evolve(step_record("r", "a", StepStatus.SUCCESS), end_time=995.0),
        step_record("r", "b", StepStatus.RUNNING),
    ]
    events = interrupted_events([run_record("r")], rows, NOW, {"r": CHAIN})
    assert closed_steps(events) == {
        "b": (StepStatus.FAILED, INTERRUPTED),
        "c": (StepStatus.CANCELLED, INTERRUPTED),
    }
    never = next(e for e in events if isinstance(e, StepStatusEvent) and e.step_id == "c")
    assert (never.start_time, never.end_time, never.duration, never.retry_count) == (
        None,
        NOW,
        None,
        0,
    )
    assert last_progress(events) == DagRunProgressEvent("d", "r", 3, 1, 0, 2, 0, 33.3, NOW)
    assert events[-1] == DagRunStatusEvent("d", "r", RunStatus.FAILED, NOW)


def test_a_run_interrupted_while_its_handlers_ran_closes_them_out_too() -> None:
    dag = parse_dag(
        '[steps.a]\ncommand = "true"\n'
        '[handlers.on_success]\ncommand = "true"\n[handlers.always]\ncommand = "true"\n',
        "d.toml",
        default_id="d",
    )
    rows = [
        attrs.evolve(step_record("r", "a", StepStatus.SUCCESS), end_time=995.0),
        step_record("r", "@on_success", StepStatus.RUNNING),
    ]
    events = interrupted_events([run_record("r")], rows, NOW, {"r": dag})
    assert closed_steps(events) == {
        "@on_success": (StepStatus.FAILED, INTERRUPTED),
        "@always": (StepStatus.CANCELLED, INTERRUPTED),  # never started: no row
    }
    handlers = {e.step_id: e.handler for e in events if isinstance(e, StepStatusEvent)}
    assert handlers == {"@on_success": HandlerKind.ON_SUCCESS, "@always": HandlerKind.ALWAYS}
    assert last_progress(events) == DagRunProgressEvent("d", "r", 3, 1, 0, 2, 0, 33.3, NOW)


def test_a_queued_run_with_no_rows_has_every_step_cancelled() -> None:
    events = interrupted_events([run_record("r", RunStatus.QUEUED)], [], NOW, {"r": CHAIN})
    assert closed_steps(events) == dict.fromkeys("abc", (StepStatus.CANCELLED, INTERRUPTED))
    assert last_progress(events) == DagRunProgressEvent("d", "r", 3, 0, 0, 3, 0, 0.0, NOW)


def test_without_a_definition_the_rows_are_all_there_is() -> None:
    # a run recorded before dagd stored definitions, whose DAG is gone: what has a row
    rows = [step_record("r", "x", StepStatus.RETRYING), step_record("r", "y", StepStatus.SKIPPED)]
    events = interrupted_events([run_record("r")], rows, NOW)
    assert closed_steps(events) == {"x": (StepStatus.FAILED, INTERRUPTED)}
    assert last_progress(events) == DagRunProgressEvent("d", "r", 2, 1, 0, 1, 0, 50.0, NOW)


def test_a_row_of_a_step_the_definition_lacks_is_closed_out_too() -> None:
    rows = [step_record("r", "old", StepStatus.RUNNING)]
    events = interrupted_events([run_record("r")], rows, NOW, {"r": CHAIN})
    assert set(closed_steps(events)) == {"a", "b", "c", "old"}
    progress = last_progress(events)
    assert (progress.total_steps, progress.running_steps, progress.pending_steps) == (4, 0, 0)


async def test_recover_closes_out_the_runs_left_in_the_store(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "db.sqlite3")
    published: list[DagEvent] = []
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.writer)
            # nothing left: nothing to do
            assert await recover(store, local_only(), published.append, NOW) == []
            store.record_run("r", "d", {}, 1.0)
            store.publish(DagRunStatusEvent("d", "r", RunStatus.RUNNING, 2.0))
            store.publish(
                StepStatusEvent("d", "r", "s", StepStatus.RUNNING, 2.0, None, None, 0, None, 2.0)
            )
            await store.flush()
            closed = await recover(store, local_only(), published.append, NOW)
            assert [r.run_id for r in closed] == ["r"]
            for event in published:
                store.publish(event)
            await store.flush()
            assert store.unfinished() == ([], [])
            nursery.cancel_scope.cancel()
    finally:
        store.close()
    assert [type(e) for e in published] == [
        StepStatusEvent,
        ErrorEvent,
        DagRunProgressEvent,
        DagRunStatusEvent,
    ]


async def test_recover_takes_each_runs_stored_definition_over_the_loaded_dag(
    tmp_path: Path,
) -> None:
    edited = parse_dag('[steps.a]\ncommand = "true"\n[steps.z]\ncommand = "true"\n', "d.toml", "d")
    store = Store.open(tmp_path / "db.sqlite3")
    published: list[DagEvent] = []
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.writer)
            definition = dag_to_json(CHAIN)
            store.record_dag_version(dag_version(definition), "d", definition)
            store.record_run("bound", "d", {}, 1.0, dag_version(definition))
            store.record_run("legacy", "d", {}, 1.0)  # as recorded before definitions were kept
            store.record_dag_version("bad", "d", "{not json")
            store.record_run("unreadable", "d", {}, 1.0, "bad")
            await store.flush()
            await recover(store, local_only(), published.append, NOW, {"d": edited})
            nursery.cancel_scope.cancel()
    finally:
        store.close()
    steps: dict[str, set[str]] = {}
    for e in published:
        if isinstance(e, StepStatusEvent):
            steps.setdefault(e.run_id, set()).add(e.step_id)
    assert steps == {"bound": {"a", "b", "c"}, "legacy": {"a", "z"}, "unreadable": {"a", "z"}}


def spawn_leftover(run_id: str, mark: str) -> subprocess.Popen[bytes]:
    """A step's process and a grandchild, in a process group of their own, as the executor
    makes them (DAGD_RUN_ID in their environment)."""
    env = {**os.environ, "DAGD_RUN_ID": run_id, "DAGD_STEP_ID": "s", procs.MARK_VAR: mark}
    return subprocess.Popen(["sh", "-c", "sleep 600 & sleep 600"], env=env, process_group=0)


def wait_for_processes(mark: str, count: int) -> None:
    deadline = time.monotonic() + 5
    while len(procs.live_processes(mark)) < count:
        assert time.monotonic() < deadline, "the leftover processes did not start"
        time.sleep(0.01)


async def test_a_recorded_process_group_is_killed() -> None:
    mark = procs.new_mark()
    # Not DAGD_RUN_ID of the run recovered: only the record can find it.
    leftover = spawn_leftover("another-run", mark)
    try:
        wait_for_processes(mark, 3)
        step = attrs.evolve(
            step_record("r", "s", StepStatus.RUNNING),
            leftover=leftover_handle("local", leftover.pid),
        )
        await kill_leftovers(local_only(), [run_record("r")], [step])
        assert procs.wait_gone(mark) == []
    finally:
        leftover.kill()
        leftover.wait()


async def test_a_group_whose_leader_pid_was_reused_is_left_alone() -> None:
    mark = procs.new_mark()
    other = spawn_leftover("another-run", mark)
    try:
        wait_for_processes(mark, 3)
        start = process_start(other.pid)
        assert start is not None
        step = attrs.evolve(
            step_record("r", "s", StepStatus.RUNNING),
            leftover={**leftover_handle("local", other.pid), "start_ticks": start + 1},
        )
        await kill_leftovers(local_only(), [run_record("r")], [step])
        assert len(procs.live_processes(mark)) == 3
    finally:
        os.killpg(other.pid, 9)
        other.wait()


async def test_a_group_never_recorded_is_found_by_its_run_id() -> None:
    """A daemon killed between a spawn and the commit that records its process group leaves a
    step the record cannot point to; recovery finds it by DAGD_RUN_ID."""
    mark = procs.new_mark()
    leftover = spawn_leftover("r", mark)
    try:
        wait_for_processes(mark, 3)
        steps = [step_record("r", "s", StepStatus.RUNNING)]
        await kill_leftovers(local_only(), [run_record("r")], steps)
        assert procs.wait_gone(mark) == []
    finally:
        leftover.kill()
        leftover.wait()


async def leave_a_running_step(path: Path, handle: LeftoverHandle | None = None) -> None:
    """What a daemon killed mid-run leaves in the state file at `path`: run "r" of DAG "d"
    running, its step "s" running, and `handle` (if any) reported by the step's executor and
    stored by the daemon's recorder."""
    store = Store.open(path)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.writer)
            store.record_run("r", "d", {}, 1.0)
            store.publish(DagRunStatusEvent("d", "r", RunStatus.RUNNING, 2.0))
            store.publish(
                StepStatusEvent("d", "r", "s", StepStatus.RUNNING, 2.0, None, None, 0, None, 2.0)
            )
            if handle is not None:
                LeftoverRecorder(store)(StepContext("d", "r", "s", 1, {}), handle)
            await store.flush()
            nursery.cancel_scope.cancel()
    finally:
        store.close()


class ClusterExecutor:
    """A second kind of executor (steps on a cluster, say): it only records its clean-ups."""

    name = "cluster"
    log_dir = None

    def __init__(self) -> None:
        self.cleaned: list[tuple[list[Leftover], set[str]]] = []

    async def run(
        self, step: StepSpec, ctx: StepContext, on_leftover: LeftoverSink | None = None
    ) -> AttemptResult:
        raise AssertionError("no step runs on this executor here")

    async def clean_up(self, leftovers: Collection[Leftover], run_ids: Collection[str]) -> None:
        self.cleaned.append((list(leftovers), set(run_ids)))


async def test_another_executors_handle_goes_back_to_it_after_a_restart(tmp_path: Path) -> None:
    """A handle of an executor registered by name next to the local one is stored whole (any
    JSON), and the next daemon's start hands it back to that executor's clean_up; the run is
    closed out as usual."""
    (tmp_path / "dags").mkdir()
    config = Config(dags_dir=tmp_path / "dags", state_dir=tmp_path / "state", kill_grace=0.5)
    handle = {"executor": "cluster", "job": "j-7", "workers": [1, 2], "lease": {"s": 1.5}}
    await leave_a_running_step(config.db_path, handle)

    cluster = ClusterExecutor()
    hub = Hub()
    store = Store.open(config.db_path, on_commit=hub.publish)
    registry = executor_registry(LocalExecutor(grace=0.5), cluster)
    daemon = Daemon(config, store=store, hub=hub, executors=registry, clock=lambda: NOW)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.writer)
            await daemon.start(nursery)
            assert cluster.cleaned == [([Leftover("r", "s", handle)], {"r"})]
            await daemon.stop()
            await store.flush()
            nursery.cancel_scope.cancel()
        assert store.unfinished() == ([], [])
        found = await store.get_run("r")
    finally:
        store.close()
    assert found is not None
    run, [step] = found
    assert (run.status, step.status, step.error) == ("failed", "failed", INTERRUPTED)
    assert step.leftover == handle


async def test_a_group_recorded_by_a_version_2_file_is_killed_after_the_upgrade(
    tmp_path: Path,
) -> None:
    """A state file of dagd before handles were stored whole kept a step's process group in
    columns of its own: opening it converts them (schema.py, migration 3) and recovery kills
    the group through the local executor."""
    path = tmp_path / "db.sqlite3"
    conn = connect(path)
    for migration in MIGRATIONS[:2]:
        assert isinstance(migration, str)
        conn.executescript(migration)
    conn.execute("PRAGMA user_version = 2")
    mark = procs.new_mark()
    leftover = spawn_leftover("another-run", mark)  # only the record can find it
    try:
        wait_for_processes(mark, 3)
        conn.execute(
            "INSERT INTO runs (run_id, dag_id, status, queued_at) VALUES ('r', 'd', 'running', 1)"
        )
        conn.execute(
            "INSERT INTO steps (run_id, step_id, status, pgid, proc_start, boot_id)"
            " VALUES ('r', 's', 'running', ?, ?, ?)",
            (leftover.pid, process_start(leftover.pid), boot_id()),
        )
        conn.close()
        store = Store.open(path)
        try:
            published: list[DagEvent] = []
            closed = await recover(store, local_only(), published.append, NOW)
        finally:
            store.close()
        assert [r.run_id for r in closed] == ["r"]
        assert procs.wait_gone(mark) == []
    finally:
        leftover.kill()
        leftover.wait()


async def test_a_handle_that_is_not_json_is_logged_and_not_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The recorder runs inside an executor's attempt: an executor's bad handle must neither
    raise there nor reach the writer's transaction."""
    path = tmp_path / "db.sqlite3"
    with caplog.at_level(logging.WARNING, "dagd"):
        await leave_a_running_step(path, {"executor": "cluster", "ids": {1, 2}})
    assert "cannot store the leftover handle of r/s" in caplog.text
    store = Store.open(path)
    try:
        _, [step] = store.unfinished()
    finally:
        store.close()
    assert step.leftover is None
