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
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import cast

import pytest
import trio
from clienthelp import DaemonProc, await_for

from dagd.cli.render import RunsView
from dagd.client import Client, connect
from dagd.core.backoff import ReconnectBackoff
from dagd.core.config import Config
from dagd.core.events import DagEvent, DagRunProgressEvent, DagRunStatusEvent, StepStatusEvent
from dagd.core.model import RunStatus, StepSpec, StepStatus
from dagd.daemon.daemon import Daemon
from dagd.daemon.hub import Hub
from dagd.daemon.store import Store
from dagd.runtime.executor import AttemptResult, Leftover, LeftoverSink, StepContext

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
    with DaemonProc(tmp_path, {"two": TWO_STEPS}) as d:
        yield d


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


# ------------------------------------------------- a sibling: a run whose driver crashed


class BuggyExecutor:
    """An executor with a bug: step `bad` answers something that is not an AttemptResult, which
    the engine cannot read, so the run's driver fails; `slow` runs until it is stopped."""

    name = "local"
    log_dir = None

    async def run(
        self, step: StepSpec, ctx: StepContext, on_leftover: LeftoverSink | None = None
    ) -> AttemptResult:
        if step.id == "slow":
            await trio.sleep_forever()
        await trio.sleep(0.05)
        return cast(AttemptResult, object())

    async def clean_up(self, leftovers: Collection[Leftover], run_ids: Collection[str]) -> None:
        pass


async def test_a_run_whose_driver_crashes_is_closed_out_step_by_step(tmp_path: Path) -> None:
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "buggy.toml").write_text(
        textwrap.dedent(
            """
            [steps.bad]
            command = "true"
            [steps.slow]
            command = "true"
            [steps.after]
            command = "true"
            depends_on = ["bad"]
            """
        )
    )
    config = Config(dags_dir=tmp_path / "dags", state_dir=tmp_path / "state", kill_grace=0.5)
    hub = Hub()
    store = Store.open(config.db_path, on_commit=hub.publish)
    daemon = Daemon(config, store=store, hub=hub, executors={"local": BuggyExecutor()})
    events: list[DagEvent] = []
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.writer)
            await daemon.start(nursery)
            with daemon.subscribe() as sub:
                run_id = await daemon.trigger("buggy")
                with trio.fail_after(10):
                    async for stored in sub:
                        events.append(stored.event)
                        ev = stored.event
                        if isinstance(ev, DagRunStatusEvent) and ev.status.finished:
                            break
            snapshot, _ = daemon.snapshot({"buggy"})
            await daemon.stop()
            await store.flush()
            nursery.cancel_scope.cancel()
        found = await store.get_run(run_id)
    finally:
        store.close()
    view = RunsView()
    for event in events:
        view.apply(event)
    run = view.view("buggy", run_id)
    assert run.status is RunStatus.FAILED
    assert run.counts() == (3, 0, 0, 3, 0)  # nothing left running or pending
    closing = {s: (e.status, e.error) for s, e in run.steps.items()}
    assert closing["slow"][0] is StepStatus.FAILED  # it was running
    assert closing["after"][0] is StepStatus.CANCELLED  # it never started
    assert all(error is not None and "internal error" in error for _, error in closing.values())
    assert found is not None
    assert {s.step_id: s.status for s in found[1]} == {
        sid: status for sid, (status, _) in closing.items()
    }
    # What a client joining now is shown (the daemon's memory of the run) agrees.
    shown = {e.step_id: e.status for e in snapshot if isinstance(e, StepStatusEvent)}
    assert shown == {sid: status for sid, (status, _) in closing.items()}
    [progress] = [e for e in snapshot if isinstance(e, DagRunProgressEvent)]
    assert (progress.running_steps, progress.pending_steps, progress.failed_steps) == (0, 0, 3)
