"""Sub-DAG steps (`run = "<dag>"`): each attempt triggers a child run through the daemon and
waits for it; the step ends as the child ends (docs/dags.md, "Sub-DAGs").

`SubDagExecutor` plugs into the engine's executor seam (dagd/runtime/executor.py) under the
name `SUBDAG_EXECUTOR` ("dag"), so the runtime layer knows nothing of the daemon: the daemon
hands it to each `RunDriver` beside the configured executors. Cancelling the attempt (the
parent run is cancelled, or the daemon stops) cancels the child run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Protocol

import attrs
import trio

from dagd.core.dagrefs import fill_params
from dagd.core.model import SUBDAG_EXECUTOR, RunStatus, StepSpec
from dagd.daemon.errors import DaemonError
from dagd.runtime.executor import AttemptResult, Leftover, LeftoverSink, StepContext


@attrs.frozen
class ChildOutcome:
    """How a child run ended: its id, final status, and the ids of its failed steps."""

    run_id: str
    status: RunStatus
    failed_steps: tuple[str, ...] = ()


class ChildRuns(Protocol):
    """What the daemon offers sub-DAG steps (dagd/daemon/daemon.py)."""

    async def start_child(
        self, dag_id: str, params: Mapping[str, str], parent_run_id: str
    ) -> tuple[str, trio.Event]:
        """Queue a child run of `dag_id` (stored before it returns); its id, and an event set
        once it is over. Raises DaemonError (unknown_dag, invalid_params, shutting_down,
        storage_unavailable), or ValueError when the child would nest deeper than
        MAX_SUBDAG_DEPTH."""
        ...

    def child_outcome(self, run_id: str) -> ChildOutcome:
        """How the child run `run_id`, now over, ended."""
        ...

    async def cancel(self, run_id: str, reason: str = "cancelled by user") -> None:
        """Cancel a queued or running run (DaemonError not_running once it is over)."""
        ...


@attrs.frozen
class SubDagExecutor:
    """Runs sub-DAG steps' attempts as child runs of `runs` (the daemon). Leaves nothing
    behind that outlives a daemon: a crash closes out the child run like any other."""

    runs: ChildRuns
    name: str = SUBDAG_EXECUTOR
    log_dir: Path | None = None

    async def run(
        self, step: StepSpec, ctx: StepContext, on_leftover: LeftoverSink | None = None
    ) -> AttemptResult:
        """Trigger the child, wait for it, and say how it ended: ok when it succeeded; else
        failed with an error naming the child run and its failed steps ("child run <id> of
        <dag> failed: steps a, b failed"; "step a" for one). A child that cannot be
        triggered fails the attempt with the daemon's reason. Cancelled, it cancels the
        child before re-raising."""
        assert step.run is not None
        try:
            params = fill_params(step.run_params, ctx.params, ctx.outputs)
            child, done = await self.runs.start_child(step.run, params, ctx.run_id)
        except (DaemonError, ValueError) as exc:
            return AttemptResult(False, f"cannot start a run of DAG {step.run!r}: {exc}")
        try:
            await done.wait()
        except trio.Cancelled:
            # Shielded: the parent's step is being cancelled; DaemonError: it ended meanwhile.
            with trio.CancelScope(shield=True), contextlib.suppress(DaemonError):
                await self.runs.cancel(child, f"cancelled: its parent run {ctx.run_id} was")
            raise
        outcome = self.runs.child_outcome(child)
        if outcome.status is RunStatus.SUCCESS:
            return AttemptResult(True)
        failed = outcome.failed_steps
        noun = "step" if len(failed) == 1 else "steps"
        why = f": {noun} {', '.join(failed)} failed" if failed else ""
        return AttemptResult(False, f"child run {child} of {step.run} {outcome.status}{why}")

    async def clean_up(self, leftovers: Collection[Leftover], run_ids: Collection[str]) -> None:
        """Nothing: recovery closes out unfinished child runs with the rest."""
