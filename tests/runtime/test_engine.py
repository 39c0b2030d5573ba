"""RunDriver: a RunState's effects carried out in a trio nursery.

Time logic (retry backoff, concurrency limits) runs under trio's MockClock with only Python
callables, so virtual time is exact; process tests use real time with short timeouts.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import proctools as procs
import pytest
import stepfuncs
import trio
import trio.testing

from dagd.core.events import (
    EVENT_TYPES,
    DagRunProgressEvent,
    DagRunStatusEvent,
    ErrorEvent,
    StepStatusEvent,
)
from dagd.core.graph import topological_order
from dagd.core.model import DagSpec, RunStatus, StepSpec, StepStatus, TriggerRule
from dagd.core.runstate import RunState
from dagd.core.spec import parse_dag
from dagd.runtime.engine import RunDriver, run_dag, trio_wall_clock
from dagd.runtime.local.executor import LocalExecutor

S = StepStatus
GRACE = 0.3


def make_dag(dag_id: str, steps: Iterable[StepSpec], **kw: object) -> DagSpec:
    by_id = {s.id: s for s in steps}
    order = topological_order({s.id: s.depends_on for s in by_id.values()})
    assert order is not None
    return DagSpec(id=dag_id, steps=by_id, order=order, **kw)  # type: ignore[arg-type]


def call(step_id: str, func: str, *depends_on: str, **kw: object) -> StepSpec:
    return StepSpec(step_id, call=f"stepfuncs:{func}", depends_on=depends_on, **kw)  # type: ignore[arg-type]


class Recorder:
    """A publish callback that keeps every event."""

    def __init__(self) -> None:
        self.events: list[object] = []

    def __call__(self, event: object) -> None:
        self.events.append(event)

    def of(self, kind: type, step_id: str | None = None) -> list:
        return [
            e
            for e in self.events
            if type(e) is kind and (step_id is None or getattr(e, "step_id", None) == step_id)
        ]

    def step_statuses(self, step_id: str) -> list[StepStatus]:
        return [e.status for e in self.of(StepStatusEvent, step_id)]

    def last_status(self, step_id: str) -> StepStatus:
        return self.step_statuses(step_id)[-1]


_BUCKETS = {
    S.PENDING: "pending",
    S.RUNNING: "running",
    S.RETRYING: "running",
    S.SUCCESS: "completed",
    S.SKIPPED: "completed",
    S.FAILED: "failed",
    S.UPSTREAM_FAILED: "failed",
    S.CANCELLED: "failed",
}


def check_event_stream(events: list[object], dag: DagSpec, run_id: str, final: RunStatus) -> None:
    """Every event is one of the four types and belongs to this run; each progress event adds up
    and agrees with the step events published before it; the last event is the final status."""
    assert events
    total = len(dag.steps)
    latest: dict[str, StepStatus] = {}
    for event in events:
        assert type(event) in EVENT_TYPES, event
        assert event.dag_id == dag.id  # type: ignore[attr-defined]
        assert event.run_id == run_id  # type: ignore[attr-defined]
        if isinstance(event, StepStatusEvent):
            assert event.step_id in dag.steps
            latest[event.step_id] = event.status
        elif isinstance(event, DagRunProgressEvent):
            assert event.total_steps == total
            parts = (
                event.completed_steps,
                event.running_steps,
                event.failed_steps,
                event.pending_steps,
            )
            assert all(n >= 0 for n in parts)
            assert sum(parts) == total
            assert event.completion_percentage == round(100 * event.completed_steps / total, 1)
            counts = Counter(_BUCKETS[latest.get(sid, S.PENDING)] for sid in dag.steps)
            assert (counts["completed"], counts["running"], counts["failed"]) == parts[:3]
        elif isinstance(event, ErrorEvent):
            assert event.step_id in dag.steps
            assert event.error
    first, last = events[0], events[-1]
    assert isinstance(first, DagRunStatusEvent)
    assert first.status is RunStatus.RUNNING
    assert isinstance(last, DagRunStatusEvent)
    assert last.status is final
    assert sum(isinstance(e, DagRunStatusEvent) for e in events) == 2
    # The final progress event (just before the final status) shows nothing running or pending.
    progress = [e for e in events if isinstance(e, DagRunProgressEvent)][-1]
    assert progress.running_steps == progress.pending_steps == 0


async def wait_until(predicate, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


# ------------------------------------------------------------------------- the event stream


async def test_event_stream_of_a_full_run(tmp_path: Path) -> None:
    dag = make_dag(
        "mixed",
        [
            call("a", "noop"),
            call("b", "always_fail", "a", retries=1),
            call("c", "noop", "b"),  # upstream_failed
            call("d", "sync_noop", "b", trigger_rule=TriggerRule.ONE_FAILED),  # runs
            call("e", "noop", "a", trigger_rule=TriggerRule.ONE_FAILED),  # skipped
            call("f", "noop", "c", "e", trigger_rule=TriggerRule.ALL_DONE),  # runs
            StepSpec("g", command="echo hi", depends_on=("a",)),
            call("h", "noop", "e"),  # skipped: its upstream was skipped
        ],
    )
    rec = Recorder()
    state = RunState(dag, "run-mixed")
    status = await run_dag(state, LocalExecutor(log_dir=tmp_path), rec)
    assert status is RunStatus.FAILED
    check_event_stream(rec.events, dag, "run-mixed", RunStatus.FAILED)
    finals = {sid: rec.last_status(sid) for sid in dag.steps}
    assert finals == {
        "a": S.SUCCESS,
        "b": S.FAILED,
        "c": S.UPSTREAM_FAILED,
        "d": S.SUCCESS,
        "e": S.SKIPPED,
        "f": S.SUCCESS,
        "g": S.SUCCESS,
        "h": S.SKIPPED,
    }
    assert rec.step_statuses("b") == [S.RUNNING, S.RETRYING, S.RUNNING, S.FAILED]
    errors = rec.of(ErrorEvent)
    assert [(e.step_id, e.error) for e in errors] == [
        ("b", "RuntimeError: attempt 1 failed"),
        ("b", "RuntimeError: attempt 2 failed"),
    ]
    b_final = rec.of(StepStatusEvent, "b")[-1]
    assert b_final.retry_count == 1
    assert b_final.error == "RuntimeError: attempt 2 failed"
    assert b_final.duration is not None
    assert b_final.duration >= 0
    assert (tmp_path / "mixed" / "run-mixed" / "g.1.out").read_text() == "hi\n"
    assert stepfuncs.calls["run-mixed"].count(("b", 2)) == 1


async def test_event_stream_of_a_successful_run() -> None:
    dag = make_dag("ok", [call(f"s{i}", "noop", *([f"s{i - 1}"] if i else [])) for i in range(5)])
    rec = Recorder()
    status = await run_dag(RunState(dag, "run-ok"), LocalExecutor(), rec)
    assert status is RunStatus.SUCCESS
    check_event_stream(rec.events, dag, "run-ok", RunStatus.SUCCESS)
    assert [e.completion_percentage for e in rec.of(DagRunProgressEvent)][-1] == 100.0
    assert stepfuncs.calls["run-ok"] == [(f"s{i}", 1) for i in range(5)]


async def test_a_chain_of_steps_that_never_block_leaves_the_loop_to_other_tasks() -> None:
    # An attempt's task runs the next attempt itself; async no-ops never yield on their own.
    n = 300
    dag = make_dag("busy", [call(f"s{i}", "noop", *([f"s{i - 1}"] if i else [])) for i in range(n)])
    passes, done = 0, False

    async def other_task() -> None:
        nonlocal passes
        while not done:
            passes += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other_task)
        await trio.lowlevel.checkpoint()
        before = passes
        status = await run_dag(RunState(dag, "run-busy"), LocalExecutor(), Recorder())
        during = passes - before
        done = True
    assert status is RunStatus.SUCCESS
    assert during >= n  # the other task got the loop at least once per step


# ------------------------------------------------------------------------------------ retries


async def run_retry_dag(step: StepSpec, run_id: str, **params: str) -> tuple[RunStatus, Recorder]:
    rec = Recorder()
    state = RunState(make_dag("retry", [step]), run_id, params)
    driver = RunDriver(state, LocalExecutor(), rec, clock=trio_wall_clock(0))
    return await driver.run(), rec


def start_times(rec: Recorder, step_id: str) -> list[float]:
    return [e.start_time for e in rec.of(StepStatusEvent, step_id) if e.status is S.RUNNING]


async def test_retry_backoff_exact_under_mock_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    step = call("flaky", "fail_until_last_attempt", retries=2, retry_delay=10, retry_backoff=2)
    t0 = trio.current_time()
    status, rec = await run_retry_dag(step, "run-backoff", succeed_on="3")
    assert status is RunStatus.SUCCESS
    starts = start_times(rec, "flaky")
    assert starts == [t0, t0 + 10, t0 + 30]
    assert [b - a for a, b in itertools.pairwise(starts)] == [10, 20]
    assert rec.step_statuses("flaky") == [
        S.RUNNING,
        S.RETRYING,
        S.RUNNING,
        S.RETRYING,
        S.RUNNING,
        S.SUCCESS,
    ]
    assert [e.retry_count for e in rec.of(StepStatusEvent, "flaky")] == [0, 0, 1, 1, 2, 2]
    assert stepfuncs.calls["run-backoff"] == [("flaky", 1), ("flaky", 2), ("flaky", 3)]
    assert len(rec.of(ErrorEvent)) == 2
    check_event_stream(rec.events, make_dag("retry", [step]), "run-backoff", RunStatus.SUCCESS)


async def test_retry_backoff_capped_by_max_retry_delay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    step = call(
        "flaky",
        "fail_until_last_attempt",
        retries=4,
        retry_delay=10,
        retry_backoff=3,
        max_retry_delay=25,
    )
    status, rec = await run_retry_dag(step, "run-capped", succeed_on="5")
    assert status is RunStatus.SUCCESS
    starts = start_times(rec, "flaky")
    assert [b - a for a, b in itertools.pairwise(starts)] == [10, 25, 25, 25]


async def test_retries_exhausted_fail_the_run(autojump_clock: trio.testing.MockClock) -> None:
    step = call("bad", "always_fail", retries=2, retry_delay=1, retry_backoff=1)
    status, rec = await run_retry_dag(step, "run-exhausted")
    assert status is RunStatus.FAILED
    starts = start_times(rec, "bad")
    assert [b - a for a, b in itertools.pairwise(starts)] == [1, 1]
    final = rec.of(StepStatusEvent, "bad")[-1]
    assert (final.status, final.retry_count, final.error) == (
        S.FAILED,
        2,
        "RuntimeError: attempt 3 failed",
    )


# ------------------------------------------------------------------------------- cancellation


async def test_cancel_a_running_run(tmp_path: Path) -> None:
    mark = procs.new_mark()
    env = {procs.MARK_VAR: mark}
    dag = make_dag(
        "cancel",
        [
            StepSpec("tree", command="sleep 600 & sleep 600", env=env),
            StepSpec("stubborn", command="trap '' TERM; sleep 600", env=env),
            call("forever", "sleep_forever"),
            call("waiting", "noop", "tree"),  # pending behind a running step
            call("retrier", "always_fail", retries=5, retry_delay=600),  # waiting to retry
        ],
    )
    rec = Recorder()
    driver = RunDriver(
        RunState(dag, "run-cancel"), LocalExecutor(log_dir=tmp_path, grace=GRACE), rec
    )
    result: list[RunStatus] = []

    async def run() -> None:
        result.append(await driver.run())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await wait_until(
            lambda: (
                len(procs.live_processes(mark)) >= 5  # sh+2 sleeps, sh+sleep
                and driver.state.steps["retrier"].status is S.RETRYING
                and driver.state.steps["forever"].status is S.RUNNING
            )
        )
        t0 = time.monotonic()
        driver.cancel("stop it")
        driver.cancel("twice is harmless")
    assert time.monotonic() - t0 < GRACE + 3
    assert result == [RunStatus.CANCELLED]
    check_event_stream(rec.events, dag, "run-cancel", RunStatus.CANCELLED)
    for sid in dag.steps:
        last = rec.of(StepStatusEvent, sid)[-1]
        assert last.status is S.CANCELLED, sid
        assert last.error == "stop it"
    assert rec.step_statuses("waiting") == [S.CANCELLED]
    assert procs.wait_gone(mark) == []
    assert driver.state.status is RunStatus.CANCELLED
    driver.cancel()  # after the end: ignored, no new events
    assert isinstance(rec.events[-1], DagRunStatusEvent)


async def test_outer_cancellation_kills_processes(tmp_path: Path) -> None:
    """Cancelling the task that runs the driver (daemon shutdown) also reaches the processes."""
    mark = procs.new_mark()
    dag = make_dag(
        "shutdown", [StepSpec("tree", command="sleep 600 & sleep 600", env={procs.MARK_VAR: mark})]
    )
    driver = RunDriver(RunState(dag, "run-shutdown"), LocalExecutor(grace=GRACE), Recorder())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(driver.run)
        await wait_until(lambda: len(procs.live_processes(mark)) >= 3)
        nursery.cancel_scope.cancel()
    assert procs.wait_gone(mark) == []


async def test_timeout_through_the_engine(tmp_path: Path) -> None:
    mark = procs.new_mark()
    dag = make_dag(
        "timeout",
        [
            StepSpec(
                "slow", command="sleep 600 & sleep 600", env={procs.MARK_VAR: mark}, timeout=0.3
            ),
            call("next", "noop", "slow"),
        ],
    )
    rec = Recorder()
    status = await run_dag(RunState(dag, "run-timeout"), LocalExecutor(grace=GRACE), rec)
    assert status is RunStatus.FAILED
    final = rec.of(StepStatusEvent, "slow")[-1]
    assert (final.status, final.error) == (S.FAILED, "timed out after 0.3s")
    assert [e.error for e in rec.of(ErrorEvent)] == ["timed out after 0.3s"]
    assert rec.last_status("next") is S.UPSTREAM_FAILED
    assert procs.wait_gone(mark) == []


# ---------------------------------------------------------------------------- concurrency caps


async def test_max_active_steps(autojump_clock: trio.testing.MockClock) -> None:
    dag = make_dag("capped", [call(f"h{i}", "hold") for i in range(8)], max_active_steps=3)
    rec = Recorder()
    t0 = trio.current_time()
    status = await RunDriver(
        RunState(dag, "run-capped-steps"), LocalExecutor(), rec, clock=trio_wall_clock(0)
    ).run()
    assert status is RunStatus.SUCCESS
    assert stepfuncs.concurrency["run-capped-steps"] == [0, 3]
    assert trio.current_time() - t0 == 3  # batches of 3, 3, 2 one second each
    assert max(e.running_steps for e in rec.of(DagRunProgressEvent)) == 3
    check_event_stream(rec.events, dag, "run-capped-steps", RunStatus.SUCCESS)


async def test_global_step_slots_across_runs(autojump_clock: trio.testing.MockClock) -> None:
    slots = trio.CapacityLimiter(2)
    group = procs.new_mark()
    recorders = [Recorder(), Recorder()]
    dags = [make_dag(f"dag{n}", [call(f"h{i}", "hold") for i in range(4)]) for n in range(2)]
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        for n in range(2):
            state = RunState(dags[n], f"run-slots-{n}", {"group": group})
            driver = RunDriver(
                state, LocalExecutor(), recorders[n], clock=trio_wall_clock(0), step_slots=slots
            )
            nursery.start_soon(driver.run)
    assert stepfuncs.concurrency[group] == [0, 2]
    assert trio.current_time() - t0 == 4  # 8 one-second steps, two at a time
    for n, rec in enumerate(recorders):
        check_event_stream(rec.events, dags[n], f"run-slots-{n}", RunStatus.SUCCESS)
        # A step waiting for a slot is not "running" yet.
        assert all(e.running_steps <= 2 for e in rec.of(DagRunProgressEvent))


async def test_cancel_while_waiting_for_a_step_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    slots = trio.CapacityLimiter(1)
    dag = make_dag("slot-cancel", [call("one", "sleep_forever"), call("two", "sleep_forever")])
    rec = Recorder()
    driver = RunDriver(
        RunState(dag, "run-slot-cancel"),
        LocalExecutor(),
        rec,
        clock=trio_wall_clock(0),
        step_slots=slots,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(driver.run)
        await trio.sleep(5)
        # Both were dispatched; whichever got the slot runs, the other is still pending.
        statuses = sorted(driver.state.steps[sid].status for sid in ("one", "two"))
        assert statuses == [S.PENDING, S.RUNNING]
        driver.cancel()
    assert driver.state.status is RunStatus.CANCELLED
    histories = sorted([rec.step_statuses("one"), rec.step_statuses("two")], key=len)
    assert histories == [[S.CANCELLED], [S.RUNNING, S.CANCELLED]]
    assert slots.borrowed_tokens == 0
    check_event_stream(rec.events, dag, "run-slot-cancel", RunStatus.CANCELLED)


# ------------------------------------------------------------------------ environment via DAG


async def test_params_and_env_reach_a_shell_step(tmp_path: Path) -> None:
    shown = [
        "$DAGD_PARAM_GREETING",
        "$DAGD_PARAM_EVIL",
        "$FROM_DAG",
        "$SHARED",
        "$DAGD_DAG_ID",
        "$DAGD_RUN_ID",
        "$DAGD_STEP_ID",
        "$DAGD_ATTEMPT",
        "$(pwd)",
    ]
    command = 'printf "%s\\n" ' + " ".join(f'"{v}"' for v in shown)
    work = tmp_path / "work"
    text = f"""
