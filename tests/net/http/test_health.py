"""GET /healthz's handler on a real embedded daemon (real SQLite, real DAG files), without a
socket: what it reports, and 503 exactly while the state file cannot be written or the daemon
is stopping. tests/net/http/test_ops_http.py asks the same over the port."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from daemonhelp import daemon_config, wait_until, write_dag_file
from storefaults import FULL, failing

from dagd.app import open_daemon
from dagd.core.events import ErrorEvent
from dagd.net.http.health import health_handler
from dagd.net.http.message import HttpRequest

HOLD = 'max_active_runs = 1\n[steps.hold]\ncall = "stepfuncs:sleep_forever"\n'


async def healthz(daemon: Any) -> tuple[int, dict[str, Any]]:
    response = await health_handler(daemon, "9.9.9")(HttpRequest("GET", "/healthz"), {})
    assert response.content_type == "application/json"
    return response.status, orjson.loads(response.body)


async def test_healthy_reports_dags_broken_files_runs_and_seq(tmp_path: Path) -> None:
    config = daemon_config(tmp_path, reload_interval=3600)
    write_dag_file(config.dags_dir, "hold", HOLD)
    write_dag_file(config.dags_dir, "broken", "[steps.a\n")
    async with open_daemon(config) as daemon:
        first = await daemon.trigger("hold")
        second = await daemon.trigger("hold")  # waits for max_active_runs
        await wait_until(lambda: daemon.health().runs_running == {"hold": 1})
        await daemon.store.flush()
        status, body = await healthz(daemon)
        assert status == 200
        assert body["status"] == "ok" and body["problems"] == []
        assert body["version"] == "9.9.9"
        assert (body["dags"], body["brokenDagFiles"]) == (1, 1)
        assert (body["runsRunning"], body["runsQueued"]) == (1, 1)
        assert body["storeWritable"] is True
        assert body["committedSeq"] == daemon.committed_seq > 0
        assert 0 <= body["uptimeSeconds"] < 60
        await daemon.cancel(second)
        await daemon.cancel(first)


async def test_503_while_the_state_file_cannot_be_written_then_200_again(
    tmp_path: Path,
) -> None:
    config = daemon_config(tmp_path, reload_interval=3600)
    write_dag_file(config.dags_dir, "quick", '[steps.a]\ncommand = "true"\n')
    async with open_daemon(config) as daemon:
        daemon.store.retry_cap = 0.05  # the writer tries again soon once the disk is back
        conn = failing(daemon.store, 10_000)
        daemon.publish(ErrorEvent("quick", None, None, "a held event", 1.0))
        await wait_until(lambda: daemon.store.write_error is not None)
        status, body = await healthz(daemon)
        assert status == 503
        assert body["status"] == "degraded"
        assert body["storeWritable"] is False
        [problem] = body["problems"]
        assert FULL in problem and str(daemon.store.path) in problem
        conn.failures = 0  # space is back
        await wait_until(lambda: daemon.store.write_error is None)
        status, body = await healthz(daemon)
        assert (status, body["status"], body["storeWritable"]) == (200, "ok", True)


async def test_503_once_the_daemon_is_stopping(tmp_path: Path) -> None:
    config = daemon_config(tmp_path, reload_interval=3600)
    async with open_daemon(config) as daemon:
        assert (await healthz(daemon))[0] == 200
        await daemon.stop()
        status, body = await healthz(daemon)
        assert (status, body["status"]) == (503, "degraded")
        assert body["problems"] == ["the daemon is not accepting runs (starting or shutting down)"]
        assert (body["dags"], body["runsRunning"], body["runsQueued"]) == (0, 0, 0)
