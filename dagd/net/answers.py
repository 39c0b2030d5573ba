"""The server's answers as wire dicts and compact JSON text (docs/protocol.md names every field).

Until dagd/core/protocol has an answer class for each of these, this module is the one place
the server builds them.
"""

from __future__ import annotations

import json
import time
from typing import Any

from dagd.core.timefmt import iso_z
from dagd.daemon.api import DagInfo, RunRecord


def dumps(message: dict[str, Any]) -> str:
    """`message` as compact JSON text (no spaces, UTF-8 characters as they are)."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def error_message(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """An `error` answer: `code` (docs/protocol.md lists them), a human `message`, the time
    (ISO 8601, UTC, ms) and any `extra` fields (e.g. oldestSeq)."""
    return {
        "type": "error",
        "code": code,
        "message": message,
        "timestamp": iso_z(time.time()),
        **extra,
    }


def dag_to_wire(info: DagInfo) -> dict[str, Any]:
    """One entry of a `dags` answer."""
    return {
        "dagId": info.id,
        "description": info.description,
        "schedule": info.schedule,
        "nextRun": iso_z(info.next_run) if info.next_run is not None else None,
        "steps": info.steps,
        "tags": info.tags,
        "params": info.params,
    }


def run_to_wire(run: RunRecord) -> dict[str, Any]:
    """One entry of a `runs` answer (times as ISO 8601 UTC text)."""
    return {
        "dagId": run.dag_id,
        "runId": run.run_id,
        "status": run.status,
        "params": run.params,
        "queuedAt": iso_z(run.queued_at),
        "startedAt": iso_z(run.started_at) if run.started_at is not None else None,
        "endedAt": iso_z(run.ended_at) if run.ended_at is not None else None,
    }
