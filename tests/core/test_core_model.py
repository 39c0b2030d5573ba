"""dagd.core.model: the status sets and progress buckets every layer reads statuses through."""

from __future__ import annotations

import pytest

from dagd.core.model import (
    BUCKET_OF,
    FAILED_STEP,
    FINISHED_RUN,
    FINISHED_STEP,
    RETRYABLE_RUN,
    RUN_FAILING_STEP,
    ProgressBucket,
    RunStatus,
    StepStatus,
)

S, R, B = StepStatus, RunStatus, ProgressBucket


def test_status_values_are_the_wire_strings():
    assert [str(s) for s in R] == ["queued", "running", "success", "failed", "cancelled"]
    assert [str(s) for s in S] == [
        "pending",
        "running",
        "retrying",
        "success",
        "failed",
        "upstream_failed",
        "skipped",
        "cancelled",
    ]
    assert [str(b) for b in B] == ["completed", "running", "failed", "pending"]


@pytest.mark.parametrize("status", list(R))
def test_finished_run_statuses(status):
    assert status.finished == (status in FINISHED_RUN)
    assert status.finished == (status in {R.SUCCESS, R.FAILED, R.CANCELLED})
    assert (status in RETRYABLE_RUN) == (status in {R.FAILED, R.CANCELLED})


@pytest.mark.parametrize("status", list(S))
def test_finished_step_statuses(status):
    assert status.finished == (status in FINISHED_STEP)
    assert status.finished == (status not in {S.PENDING, S.RUNNING, S.RETRYING})
    assert FAILED_STEP <= FINISHED_STEP and RUN_FAILING_STEP <= FAILED_STEP
    assert (status in FAILED_STEP) == (status in {S.FAILED, S.UPSTREAM_FAILED, S.CANCELLED})


def test_progress_buckets_are_the_protocols():
    # dag_run_progress: completed = success + skipped; running = running + retrying;
    # failed = failed + upstream_failed + cancelled; pending = the rest.
    assert BUCKET_OF == {
        S.SUCCESS: B.COMPLETED,
        S.SKIPPED: B.COMPLETED,
        S.RUNNING: B.RUNNING,
        S.RETRYING: B.RUNNING,
        S.FAILED: B.FAILED,
        S.UPSTREAM_FAILED: B.FAILED,
        S.CANCELLED: B.FAILED,
        S.PENDING: B.PENDING,
    }
    assert {s for s, b in BUCKET_OF.items() if b is B.FAILED} == FAILED_STEP
