"""Sub-DAG steps under `dagd run` (no daemon): child runs driven in this process.

The daemon's sub-DAG executor (dagd/daemon/subdag.py) asks a `ChildRuns` for child runs; here
`HereChildRuns` is that: each child is a `RunDriver` in the run's nursery, given the same
executors (this one included, so children may have children), step limiter and event handler
as the top run, so the live view and the plain lines show the child runs too. Nothing is
stored: `dagd run` keeps no history.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import trio

from dagd.core.events import DagEvent
from dagd.core.model import MAX_SUBDAG_DEPTH, SUBDAG_EXECUTOR, DagSpec, RunStatus, StepStatus
from dagd.core.runstate import RunState
from dagd.core.timefmt import RunIdFactory
from dagd.daemon.subdag import ChildOutcome, SubDagExecutor
from dagd.runtime.engine import RunDriver
from dagd.runtime.executor import StepExecutor
from dagd.runtime.pools import Pools


class HereChildRuns:
    """Child runs of `dags` in `nursery` (set it before the top run starts), on `executors`
    (plus the sub-DAG executor, `self.executors`), their events handed to `publish`, their
    pooled steps sharing `pools` with the top run. `drivers` holds every run by id: put the
    top run's in, for the depth and cycle checks."""

    def __init__(
        self,
        dags: Mapping[str, DagSpec],
        executors: Mapping[str, StepExecutor],
        publish: Callable[[DagEvent], None],
        step_slots: trio.CapacityLimiter,
        pools: Pools | None = None,
    ) -> None:
        self.dags = dags
        self.pools = pools
        self.executors: dict[str, StepExecutor] = {
            **executors,
            SUBDAG_EXECUTOR: SubDagExecutor(self),
        }
        self.publish = publish
        self.nursery: trio.Nursery | None = None  # the top run's: set before it starts
        self.step_slots = step_slots
        self.drivers: dict[str, RunDriver] = {}
        self._ids = RunIdFactory()

    def _chain(self, run_id: str) -> list[str]:
        """The DAG ids of run `run_id` and of its ancestors, nearest first."""
        chain: list[str] = []
        driver = self.drivers.get(run_id)
        while driver is not None:
            chain.append(driver.state.dag.id)
            parent = driver.state.parent_run_id
            driver = self.drivers.get(parent) if parent is not None else None
        return chain

    async def start_child(
        self, dag_id: str, params: Mapping[str, str], parent_run_id: str
    ) -> tuple[str, trio.Event]:
        """Start a child run of `dag_id` now; its id and an event set once it is over.
        Raises ValueError for an unknown DAG, a param it does not declare, or a child nested
        deeper than MAX_SUBDAG_DEPTH."""
        dag = self.dags.get(dag_id)
        if dag is None:
            raise ValueError(f"no DAG {dag_id!r} (DAGs: {', '.join(sorted(self.dags))})")
        chain = self._chain(parent_run_id)
        depth = len(chain)
        if dag_id in chain:
            path = " -> ".join([*reversed(chain), dag_id])
            raise ValueError(f"DAG {dag_id!r} would run inside its own run: {path}")
        if depth > MAX_SUBDAG_DEPTH:
            raise ValueError(
                f"sub-DAG runs nest at most {MAX_SUBDAG_DEPTH} deep; this one would be {depth}"
            )
        bound = dag.bind_params(params)
        run_id = self._ids.make("subdag", time.time())
        state = RunState(dag, run_id, bound, parent_run_id=parent_run_id)
        state.queued_at = time.time()  # after the top run: its steps go first in a pool
        driver = RunDriver(
            state, self.executors, self.publish, step_slots=self.step_slots, pools=self.pools
        )
        self.drivers[run_id] = driver
        done = trio.Event()

        async def drive() -> None:
            try:
                await driver.run()
            finally:
                done.set()

        assert self.nursery is not None
        self.nursery.start_soon(drive)
        return run_id, done

    def child_outcome(self, run_id: str) -> ChildOutcome:
        """How the child `run_id` ended, with its failed ordinary steps."""
        state = self.drivers[run_id].state
        failed = tuple(
            sid
            for sid, st in state.steps.items()
            if st.status is StepStatus.FAILED and sid not in state.dag.handlers
        )
        status = state.status if state.status.finished else RunStatus.FAILED
        return ChildOutcome(run_id, status, failed)

    async def cancel(self, run_id: str, reason: str = "cancelled by user") -> None:
        """Cancel the child `run_id` (nothing once it is over)."""
        driver = self.drivers.get(run_id)
        if driver is not None:
            driver.cancel(reason)
