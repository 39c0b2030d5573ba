"""Pools in the engine, with real processes: several runs share one `Pools`; the steps record
their own start and end times, and those say how many ran at once and in what order."""

from __future__ import annotations

from pathlib import Path

import stepfuncs
import trio
import trio.testing

from dagd.core.events import StepStatusEvent
from dagd.core.model import DagSpec, RunStatus, StepSpec, StepStatus
from dagd.core.runstate import RunState
from dagd.runtime.engine import RunDriver
from dagd.runtime.local.executor import LocalExecutor
from dagd.runtime.pools import Pools


def timed_step(step_id: str, log: Path, seconds: float, pool: str | None = "w") -> StepSpec:
    """A shell step that appends `<run> <step> <start> <end>` (its own clock) to `log`."""
    command = (
        f"s=$(date +%s.%N); sleep {seconds}; e=$(date +%s.%N); "
        f'echo "$DAGD_RUN_ID $DAGD_STEP_ID $s $e" >> {log}'
    )
    return StepSpec(step_id, command=command, pool=pool)


def dag(dag_id: str, *steps: StepSpec) -> DagSpec:
    return DagSpec(dag_id, {s.id: s for s in steps}, tuple(s.id for s in steps))


def run_state(dag_spec: DagSpec, run_id: str, queued_at: float) -> RunState:
    state = RunState(dag_spec, run_id)
    state.queued_at = queued_at
    return state


def intervals(log: Path) -> list[tuple[str, str, float, float]]:
    rows = [line.split() for line in log.read_text().splitlines()]
    return [(run, step, float(s), float(e)) for run, step, s, e in rows]


def most_at_once(spans: list[tuple[str, str, float, float]]) -> int:
    edges = sorted([(s, 1) for *_, s, _ in spans] + [(e, -1) for *_, e in spans])
    running = most = 0
    for _, change in edges:  # an end before a start at the same instant
        running += change
        most = max(most, running)
    return most


class Events:
    def __init__(self) -> None:
        self.items: list[object] = []

    def __call__(self, event: object) -> None:
        self.items.append(event)

    def waiting(self, run_id: str, step_id: str) -> list[str | None]:
        return [
            e.waiting_for
            for e in self.items
            if isinstance(e, StepStatusEvent) and e.run_id == run_id and e.step_id == step_id
        ]


def test_a_pool_never_runs_more_than_its_slots_over_several_dags(tmp_path: Path) -> None:
    log = tmp_path / "times"
    pools = Pools({"w": 2})
    executor = LocalExecutor()
    states = [
        run_state(
            dag(f"d{i}", *(timed_step(f"s{j}", log, 0.1) for j in range(3))), f"r{i}", float(i)
        )
        for i in range(3)
    ]
    # A step of no pool beside them is not held back by it.
    free = run_state(dag("free", timed_step("f", log, 0.1, pool=None)), "rfree", 9.0)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for state in [*states, free]:
                driver = RunDriver(state, executor, lambda e: None, pools=pools)
                nursery.start_soon(driver.run)
            await trio.sleep(0.05)
            usage = pools.usage()[0]
            assert (usage.in_use, usage.waiting) == (2, 7)

    trio.run(main)
    assert all(s.status is RunStatus.SUCCESS for s in [*states, free])
    spans = intervals(log)
    pooled = [span for span in spans if span[0] != "rfree"]
    assert len(pooled) == 9
    assert most_at_once(pooled) == 2
    assert most_at_once(spans) == 3  # the free step ran beside two pooled ones
    assert pools.usage()[0].in_use == 0


def test_waiting_steps_are_served_in_trigger_order_not_asking_order(tmp_path: Path) -> None:
    log = tmp_path / "times"
    pools = Pools({"w": 1})
    executor = LocalExecutor()
    holder = run_state(dag("h", timed_step("s", log, 0.2)), "holder", 0.0)
    # Asked in this order, queued in the opposite one.
    late = [
        run_state(dag(f"d{i}", timed_step("s", log, 0.02)), f"q{i}", float(10 - i))
        for i in range(4)
    ]
    events = Events()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(RunDriver(holder, executor, events, pools=pools).run)
            while pools.usage()[0].in_use == 0:
                await trio.sleep(0.01)
            for state in late:
                nursery.start_soon(RunDriver(state, executor, events, pools=pools).run)
                await trio.sleep(0.01)

    trio.run(main)
    served = [run for run, *_ in sorted(intervals(log), key=lambda span: span[2])]
    assert served == ["holder", "q3", "q2", "q1", "q0"]
    # Each waiting step said so while it waited, then stopped saying so.
    said = events.waiting("q0", "s")
    assert said.count("pool w") == 1
    assert said[-3:] == [None, None, None]  # its slot, running, success
    assert "pool w" not in events.waiting("holder", "s")


