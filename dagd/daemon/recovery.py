"""Crash recovery: what a dead daemon left queued or running is closed out, and what its steps
left behind is killed, before the next daemon starts anything.

Rules this file keeps:
- Nothing stays running across a restart: every run the store has as queued or running gets a
  failed run status, its unfinished steps a final status (running or retrying: failed; pending:
  cancelled), all with the error `INTERRUPTED`. Finished steps keep theirs, so a retry reruns
  only what did not succeed.
- A leftover is killed only when it is provably one of ours. A step's process group is recorded
  (with the leader's start time and the boot id) as soon as it is spawned (`LeftoverRecorder`);
  a group spawned but not yet recorded when the daemon died is found by the DAGD_RUN_ID in its
  environment. The proof checks live in runtime/local/procs.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from dagd.core.events import DagEvent, DagRunStatusEvent, ErrorEvent, StepStatusEvent
from dagd.core.model import RunStatus, StepStatus
from dagd.core.runstate import duration_ms
from dagd.daemon.store import RecordLeftover, RunRecord, StepRecord, Store
from dagd.runtime.executor import Leftover, LeftoverHandle, StepContext
from dagd.runtime.local.leftovers import clean_up as clean_up_local
from dagd.runtime.local.leftovers import columns_from_handle, handle_from_columns

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


def kill_leftovers(runs: list[RunRecord], steps: list[StepRecord]) -> None:
    """SIGKILL what the steps of `runs` left running: each recorded process group that is still
    provably the step's, then any process whose environment names one of the runs (the local
    executor's clean-up, dagd/runtime/local/leftovers.py, from the handles the step rows hold).

    Transitional: only the local executor's leftovers, from the store's pgid/proc_start/boot_id
    columns. With handles stored whole this becomes `await clean_up_leftovers(executors,
    leftovers, run_ids)` (dagd/runtime/executor.py), which asks every registered executor."""
    leftovers = []
    for step in steps:
        handle = handle_from_columns(step.pgid, step.proc_start, step.boot_id)
        if handle is not None:
            leftovers.append(Leftover(step.run_id, step.step_id, handle))
    clean_up_local(leftovers, {run.run_id for run in runs})


def recover(store: Store, publish: Callable[[DagEvent], object], now: float) -> list[RunRecord]:
    """Close out what the previous process left in `store`: kill its leftovers, then publish
    the closing events (see `interrupted_events`) at `now` (UNIX seconds). Returns the runs it
    closed out. Call it before anything new runs: a new step could otherwise be mistaken for
    a leftover."""
    runs, steps = store.unfinished()
    if not runs:
        return []
    kill_leftovers(runs, steps)
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
    """The engine's `on_leftover(ctx, handle)`: stores a started attempt's leftover handle with
    its step, so `kill_leftovers` can find what it left after a crash.

    Transitional: the store keeps the local executor's handle (process group, start time, boot
    id) in columns of their own; a handle of another executor is logged and not stored."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __call__(self, ctx: StepContext, handle: LeftoverHandle) -> None:
        try:
            pgid, start, boot = columns_from_handle(handle)
        except KeyError:
            log.warning("cannot store the leftover handle of %s/%s", ctx.run_id, ctx.step_id)
            return
        self._store.record_leftover(RecordLeftover(ctx.run_id, ctx.step_id, pgid, start, boot))


__all__ = ["INTERRUPTED", "LeftoverRecorder", "interrupted_events", "kill_leftovers", "recover"]
