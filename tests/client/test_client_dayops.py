"""dagd.client's day-two methods against a real `dagd serve` process: get_run, get_dag, pause
(kept across a restart of the daemon), unpause, backfill; and what the client says when the
URL's path is not dagd's (the server refuses the handshake with an HTTP status)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from clienthelp import DaemonProc, await_for, serving

from dagd.client import ClientError, ConnectionLost, connect
from dagd.core.events import DagStatusEvent
from dagd.core.model import RunStatus, StepStatus
from dagd.core.protocol.answers import BackfillAction, Edge, TriggerKind

DAGS = {
    "etl": """
        schedule = "*/30 * * * *"
        params = { day = "today" }
        [steps.extract]
        command = "echo extract $DAGD_PARAM_DAY"
        [steps.load]
        command = ["echo", "load"]
        depends_on = ["extract"]
        """,
}


async def test_detail_pause_and_backfill_through_the_client(tmp_path: Path) -> None:
    with serving(tmp_path, DAGS) as daemon:
        async with connect(daemon.url, daemon.token, ["etl"], max_backoff=2.0) as client:
            run_id = await client.trigger("etl", {"day": "mon"})
            await await_for(lambda: daemon.run_statuses().get(run_id) == "success")
            run = await client.get_run(run_id)
            assert (run.record.run_id, run.record.status) == (run_id, RunStatus.SUCCESS)
            assert run.record.params == {"day": "mon"} and run.trigger is TriggerKind.MANUAL
            assert [(s.step_id, s.status, s.attempt) for s in run.steps] == [
                ("extract", StepStatus.SUCCESS, 1),
                ("load", StepStatus.SUCCESS, 1),
            ]
            assert [a.attempt for a in run.steps[0].attempts] == [1]

            dag = await client.get_dag("etl")
            assert dag.summary.schedule == "*/30 * * * *" and dag.summary.params == {"day": "today"}
            assert [s.command for s in dag.steps] == [
                "echo extract $DAGD_PARAM_DAY",
                ["echo", "load"],
            ]
            assert dag.edges == [Edge("extract", "load")]

            with pytest.raises(ClientError) as err:
                await client.get_run("manual__nope")
            assert err.value.code == "unknown_run"
            with pytest.raises(ClientError) as err:
                await client.list_runs("nosuchdag")
            assert err.value.code == "unknown_dag"

            assert (await client.pause("etl")).dag_id == "etl"
            with trio.fail_after(5):
                async for event in client.events():
                    if isinstance(event, DagStatusEvent):
                        assert event.paused and event.file_error is None
                        break

            result = await client.backfill(
                "etl", "2024-01-01T00:00Z", "2024-01-01T01:00Z", {"day": "bf"}, dry_run=True
            )
            assert result.dry_run and len(result.slots) == 3
            assert {s.action for s in result.slots} == {BackfillAction.QUEUED}
            with pytest.raises(ClientError) as err:
                await client.backfill("etl", "2024-01-02", "2024-01-01")
            assert err.value.code == "invalid_range"

        await daemon.astop()
        daemon.start()
        await daemon.await_ready()
        async with connect(daemon.url, daemon.token, ["etl"]) as client:
            [summary] = await client.list_dags()
            assert summary.paused and summary.next_run is None  # kept across the restart
            unpaused = await client.unpause("etl")
            assert unpaused.next_run is not None
            assert not (await client.list_dags())[0].paused


async def test_a_path_that_is_not_dagds_is_named_with_its_http_status(tmp_path: Path) -> None:
    with DaemonProc(tmp_path, DAGS) as daemon:
        daemon.start()
        await daemon.await_ready()
        url = daemon.url.replace("/api/v1/ws", "/elsewhere")
        async with connect(url, daemon.token, max_backoff=0.5) as client:
            with trio.fail_after(10):
                lost = await client.__anext__()
        assert isinstance(lost, ConnectionLost)
        assert lost.http_status == 404
        assert lost.message.startswith("the server refused the WebSocket handshake with HTTP 404")
        assert "(" not in lost.message.split("404", 1)[0]  # no raw Python tuple
        assert lost.retry_in <= 0.5


async def test_a_client_subscribed_to_nothing_can_still_ask(tmp_path: Path) -> None:
    # A script that only queries and controls (dag_ids=[]) gets no events, but it is connected.
    with serving(tmp_path, DAGS) as daemon:
        async with connect(daemon.url, daemon.token, [], request_timeout=5) as client:
            with trio.fail_after(5):
                [dag] = await client.list_dags()
            assert dag.dag_id == "etl"
