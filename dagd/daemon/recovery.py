"""Crash recovery: what a dead daemon left queued or running is closed out, and what its steps
left behind is killed, before the next daemon starts anything.

Rules this file keeps:
- Nothing stays running across a restart: every run the store has as queued or running gets a
  failed run status, and every step of its DAG that is not final gets a final status (running
  or retrying: failed; pending, or never started so without a row: cancelled), all with the
  error `INTERRUPTED`, then one `dag_run_progress` whose counts have nothing running or
  pending. Finished steps keep theirs, so a retry reruns only what did not succeed.
- The steps of a run are those of the definition it was triggered with, stored with it
  (dagd/core/dagsnapshot.py), whatever the DAG file says now; a run recorded before dagd
  stored definitions (or whose stored one cannot be read) takes the loaded DAG of its id, and
  without one only the steps that have a row are closed out.
- What a step may leave behind is its executor's business: while an attempt runs, the executor
  hands the engine a leftover handle (dagd/runtime/executor.py), `LeftoverRecorder` stores the
  step's latest whole, and at the next start `recover` gives the handles of the unfinished
  runs back to the executors that made them (`clean_up_leftovers`), before anything new runs.
- A leftover is stopped only when it is provably one of ours: each executor's clean-up proves
  it (the local executor: the process group's start time and boot id, and DAGD_RUN_ID for a
  group spawned but not yet recorded when the daemon died; dagd/runtime/local/leftovers.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from dagd.core.dagsnapshot import SHORT_VERSION, SnapshotError, dag_from_json
from dagd.core.events import (
    DagEvent,
    DagRunProgressEvent,
    DagRunStatusEvent,
    ErrorEvent,
    StepStatusEvent,
    completion_percentage,
)
from dagd.core.model import (
    BUCKET_OF,
    DagSpec,
    HandlerKind,
    ProgressBucket,
    RunStatus,
    StepStatus,
)
from dagd.core.records import RunRecord
from dagd.core.runstate import RunState, StepRecordTuple, duration_ms
from dagd.daemon.store import RecordLeftover, StepRecord, Store
from dagd.runtime.executor import (
    Leftover,
    LeftoverHandle,
    StepContext,
    StepExecutor,
    clean_up_leftovers,
)

log = logging.getLogger("dagd")

INTERRUPTED = "interrupted: the daemon stopped"


def interrupted_events(
    runs: list[RunRecord],
    steps: list[StepRecord],
    now: float,
    dags: Mapping[str, DagSpec] | None = None,
    error: str = INTERRUPTED,
) -> list[DagEvent]:
    """The events that close out `runs` (left queued or running) at `now` (UNIX seconds), given
    their steps' rows (`steps`) and each run's DAG definition by run id (`dags`; a run without
    one is closed out over the steps that have a row). Per run, in order: a final status for
    each step that has none (the DAG's steps in its order, then rows of steps it lacks), an
    error event, a progress event over every step (nothing running or pending), and a failed
    run status; `error` is the steps' and the error event's text. Pure: the caller publishes
    them."""
    by_run: dict[str, dict[str, StepRecord]] = {}
    for step in steps:
        by_run.setdefault(step.run_id, {})[step.step_id] = step
    events: list[DagEvent] = []
    for run in runs:
        rows = by_run.get(run.run_id, {})
        dag = dags.get(run.run_id) if dags else None
        # The DAG's steps in order, then its lifecycle handlers, then rows it lacks.
        step_ids = [*dag.order, *dag.handlers] if dag is not None else []
        known = set(step_ids)
        step_ids += [sid for sid in rows if sid not in known]
        counts = dict.fromkeys(ProgressBucket, 0)
        for step_id in step_ids:
            row = rows.get(step_id)
            if row is not None and row.status.finished:
                counts[BUCKET_OF[row.status]] += 1
                continue
            handler = dag.handlers[step_id].handler if dag and step_id in dag.handlers else None
            closed = _closing_event(run, step_id, row, now, error, handler)
            counts[BUCKET_OF[closed.status]] += 1
            events.append(closed)
        total, completed = len(step_ids), counts[ProgressBucket.COMPLETED]
        events.append(ErrorEvent(run.dag_id, run.run_id, None, error, now))
        events.append(
            DagRunProgressEvent(
                run.dag_id,
                run.run_id,
                total,
                completed,
                0,
                counts[ProgressBucket.FAILED],
                0,
                completion_percentage(completed, total),
                now,
            )
        )
        events.append(DagRunStatusEvent(run.dag_id, run.run_id, RunStatus.FAILED, now))
    return events


def _closing_event(
    run: RunRecord,
    step_id: str,
    row: StepRecord | None,
    now: float,
    error: str,
    handler: HandlerKind | None,
) -> StepStatusEvent:
    """The final status of an unfinished step (`row`; None: it never started, so it has no
    row): running or retrying -> failed, pending -> cancelled, with `error`."""
    if row is None:
        return StepStatusEvent(
            run.dag_id,
            run.run_id,
            step_id,
            StepStatus.CANCELLED,
            None,
            now,
            None,
            0,
            error,
            now,
            handler=handler,
        )
    pending = row.status is StepStatus.PENDING
    return StepStatusEvent(
        run.dag_id,
        run.run_id,
        step_id,
        StepStatus.CANCELLED if pending else StepStatus.FAILED,
        row.start_time,
        now,
        duration_ms(row.start_time, now),
        row.retry_count,
        error,
        now,
        attempt=row.attempt,
        handler=handler,
    )


def close_out_state(state: RunState, now: float, error: str) -> tuple[list[DagEvent], RunState]:
    """A run whose driver failed (a bug: `Daemon._drive`) closed out as recovery closes out an
    interrupted one, at `now` (UNIX seconds), with `error` as the reason: the events (see
    `interrupted_events`) and the run as they leave it, failed with every step final (what
    the daemon keeps at hand for snapshots and a retry). Pure; `state` is not changed."""
    rows = [
        StepRecord(
            state.run_id,
            sid,
            st.status,
            st.retry_count,
            st.start_time,
            st.end_time,
            None,
            st.error,
            attempt=st.attempts_before + st.attempt,
        )
        for sid, st in state.steps.items()
    ]
    record = RunRecord(
        state.dag.id, state.run_id, state.status, dict(state.params), 0.0, state.started_at, None
    )
    events = interrupted_events([record], rows, now, {state.run_id: state.dag}, error)
    final: dict[str, StepRecordTuple] = {r.step_id: r.restored() for r in rows}
    for e in events:
        if isinstance(e, StepStatusEvent):
            final[e.step_id] = (
                e.status,
                e.retry_count,
                e.start_time,
                e.end_time,
                e.error,
                e.attempt,
            )
    closed = RunState.restore(
        state.dag,
        state.run_id,
        state.params,
        RunStatus.FAILED,
        final,
        progress_interval=state.progress_interval,
    )
    closed.started_at, closed.ended_at = state.started_at, now
    return events, closed


def run_definitions(
    store: Store, runs: list[RunRecord], loaded: Mapping[str, DagSpec]
) -> dict[str, DagSpec]:
    """Each run's DAG definition by run id: the one stored with it, else (none stored, or the
    stored one unreadable: logged) the `loaded` DAG of its id, else none."""
    stored = store.run_definitions(run.run_id for run in runs)
    found: dict[str, DagSpec] = {}
    for run in runs:
        dag: DagSpec | None = None
        if run.run_id in stored:
            version, text = stored[run.run_id]
            try:
                dag = dag_from_json(text)
            except SnapshotError as exc:
                log.warning(
                    "run %s: its stored definition %s cannot be read (%s); closing it out with"
                    " the loaded DAG %s",
                    run.run_id,
                    version[:SHORT_VERSION],
                    exc,
                    run.dag_id,
                )
        dag = dag or loaded.get(run.dag_id)
        if dag is not None:
            found[run.run_id] = dag
    return found


async def kill_leftovers(
    executors: Mapping[str, StepExecutor], runs: list[RunRecord], steps: list[StepRecord]
) -> None:
    """Stop what the steps of `runs` left running: every stored handle of `steps` goes back to
    the registered executor that made it, and each executor also gets the run ids to look for
    what it never reported (`clean_up_leftovers`, dagd/runtime/executor.py: a handle of an
    unregistered executor is logged and skipped, one executor's failure is logged and the
    others still run). Raises nothing an executor raises."""
    leftovers = [
        Leftover(step.run_id, step.step_id, step.leftover)
        for step in steps
        if step.leftover is not None
    ]
    await clean_up_leftovers(executors, leftovers, {run.run_id for run in runs})


async def recover(
    store: Store,
    executors: Mapping[str, StepExecutor],
    publish: Callable[[DagEvent], object],
    now: float,
    loaded: Mapping[str, DagSpec] | None = None,
) -> list[RunRecord]:
    """Close out what the previous process left in `store`: stop its leftovers through
    `executors` (the registry by name, `executor_registry`; see `kill_leftovers`), then publish
    the closing events (see `interrupted_events`; each run's steps from its stored definition,
    else from `loaded`, the DAGs loaded now by id) at `now` (UNIX seconds). Returns the runs it
    closed out. Await it before the daemon accepts runs: a new attempt could otherwise be
    mistaken for a leftover."""
    runs, steps = store.unfinished()
    if not runs:
        return []
    await kill_leftovers(executors, runs, steps)
    dags = run_definitions(store, runs, loaded or {})
    for event in interrupted_events(runs, steps, now, dags):
        publish(event)
    for run in runs:
        log.warning(
            "run %s of %s was %s when the daemon stopped: marked failed",
            run.run_id,
            run.dag_id,
            run.status,
        )
    return runs


class LeftoverRecorder:
    """The engine's `on_leftover(ctx, handle)`: stores a started attempt's leftover handle,
    whole, with its step (the latest replaces the step's earlier one), so `recover` can give
    it back to its executor after a crash."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __call__(self, ctx: StepContext, handle: LeftoverHandle) -> None:
        """Queue `handle` for the store; never raises (it runs inside the executor's attempt).
        A handle that is not JSON (an executor's bug) is logged and not stored."""
        try:
            record = RecordLeftover(ctx.run_id, ctx.step_id, handle)
        except (TypeError, ValueError, RecursionError) as e:
            log.warning("cannot store the leftover handle of %s/%s: %s", ctx.run_id, ctx.step_id, e)
            return
        self._store.record_leftover(record)


__all__ = [
    "INTERRUPTED",
    "LeftoverRecorder",
    "close_out_state",
    "interrupted_events",
    "kill_leftovers",
    "recover",
    "run_definitions",
]
