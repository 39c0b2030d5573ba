"""The protocol's codes: error codes, WebSocket close codes, token roles, and the exception
that carries an error code to the wire.

Every value here is part of the contract (docs/protocol.md lists them, docs/asyncapi.yaml
enumerates them, tests/core/test_protocol_docs.py holds the three together): renaming one is a
protocol change.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    """The `code` of an `error` answer (docs/protocol.md, *Errors*)."""

    AUTH_REQUIRED = "auth_required"  # first message is not auth; close 1008
    AUTH_FAILED = "auth_failed"  # wrong token; close 1008
    AUTH_TIMEOUT = "auth_timeout"  # no auth within auth_timeout; close 1008
    INVALID_MESSAGE = "invalid_message"  # malformed, wrong fields, second auth; stays open
    UNKNOWN_TYPE = "unknown_type"  # a `type` the server does not know
    # a read token asked for trigger, cancel, retry, pause, unpause or backfill
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"  # over server.rate_limit messages per second
    REPLAY_UNAVAILABLE = "replay_unavailable"  # `since` older than the log; has oldestSeq
    # `since` newer than the newest event: the cursor is from another event log (a restored
    # backup, a new state folder); ask for a snapshot and continue from its seq
    REPLAY_AHEAD = "replay_ahead"
    # trigger, get_dag, pause, unpause or backfill of a DAG that is not loaded; list_runs of
    # a DAG that is neither loaded nor has any stored run
    UNKNOWN_DAG = "unknown_dag"
    INVALID_PARAMS = "invalid_params"  # a param the DAG does not declare
    # get_run, cancel, retry or follow_log of a run id that does not exist
    UNKNOWN_RUN = "unknown_run"
    UNKNOWN_STEP = "unknown_step"  # follow_log of a step the run does not have
    # follow_log of an attempt the step has not made (or of the latest when it made none)
    UNKNOWN_ATTEMPT = "unknown_attempt"
    # follow_log of a log file the daemon cannot read (permissions, I/O error)
    LOG_UNREADABLE = "log_unreadable"
    # follow_log while MAX_LOG_FOLLOWS logs are followed on this connection
    TOO_MANY_FOLLOWS = "too_many_follows"
    # trigger of a run whose new id is already queued or running (only when the clock went
    # backwards within a microsecond)
    DUPLICATE_RUN = "duplicate_run"
    NOT_RUNNING = "not_running"  # cancel of a finished run
    NOT_FINISHED = "not_finished"  # retry of a run that is still queued or running
    NOT_RETRYABLE = "not_retryable"  # retry of a run that succeeded
    SHUTTING_DOWN = "shutting_down"  # trigger or retry while the daemon stops
    # trigger, retry, pause, unpause or backfill while writes to disk fail
    STORAGE_UNAVAILABLE = "storage_unavailable"
    NO_SCHEDULE = "no_schedule"  # backfill of a DAG without a schedule
    # backfill with start or end unreadable, end before start, or too many slots
    INVALID_RANGE = "invalid_range"
    # Never sent by the server: the client library reports a lost or refused connection in
    # the shape of an error answer with this code.
    CONNECTION_ERROR = "connection_error"


class CloseCode(enum.IntEnum):
    """The WebSocket close codes dagd uses (RFC 6455 section 7.4.1; docs/protocol.md)."""

    NORMAL = 1000  # the client's choice
    GOING_AWAY = 1001  # the daemon is shutting down
    PROTOCOL_ERROR = 1002  # a frame that breaks RFC 6455 framing
    INVALID_DATA = 1007  # a text frame that is not valid UTF-8
    POLICY = 1008  # auth failed, auth required, auth timeout, rate limit exceeded
    TOO_BIG = 1009  # a message over server.max_message_size bytes
    TRY_AGAIN = 1013  # slow consumer: reconnect and replay from the last seq


class Role(enum.StrEnum):
    """What a token may do: `read` subscribes, replays, lists, reads runs and DAGs, and pings;
    `operate` may also trigger, cancel, retry, pause, unpause and backfill."""

    READ = "read"
    OPERATE = "operate"


class ProtocolError(Exception):
    """The peer sent something dagd cannot act on; the server answers it with an `error`.

    `code` goes on the wire as the error's code, `message` as its text, and `request_id` (the
    request's `requestId` when it could be read, else None) as its `requestId`.
    """

    def __init__(self, code: ErrorCode, message: str, request_id: str | int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id