def test_cancelling_a_waiting_step_releases_nothing_and_never_deadlocks(tmp_path: Path) -> None:
    log = tmp_path / "times"
    pools = Pools({"w": 1})
    executor = LocalExecutor()
    holder = run_state(dag("h", timed_step("s", log, 0.3)), "holder", 0.0)
    waiter = run_state(dag("w1", timed_step("s", log, 0.02)), "waiter", 1.0)
    after = run_state(dag("w2", timed_step("s", log, 0.02)), "after", 2.0)
    events = Events()

    async def main() -> None:
        with trio.fail_after(5):  # a deadlock fails the test rather than hanging it
            await cancel_one()

    async def cancel_one() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(RunDriver(holder, executor, events, pools=pools).run)
            while pools.usage()[0].in_use == 0:
                await trio.sleep(0.01)
            waiting = RunDriver(waiter, executor, events, pools=pools)
            nursery.start_soon(waiting.run)
            nursery.start_soon(RunDriver(after, executor, events, pools=pools).run)
            while pools.usage()[0].waiting < 2:
                await trio.sleep(0.01)
            assert events.waiting("waiter", "s")[-1] == "pool w"
            waiting.cancel()
            await trio.sleep(0.01)
            usage = pools.usage()[0]
            # The holder still holds its slot: the cancel gave nothing back it did not have.
            assert (usage.in_use, usage.waiting) == (1, 1)

    trio.run(main)
    assert waiter.status is RunStatus.CANCELLED
    assert waiter.steps["s"].status is StepStatus.CANCELLED
    assert waiter.steps["s"].start_time is None  # its command never ran
    assert holder.status is after.status is RunStatus.SUCCESS
    assert [run for run, *_ in intervals(log)] == ["holder", "after"]
    assert pools.usage()[0].in_use == pools.usage()[0].waiting == 0


def test_an_unconfigured_pool_fails_the_attempt_with_its_name(tmp_path: Path) -> None:
    state = run_state(dag("d", timed_step("s", tmp_path / "t", 0.01, pool="gone")), "r", 0.0)
    trio.run(RunDriver(state, LocalExecutor(), lambda e: None, pools=Pools({"w": 1})).run)
    assert state.steps["s"].status is StepStatus.FAILED
    assert state.steps["s"].error == "pool 'gone' is not configured (configured: w)"


def test_pool_slots_under_a_mock_clock_take_turns_of_one_second() -> None:
    """A 1 s step (`stepfuncs:hold`) holding all three slots, then five runs asking for two or
    one slot each, started in whatever order trio runs them: they go in pairs by trigger
    order, one second a turn (virtual time), never two pairs at once."""
    pools = Pools({"w": 3})
    group = "pools-mock"
    params = {"group": group}

    def held(dag_id: str, slots: int, queued_at: float) -> RunState:
        spec = StepSpec("s", call="stepfuncs:hold", pool="w", pool_slots=slots)
        state = RunState(dag(dag_id, spec), dag_id, params)
        state.queued_at = queued_at
        return state

    first = held("first", 3, 0.0)
    later = [held(f"m{i}", n, 1.0 + i) for i, n in enumerate((2, 1, 2, 1, 1))]
    finished: dict[str, float] = {}

    async def drive(state: RunState) -> None:
        await RunDriver(state, LocalExecutor(), lambda e: None, pools=pools).run()
        finished[state.run_id] = trio.current_time()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drive, first)
            while pools.usage()[0].in_use < 3:
                await trio.sleep(0)
            for state in reversed(later):
                nursery.start_soon(drive, state)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert finished == {"first": 1.0, "m0": 2.0, "m1": 2.0, "m2": 3.0, "m3": 3.0, "m4": 4.0}
    assert stepfuncs.concurrency[group][1] == 2
    assert all(s.status is RunStatus.SUCCESS for s in [first, *later])
