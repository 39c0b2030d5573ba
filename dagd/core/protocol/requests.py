"""Client -> server messages: one frozen class per request `type`.

Every request is a JSON object with a string `type`; fields are camelCase on the wire
(`dag_ids` is `dagIds`). `requestId` (a string of at most 200 characters, or an integer) may
ride on any request and comes back on its answer or error. The strict parsing that turns a
text frame into one of these classes is `dagd.core.protocol.codec.parse_client_message`; which
answer class answers which request is `dagd.core.protocol.pairs.ANSWER_TO`.
"""

from __future__ import annotations

import attrs

from dagd.core.logslice import LogStream
from dagd.core.protocol.codes import ProtocolError

#: A request's `requestId`: a string (at most 200 characters), an integer, or absent (None).
RequestId = str | int | None

MAX_LIST_LIMIT = 1000
MAX_DAG_IDS = 10_000
MAX_REQUEST_ID = 200  # characters
MAX_PARAM_NAME = 200  # characters
#: Most schedule slots one `backfill` request may cover (dry run or not).
MAX_BACKFILL_SLOTS = 1000
#: Most logs one connection may follow at once (`follow_log`).
MAX_LOG_FOLLOWS = 8


@attrs.frozen
class Auth:
    """The first message of every connection: `token` is checked against the configured ones."""

    token: str
    request_id: RequestId = None


@attrs.frozen
class Subscribe:
    """Subscribe to more DAGs (`"*"`: every DAG); with `since`, also replay every stored event
    after that seq, atomically (the replay and the live events that follow it are in seq order
    with nothing repeated)."""

    dag_ids: list[str]
    since: int | None = None
    request_id: RequestId = None


@attrs.frozen
class Unsubscribe:
    """Stop events of these DAGs."""

    dag_ids: list[str]
    request_id: RequestId = None


@attrs.frozen
class Replay:
    """Send every stored event after seq `since` for the current subscriptions."""

    since: int
    request_id: RequestId = None


@attrs.frozen
class Snapshot:
    """Send the current state of the subscribed DAGs' runs, as events without seq."""

    request_id: RequestId = None


@attrs.frozen
class Trigger:
    """Start a run of `dag_id` with `params` (values: strings, numbers or booleans)."""

    dag_id: str
    params: dict[str, str | int | float | bool] = attrs.field(factory=dict)
    request_id: RequestId = None


@attrs.frozen
class Cancel:
    """Cancel a queued or running run."""

    run_id: str
    request_id: RequestId = None


@attrs.frozen
class Retry:
    """Rerun a failed or cancelled run (same run id; successful steps are kept)."""

    run_id: str
    request_id: RequestId = None


@attrs.frozen
class ListDags:
    """Ask for every loaded DAG."""

    request_id: RequestId = None


@attrs.frozen
class ListPools:
    """Ask for every configured pool and its use now."""

    request_id: RequestId = None


@attrs.frozen
class ListRuns:
    """Ask for the newest `limit` runs (1..1000), of one DAG or of all."""

    dag_id: str | None = None
    limit: int = 20
    request_id: RequestId = None


@attrs.frozen
class GetRun:
    """Ask for one run in detail: its record, its trigger, every step of its definition with
    its latest status and each attempt (answered with `run`)."""

    run_id: str
    request_id: RequestId = None


@attrs.frozen
class GetDag:
    """Ask for one loaded DAG in detail: its summary, its steps' definitions and its edges
    (answered with `dag`)."""

    dag_id: str
    request_id: RequestId = None


@attrs.frozen
class Pause:
    """Stop a DAG's schedule from firing until `unpause` (manual triggers still run); kept
    across restarts and edits of the DAG file. Pausing a paused DAG changes nothing."""

    dag_id: str
    request_id: RequestId = None


@attrs.frozen
class Unpause:
    """Let a paused DAG's schedule fire again; the DAG's `catchup` decides what happens to the
    slots missed while it was paused, as after downtime."""

    dag_id: str
    request_id: RequestId = None


