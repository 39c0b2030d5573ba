"""The daemon's values as protocol answers (`dagd.core.protocol.answers`).

The classes, their wire names and their JSON live in `dagd.core.protocol`; this module only
fills them from what the daemon hands out (`DagInfo`, `RunRecord`) and stamps errors with the
current time.
"""

from __future__ import annotations

import time

from dagd.core.model import RunStatus
from dagd.core.protocol.answers import DagSummary, Error, RunSummary
from dagd.core.protocol.codes import ErrorCode
from dagd.daemon.api import DagInfo, RunRecord


def error(code: ErrorCode | str, message: str, *, oldest_seq: int | None = None) -> Error:
    """An `error` answer with `code` (an `ErrorCode`, or its value as a daemon error carries
    it), a human `message` and the current time; `oldest_seq` for `replay_unavailable` only.

    Raises ValueError for a code that is not an ErrorCode value.
    """
    return Error(ErrorCode(code), message, time.time(), oldest_seq=oldest_seq)


def dag_summary(info: DagInfo) -> DagSummary:
    """One entry of a `dags` answer."""
    return DagSummary(
        info.id,
        info.description,
        info.schedule,
        info.next_run,
        list(info.steps),
        list(info.tags),
        dict(info.params),
    )


def run_summary(run: RunRecord) -> RunSummary:
    """One entry of a `runs` answer."""
    return RunSummary(
        run.dag_id,
        run.run_id,
        RunStatus(run.status),
        dict(run.params),
        run.queued_at,
        run.started_at,
        run.ended_at,
    )
