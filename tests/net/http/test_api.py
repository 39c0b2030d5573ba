"""The JSON API over a real socket: `http.client` against a daemon on 127.0.0.1 port 0 with
real runs. Every answer is checked against docs/openapi.yaml (status, content type, headers,
body schema with objects closed to extra fields)."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml
from apihelp import OPENAPI_PATH, Answer, check_documented, find_operation, http_call
from daemonhelp import wait_status
from wshelp import DAGS, OP_TOKEN, READ_TOKEN, running, server_of, trequest, tws, url_of

from dagd.daemon.daemon import Daemon

HOURLY = """
schedule = "0 * * * *"
[steps.only]
call = "stepfuncs:noop"
"""
WITHPARAMS = """
[params]
date = "2024-01-01"
[steps.echo]
command = "echo $DAGD_PARAM_DATE"
"""
TALK = """
[steps.talk]
command = "printf 'one\\ntwo\\n'; echo three >&2"
"""


#: Codes of the front door's own answers (dagd/net/http/frontdoor.py), before any route.
FRONT_DOOR_CODES = {"not_found", "method_not_allowed", "bad_request", "body_too_large"}


class Http:
    """Requests to one daemon's port; each documented answer is checked against the document."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        url = server_of(daemon).http_url
        assert url is not None
        self.base = url.rstrip("/")

    async def __call__(self, method: str, target: str, **kw: Any) -> Answer:
        answer = await http_call(self.base, method, target, **kw)
        path = target.partition("?")[0]
        if answer.code not in FRONT_DOOR_CODES and find_operation(method, path) is not None:
            check_documented(method, path, answer)
        return answer


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[Http]:
    dags = {**DAGS, "hourly": HOURLY, "talk": TALK, "withparams": WITHPARAMS}
    async with running(tmp_path, dags=dags) as daemon:
        yield Http(daemon)


async def test_trigger_with_params_read_the_run_list_it_and_read_its_log(http: Http) -> None:
    dags = await http("GET", "/api/v1/dags", token=READ_TOKEN)
    assert dags.status == 200
    assert "withparams" in [d["dagId"] for d in dags.json()["dags"]]
    dag = (await http("GET", "/api/v1/dags/withparams")).json()
    assert dag["summary"]["params"] == {"date": "2024-01-01"}

    triggered = await http(
        "POST", "/api/v1/dags/withparams/runs", body={"params": {"date": "2024-03-03"}}
    )
    assert triggered.status == 201
    run_id = triggered.json()["runId"]
    assert triggered.headers["location"].endswith(run_id)
    await wait_status(http.daemon, run_id, ["success"])
    run = await http("GET", triggered.headers["location"], token=READ_TOKEN)
    assert run.status == 200
    assert run.json()["record"]["params"] == {"date": "2024-03-03"}
    assert run.json()["steps"][0]["status"] == "success"
    runs = await http("GET", "/api/v1/runs?dag=withparams&limit=5", token=READ_TOKEN)
    assert [r["runId"] for r in runs.json()["runs"]] == [run_id]
    log = await http("GET", f"/api/v1/runs/{run_id}/steps/echo/log", token=READ_TOKEN)
    assert log.status == 200 and log.body == b"2024-03-03\n"


async def test_a_log_by_byte_range_and_stream(http: Http) -> None:
    run_id = (await http("POST", "/api/v1/dags/talk/runs")).json()["runId"]
    await wait_status(http.daemon, run_id, ["success"])
    path = f"/api/v1/runs/{run_id}/steps/talk/log"
    part = await http("GET", f"{path}?offset=2&length=4")
    assert part.body == b"e\ntw"
    assert part.headers["content-type"] == "application/octet-stream"
    assert part.headers["dagd-log-size"] == "8"
    assert part.headers["dagd-log-next-offset"] == "6"
    assert part.headers["dagd-log-final"] == "true"
    assert part.headers["dagd-log-attempt"] == "1"
    err = await http("GET", f"{path}?stream=stderr&attempt=1")
    assert err.body == b"three\n" and err.headers["dagd-log-stream"] == "stderr"
    head = await http("HEAD", f"{path}?offset=2&length=4")
    assert head.status == 200 and head.body == b""
    assert head.headers["dagd-log-next-offset"] == "6"


