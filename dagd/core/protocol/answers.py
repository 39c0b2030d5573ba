"""Server -> client messages other than DAG events: one frozen class per answer `type`.

Fields are camelCase on the wire; times are UNIX seconds (floats) here and ISO 8601 UTC text
with milliseconds on the wire (`"2024-01-01T12:00:00.123Z"`). `request_id` is the `requestId`
of the request an answer or error answers (None: absent on the wire); it is set by
`dagd.core.protocol.pairs.with_request_id`. Fields that may be null (`nextRun`, `startedAt`,
...) are always on the wire, as `null` when None; `oldestSeq` is on an error only when its code
is `replay_unavailable`.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from dagd.core.logslice import LogStream
from dagd.core.model import HandlerKind, StepStatus, TriggerRule
from dagd.core.pools import PoolUsage
from dagd.core.protocol.codes import ErrorCode, Role
from dagd.core.protocol.requests import RequestId
from dagd.core.records import AttemptRecord, RunRecord


@attrs.frozen
class AuthSuccess:
    """The token was accepted with `role`; `seq` is the latest committed event seq."""

    role: Role
    seq: int
    request_id: RequestId = None


@attrs.frozen
class Subscribed:
    """The full current set of subscriptions after a `subscribe`, sorted."""

    dag_ids: list[str]
    request_id: RequestId = None


@attrs.frozen
class Unsubscribed:
    """The full current set of subscriptions after an `unsubscribe`, sorted."""

    dag_ids: list[str]
    request_id: RequestId = None


@attrs.frozen
class ReplayComplete:
    """The replay covered every event up to `seq`; live events after it have larger seqs."""

    seq: int
    request_id: RequestId = None


@attrs.frozen
class SnapshotComplete:
    """The snapshot reflects every event up to `seq`."""

    seq: int
    request_id: RequestId = None


@attrs.frozen
class Triggered:
    """The run is stored as queued; its events follow on the stream."""

    dag_id: str
    run_id: str
    request_id: RequestId = None


@attrs.frozen
class CancelAccepted:
    """The run is being cancelled."""

    run_id: str
    request_id: RequestId = None


@attrs.frozen
class RetryAccepted:
    """The run is stored as queued again."""

    run_id: str
    request_id: RequestId = None


@attrs.frozen
class DagSummary:
    """One entry of a `dags` answer: a loaded DAG. `next_run`: UNIX seconds of the next cron
    slot, None for a DAG without schedule or while it is paused; `params`: the declared params
    and their defaults; `timezone`: the IANA zone its schedule is read in; `paused`: its
    schedule does not fire (`pause`); `file_error`: its file on disk is broken now and dagd
    runs the last good version (the problems, one per line, each naming the file), else None.
    """

    dag_id: str
    description: str
    schedule: str | None
    next_run: float | None
    steps: list[str]
    tags: list[str]
    params: dict[str, str]
    timezone: str = "UTC"
    paused: bool = False
    file_error: str | None = None


@attrs.frozen
class StepDefinition:
    """One step of a `dag` answer, as its DAG file defines it. At most one of `command` (a
    shell command line, or an argument list run without a shell), `call` (a Python
    callable, `module:function`) and `run` (a sub-DAG step: the id of the DAG it runs, with
    the params it gives in `run_params`, references such as `${params.x}` unfilled) is set.
    `retry_delay` and `timeout` are seconds (`timeout` None: none). `level` is the step's
    depth in the graph: 0 for a step without upstreams, else one more than its deepest
    upstream (the column of a left-to-right drawing). A lifecycle handler (in
    `DagDetail.handlers`) has its kind in `handler` (else left off the wire), level 0, and
    for a notification its URLs in `notify`, redacted (scheme, and host where it names a
    server: never a secret), instead of `command` or `call`. A step with a `precondition` or
    `wait_for` (docs/dags.md) has them as one line each."""

    step_id: str
    description: str
    command: str | list[str] | None
    call: str | None
    depends_on: list[str]
    executor: str
    retries: int
    retry_delay: float
    timeout: float | None
    trigger_rule: TriggerRule
    level: int
    handler: HandlerKind | None = None
    notify: list[str] | None = None
    # The step's precondition, and its wait_for as "<command> (every 30s, up to 1h)", each one
    # line; left off the wire when the step has none.
    precondition: str | None = None
    wait_for: str | None = None
    # A sub-DAG step's DAG and params; left off the wire for other steps.
    run: str | None = None
    run_params: dict[str, str] | None = None


@attrs.frozen
class Edge:
    """A dependency of a `dag` answer: `target` depends on `source` (it runs after it)."""

    source: str
    target: str


@attrs.frozen
class DagDetail:
    """The answer to `get_dag` (wire type `dag`): the DAG's `summary` (as in `dags`), its
    definition's run settings, its steps in file order, its edges (upstream -> downstream,
    in the steps' order), and its lifecycle handlers (on_success, on_failure, on_cancel,
    always: the order they run in), outside the graph. `after`: the DAGs whose successful runs
    start a run of this one (its `after` key), as written."""

    summary: DagSummary
    catchup: bool
    max_active_runs: int
    max_active_steps: int | None
    steps: list[StepDefinition]
    edges: list[Edge]
    handlers: list[StepDefinition] = attrs.Factory(list)
    after: list[str] = attrs.Factory(list)
    request_id: RequestId = None


class TriggerKind(enum.StrEnum):
    """What started a run, read from its run id: `manual` (a `trigger`), `scheduled` (a cron
    slot, fired by the scheduler or by a `backfill`: both give a slot the same id), `subdag`
    (a sub-DAG step of its parent run) or `after` (a successful run of a DAG it runs after).
    A retry keeps the run's id, and so its kind."""

    MANUAL = "manual"
    SCHEDULED = "scheduled"
    SUBDAG = "subdag"
    AFTER = "after"


