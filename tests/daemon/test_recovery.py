"""Crash recovery alone: closing out what a dead daemon left, and killing its leftovers. (The
real kill -9 of a daemon process is in test_daemon_process.py.)"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import attrs
import proctools as procs
import pytest
import trio

from dagd.core.events import DagEvent, DagRunStatusEvent, ErrorEvent, StepStatusEvent
from dagd.core.model import RunStatus, StepStatus
from dagd.daemon.recovery import INTERRUPTED, interrupted_events, kill_leftovers, recover
from dagd.daemon.store import RecordLeftover, RunRecord, StepRecord, Store
from dagd.runtime.local.procs import boot_id, process_start

NOW = 1000.0


def run_record(run_id: str, status: RunStatus = RunStatus.RUNNING) -> RunRecord:
    return RunRecord(run_id, "d", status, {}, 1.0, 2.0, None)


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
    assert [(type(e).__name__, e.run_id) for e in events] == [
        ("StepStatusEvent", "r1"),
        ("ErrorEvent", "r1"),
        ("DagRunStatusEvent", "r1"),
        ("StepStatusEvent", "r2"),
        ("ErrorEvent", "r2"),
        ("DagRunStatusEvent", "r2"),
    ]
    assert events[1] == ErrorEvent("d", "r1", None, INTERRUPTED, NOW)
    assert events[2] == DagRunStatusEvent("d", "r1", RunStatus.FAILED, NOW)


async def test_recover_closes_out_the_runs_left_in_the_store(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "db.sqlite3")
    published: list[DagEvent] = []
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.writer)
            assert recover(store, published.append, NOW) == []  # nothing left: nothing to do
            store.record_run("r", "d", {}, 1.0)
            store.publish(DagRunStatusEvent("d", "r", RunStatus.RUNNING, 2.0))
            store.publish(
                StepStatusEvent("d", "r", "s", StepStatus.RUNNING, 2.0, None, None, 0, None, 2.0)
            )
            await store.flush()
            closed = recover(store, published.append, NOW)
            assert [r.run_id for r in closed] == ["r"]
            for event in published:
                store.publish(event)
            await store.flush()
            assert store.unfinished() == ([], [])
            nursery.cancel_scope.cancel()
    finally:
        store.close()
    assert [type(e) for e in published] == [StepStatusEvent, ErrorEvent, DagRunStatusEvent]


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


def test_a_recorded_process_group_is_killed() -> None:
    mark = procs.new_mark()
    # Not DAGD_RUN_ID of the run recovered: only the record can find it.
    leftover = spawn_leftover("another-run", mark)
    try:
        wait_for_processes(mark, 3)
        record = RecordLeftover("r", "s", leftover.pid, process_start(leftover.pid), boot_id())
        step = attrs.evolve(
            step_record("r", "s", StepStatus.RUNNING),
            pgid=record.pgid,
            proc_start=record.proc_start,
            boot_id=record.boot_id,
        )
        kill_leftovers([run_record("r")], [step])
        assert procs.wait_gone(mark) == []
    finally:
        leftover.kill()
        leftover.wait()


def test_a_group_whose_leader_pid_was_reused_is_left_alone() -> None:
    mark = procs.new_mark()
    other = spawn_leftover("another-run", mark)
    try:
        wait_for_processes(mark, 3)
        start = process_start(other.pid)
        assert start is not None
        step = attrs.evolve(
            step_record("r", "s", StepStatus.RUNNING),
            pgid=other.pid,
            proc_start=start + 1,
            boot_id=boot_id(),
        )
        kill_leftovers([run_record("r")], [step])
        assert len(procs.live_processes(mark)) == 3
    finally:
        os.killpg(other.pid, 9)
        other.wait()


def test_a_group_never_recorded_is_found_by_its_run_id() -> None:
    """A daemon killed between a spawn and the commit that records its process group leaves a
    step the record cannot point to; recovery finds it by DAGD_RUN_ID."""
    mark = procs.new_mark()
    leftover = spawn_leftover("r", mark)
    try:
        wait_for_processes(mark, 3)
        kill_leftovers([run_record("r")], [step_record("r", "s", StepStatus.RUNNING)])
        assert procs.wait_gone(mark) == []
    finally:
        leftover.kill()
        leftover.wait()