async def test_cancel_then_retry_then_conflicts(http: Http) -> None:
    run_id = (await http("POST", "/api/v1/dags/slow/runs")).json()["runId"]
    running_retry = await http("POST", f"/api/v1/runs/{run_id}/retry")
    assert (running_retry.status, running_retry.code) == (409, "not_finished")
    cancel = await http("POST", f"/api/v1/runs/{run_id}/cancel", body=b"{}")
    assert (cancel.status, cancel.json()) == (202, {"runId": run_id})
    await wait_status(http.daemon, run_id, ["cancelled"])
    again = await http("POST", f"/api/v1/runs/{run_id}/cancel")
    assert (again.status, again.code) == (409, "not_running")
    retry = await http("POST", f"/api/v1/runs/{run_id}/retry")
    assert (retry.status, retry.json()) == (202, {"runId": run_id})
    run = (await http("GET", f"/api/v1/runs/{run_id}")).json()
    assert run["record"]["status"] in ("queued", "running")
    assert (await http("POST", f"/api/v1/runs/{run_id}/cancel")).status == 202


async def test_pause_unpause_and_a_dry_backfill(http: Http) -> None:
    paused = await http("POST", "/api/v1/dags/hourly/pause")
    assert (paused.status, paused.json()) == (200, {"dagId": "hourly"})
    assert (await http("GET", "/api/v1/dags/hourly")).json()["summary"]["paused"] is True
    unpaused = await http("POST", "/api/v1/dags/hourly/unpause")
    assert unpaused.status == 200 and unpaused.json()["nextRun"].endswith(":00:00.000Z")
    body = {"start": "2024-01-01T00:00", "end": "2024-01-01T02:59", "dryRun": True}
    dry = await http("POST", "/api/v1/dags/hourly/backfill", body=body)
    assert dry.status == 200
    assert [s["action"] for s in dry.json()["slots"]] == ["queued"] * 3
    assert (await http("GET", "/api/v1/runs?dag=hourly")).json()["runs"] == []
    reversed_range = {"start": "2024-01-02", "end": "2024-01-01"}
    bad = await http("POST", "/api/v1/dags/hourly/backfill", body=reversed_range)
    assert (bad.status, bad.code) == (422, "invalid_range")


async def test_every_status_a_client_can_cause(http: Http) -> None:
    range_ = {"start": "2024-01-01", "end": "2024-01-02"}
    cases: list[tuple[str, str, dict[str, Any], int, str]] = [
        ("GET", "/api/v1/dags", {"token": None}, 401, "auth_required"),
        ("POST", "/api/v1/dags/alpha/runs", {"token": READ_TOKEN}, 403, "forbidden"),
        ("GET", "/api/v1/dags/nope", {}, 404, "unknown_dag"),
        ("GET", "/api/v1/runs/nope", {}, 404, "unknown_run"),
        ("POST", "/api/v1/dags/withparams/runs", {"body": b"{"}, 400, "invalid_message"),
        ("POST", "/api/v1/dags/withparams/runs", {"body": {"params": {"x": 1}}}, 422,
         "invalid_params"),
        ("POST", "/api/v1/dags/alpha/backfill", {"body": range_}, 409, "no_schedule"),
        ("GET", "/api/v1/runs?limit=0", {}, 400, "invalid_message"),
        ("DELETE", "/api/v1/runs/x", {}, 405, "method_not_allowed"),
        ("GET", "/api/v1/nothing", {}, 404, "not_found"),
    ]  # fmt: skip
    for method, target, kw, status, code in cases:
        answer = await http(method, target, **kw)
        assert (answer.status, answer.code) == (status, code), (method, target)
    wrong = await http("GET", "/api/v1/dags", token="wrong")
    assert (wrong.status, wrong.code) == (401, "auth_failed")
    assert wrong.headers["www-authenticate"] == 'Bearer realm="dagd", error="invalid_token"'
    assert "allow" in (await http("PUT", "/api/v1/dags")).headers


async def test_shutting_down_is_503(http: Http) -> None:
    await http.daemon.stop()
    answer = await http("POST", "/api/v1/dags/alpha/runs")
    assert (answer.status, answer.code) == (503, "shutting_down")


async def test_the_same_run_and_dag_over_the_websocket_and_http(http: Http) -> None:
    run_id = (await http("POST", "/api/v1/dags/alpha/runs")).json()["runId"]
    await wait_status(http.daemon, run_id, ["success"])
    async with tws(url_of(http.daemon)) as ws:
        for request, target in [
            ({"type": "get_run", "runId": run_id}, f"/api/v1/runs/{run_id}"),
            ({"type": "get_dag", "dagId": "alpha"}, "/api/v1/dags/alpha"),
            ({"type": "list_dags"}, "/api/v1/dags"),
            ({"type": "list_runs", "limit": 5}, "/api/v1/runs?limit=5"),
        ]:
            over_ws = await trequest(ws, {**request, "requestId": 7})
            assert over_ws.pop("requestId") == 7
            del over_ws["type"]  # the envelope: nothing else differs
            over_http = (await http("GET", target, token=READ_TOKEN)).json()
            assert over_http == over_ws, request["type"]


