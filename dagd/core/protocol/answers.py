"""Server -> client messages other than DAG events: one frozen class per answer `type`.

Fields are camelCase on the wire; times are UNIX seconds (floats) here and ISO 8601 UTC text
with milliseconds on the wire (`"2024-01-01T12:00:00.123Z"`). `request_id` is the `requestId`
of the request an answer or error answers (None: absent on the wire); it is set by
`dagd.core.protocol.pairs.with_request_id`. Fields that may be null (`nextRun`, `startedAt`,
...) are always on the wire, as `null` when None; `oldestSeq` is on an error only when its code
is `replay_unavailable`.
"""

from __future__ import annotations

import attrs

from dagd.core.protocol.codes import ErrorCode, Role
from dagd.core.protocol.requests import RequestId
from dagd.core.records import RunRecord


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
    slot, None for a DAG without schedule; `params`: the declared params and their defaults."""

    dag_id: str
    description: str
    schedule: str | None
    next_run: float | None
    steps: list[str]
    tags: list[str]
    params: dict[str, str]


@attrs.frozen
class DagList:
    """The answer to `list_dags` (wire type `dags`)."""

    dags: list[DagSummary]
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
    | RunList
    | Pong
    | Error
)
#: Everything the server sends that is not a DAG event.
ServerAnswer = Answer | Heartbeat

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
    RunList: "runs",
    Pong: "pong",
    Heartbeat: "heartbeat",
    Error: "error",
}
#: The answer class of each wire `type` (an `error` with `data` is a DAG event instead).
SERVER_ANSWERS: dict[str, type[ServerAnswer]] = {name: cls for cls, name in ANSWER_TYPES.items()}
