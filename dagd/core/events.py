"""The DAG events of the WebSocket protocol, as plain values.

Field names are the protocol's (docs/protocol.md), in snake_case; the protocol's converter
(`dagd.core.protocol.converter`) maps them to camelCase on the wire. Times are UNIX seconds
(floats) here and ISO 8601 UTC strings on the wire; `duration` is integer milliseconds. `seq`
is None until the event log assigns one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from dagd.core.model import HandlerKind, RunStatus, StepStatus


@attrs.frozen(slots=True)
class DagRunStatusEvent:
    """A run's status changed."""

    dag_id: str
    run_id: str
    status: RunStatus
    timestamp: float
    seq: int | None = None
    # The run whose sub-DAG step triggered this run (docs/dags.md, "Sub-DAGs"); on the wire
    # as `parentRunId` only when set.
    parent_run_id: str | None = None


@attrs.frozen(slots=True)
class StepStatusEvent:
    """A step's status changed within a run."""

    dag_id: str
    run_id: str
    step_id: str
    status: StepStatus
    start_time: float | None
    end_time: float | None
    duration: int | None
    retry_count: int
    error: str | None
    timestamp: float
    seq: int | None = None
    # The step's latest attempt number, counted over every try of the run (a run retry
    # continues it, while retry_count starts again). Not on the wire: the store keeps it so
    # that a retry after a restart still numbers attempts (DAGD_ATTEMPT, log files) onwards.
    attempt: int = attrs.field(default=0, eq=False)
    # Where the attempt ran, when an executor says (a Dask worker's address); on the wire as
    # `worker` only when set, so local steps' events are unchanged.
    worker: str | None = None
    # A lifecycle handler's kind (`on_failure`, ...); on the wire only for handlers.
    handler: HandlerKind | None = None
    # The step's wait_for command (one line) while the step polls it, before its own command
    # runs; on the wire as `waitingFor` only when set.
    waiting_for: str | None = None
    # What a successful step handed downstream (key -> JSON value). Not on the wire (up to 64
    # KiB a step; `get_run` answers them): the store keeps them with the step's attempt.
    outputs: Mapping[str, Any] | None = attrs.field(default=None, eq=False)


@attrs.frozen(slots=True)
class DagRunProgressEvent:
    """Overall progress of a run. The four counts always sum to total_steps."""

    dag_id: str
    run_id: str
    total_steps: int
    completed_steps: int
    running_steps: int
    failed_steps: int
    pending_steps: int
    completion_percentage: float
    timestamp: float
    seq: int | None = None


def completion_percentage(completed: int, total: int) -> float:
    """`completion_percentage` of a progress event: completed of total steps in percent,
    rounded to 0.1 (100.0 for a run without steps)."""
    return round(100.0 * completed / total, 1) if total else 100.0


@attrs.frozen(slots=True)
class ErrorEvent:
    """Something went wrong in a DAG: a step attempt failed, a run was interrupted, or a DAG
    file could not be loaded (then run_id and step_id are None)."""

    dag_id: str
    run_id: str | None
    step_id: str | None
    error: str
    timestamp: float
    seq: int | None = None


@attrs.frozen(slots=True)
class DagStatusEvent:
    """A DAG's own state changed: it was paused or unpaused, or its file on disk broke or
    loaded again. `file_error` is the file's problems while dagd runs the DAG's last good
    version (one per line, each naming the file), None once the file loads again."""

    dag_id: str
    paused: bool
    file_error: str | None
    timestamp: float
    seq: int | None = None


#: The events of runs (what a run's state machine publishes).
RunEvent = DagRunStatusEvent | StepStatusEvent | DagRunProgressEvent | ErrorEvent
#: Every event a client may receive: the run events and a DAG's own status.
DagEvent = RunEvent | DagStatusEvent

#: The wire `type` of each event class.
EVENT_TYPES: dict[type, str] = {
    DagRunStatusEvent: "dag_run_status",
    StepStatusEvent: "step_status",
    DagRunProgressEvent: "dag_run_progress",
    ErrorEvent: "error",
    DagStatusEvent: "dag_status",
}
