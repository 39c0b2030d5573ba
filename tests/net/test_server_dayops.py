"""get_run, get_dag, pause, unpause, backfill and dag_status over real sockets, with both the
trio-websocket client and the independent asyncio `websockets` client: the wire shapes of
docs/protocol.md, the roles, and the error codes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from wshelp import DAGS, KINDS, READ_TOKEN, Aio, harness

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
HOURLY = """
schedule = "0 * * * *"
timezone = "Europe/Berlin"
[params]
who = "nobody"
[steps.first]
command = "echo $DAGD_PARAM_WHO"
retries = 1
[steps.second]
call = "stepfuncs:noop"
depends_on = ["first"]
"""
WITH_HOURLY = {**DAGS, "hourly": HOURLY}


async def next_event(client, kind: str) -> dict:  # type: ignore[no-untyped-def]
    while True:
        frame = await client.recv()
        if frame["type"] == kind and "data" in frame:
            return frame


@pytest.mark.parametrize("kind", KINDS)
async def test_get_run_and_get_dag_on_the_wire(tmp_path: Path, aio: Aio, kind: str) -> None:
    async with harness(tmp_path, aio, dags=WITH_HOURLY) as h:
        client = await h.connect(kind)
        triggered = await client.request({"type": "trigger", "dagId": "alpha"})
        run_id = triggered["runId"]
        await h.run_status(run_id, "success")
        run = await client.request({"type": "get_run", "runId": run_id, "requestId": "r1"})
        keys = ["type", "record", "trigger", "duration", "dagVersion", "steps", "requestId"]
        assert list(run) == keys
        assert run["type"] == "run" and run["requestId"] == "r1"
        assert run["record"]["runId"] == run_id and run["record"]["status"] == "success"
        assert run["trigger"] == "manual" and isinstance(run["duration"], int)
        assert re.fullmatch(r"[0-9a-f]{64}", run["dagVersion"])
        one, two = run["steps"]
        assert list(one) == [
            "stepId",
            "status",
            "startTime",
            "endTime",
            "duration",
            "retryCount",
            "error",
            "attempt",
            "dependsOn",
            "attempts",
            "outputs",
        ]
        assert (one["stepId"], one["status"], one["attempt"]) == ("one", "success", 1)
        assert one["outputs"] == {}
        assert two["dependsOn"] == ["one"]
        [attempt] = one["attempts"]
        assert list(attempt) == [
            "stepId",
            "attempt",
            "status",
            "startTime",
            "endTime",
            "duration",
            "error",
        ]
        assert attempt["attempt"] == 1 and ISO_Z.match(attempt["startTime"])

        dag = await client.request({"type": "get_dag", "dagId": "hourly"})
        assert dag["summary"]["dagId"] == "hourly"
        assert dag["summary"]["timezone"] == "Europe/Berlin"
        assert dag["summary"]["paused"] is False and dag["summary"]["fileError"] is None
        assert ISO_Z.match(dag["summary"]["nextRun"])
        assert [s["stepId"] for s in dag["steps"]] == ["first", "second"]
        first, second = dag["steps"]
        assert first["command"] == "echo $DAGD_PARAM_WHO" and first["retries"] == 1
        assert second["call"] == "stepfuncs:noop" and second["level"] == 1
        assert dag["edges"] == [{"source": "first", "target": "second"}]

        for request, code in [
            ({"type": "get_run", "runId": "manual__nope", "requestId": 5}, "unknown_run"),
            ({"type": "get_dag", "dagId": "nope", "requestId": 6}, "unknown_dag"),
            ({"type": "list_runs", "dagId": "nope", "requestId": 7}, "unknown_dag"),
        ]:
            error = await client.request(request)
            assert (error["type"], error["code"]) == ("error", code)
            assert error["requestId"] == request["requestId"]
        # a read token may read them
        reader = await h.connect(kind, READ_TOKEN)
        assert (await reader.request({"type": "get_run", "runId": run_id}))["type"] == "run"
        assert (await reader.request({"type": "get_dag", "dagId": "alpha"}))["type"] == "dag"


@pytest.mark.parametrize("kind", KINDS)
async def test_pause_and_unpause_with_dag_status_events(
    tmp_path: Path, aio: Aio, kind: str
) -> None:
    async with harness(tmp_path, aio, dags=WITH_HOURLY) as h:
        watcher = await h.connect(kind, READ_TOKEN)
        assert (await watcher.request({"type": "subscribe", "dagIds": ["hourly"]}))[
            "type"
        ] == "subscribed"
        forbidden = await watcher.request({"type": "pause", "dagId": "hourly"})
        assert forbidden["code"] == "forbidden" and "pause" in forbidden["message"]

        operator = await h.connect(kind)
        paused = await operator.request({"type": "pause", "dagId": "hourly", "requestId": 1})
        assert paused == {"type": "paused", "dagId": "hourly", "requestId": 1}
        event = await next_event(watcher, "dag_status")
        assert isinstance(event["seq"], int)
        assert event["data"]["dagId"] == "hourly" and event["data"]["paused"] is True
        assert event["data"]["fileError"] is None and ISO_Z.match(event["data"]["timestamp"])
        dags = (await operator.request({"type": "list_dags"}))["dags"]
        [hourly] = [d for d in dags if d["dagId"] == "hourly"]
        assert hourly["paused"] is True and hourly["nextRun"] is None

        unpaused = await operator.request({"type": "unpause", "dagId": "hourly"})
        assert unpaused["type"] == "unpaused" and ISO_Z.match(unpaused["nextRun"])
        event = await next_event(watcher, "dag_status")
        assert event["data"]["paused"] is False
        unknown = await operator.request({"type": "unpause", "dagId": "nope"})
        assert unknown["code"] == "unknown_dag"
        no_schedule = await operator.request({"type": "unpause", "dagId": "alpha"})
        assert no_schedule == {"type": "unpaused", "dagId": "alpha", "nextRun": None}


@pytest.mark.parametrize("kind", KINDS)
async def test_backfill_on_the_wire(tmp_path: Path, aio: Aio, kind: str) -> None:
    async with harness(tmp_path, aio, dags=WITH_HOURLY) as h:
        reader = await h.connect(kind, READ_TOKEN)
        request = {
            "type": "backfill",
            "dagId": "hourly",
            "start": "2024-01-01T01:00",
            "end": "2024-01-01T02:00",
        }
        assert (await reader.request(request))["code"] == "forbidden"
        client = await h.connect(kind)
        dry = await client.request({**request, "dryRun": True, "requestId": "d"})
        assert dry["type"] == "backfill_result" and dry["dryRun"] is True
        assert dry["requestId"] == "d"
        # 01:00 and 02:00 in Berlin are 00:00 and 01:00 UTC in winter
        assert dry["slots"] == [
            {
                "slot": "2024-01-01T00:00:00.000Z",
                "runId": "scheduled__2024-01-01T00:00:00+00:00__hourly",
                "action": "queued",
                "reason": None,
            },
            {
                "slot": "2024-01-01T01:00:00.000Z",
                "runId": "scheduled__2024-01-01T01:00:00+00:00__hourly",
                "action": "queued",
                "reason": None,
            },
        ]
        done = await client.request({**request, "params": {"who": "me"}})
        assert [s["action"] for s in done["slots"]] == ["queued", "queued"]
        for slot in done["slots"]:
            await h.run_status(slot["runId"], "success")
        again = await client.request(request)
        assert [s["action"] for s in again["slots"]] == ["skipped", "skipped"]
        assert "succeeded" in again["slots"][0]["reason"]

        for extra, code in [
            ({"dagId": "alpha"}, "no_schedule"),
            ({"dagId": "nope"}, "unknown_dag"),
            ({"start": "soon"}, "invalid_range"),
            ({"start": "2020-01-01", "end": "2024-01-01"}, "invalid_range"),
            ({"params": {"undeclared": 1}}, "invalid_params"),
        ]:
            error = await client.request({**request, **extra})
            assert (error["type"], error["code"]) == ("error", code), extra
        bad = await client.request({**request, "dryRun": "yes"})
        assert bad["code"] == "invalid_message" and "dryRun" in bad["message"]
