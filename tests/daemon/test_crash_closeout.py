"""Issue 10, item 6: after a kill -9 of a real `dagd serve`, the next start closes every step of
each interrupted run out (also the steps that never started and so have no row), with the run's
own DAG definition even when the file was edited while the daemon was down, and ends each run
with a progress event that has nothing running or pending. Checked as a client sees it: a
`dagd.client` consumer that replays the whole log across the restart, folded into the same view
the CLI draws ("0/2 done, 2 failed, 0 pending")."""

from __future__ import annotations

import random
import signal
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from clienthelp import DaemonProc, await_for

from dagd.cli.render import RunsView
from dagd.client import Client, connect
from dagd.core.backoff import ReconnectBackoff
from dagd.core.events import DagEvent, DagRunProgressEvent, DagRunStatusEvent, StepStatusEvent
from dagd.core.model import RunStatus, StepStatus

INTERRUPTED = "interrupted: the daemon stopped"

# `a` runs until the kill; `b` waits for it; a second run waits for the first (limit 1).
TWO_STEPS = """
    max_active_runs = 1
    [steps.a]
    command = "sleep 600"
    [steps.b]
    command = "true"
    depends_on = ["a"]
"""
# The same DAG as edited while the daemon was down: `b` is gone, `z` is new.
EDITED = """
    max_active_runs = 1
    [steps.a]
    command = "sleep 600"
    [steps.z]
    command = "true"
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProc]:
    d = DaemonProc(tmp_path, {"two": TWO_STEPS})
    try:
        yield d
    finally:
        d.close()


class Consumer:
    def __init__(self) -> None:
        self.events: list[DagEvent] = []

    async def run(self, client: Client) -> None:
        async for event in client.events():
            self.events.append(event)

    def of(self, run_id: str) -> list[DagEvent]:
        return [e for e in self.events if getattr(e, "run_id", None) == run_id]

    def step_running(self, run_id: str, step_id: str) -> bool:
        return any(
            isinstance(e, StepStatusEvent) and e.step_id == step_id and e.status == "running"
            for e in self.of(run_id)
        )

    def run_status(self, run_id: str) -> RunStatus | None:
        statuses = [e.status for e in self.of(run_id) if isinstance(e, DagRunStatusEvent)]
        return statuses[-1] if statuses else None


async def test_kill_9_closes_out_every_step_of_the_runs_it_interrupted(
    daemon: DaemonProc,
) -> None:
    daemon.start()
    await daemon.await_ready()
    consumer = Consumer()
    backoff = ReconnectBackoff(0.05, 0.25, random.Random(1))
    async with (
        connect(daemon.url, daemon.token, ["two"], since=0, backoff=backoff) as client,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(consumer.run, client)
        running = await client.trigger("two")  # a runs, b waits for it: b has no row
        queued = await client.trigger("two")  # waits for a slot: no step has a row
        await await_for(lambda: consumer.step_running(running, "a"), what="step a to run")
        await await_for(lambda: consumer.run_status(queued) == "queued", what="the second run")
        await daemon.astop(signal.SIGKILL)
        # Edited while the daemon is down: the runs are still closed out over their own steps.
        (daemon.root / "dags" / "two.toml").write_text(textwrap.dedent(EDITED))
        daemon.start()
        await daemon.await_ready()
        await await_for(
            lambda: consumer.run_status(running) == consumer.run_status(queued) == "failed",
            what="both runs closed out",
        )
        nursery.cancel_scope.cancel()

    view = RunsView()
    for event in consumer.events:
        view.apply(event)
    for run_id in (running, queued):
        run = view.view("two", run_id)
        assert run.status is RunStatus.FAILED
        # (total, completed, running, failed, pending): what `dagd watch` shows
        assert run.counts() == (2, 0, 0, 2, 0), run_id
        assert sorted(run.steps) == ["a", "b"]  # the run's own definition, not the edited file
        assert all(step.error == INTERRUPTED for step in run.steps.values())
        last_progress = [e for e in consumer.of(run_id) if isinstance(e, DagRunProgressEvent)][-1]
        assert (last_progress.running_steps, last_progress.pending_steps) == (0, 0)
        assert (last_progress.total_steps, last_progress.failed_steps) == (2, 2)
        # The run's final status is its last event; the progress event comes just before it.
        *_, progress, final = consumer.of(run_id)
        assert progress is last_progress
        assert isinstance(final, DagRunStatusEvent) and final.status is RunStatus.FAILED
    assert view.view("two", running).steps["a"].status is StepStatus.FAILED
    assert view.view("two", running).steps["b"].status is StepStatus.CANCELLED
    assert {s.status for s in view.view("two", queued).steps.values()} == {StepStatus.CANCELLED}

    # The history agrees: every step of both runs has a final row, none is left pending.
    rows = daemon.query(
        "SELECT run_id, step_id, status, error FROM steps WHERE run_id IN (?, ?) ORDER BY 1, 2",
        (running, queued),
    )
    assert sorted(rows) == sorted(
        [
            (running, "a", "failed", INTERRUPTED),
            (running, "b", "cancelled", INTERRUPTED),
            (queued, "a", "cancelled", INTERRUPTED),
            (queued, "b", "cancelled", INTERRUPTED),
        ]
    )
