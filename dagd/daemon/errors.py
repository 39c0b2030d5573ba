"""The one error the daemon's API raises: `DaemonError`, with a stable code."""

from __future__ import annotations


class DaemonError(Exception):
    """A request the daemon cannot carry out; `message` is safe to show to whoever asked.

    `code` is stable (it goes on the wire as the error's code): `unknown_dag`, `invalid_params`,
    `shutting_down`, `duplicate_run`, `unknown_run`, `not_running`, `not_finished`,
    `not_retryable`, `slow_consumer`, `storage_unavailable` (the state file cannot be
    written at the moment: a trigger, retry, pause or backfill is refused, nothing is queued),
    `no_schedule` (a backfill of a DAG without schedule), `invalid_range` (a backfill range
    that cannot be used), `unknown_step`, `unknown_attempt` (a step log asked of a step or
    attempt the run does not have), `log_unreadable` (a step log that exists but cannot be
    read), `invalid_message` (a log read's stream, offset or length
    out of range). Each method's docstring says which codes it raises.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


__all__ = ["DaemonError"]