@attrs.frozen
class StepDetail:
    """One step of a `run` answer: its latest status in the run, when its latest attempt
    started and ended (UNIX seconds), `duration` (ms), `retry_count` (retries in the run's
    latest try), `error`, `attempt` (the latest attempt's number over every try of the run, 0:
    none yet), its upstream step ids, every attempt the store has recorded, oldest first, and
    its `outputs` (docs/dags.md, "Outputs"). A lifecycle handler's step (id `@<kind>`, after
    the ordinary steps) has its kind in `handler`, left off the wire for ordinary steps."""

    step_id: str
    status: StepStatus
    start_time: float | None
    end_time: float | None
    duration: int | None
    retry_count: int
    error: str | None
    attempt: int
    depends_on: list[str]
    attempts: list[AttemptRecord]
    handler: HandlerKind | None = None
    # What the step handed downstream once it succeeded (key -> JSON value; empty: nothing).
    outputs: dict[str, Any] = attrs.field(factory=dict)
    # While the step polls its wait_for: that command, as one line (on the wire only then).
    waiting_for: str | None = None


@attrs.frozen
class RunDetail:
    """The answer to `get_run` (wire type `run`): the run's `record` (as in `runs`), its
    `trigger` (None: an id dagd did not make), its `duration` (ms, None until it ended), the
    version of the definition it runs (64 hex digits; None: not stored), and every step of
    that definition, in file order. For a run in progress it is the daemon's live state."""

    record: RunRecord
    trigger: TriggerKind | None
    duration: int | None
    dag_version: str | None
    steps: list[StepDetail]
    request_id: RequestId = None


@attrs.frozen
class Paused:
    """The answer to `pause`: the DAG's schedule does not fire until `unpause`."""

    dag_id: str
    request_id: RequestId = None


@attrs.frozen
class Unpaused:
    """The answer to `unpause`: the DAG's schedule fires again; `next_run` (UNIX seconds) is
    its next slot, None for a DAG without schedule."""

    dag_id: str
    next_run: float | None
    request_id: RequestId = None


class BackfillAction(enum.StrEnum):
    """What a `backfill` does (or, in a dry run, would do) with one slot."""

    QUEUED = "queued"  # no run had the slot's id: a new run is queued
    RETRIED = "retried"  # its run failed or was cancelled: retried (successful steps kept)
    RERUN = "rerun"  # its run succeeded and `rerun` was asked: every step runs again
    SKIPPED = "skipped"  # left alone; `reason` says why


@attrs.frozen
class BackfillSlot:
    """One schedule slot of a backfill: its time (UNIX seconds), the id of its run, what was
    done with it, and why when it was skipped."""

    slot: float
    run_id: str
    action: BackfillAction
    reason: str | None = None


@attrs.frozen
class BackfillResult:
    """The answer to `backfill` (wire type `backfill_result`): every slot of the range, oldest
    first. With `dry_run` nothing was queued: the actions say what would have been done."""

    dag_id: str
    dry_run: bool
    slots: list[BackfillSlot]
    request_id: RequestId = None


@attrs.frozen
class FileProblem:
    """One problem of a broken DAG file: `message`, and the `step` and `field` it is about
    (None when it is about no step or field). Text from the file is escaped as in error
    events (control characters as `\\xNN`)."""

    message: str
    step: str | None = None
    field: str | None = None


@attrs.frozen
class BrokenFile:
    """A DAG file that the daemon cannot use now, with every problem it has. `file` is its
    path as the daemon reads it; `dag_id` is the loaded DAG whose last good version of this
    file keeps running (its `fileError` says the same), None when no version of the file
    runs (it never loaded, or its DAG id is another file's)."""

    file: str
    dag_id: str | None
    problems: list[FileProblem]


@attrs.frozen
class DagList:
    """The answer to `list_dags` (wire type `dags`): the loaded DAGs by id, and the DAG files
    that are broken now by path (`broken_files`), so that a file that does not load is
    listed rather than missing."""

    dags: list[DagSummary]
    broken_files: list[BrokenFile] = attrs.Factory(list)
    request_id: RequestId = None


