"""dagd.core.detail: a run and a DAG described in full for get_run and get_dag."""

from __future__ import annotations

import attrs
import pytest

from dagd.core.detail import dag_detail, live_run_detail, stored_run_detail, trigger_kind
from dagd.core.model import DagSpec, RunStatus, StepSpec, StepStatus
from dagd.core.protocol.answers import DagSummary, Edge, TriggerKind
from dagd.core.records import AttemptRecord, RunRecord
from dagd.core.runstate import RunState

T = 1_704_110_400.0


def diamond() -> DagSpec:
    steps = {
        "top": StepSpec("top", command=("echo", "top")),
        "left": StepSpec("left", call="m:f", depends_on=("top",)),
        "right": StepSpec("right", command="echo right", depends_on=("top",)),
        "bottom": StepSpec("bottom", command="true", depends_on=("left", "right")),
        "alone": StepSpec("alone", command="true"),
    }
    return DagSpec("d", steps, ("top", "alone", "left", "right", "bottom"))


@pytest.mark.parametrize(
    ("run_id", "kind"),
    [
        ("manual__2024-01-01T12:00:00.000000+00:00", TriggerKind.MANUAL),
        ("scheduled__2024-01-01T00:00:00+00:00__etl", TriggerKind.SCHEDULED),
        ("backfill__2024", None),
        ("imported", None),
    ],
)
def test_the_trigger_kind_is_read_from_the_run_id(run_id: str, kind: TriggerKind | None) -> None:
    assert trigger_kind(run_id) is kind


def test_dag_detail_levels_edges_and_commands() -> None:
    summary = DagSummary("d", "", None, None, [], [], {})
    detail = dag_detail(diamond(), summary)
    assert detail.summary is summary
    assert [(s.step_id, s.level) for s in detail.steps] == [
        ("top", 0),
        ("left", 1),
        ("right", 1),
        ("bottom", 2),
        ("alone", 0),
    ]
    assert detail.steps[0].command == ["echo", "top"] and detail.steps[2].command == "echo right"
    assert detail.edges == [
        Edge("top", "left"),
        Edge("top", "right"),
        Edge("left", "bottom"),
        Edge("right", "bottom"),
    ]


@attrs.frozen
class Row:
    step_id: str
    status: StepStatus
    start_time: float | None
    end_time: float | None
    duration: int | None
    retry_count: int
    error: str | None
    attempt: int
    outputs: dict[str, object] | None = None


def test_a_stored_run_lists_every_step_of_its_definition() -> None:
    record = RunRecord("d", "manual__x", RunStatus.FAILED, {}, T, T + 1, T + 3.5)
    rows = [
        Row("top", StepStatus.FAILED, T + 1, T + 2, 1000, 0, "exit code 1", 3),
        Row("gone", StepStatus.SUCCESS, T, T, 0, 0, None, 1),  # not in the definition now
    ]
    attempt = AttemptRecord("top", 3, StepStatus.FAILED, T + 1, T + 2, 1000, "exit code 1")
    detail = stored_run_detail(record, rows, diamond(), {"top": [attempt]}, "v" * 64)
    assert detail.trigger is TriggerKind.MANUAL and detail.duration == 2500
    assert [(s.step_id, s.status) for s in detail.steps] == [
        ("top", StepStatus.FAILED),
        ("left", StepStatus.PENDING),
        ("right", StepStatus.PENDING),
        ("bottom", StepStatus.PENDING),
        ("alone", StepStatus.PENDING),
        ("gone", StepStatus.SUCCESS),
    ]
    assert detail.steps[0].attempts == [attempt] and detail.steps[0].attempt == 3
    assert detail.steps[3].depends_on == ["left", "right"] and detail.steps[5].depends_on == []
    # without a definition: only the steps that have rows
    bare = stored_run_detail(record, rows, None, {}, None)
    assert [s.step_id for s in bare.steps] == ["top", "gone"]


def test_a_live_run_is_its_state_now() -> None:
    state = RunState(diamond(), "scheduled__2024-01-01T00:00:00+00:00__d", {})
    state.start(T)
    state.step_started("top", T + 0.5)
    record = RunRecord("d", state.run_id, state.status, {}, T, state.started_at, None)
    detail = live_run_detail(state, record, {}, None)
    assert detail.trigger is TriggerKind.SCHEDULED and detail.duration is None
    top = detail.steps[0]
    assert (top.step_id, top.status, top.attempt, top.start_time) == (
        "top",
        StepStatus.RUNNING,
        1,
        T + 0.5,
    )
    assert {s.status for s in detail.steps[1:]} == {StepStatus.PENDING}
