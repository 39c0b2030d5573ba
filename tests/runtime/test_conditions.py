"""A step's precondition and wait_for (dagd/runtime/conditions.py, the engine): the polling
loop's timing under MockClock, then real processes through run_dag and RunDriver."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path
from typing import Any

import proctools as procs
import trio
import trio.testing

from dagd.core.events import StepStatusEvent
from dagd.core.model import RunStatus, StepStatus, WaitFor
from dagd.core.runstate import RunState
from dagd.core.spec import parse_dag
from dagd.runtime.conditions import MIN_POLL_INTERVAL, poll_until
from dagd.runtime.engine import RunDriver, run_dag
from dagd.runtime.executor import CheckResult
from dagd.runtime.local.executor import LocalExecutor

S = StepStatus


# ------------------------------------------------------------ the loop, in virtual time


class FakeCheck:
    """Says no `fails` times (each poll taking `takes` seconds), then yes; records when."""

    def __init__(self, fails: int, takes: float = 0.0, started: bool = True) -> None:
        self.fails, self.takes, self.started = fails, takes, started
        self.times: list[float] = []

    async def __call__(self) -> CheckResult:
        self.times.append(trio.current_time())
        await trio.sleep(self.takes)
        if len(self.times) > self.fails:
            return CheckResult(True, "exited 0")
        return CheckResult(False, f"exited 1: try {len(self.times)}", self.started)


def mock_run(fn: Any) -> Any:
    return trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


def test_polls_every_interval_after_each_poll_until_one_succeeds() -> None:
    check = FakeCheck(fails=3, takes=2.0)

    async def main() -> tuple[str | None, float]:
        start = trio.current_time()
        result = await poll_until(check, WaitFor("x", interval=30.0, timeout=7200.0))
        return result, trio.current_time() - start

    result, took = mock_run(main)
    assert result is None
    assert check.times == [0.0, 32.0, 64.0, 96.0]  # a poll of 2 s, then 30 s of sleep
    assert took == 98.0


def test_times_out_with_the_last_poll_s_words_and_stops_the_running_poll() -> None:
    check = FakeCheck(fails=10**6, takes=25.0)

    async def main() -> tuple[str | None, float]:
        result = await poll_until(check, WaitFor("x", interval=30.0, timeout=7200.0))
        return result, trio.current_time()

    result, took = mock_run(main)
    assert took == 7200.0
    assert result == "wait_for timed out after 2h: the last poll exited 1: try 131"
    assert len(check.times) == 131  # the 131st was cut short at 2h: its words are its own


def test_a_timeout_before_any_poll_ended_says_so() -> None:
    async def main() -> str | None:
        return await poll_until(FakeCheck(fails=1, takes=100.0), WaitFor("x", 1.0, 90.0))

    assert mock_run(main) == "wait_for timed out after 1m30s: no poll ended"


def test_a_command_that_cannot_start_fails_at_once() -> None:
    check = FakeCheck(fails=5, started=False)

    async def main() -> str | None:
        return await poll_until(check, WaitFor("x", 30.0, 3600.0))

    assert mock_run(main) == "wait_for exited 1: try 1"
    assert check.times == [0.0]


def test_a_tiny_interval_is_raised_to_the_floor() -> None:
    check = FakeCheck(fails=2)

    async def main() -> None:
        await poll_until(check, WaitFor("x", interval=0.001, timeout=60.0))

    mock_run(main)
    assert check.times == [0.0, MIN_POLL_INTERVAL, 2 * MIN_POLL_INTERVAL]


# ---------------------------------------------------------------- real processes


async def run(toml: str, **values: object) -> tuple[RunStatus, list[Any]]:
    dag = parse_dag(textwrap.dedent(toml).format(**values), "t.toml", "t")
    events: list[Any] = []
    state = RunState(dag, "manual__t", dag.bind_params(None))
    status = await run_dag(state, LocalExecutor(grace=0.3), events.append)
    return status, events


def of(events: list[Any], step_id: str) -> list[StepStatusEvent]:
    return [e for e in events if isinstance(e, StepStatusEvent) and e.step_id == step_id]


async def test_a_failing_precondition_skips_the_step_with_its_reason(tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    status, events = await run(
        """
        [params]
        day = "sunday"
        [steps.load]
        command = "touch {ran}"
        precondition = 'echo "not on $DAGD_PARAM_DAY" >&2; exit 1'
        [steps.report]
        command = "true"
        depends_on = ["load"]
        [steps.cleanup]
        command = "true"
        depends_on = ["load"]
        trigger_rule = "none_failed"
        [steps.gate]
        command = "true"
        precondition = ["test", "-d", "/"]
        """,
        ran=ran,
    )
    assert status is RunStatus.SUCCESS  # a skip is no failure
    [skip] = of(events, "load")  # pending -> skipped, never running
    assert (skip.status, skip.error) == (S.SKIPPED, "precondition exited 1: not on sunday")
    assert skip.start_time is None
    assert not ran.exists()
    assert of(events, "report")[-1].status is S.SKIPPED  # all_success: its upstream skipped
    assert of(events, "cleanup")[-1].status is S.SUCCESS  # none_failed: a skip is fine
    assert of(events, "gate")[-1].status is S.SUCCESS  # exit 0: the step runs


async def test_a_precondition_sees_upstream_outputs(tmp_path: Path) -> None:
    status, events = await run(
        """
        [steps.count]
        command = 'echo rows=0 >> "$DAGD_OUTPUT"'
        [steps.load]
        command = "true"
        depends_on = ["count"]
        precondition = 'test "$DAGD_OUTPUT_COUNT_ROWS" -gt 0'
        """
    )
    assert status is RunStatus.SUCCESS
    assert of(events, "load")[-1].error == "precondition exited 1"


async def test_a_precondition_that_cannot_start_fails_the_step() -> None:
    status, events = await run(
        """
        [steps.a]
        command = "true"
        precondition = ["/no/such/program"]
        """
    )
    assert status is RunStatus.FAILED
    assert of(events, "a")[-1].error == (
        "precondition could not start: cannot start '/no/such/program': No such file or directory"
    )


async def test_wait_for_polls_until_the_file_appears_then_runs(tmp_path: Path) -> None:
    ready, polls = tmp_path / "ready", tmp_path / "polls"

    async def make_ready() -> None:
        await trio.sleep(0.35)
        ready.touch()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(make_ready)
        status, events = await run(
            """
            [steps.a]
            command = "echo done"
            wait_for = {{ command = 'echo poll >> {polls}; test -f {ready}', interval = "0.1s" }}
            """,
            ready=ready,
            polls=polls,
        )
    assert status is RunStatus.SUCCESS
    waiting, started, done = of(events, "a")[-3:]
    assert (waiting.status, waiting.waiting_for) == (
        S.RUNNING,
        f"echo poll >> {polls}; test -f {ready}",
    )
    assert (started.status, started.waiting_for) == (S.RUNNING, None)
    assert started.start_time == waiting.start_time
    assert done.status is S.SUCCESS
    assert 3 <= len(polls.read_text().split()) <= 6


async def test_wait_for_times_out_with_the_last_poll_s_error(tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    status, events = await run(
        """
        [steps.a]
        command = "touch {ran}"
        wait_for = {{ command = "echo not yet >&2; false", interval = "0.1s", timeout = "0.4s" }}
        """,
        ran=ran,
    )
    assert status is RunStatus.FAILED
    assert of(events, "a")[-1].error == (
        "wait_for timed out after 400ms: the last poll exited 1: not yet"
    )
    assert not ran.exists()


async def test_a_cancel_stops_a_waiting_step_at_once(tmp_path: Path) -> None:
    mark = procs.new_mark()
    dag = parse_dag(
        textwrap.dedent(
            f"""
            [env]
            {procs.MARK_VAR} = "{mark}"
            [steps.a]
            command = "true"
            wait_for = {{ command = "false", interval = "1h", timeout = "2h" }}
            [steps.b]
            command = "true"
            wait_for = {{ command = "sleep 30", interval = "1s" }}
            """
        ),
        "t.toml",
        "t",
    )
    events: list[Any] = []
    driver = RunDriver(RunState(dag, "manual__t"), LocalExecutor(grace=0.3), events.append)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(driver.run)
        with trio.fail_after(5):
            while not all(of(events, sid) and of(events, sid)[-1].waiting_for for sid in "ab"):
                await trio.sleep(0.01)
        await trio.sleep(0.1)  # a sleeps between polls; b's poll (sleep 30) runs
        assert procs.live_processes(mark)  # b's poll
        began = time.monotonic()
        driver.cancel()
    took = time.monotonic() - began
    assert driver.state.status is RunStatus.CANCELLED
    assert took < 1.0, took
    assert [of(events, sid)[-1].status for sid in "ab"] == [S.CANCELLED, S.CANCELLED]
    assert procs.wait_gone(mark) == []


async def test_a_waiting_step_holds_none_of_the_daemon_s_step_slots(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    dag = parse_dag(
        textwrap.dedent(
            f"""
            [steps.waits]
            command = "true"
            wait_for = {{ command = "test -f {ready}", interval = "0.05s" }}
            [steps.other]
            command = "true"
            """
        ),
        "t.toml",
        "t",
    )
    events: list[Any] = []

    def publish(event: Any) -> None:
        events.append(event)
        # `other` ran while `waits` polled: only then may `waits` go on.
        if isinstance(event, StepStatusEvent) and (event.step_id, event.status) == (
            "other",
            S.SUCCESS,
        ):
            ready.touch()

    with trio.fail_after(10):
        status = await run_dag(
            RunState(dag, "manual__t"),
            LocalExecutor(grace=0.3),
            publish,
            step_slots=trio.CapacityLimiter(1),
        )
    assert status is RunStatus.SUCCESS
    assert [e.status for e in of(events, "waits")] == [S.RUNNING, S.RUNNING, S.SUCCESS]