@pytest.mark.parametrize(
    ("target", "status", "code"),
    [
        ("/api/v1/runs/a%2Fb", 404, "unknown_run"),  # one segment: the id "a/b"
        ("/api/v1/runs/a%2Fb/cancel", 404, "unknown_run"),
        ("/api/v1/runs/%2e%2e", 404, "unknown_run"),
        ("/api/v1/runs/%00", 404, "unknown_run"),
        ("/api/v1/runs/%ff%fe", 404, "unknown_run"),
        ("/api/v1/runs/x/steps/..%2F..%2Fetc/log", 404, "unknown_run"),
        ("/api/v1/dags/%2e%2e%2Fsecret", 404, "unknown_dag"),
        ("/api/v1/runs?limit=%ff", 400, "invalid_message"),
        ("/api/v1/runs?limit=1&limit=2", 400, "invalid_message"),
        ("/api/v1/runs?" + "&".join(f"p{i}=1" for i in range(500)), 400, None),
        ("/api/v1/runs?dag=%00", 404, "unknown_dag"),
    ],
)
async def test_hostile_paths_and_queries(http: Http, target: str, status: int, code: str) -> None:
    answer = await http("GET" if "cancel" not in target else "POST", target)
    assert answer.status == status, answer.body[:200]
    if code is not None:
        assert answer.code == code
    assert (await http("GET", "/api/v1/dags")).status == 200  # still serving


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 50_000 + b"]" * 50_000,
        b'{"params": {"date": NaN}}',
        b'{"params": {"date": "2024-01-01", "date": "2024-01-02"}}',
        b'{"params": {"date": 1e400}}',
        b'{"params": {"date": "\\udfff"}}',
        b'{"params": {"date": ' + b"1" * 10_000 + b"}}",
        b"\x00\x01\x02",
        json.dumps({"params": {f"p{i}": i for i in range(2000)}}).encode(),
    ],
    ids=[
        "deep",
        "nan",
        "duplicate-key",
        "overflow",
        "surrogate",
        "long-int",
        "binary",
        "2000-params",
    ],
)
async def test_hostile_bodies_are_refused_and_the_daemon_serves_on(http: Http, body: bytes) -> None:
    answer = await http("POST", "/api/v1/dags/withparams/runs", body=body)
    assert answer.status in (400, 413, 422), answer.body[:200]
    assert (await http("GET", "/api/v1/runs")).json()["runs"] == []


async def test_a_request_cut_short_leaves_the_daemon_serving(http: Http) -> None:
    host, port = http.base.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /api/v1/dags/alpha/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Authorization: Bearer {OP_TOKEN}\r\nContent-Length: 1000\r\n\r\n".encode()
            + b'{"params":'
        )
    await trio.sleep(0.05)
    assert (await http("GET", "/api/v1/runs")).json()["runs"] == []  # nothing was triggered


async def test_wrong_tokens_over_http_count_for_the_websocket_too(http: Http) -> None:
    throttle = server_of(http.daemon).throttle
    assert throttle.delay("127.0.0.1") == 0
    for _ in range(2):
        assert (await http("GET", "/api/v1/dags", token="wrong")).status == 401
    assert throttle.delay("127.0.0.1") == 0.25  # the WebSocket's next failure waits
    async with tws(url_of(http.daemon)):  # a right token over the WebSocket clears it
        pass
    assert throttle.delay("127.0.0.1") == 0
    assert (await http("GET", "/api/v1/dags", token="wrong")).status == 401


async def test_the_openapi_document_is_served_without_a_token(http: Http) -> None:
    answer = await http("GET", "/api/v1/openapi.yaml", token=None)
    assert answer.status == 200
    assert answer.headers["content-type"] == "application/yaml"
    assert answer.body == OPENAPI_PATH.read_bytes()
    assert yaml.safe_load(answer.body)["openapi"] == "3.1.0"
    refused = await http("GET", "/api/v1/openapi.yaml?x=1", token=None)
    assert (refused.status, refused.code) == (400, "invalid_message")