id = "envdag"
[params]
greeting = "hello"
evil = "default"
[env]
FROM_DAG = "dag-value"
SHARED = "dag"
[steps.show]
command = '{command}'
env = {{ SHARED = "step" }}
cwd = '{work}'
"""
    work.mkdir()
    (work / "x").write_text("keep")
    dag = parse_dag(text)
    evil = "$(touch pwned); rm -rf x"
    params = dag.bind_params({"evil": evil})
    rec = Recorder()
    status = await run_dag(
        RunState(dag, "run-env", params), LocalExecutor(log_dir=tmp_path / "logs"), rec
    )
    assert status is RunStatus.SUCCESS, rec.of(ErrorEvent)
    out = (tmp_path / "logs" / "envdag" / "run-env" / "show.1.out").read_text().splitlines()
    assert out[:8] == ["hello", evil, "dag-value", "step", "envdag", "run-env", "show", "1"]
    assert Path(out[8]).resolve() == work.resolve()
    assert sorted(p.name for p in work.iterdir()) == ["x"]


async def test_retry_attempt_numbers_reach_the_step(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # Callables only under MockClock: the attempt number is in the context and the log name.
    dag = make_dag("attempts", [call("w", "fail_until_last_attempt", retries=1, retry_delay=3)])
    status = await run_dag(
        RunState(dag, "run-attempts", {"succeed_on": "2"}),
        LocalExecutor(log_dir=tmp_path),
        Recorder(),
        clock=trio_wall_clock(0),
    )
    assert status is RunStatus.SUCCESS
    assert stepfuncs.calls["run-attempts"] == [("w", 1), ("w", 2)]


@pytest.mark.parametrize("width", [1, 50])
async def test_many_steps_finish(width: int) -> None:
    steps = [call("root", "noop")]
    steps += [call(f"m{i}", "noop", "root") for i in range(width)]
    steps.append(call("sink", "sync_noop", *(f"m{i}" for i in range(width))))
    dag = make_dag(f"fan{width}", steps)
    rec = Recorder()
    assert (
        await run_dag(RunState(dag, f"run-fan{width}"), LocalExecutor(), rec) is RunStatus.SUCCESS
    )
    check_event_stream(rec.events, dag, f"run-fan{width}", RunStatus.SUCCESS)
    assert stepfuncs.calls[f"run-fan{width}"][-1] == ("sink", 1)


async def test_a_queued_run_cancelled_before_its_driver_starts_stays_cancelled() -> None:
    dag = make_dag("early", [call("a", "noop"), call("b", "noop", "a")])
    rec = Recorder()
    finished: list[RunStatus] = []
    driver = RunDriver(
        RunState(dag, "run-early"),
        LocalExecutor(),
        rec,
        on_finish=lambda state: finished.append(state.status),
    )
    driver.cancel("cancelled by user")
    assert await driver.run() is RunStatus.CANCELLED
    assert finished == [RunStatus.CANCELLED]
    statuses = [e.status for e in rec.events if isinstance(e, StepStatusEvent)]
    assert StepStatus.RUNNING not in statuses and StepStatus.SUCCESS not in statuses
    [run_event] = [e for e in rec.events if isinstance(e, DagRunStatusEvent)]
    assert run_event.status is RunStatus.CANCELLED
