"""The daemon's counters: what a committed batch of events adds, and what it never keeps."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from dagd.core.events import (
    DagEvent,
    DagRunProgressEvent,
    DagRunStatusEvent,
    ErrorEvent,
    StepStatusEvent,
)
from dagd.core.model import RunStatus, StepStatus
from dagd.daemon.looplag import probe_loop_lag
from dagd.daemon.stats import DURATION_BUCKETS, DaemonStats, Histogram
from dagd.daemon.store import StoredEvent


def stored(*events: DagEvent) -> list[StoredEvent]:
    return [StoredEvent(i + 1, e.dag_id, e, "") for i, e in enumerate(events)]


def run(dag: str, run_id: str, status: RunStatus, at: float) -> DagRunStatusEvent:
    return DagRunStatusEvent(dag, run_id, status, at)


def step(dag: str, status: StepStatus, start: float | None, end: float | None) -> StepStatusEvent:
    return StepStatusEvent(dag, "r1", "s", status, start, end, None, 0, None, end or 0.0)


def test_histogram_buckets_are_inclusive_upper_bounds_and_cumulative() -> None:
    hist = Histogram((1.0, 5.0))
    for value in (0.5, 1.0, 1.0001, 5.0, 7.0):
        hist.observe(value)
    assert hist.cumulative() == [(1.0, 2), (5.0, 4), (float("inf"), 5)]
    assert hist.count == 5
    assert hist.sum == pytest.approx(14.5001)


def test_a_run_counts_as_started_then_finished_with_its_duration() -> None:
    stats = DaemonStats()
    stats.committed(
        stored(
            run("etl", "r1", RunStatus.QUEUED, 100.0),
            run("etl", "r1", RunStatus.RUNNING, 101.0),
            run("etl", "r2", RunStatus.QUEUED, 101.0),
        ),
        0.002,
    )
    stats.committed(stored(run("etl", "r1", RunStatus.FAILED, 104.5)), 0.001)
    assert stats.runs_started == {"etl": 1}
    assert stats.runs_finished == {("etl", "failed"): 1}
    hist = stats.run_seconds[("etl", "failed")]
    assert (hist.count, hist.sum) == (1, 3.5)
    # A retry starts it again: counted again, its duration from the new start.
    stats.committed(
        stored(
            run("etl", "r1", RunStatus.QUEUED, 200.0),
            run("etl", "r1", RunStatus.RUNNING, 200.0),
            run("etl", "r1", RunStatus.SUCCESS, 260.0),
        ),
        0.001,
    )
    assert stats.runs_started == {"etl": 2}
    assert stats.runs_finished == {("etl", "failed"): 1, ("etl", "success"): 1}
    assert stats.run_seconds[("etl", "success")].sum == 60.0
    assert stats.commit_seconds.count == 3
    assert stats.commit_seconds.sum == pytest.approx(0.004)


def test_a_run_cancelled_while_queued_finishes_without_a_duration() -> None:
    stats = DaemonStats()
    stats.committed(
        stored(run("etl", "r1", RunStatus.QUEUED, 1.0), run("etl", "r1", RunStatus.CANCELLED, 2.0)),
        0.0,
    )
    assert stats.runs_finished == {("etl", "cancelled"): 1}
    assert stats.runs_started == {}
    assert stats.run_seconds == {}


def test_only_final_step_statuses_count_and_their_durations_are_observed() -> None:
    stats = DaemonStats()
    stats.committed(
        stored(
            step("etl", StepStatus.RUNNING, 10.0, None),
            step("etl", StepStatus.RETRYING, 10.0, 11.0),
            step("etl", StepStatus.SUCCESS, 10.0, 12.5),
            step("etl", StepStatus.UPSTREAM_FAILED, None, None),
            step("etl", StepStatus.SKIPPED, None, None),
            step("etl", StepStatus.FAILED, 20.0, 20.05),
        ),
        0.0,
    )
    assert stats.steps_finished == {
        ("etl", "success"): 1,
        ("etl", "upstream_failed"): 1,
        ("etl", "skipped"): 1,
        ("etl", "failed"): 1,
    }
    assert set(stats.step_seconds) == {("etl", "success"), ("etl", "failed")}
    assert stats.step_seconds[("etl", "success")].sum == 2.5
    assert stats.step_seconds[("etl", "failed")].cumulative()[0] == (DURATION_BUCKETS[0], 1)


def test_other_events_count_nothing_and_finished_runs_leave_no_entry() -> None:
    stats = DaemonStats()
    stats.committed(
        stored(
            DagRunProgressEvent("etl", "r1", 1, 0, 1, 0, 0, 0.0, 1.0),
            ErrorEvent("etl", "r1", None, "boom", 1.0),
        ),
        0.0,
    )
    assert (stats.runs_started, stats.runs_finished, stats.steps_finished) == ({}, {}, {})
    # Ten thousand runs through: the per-run memory (running runs' start times) is empty after.
    for i in range(10_000):
        rid = f"r{i}"
        stats.committed(
            stored(
                run("etl", rid, RunStatus.RUNNING, 0.0), run("etl", rid, RunStatus.SUCCESS, 1.0)
            ),
            0.0,
        )
    assert stats.runs_finished == {("etl", "success"): 10_000}
    assert stats._running_since == {}


def test_uptime_counts_from_creation() -> None:
    now = [50.0]
    stats = DaemonStats(monotonic=lambda: now[0])
    now[0] = 62.5
    assert stats.uptime() == 12.5


async def test_the_loop_lag_probe_records_how_late_it_woke(
    mock_clock: trio.testing.MockClock,
) -> None:
    """A loop held for 0.4 s (the clock jumps while the probe sleeps 0.1 s): one 0.3 s lag;
    a punctual wake-up: a 0 s one."""
    stats = DaemonStats()
    async with trio.open_nursery() as nursery:
        await nursery.start(probe_loop_lag, stats)
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(0.4)
        await trio.testing.wait_all_tasks_blocked()
        assert stats.loop_lag_seconds.count == 1
        assert stats.loop_lag_seconds.sum == pytest.approx(0.3)
        assert dict(stats.loop_lag_seconds.cumulative())[0.25] == 0
        assert dict(stats.loop_lag_seconds.cumulative())[0.5] == 1
        mock_clock.jump(0.1)
        await trio.testing.wait_all_tasks_blocked()
        assert stats.loop_lag_seconds.count == 2
        assert stats.loop_lag_seconds.cumulative()[0] == (0.001, 1)
        nursery.cancel_scope.cancel()
