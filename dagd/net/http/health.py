"""`GET /healthz`: is dagd able to do its job? For supervisors and load balancers.

No token: a supervisor probing the port has none, and the answer tells nothing a client could
abuse (counts, the committed seq, the version). 200 with `"status": "ok"` while dagd is
healthy, 503 with `"status": "degraded"` and the reasons in `problems` while it is not; what
healthy means (the state file writes, runs are accepted) is dagd/daemon/health.py's rule. The
body is the same either way, so a person reading a 503 sees why:

    {"status": "ok", "version": "0.1.0", "uptimeSeconds": 12.5, "dags": 3,
     "brokenDagFiles": 0, "storeWritable": true, "runsRunning": 1, "runsQueued": 0,
     "committedSeq": 4711, "problems": []}

Read from memory only (`DaemonService.health`): about as cheap as a request gets, whatever the
history.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagd.daemon.api import DaemonHealth, DaemonService
from dagd.net.http.context import HttpContext
from dagd.net.http.message import Handler, HttpRequest, HttpResponse, Route, json_response

PATH = "/healthz"


def health_document(health: DaemonHealth, version: str) -> dict[str, Any]:
    """The /healthz body for a health snapshot (camelCase keys, as the protocol's)."""
    return {
        "status": "ok" if health.healthy else "degraded",
        "version": version,
        "uptimeSeconds": round(health.uptime, 3),
        "dags": health.dags,
        "brokenDagFiles": health.broken_dag_files,
        "storeWritable": health.store_error is None,
        "runsRunning": sum(health.runs_running.values()),
        "runsQueued": sum(health.runs_queued.values()),
        "committedSeq": health.committed_seq,
        "problems": health.problems,
    }


def health_handler(daemon: DaemonService, version: str) -> Handler:
    """The handler of GET /healthz: 200 healthy, 503 not, the document either way."""

    async def handle(request: HttpRequest, params: Mapping[str, str]) -> HttpResponse:
        health = daemon.health()
        return json_response(
            200 if health.healthy else 503,
            health_document(health, version),
            (("cache-control", "no-store"),),
        )

    return handle


def routes(ctx: HttpContext) -> list[Route]:
    """GET /healthz, without a token."""
    return [Route(frozenset({"GET"}), PATH, health_handler(ctx.daemon, ctx.version))]


__all__ = ["PATH", "health_document", "health_handler", "routes"]
