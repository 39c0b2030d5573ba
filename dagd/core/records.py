"""What the daemon keeps of a run, as a plain value: the store's row, the daemon's answer to
`list_runs`, and an entry of the protocol's `runs` answer alike (one class for all three)."""

from __future__ import annotations

import attrs

from dagd.core.model import RunStatus, StepStatus


@attrs.frozen
class RunRecord:
    """A run of a DAG: its latest status and when it was queued, started and ended (UNIX
    seconds; `started_at` and `ended_at` are None until the run started or ended). `params`
    are the bound params (declared defaults overlaid with what the trigger gave), as text.
    `parent_run_id`: the run whose sub-DAG step triggered this one; `triggered_by`: the run
    whose success triggered this one through `after` (docs/dags.md); None for others."""

    dag_id: str
    run_id: str
    status: RunStatus
    params: dict[str, str]
    queued_at: float
    started_at: float | None
    ended_at: float | None
    parent_run_id: str | None = None
    triggered_by: str | None = None


@attrs.frozen
class AttemptRecord:
    """One attempt of one step of a run, as the store keeps it: its number (counted over every
    try of the run, as DAGD_ATTEMPT and the log files number it), how it ended (`status` is the
    step's status when the attempt ended: success, failed, retrying, cancelled; running while
    it runs), when it started and ended (UNIX seconds), its duration (ms), its error text, and
    the worker it ran on when its executor named one."""

    step_id: str
    attempt: int
    status: StepStatus
    start_time: float | None
    end_time: float | None
    duration: int | None
    error: str | None
    worker: str | None = None
