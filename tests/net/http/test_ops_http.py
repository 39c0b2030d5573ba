"""/healthz and /metrics over a real socket: a daemon on 127.0.0.1 port 0 with its front
door, a WebSocket client running a DAG, and raw HTTP requests parsed with h11."""

from __future__ import annotations

from pathlib import Path

import trio
from daemonhelp import wait_until
from httphelp import Reply, read_replies, request
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from storefaults import FULL, failing
from wshelp import READ_TOKEN, check_frame, running, server_of, tws

from dagd.core.events import ErrorEvent

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def get(
    port: int, path: str, headers: tuple[tuple[str, str], ...] = (), method: str = "GET"
) -> Reply:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request(path, method, headers=headers))
        [reply] = await read_replies(stream, 1, [method])
    return reply


async def scrape(port: int, headers: tuple[tuple[str, str], ...] = ()) -> Samples:
    accept = ("accept", "application/openmetrics-text; version=1.0.0")
    reply = await get(port, "/metrics", (accept, *headers))
    assert reply.status == 200, reply
    assert reply.headers["content-type"].startswith("application/openmetrics-text")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(reply.body.decode())
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


async def test_a_run_over_the_wire_shows_in_metrics_and_healthz(tmp_path: Path) -> None:
    async with running(tmp_path) as daemon:
        port = server_of(daemon).port
        assert port is not None
        async with tws(server_of(daemon).url or "") as ws:
            await ws.send_message('{"type": "subscribe", "dagIds": ["*"]}')
            await ws.send_message('{"type": "trigger", "dagId": "alpha"}')
            received = 0
            with trio.fail_after(10):
                while True:
                    frame = check_frame(await ws.get_message())
                    if "seq" in frame:
                        received += 1
                    data = frame.get("data", {})
                    if frame["type"] == "dag_run_status" and data["status"] == "success":
                        break
            health = await get(port, "/healthz")
            found = await scrape(port)
    assert health.status == 200
    assert health.headers["content-type"] == "application/json"
    assert health.json()["status"] == "ok" and health.json()["dags"] >= 2
    assert value(found, "dagd_runs_started_total", dag="alpha") == 1
    assert value(found, "dagd_runs_finished_total", dag="alpha", status="success") == 1
    assert value(found, "dagd_steps_finished_total", dag="alpha", status="success") == 2
    assert value(found, "dagd_run_duration_seconds_count", dag="alpha", status="success") == 1
    assert value(found, "dagd_step_duration_seconds_count", dag="alpha", status="success") == 2
    assert value(found, "dagd_websocket_clients") == 1
    assert value(found, "dagd_websocket_clients_authenticated") == 1
    # Every event the client got live was counted (and the progress after it, perhaps).
    delivered = value(found, "dagd_events_delivered_total", source="live")
    assert received >= 6  # queued, running, each step running and success, success
    assert received <= delivered <= value(found, "dagd_event_log_seq")
    assert value(found, "dagd_http_requests_total") >= 1  # the /healthz before
    assert value(found, "dagd_healthy") == 1


async def test_head_and_text_format_without_an_accept_header(tmp_path: Path) -> None:
    async with running(tmp_path) as daemon:
        port = server_of(daemon).port
        assert port is not None
        head = await get(port, "/metrics", method="HEAD")
        plain = await get(port, "/metrics")
        post = await get(port, "/healthz", method="POST")
    assert head.status == 200 and head.body == b""
    assert plain.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert b"\ndagd_dags_loaded " in plain.body
    assert post.status == 405 and post.headers["allow"] == "GET, HEAD"


async def test_503_and_the_store_gauge_while_the_state_file_cannot_be_written(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as daemon:
        port = server_of(daemon).port
        assert port is not None
        daemon.store.retry_cap = 0.05
        conn = failing(daemon.store, 10_000)
        daemon.publish(ErrorEvent("alpha", None, None, "held", 1.0))
        await wait_until(lambda: daemon.store.write_error is not None)
        degraded = await get(port, "/healthz")
        found = await scrape(port)
        conn.failures = 0
        await wait_until(lambda: daemon.store.write_error is None)
        healthy = await get(port, "/healthz")
    assert degraded.status == 503
    body = degraded.json()
    assert (body["status"], body["storeWritable"]) == ("degraded", False)
    assert FULL in body["problems"][0]
    assert value(found, "dagd_store_writable") == 0
    assert value(found, "dagd_healthy") == 0
    assert healthy.status == 200


async def test_metrics_auth_asks_scrapers_for_a_token_never_supervisors(tmp_path: Path) -> None:
    async with running(tmp_path, server="metrics_auth = true") as daemon:
        port = server_of(daemon).port
        assert port is not None
        missing = await get(port, "/metrics")
        wrong = await get(port, "/metrics", (("authorization", "Bearer wrong"),))
        found = await scrape(port, (("authorization", f"Bearer {READ_TOKEN}"),))
        health = await get(port, "/healthz")
    assert (missing.status, missing.json()["code"]) == (401, "auth_required")
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert (wrong.status, wrong.json()["code"]) == (401, "auth_failed")
    assert value(found, "dagd_dags_loaded") >= 2
    assert health.status == 200
