"""Crash recovery: what a dead daemon left queued or running is closed out, and what its steps
left behind is killed, before the next daemon starts anything.

Rules this file keeps:
- Nothing stays running across a restart: every run the store has as queued or running gets a
  failed run status, its unfinished steps a final status (running or retrying: failed; pending:
  cancelled), all with the error `INTERRUPTED`. Finished steps keep theirs, so a retry reruns
  only what did not succeed.
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

from dagd.core.events import DagEvent, DagRunStatusEvent, ErrorEvent, StepStatusEvent
from dagd.core.model import RunStatus, StepStatus
from dagd.core.records import RunRecord
from dagd.core.runstate import duration_ms
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
    runs: list[RunRecord], steps: list[StepRecord], now: float
) -> list[DagEvent]:
    """The events that close out `runs` (left queued or running) and their unfinished `steps`,
    at `now` (UNIX seconds): per run, its steps' final statuses, an error event, and a failed
    run status. Pure: the caller publishes them."""
    by_run: dict[str, list[StepRecord]] = {}
    for step in steps:
        by_run.setdefault(step.run_id, []).append(step)
    events: list[DagEvent] = []
    for run in runs:
        for step in by_run.get(run.run_id, []):
            if step.status.finished:
                continue
            pending = step.status is StepStatus.PENDING
            events.append(
                StepStatusEvent(
                    run.dag_id,
                    run.run_id,
                    step.step_id,
                    StepStatus.CANCELLED if pending else StepStatus.FAILED,
                    step.start_time,
                    now,
                    duration_ms(step.start_time, now),
                    step.retry_count,
                    INTERRUPTED,
                    now,
                )
            )
        events.append(ErrorEvent(run.dag_id, run.run_id, None, INTERRUPTED, now))
        events.append(DagRunStatusEvent(run.dag_id, run.run_id, RunStatus.FAILED, now))
    return events


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
) -> list[RunRecord]:
    """Close out what the previous process left in `store`: stop its leftovers through
    `executors` (the registry by name, `executor_registry`; see `kill_leftovers`), then publish
    the closing events (see `interrupted_events`) at `now` (UNIX seconds). Returns the runs it
    closed out. Await it before the daemon accepts runs: a new attempt could otherwise be
    mistaken for a leftover."""
    runs, steps = store.unfinished()
    if not runs:
        return []
    await kill_leftovers(executors, runs, steps)
    for event in interrupted_events(runs, steps, now):
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


__all__ = ["INTERRUPTED", "LeftoverRecorder", "interrupted_events", "kill_leftovers", "recover"]