@attrs.frozen
class Backfill:
    """Run a DAG for every schedule slot from `start` to `end`, oldest first.

    `start` and `end` are ISO 8601 text: a date (`2024-01-01`; as `end`, the whole day counts)
    or a date and time, read in the DAG's time zone unless it carries an offset. Each slot's
    run has the id the scheduler gives that slot; `params` bind as a trigger's do. A slot whose
    run succeeded is skipped unless `rerun`; with `dry_run` nothing is queued and the answer
    says what would be done. At most MAX_BACKFILL_SLOTS slots per request.
    """

    dag_id: str
    start: str
    end: str
    params: dict[str, str | int | float | bool] = attrs.field(factory=dict)
    rerun: bool = False
    dry_run: bool = False
    request_id: RequestId = None


@attrs.frozen
class FollowLog:
    """Follow one attempt's log: its stdout (`stream` "out") or stderr ("err") from byte
    `offset` on, as `log_chunk` messages, then `log_end` once the attempt is over and every
    byte was sent. `attempt` (1-based, counted over every try of the run) None: the latest.
    With `tail` (bytes) instead of `offset`: from that many bytes before the log's end as it
    is now (a long log's last part). Answered with `log_following`, which names the attempt
    and the offset followed from."""

    run_id: str
    step_id: str
    attempt: int | None = None
    stream: LogStream = "out"
    offset: int = 0
    tail: int | None = None
    request_id: RequestId = None


@attrs.frozen
class UnfollowLog:
    """Stop following one attempt's log (as `log_following` named it). Answered with
    `log_unfollowed`, also when no such log was followed; no `log_chunk` or `log_end` of it
    comes after the answer."""

    run_id: str
    step_id: str
    attempt: int
    stream: LogStream = "out"
    request_id: RequestId = None


@attrs.frozen
class Ping:
    """An application-level ping; answered with `pong` (handy for clients without WS pings)."""

    request_id: RequestId = None


Request = (
    Auth
    | Subscribe
    | Unsubscribe
    | Replay
    | Snapshot
    | Trigger
    | Cancel
    | Retry
    | ListDags
    | ListPools
    | ListRuns
    | GetRun
    | GetDag
    | Pause
    | Unpause
    | Backfill
    | FollowLog
    | UnfollowLog
    | Ping
)

#: The wire `type` of each request class.
REQUEST_TYPES: dict[type[Request], str] = {
    Auth: "auth",
    Subscribe: "subscribe",
    Unsubscribe: "unsubscribe",
    Replay: "replay",
    Snapshot: "snapshot",
    Trigger: "trigger",
    Cancel: "cancel",
    Retry: "retry",
    ListDags: "list_dags",
    ListPools: "list_pools",
    ListRuns: "list_runs",
    GetRun: "get_run",
    GetDag: "get_dag",
    Pause: "pause",
    Unpause: "unpause",
    Backfill: "backfill",
    FollowLog: "follow_log",
    UnfollowLog: "unfollow_log",
    Ping: "ping",
}
#: The request class of each wire `type`.
CLIENT_MESSAGES: dict[str, type[Request]] = {name: cls for cls, name in REQUEST_TYPES.items()}
#: Requests that change something: they need the `operate` role.
CONTROL = (Trigger, Cancel, Retry, Pause, Unpause, Backfill)

__all__ = [
    "CLIENT_MESSAGES",
    "CONTROL",
    "MAX_BACKFILL_SLOTS",
    "MAX_DAG_IDS",
    "MAX_LIST_LIMIT",
    "MAX_LOG_FOLLOWS",
    "REQUEST_TYPES",
    "Auth",
    "Backfill",
    "Cancel",
    "FollowLog",
    "GetDag",
    "GetRun",
    "ListDags",
    "ListPools",
    "ListRuns",
    "Pause",
    "Ping",
    "ProtocolError",
    "Replay",
    "Request",
    "RequestId",
    "Retry",
    "Snapshot",
    "Subscribe",
    "Trigger",
    "UnfollowLog",
    "Unpause",
    "Unsubscribe",
]
