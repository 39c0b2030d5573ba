"""The executor seam: executors resolved by name, leftover handles reported through the engine,
and recovery's clean-up routed to the executor that made each handle.

A fake executor stands in for a second kind (steps on a cluster, say): it plugs in through the
registry alone, with no change to the engine.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from pathlib import Path

import pytest
import trio

from dagd.core.model import DagSpec, RunStatus, StepSpec
from dagd.core.runstate import RunState
from dagd.runtime.engine import RunDriver, run_dag
from dagd.runtime.executor import (
    AttemptResult,
    Leftover,
    LeftoverHandle,
    LeftoverSink,
    StepContext,
    StepExecutor,
    clean_up_leftovers,
    executor_for,
    executor_registry,
)
from dagd.runtime.local.executor import LocalExecutor


class FakeExecutor:
    """Succeeds every attempt after reporting a handle; records what it is asked."""

    def __init__(self, name: str, log_dir: Path | None = None, fail_clean_up: bool = False):
        self.name = name
        self.log_dir = log_dir
        self.fail_clean_up = fail_clean_up
        self.ran: list[StepContext] = []
        self.cleaned: list[tuple[list[Leftover], set[str]]] = []

    async def run(
        self, step: StepSpec, ctx: StepContext, on_leftover: LeftoverSink | None = None
    ) -> AttemptResult:
        self.ran.append(ctx)
        if on_leftover is not None:
            on_leftover(ctx, {"executor": self.name, "key": f"{ctx.step_id}-{ctx.attempt}"})
        await trio.lowlevel.checkpoint()
        return AttemptResult(True)

    async def clean_up(self, leftovers: Collection[Leftover], run_ids: Collection[str]) -> None:
        self.cleaned.append((list(leftovers), set(run_ids)))
        if self.fail_clean_up:
            raise RuntimeError("cluster unreachable")


def dag_of(*step_ids: str) -> DagSpec:
    steps = {sid: StepSpec(sid, command="true") for sid in step_ids}
    return DagSpec(id="d", steps=steps, order=step_ids)


def test_a_fake_executor_satisfies_the_protocol() -> None:
    registry: dict[str, StepExecutor] = executor_registry(FakeExecutor("local"))
    assert list(registry) == ["local"]


def test_registry_refuses_two_executors_of_one_name() -> None:
    with pytest.raises(ValueError, match="two executors are named 'local'"):
        executor_registry(LocalExecutor(), FakeExecutor("local"))


async def test_every_step_runs_on_local_today() -> None:
    fake = FakeExecutor("local")
    assert executor_for(executor_registry(fake), StepSpec("s", command="true")) is fake


async def test_an_unregistered_executor_fails_the_attempt_not_the_engine() -> None:
    missing = executor_for(executor_registry(FakeExecutor("dask")), StepSpec("s", command="x"))
    result = await missing.run(StepSpec("s", command="x"), StepContext("d", "r", "s", 1, {}))
    assert result == AttemptResult(False, "no executor named 'local' (registered: dask)")
    rec: list[object] = []
    assert await run_dag(RunState(dag_of("a"), "r1"), {}, rec.append) is RunStatus.FAILED
    assert "no executor named 'local' (registered: none)" in repr(rec)


async def test_the_engine_runs_a_registered_executor_and_passes_on_its_handles(
    tmp_path: Path,
) -> None:
    fake = FakeExecutor("local", log_dir=tmp_path)
    handles: list[tuple[str, int, LeftoverHandle]] = []
    driver = RunDriver(
        RunState(dag_of("a", "b"), "r1"),
        executor_registry(fake),
        lambda event: None,
        on_leftover=lambda ctx, h: handles.append((ctx.step_id, ctx.attempt, h)),
    )
    assert await driver.run() is RunStatus.SUCCESS
    assert sorted(c.step_id for c in fake.ran) == ["a", "b"]
    assert all(c.log_dir == tmp_path for c in fake.ran)  # the executor's own log folder
    assert sorted(handles, key=str) == [
        ("a", 1, {"executor": "local", "key": "a-1"}),
        ("b", 1, {"executor": "local", "key": "b-1"}),
    ]


async def test_clean_up_goes_to_the_executor_that_made_each_handle(
    caplog: pytest.LogCaptureFixture,
) -> None:
    local, dask = FakeExecutor("local", fail_clean_up=True), FakeExecutor("dask")
    older = Leftover("r1", "a", {"pgid": 4242})  # from before handles named their executor
    mine = Leftover("r1", "b", {"executor": "dask", "key": "b-1"})
    gone = Leftover("r2", "c", {"executor": "k8s", "pod": "x"})
    with caplog.at_level(logging.WARNING, logger="dagd"):
        await clean_up_leftovers(executor_registry(local, dask), [older, mine, gone], {"r1", "r2"})
    assert local.cleaned == [([older], {"r1", "r2"})]
    assert dask.cleaned == [([mine], {"r1", "r2"})]  # still asked after local's failure
    text = caplog.text
    assert "cannot clean up after r2/c: its executor 'k8s' is not registered" in text
    assert "executor 'local' failed to clean up" in text and "cluster unreachable" in text
