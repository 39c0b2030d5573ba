"""One run and one DAG described in full, as the protocol's `run` and `dag` answers carry them
(docs/protocol.md, `get_run` and `get_dag`). Pure: the daemon hands in what it knows (a live
run state, or the store's records; a loaded DAG) and gets the answer's values back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from dagd.core.model import DagSpec, StepSpec, StepStatus, WaitFor, command_text
from dagd.core.outcome import redact_url
from dagd.core.protocol.answers import (
    DagDetail,
    DagSummary,
    Edge,
    RunDetail,
    StepDefinition,
    StepDetail,
    TriggerKind,
)
from dagd.core.records import AttemptRecord, RunRecord
from dagd.core.runstate import RunState, duration_ms, waiting_for
from dagd.core.spec import format_duration


class StepRow(Protocol):
    """What the store keeps of a step's latest state in a run (dagd.daemon.store.StepRecord)."""

    @property
    def step_id(self) -> str: ...
    @property
    def status(self) -> StepStatus: ...
    @property
    def start_time(self) -> float | None: ...
    @property
    def end_time(self) -> float | None: ...
    @property
    def duration(self) -> int | None: ...
    @property
    def retry_count(self) -> int: ...
    @property
    def error(self) -> str | None: ...
    @property
    def attempt(self) -> int: ...
    @property
    def outputs(self) -> Mapping[str, Any] | None: ...


def trigger_kind(run_id: str) -> TriggerKind | None:
    """What started a run, from its id's prefix (`manual__...`, `scheduled__...`); None for an
    id dagd did not make."""
    prefix = run_id.partition("__")[0]
    return TriggerKind(prefix) if prefix in {kind.value for kind in TriggerKind} else None


def live_run_detail(
    state: RunState,
    record: RunRecord,
    attempts: Mapping[str, list[AttemptRecord]],
    version: str | None,
) -> RunDetail:
    """A run in memory, from its live state: every step of its definition as it is now, with
    the attempts the store recorded (by step id)."""
    steps = [
        StepDetail(
            sid,
            st.status,
            st.start_time,
            st.end_time,
            duration_ms(st.start_time, st.end_time),
            st.retry_count,
            st.error,
            st.attempts_before + st.attempt,
            list(st.spec.depends_on),
            attempts.get(sid, []),
            st.spec.handler,
            dict(st.outputs or {}),
            waiting_for(st),
        )
        for sid, st in state.steps.items()
    ]
    return _run_detail(record, version, steps)


def stored_run_detail(
    record: RunRecord,
    rows: Sequence[StepRow],
    dag: DagSpec | None,
    attempts: Mapping[str, list[AttemptRecord]],
    version: str | None,
) -> RunDetail:
    """A run from the store: every step of `dag` (its definition; None: unknown, then only the
    steps that have rows) in file order, then its handlers, a step without a row as pending,
    then any step with a row that the definition lacks."""
    by_step = {row.step_id: row for row in rows}
    specs = {**dag.steps, **dag.handlers} if dag is not None else {}
    step_ids = list(specs)
    known = set(step_ids)
    step_ids += [sid for sid in by_step if sid not in known]
    steps = []
    for sid in step_ids:
        spec = specs.get(sid)
        ups = list(spec.depends_on) if spec is not None else []
        handler = spec.handler if spec is not None else None
        row = by_step.get(sid)
        if row is None:
            steps.append(
                StepDetail(sid, StepStatus.PENDING, None, None, None, 0, None, 0, ups, [], handler)
            )
            continue
        steps.append(
            StepDetail(
                sid,
                row.status,
                row.start_time,
                row.end_time,
                row.duration,
                row.retry_count,
                row.error,
                row.attempt,
                ups,
                attempts.get(sid, []),
                handler,
                dict(row.outputs or {}),
            )
        )
    return _run_detail(record, version, steps)


def _run_detail(record: RunRecord, version: str | None, steps: list[StepDetail]) -> RunDetail:
    return RunDetail(
        record,
        trigger_kind(record.run_id),
        duration_ms(record.started_at, record.ended_at),
        version,
        steps,
    )


def step_levels(dag: DagSpec) -> dict[str, int]:
    """Each step's depth in the DAG's graph, by step id: 0 for a step without upstreams, else
    one more than its deepest upstream (the column of a left-to-right drawing)."""
    levels: dict[str, int] = {}
    for sid in dag.order:  # upstreams first
        levels[sid] = 1 + max((levels[up] for up in dag.steps[sid].depends_on), default=-1)
    return levels


def dag_detail(dag: DagSpec, summary: DagSummary) -> DagDetail:
    """A loaded DAG with its steps' definitions in file order, each with its graph level (0
    without upstreams, else one more than its deepest upstream), and its edges."""
    levels = step_levels(dag)
    steps = [_definition(spec, levels.get(sid, 0)) for sid, spec in dag.steps.items()]
    handlers = [_definition(spec, 0) for spec in dag.handlers.values()]
    edges = [Edge(up, sid) for sid, spec in dag.steps.items() for up in spec.depends_on]
    return DagDetail(
        summary,
        dag.catchup,
        dag.max_active_runs,
        dag.max_active_steps,
        steps,
        edges,
        handlers,
        list(dag.after),
    )


def _definition(spec: StepSpec, level: int) -> StepDefinition:
    return StepDefinition(
        spec.id,
        spec.description,
        list(spec.command) if isinstance(spec.command, tuple) else spec.command,
        spec.call,
        list(spec.depends_on),
        spec.executor,
        spec.retries,
        spec.retry_delay,
        spec.timeout,
        spec.trigger_rule,
        level,
        spec.handler,
        [redact_url(url) for url in spec.notify] if spec.notify else None,
        None if spec.precondition is None else command_text(spec.precondition),
        None if spec.wait_for is None else wait_for_text(spec.wait_for),
        spec.run,
        None if spec.run is None else dict(spec.run_params),
    )


def wait_for_text(wait_for: WaitFor) -> str:
    """A step's wait_for for people, one line: "test -f x (every 30s, up to 1h)"."""
    every, limit = format_duration(wait_for.interval), format_duration(wait_for.timeout)
    return f"{command_text(wait_for.command)} (every {every}, up to {limit})"


__all__ = ["dag_detail", "live_run_detail", "step_levels", "stored_run_detail", "trigger_kind"]