@attrs.frozen
class PoolList:
    """The answer to `list_pools` (wire type `pools`): every pool of config.toml's `[pools]`,
    by name, with its `slots`, the slots `inUse` by running attempts, and the attempts
    `waiting` for slots (asking for `waitingSlots` slots together)."""

    pools: list[PoolUsage]
    request_id: RequestId = None


@attrs.frozen
class RunList:
    """The answer to `list_runs` (wire type `runs`), newest run first."""

    runs: list[RunRecord]
    request_id: RequestId = None


@attrs.frozen
class Pong:
    """The answer to `ping`; `timestamp` is the daemon's time (UNIX seconds)."""

    timestamp: float
    request_id: RequestId = None


@attrs.frozen
class LogFollowing:
    """The answer to `follow_log`: this attempt's log `stream` is followed from byte
    `offset`; `log_chunk` messages and a final `log_end` follow."""

    run_id: str
    step_id: str
    attempt: int
    stream: LogStream
    offset: int
    request_id: RequestId = None


@attrs.frozen
class LogUnfollowed:
    """The answer to `unfollow_log`: nothing more of this log comes."""

    run_id: str
    step_id: str
    attempt: int
    stream: LogStream
    request_id: RequestId = None


@attrs.frozen
class LogChunk:
    """Bytes `offset` to `next_offset` of a followed log (byte offsets into the raw file),
    as `text`: decoded as UTF-8, U+FFFD for bytes that are not (a character is never split
    between two chunks). Answers nothing; a chunk starts where the one before it ended."""

    run_id: str
    step_id: str
    attempt: int
    stream: LogStream
    offset: int
    next_offset: int
    text: str


class LogEndReason(enum.StrEnum):
    """Why a followed log ends (`log_end`)."""

    COMPLETE = "complete"  # the attempt is over and every byte up to `offset` was sent
    DELETED = "deleted"  # history retention deleted the run and its logs meanwhile
    UNREADABLE = "unreadable"  # the daemon cannot read the file (`message` says why)


@attrs.frozen
class LogEnd:
    """A followed log ends: nothing more of it comes. `offset` is where it ended (with
    `complete`, the log's size: resume from there and nothing is left); `message` explains
    the other reasons (None with `complete`). Answers nothing."""

    run_id: str
    step_id: str
    attempt: int
    stream: LogStream
    offset: int
    reason: LogEndReason
    message: str | None = None


@attrs.frozen
class Heartbeat:
    """Sent every heartbeat_interval to every authenticated client; answers nothing."""

    timestamp: float


def _oldest_seq_only_when_replay_unavailable(
    instance: Error, attribute: attrs.Attribute[int | None], value: int | None
) -> None:
    if value is not None and instance.code is not ErrorCode.REPLAY_UNAVAILABLE:
        raise ValueError("oldest_seq belongs to replay_unavailable errors only")


@attrs.frozen
class Error:
    """A request failed or the connection has a problem (wire type `error`, with `code` and
    never `data`, unlike the DAG `error` event). `oldest_seq`: with `replay_unavailable` only,
    the oldest seq still stored (None: the log is empty)."""

    code: ErrorCode
    message: str
    timestamp: float
    oldest_seq: int | None = attrs.field(
        default=None, validator=_oldest_seq_only_when_replay_unavailable
    )
    request_id: RequestId = None


Answer = (
    AuthSuccess
    | Subscribed
    | Unsubscribed
    | ReplayComplete
    | SnapshotComplete
    | Triggered
    | CancelAccepted
    | RetryAccepted
    | DagList
    | PoolList
    | RunList
    | RunDetail
    | DagDetail
    | Paused
    | Unpaused
    | BackfillResult
    | LogFollowing
    | LogUnfollowed
    | Pong
    | Error
)
#: Everything the server sends that is not a DAG event: answers, heartbeats, and the
#: messages of followed logs.
ServerAnswer = Answer | Heartbeat | LogChunk | LogEnd

#: The wire `type` of each answer class.
ANSWER_TYPES: dict[type[ServerAnswer], str] = {
    AuthSuccess: "auth_success",
    Subscribed: "subscribed",
    Unsubscribed: "unsubscribed",
    ReplayComplete: "replay_complete",
    SnapshotComplete: "snapshot_complete",
    Triggered: "triggered",
    CancelAccepted: "cancel_accepted",
    RetryAccepted: "retry_accepted",
    DagList: "dags",
    PoolList: "pools",
    RunList: "runs",
    RunDetail: "run",
    DagDetail: "dag",
    Paused: "paused",
    Unpaused: "unpaused",
    BackfillResult: "backfill_result",
    LogFollowing: "log_following",
    LogUnfollowed: "log_unfollowed",
    LogChunk: "log_chunk",
    LogEnd: "log_end",
    Pong: "pong",
    Heartbeat: "heartbeat",
    Error: "error",
}
#: The answer class of each wire `type` (an `error` with `data` is a DAG event instead).
SERVER_ANSWERS: dict[str, type[ServerAnswer]] = {name: cls for cls, name in ANSWER_TYPES.items()}
