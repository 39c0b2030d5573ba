"""Drives one run: feeds a `RunState` and carries out the effects it returns, in a nursery.

The state machine decides everything; this layer only starts attempts, sleeps until retries are
due, cancels attempts it is told to stop, and hands every event to `publish` (which must not
block: the daemon persists and fans out from there). Each attempt runs in its own cancel scope
inside the run's nursery, so cancelling the run (or the whole daemon) reaches every process.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import assert_never

import attrs
import trio

from dagd.core.events import DagEvent
from dagd.core.model import RunStatus, StepSpec, StepStatus
from dagd.core.pools import PoolError, PoolRequest
from dagd.core.runstate import (
    EVENT_CLASSES,
    Effect,
    FinishRun,
    HandlerDeadline,
    IllegalTransition,
    RunState,
    ScheduleRetry,
    StartStep,
    StopStep,
)
from dagd.runtime.conditions import poll_until, precondition_reason
from dagd.runtime.executor import (
    DEFAULT_EXECUTOR,
    NO_OUTPUTS,
    AttemptResult,
    Checker,
    LeftoverSink,
    StepContext,
    StepExecutor,
    executor_for,
    executor_registry,
)
from dagd.runtime.local.executor import LocalExecutor
from dagd.runtime.notify import Notifier
from dagd.runtime.pools import Pools

log = logging.getLogger("dagd.runtime.engine")


@attrs.frozen
class Skip:
    """An attempt not made: its step's precondition said no (`reason`, the step's error)."""

    reason: str
    ok: bool = False  # read like an AttemptResult's, first, on the engine's hot path
    outputs: None = None
    worker: None = None


Publish = Callable[[DagEvent], None]
WallClock = Callable[[], float]


def trio_wall_clock(offset: float | None = None) -> WallClock:
    """A wall clock that follows trio's clock: under MockClock, time jumps for it too."""
    base = time.time() - trio.current_time() if offset is None else offset
    return lambda: base + trio.current_time()


class RunDriver:
    """Carries out one run. Use `await driver.run()`; `cancel()` and `retry()` may be called
    from any task of the same trio loop while it runs.

    `executors`: the registry by name (`executor_registry`), or one executor that runs every
    step. Each attempt runs on `executor_for(executors, step)`. `publish` gets every event
    and must not block. `clock`: UNIX seconds, for event times. `step_slots`: a limiter every
    running attempt holds a token of (the daemon's max_parallel_steps). `on_finish` is called
    with the final state once the run is over. `on_leftover` gets each attempt's leftover
    handle (dagd/runtime/executor.py), for crash recovery. `notifier` sends the notifications
    of `notify` handlers (dagd/runtime/notify.py; default: one with dagd's environment).
    `pools`: the process's pools (dagd/runtime/pools.py), shared by its runs: each attempt of
    a step with a `pool` waits for its slots first, then for a `step_slots` token (without
    `pools`, such steps run as if they had no pool).

    Lifecycle handlers run as steps of the run, each attempt given the run's outcome
    (`StepContext.outcome`); their grace is a timer like a retry's (`HandlerDeadline`)."""

    def __init__(
        self,
        state: RunState,
        executors: StepExecutor | Mapping[str, StepExecutor],
        publish: Publish,
        *,
        clock: WallClock = time.time,
        step_slots: trio.CapacityLimiter | None = None,
        on_finish: Callable[[RunState], None] | None = None,
        on_leftover: LeftoverSink | None = None,
        notifier: StepExecutor | None = None,
        pools: Pools | None = None,
    ) -> None:
        self.state = state
        self.pools = pools
        self.executors: Mapping[str, StepExecutor] = (
            executors if isinstance(executors, Mapping) else executor_registry(executors)
        )
        self.publish = publish
        self.clock = clock
        self.step_slots = step_slots
        self.on_finish = on_finish
        self.on_leftover = on_leftover
        self._notifier = notifier
        self._scopes: dict[str, trio.CancelScope] = {}
        # Who runs preconditions and wait_for polls: the local executor (conditions.py).
        local = self.executors.get(DEFAULT_EXECUTOR)
        self._checker: Checker | None = local if hasattr(local, "check") else None  # type: ignore[assignment]
        self._nursery: trio.Nursery | None = None
        self._done = trio.Event()
        # What run() will do: start a queued run, or retry a failed or cancelled one. Decided
        # now, because a queued run cancelled before run() began is cancelled, not retryable.
        self._starts = state.status is RunStatus.QUEUED

    @property
    def run_id(self) -> str:
        """The id of the run this driver carries out."""
        return self.state.run_id

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> RunStatus:
        """Start a queued run, or retry a failed or cancelled one (its successful steps are
        kept), and drive it until the state machine says it is over. A queued run whose
        `cancel()` came before this began stays cancelled: nothing of it runs."""
        if self._starts and self.state.status.finished:
            task_status.started()
            if self.on_finish is not None:
                self.on_finish(self.state)
            return self.state.status
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._done = trio.Event()
            if self.state.status is RunStatus.QUEUED:
                self._apply(self.state.start(self.clock()))
            else:
                self._apply(self.state.retry(self.clock()))
            task_status.started()
            await self._done.wait()
            nursery.cancel_scope.cancel()  # pending retry timers
        self._nursery = None
        if self.on_finish is not None:
            self.on_finish(self.state)
        return self.state.status

    def cancel(self, reason: str = "cancelled by user") -> None:
        """Ask the run to stop: waiting steps end now, running ones are killed."""
        if not self.state.status.finished and not self.state.cancelling:
            self._apply(self.state.cancel(self.clock(), reason))

    def stop_handlers(self, reason: str = "stopped: cancelled again") -> None:
        """Cut the run's handlers short (a second cancel, a second Ctrl-C): cancel the run if
        it is not yet, then end its handlers' grace now: running ones are stopped, the others
        never start. Does nothing once the run is over."""
        if self.state.status.finished:
            return
        self.cancel(reason)
        # A queued run, cancelled outright, has no grace to end.
        with contextlib.suppress(IllegalTransition):
            self._apply(self.state.grace_over(self.clock(), reason))

    def _apply(
        self, effects: list[Effect], take: list[tuple[StartStep, trio.CancelScope]] | None = None
    ) -> None:
        """Carry out effects, in order. With `take`, the first StartStep is handed back to the
        caller (a finishing attempt's task runs it next) instead of getting a task of its own.

        Runs once per effect on the engine's hot path (bench/engine_overhead.py): events, most
        of the effects, are tested for first."""
        publish = self.publish
        for effect in effects:
            if isinstance(effect, EVENT_CLASSES):
                publish(effect)
            elif isinstance(effect, StartStep):
                scope = self._scopes[effect.step_id] = trio.CancelScope()
                if take is not None and not take:
                    take.append((effect, scope))
                    continue
                assert self._nursery is not None
                self._nursery.start_soon(self._attempt, effect, scope)
            elif isinstance(effect, ScheduleRetry):
                assert self._nursery is not None
                self._nursery.start_soon(self._retry_timer, effect)
            elif isinstance(effect, StopStep):
                running = self._scopes.get(effect.step_id)
                if running is not None:
                    running.cancel()
            elif isinstance(effect, FinishRun):
                self._done.set()
            elif isinstance(effect, HandlerDeadline):
                assert self._nursery is not None
                self._nursery.start_soon(self._grace_timer, effect)
            else:
                assert_never(effect)

    async def _attempt(self, start: StartStep, scope: trio.CancelScope) -> None:
        """Run an attempt, then the attempt it freed a slot for, and so on: the task of a
        finished attempt carries on with the next one rather than spawning a task for it
        (measurable when steps are short, bench/shell_steps.py)."""
        state = self.state
        take: list[tuple[StartStep, trio.CancelScope]] = []
        while True:
            sid = start.step_id
            spec = state.steps[sid].spec
            # A dict lookup: the seam adds no task, cancel scope or object per attempt.
            executor = executor_for(self.executors, spec) if not spec.notify else self._notify()
            ctx = StepContext(
                state.dag.id,
                state.run_id,
                sid,
                start.attempt,
                state.params,
                executor.log_dir,
                state.outcome() if spec.handler is not None else None,
                state.upstream_outputs(sid) if state.has_outputs else NO_OUTPUTS,
            )
            gated = spec.precondition is not None or spec.wait_for is not None
            result: AttemptResult | Skip | None = None
            with scope:
                if spec.pool is not None and self.pools is not None:
                    result = await self._pooled(self.pools, executor, spec, ctx)
                elif gated:
                    result = await self._gated_attempt(executor, spec, ctx)
                elif self.step_slots is not None:
                    async with self.step_slots:
                        self._apply(state.step_started(sid, self.clock()))
                        result = await self._run_attempt(executor, spec, ctx)
                else:
                    self._apply(state.step_started(sid, self.clock()))
                    result = await self._run_attempt(executor, spec, ctx)
            del self._scopes[sid]
            now = self.clock()
            if result is None:  # cancelled before it finished
                self._apply(state.step_cancelled(sid, now), take)
            elif result.ok and (over := state.outputs_problem(sid, result.outputs)):
                self._apply(state.step_failed(sid, now, over, result.worker), take)
            elif result.ok:
                self._apply(state.step_succeeded(sid, now, result.worker, result.outputs), take)
            elif isinstance(result, Skip):
                self._apply(state.step_skipped(sid, now, result.reason), take)
            else:
                error = result.error or "failed"
                self._apply(state.step_failed(sid, now, error, result.worker), take)
            if not take:
                return
            start, scope = take.pop()
            if spec.call is not None:
                # A Python step may never have yielded (an async no-op): without this, a chain
                # of them would hold the loop for the whole chain. A shell step always waited
                # for its thread, so the next one may start at once.
                await trio.lowlevel.checkpoint()

    async def _pooled(
        self, pools: Pools, executor: StepExecutor, spec: StepSpec, ctx: StepContext
    ) -> AttemptResult | Skip:
        """An attempt of a step in a pool: its slots first (in the run's trigger order; the
        step says it waits for the pool meanwhile), then as any attempt. The slots are given
        back however it ends; cancelled while it waits, it takes none (dagd/runtime/pools.py).
        A pool that is not configured (a run keeps its DAG's definition) fails the attempt."""
        state, sid, pool = self.state, ctx.step_id, spec.pool
        assert pool is not None
        order = state.queued_at if state.queued_at is not None else 0.0
        request = PoolRequest(pool, spec.pool_slots, order, ctx.run_id, sid)
        try:
            granted = pools.ask(request)
        except PoolError as exc:
            self._apply(state.step_started(sid, self.clock()))
            return AttemptResult(False, str(exc))
        try:
            if not granted:
                await pools.wait(
                    request, lambda: self._apply(state.step_queued(sid, self.clock(), pool))
                )
                self._apply(state.step_dequeued(sid, self.clock()))
            if spec.precondition is not None or spec.wait_for is not None:
                return await self._gated_attempt(executor, spec, ctx)  # slots: its own
            return await self._slotted_attempt(executor, spec, ctx)
        finally:
            pools.release(request)

    async def _slotted_attempt(
        self, executor: StepExecutor, spec: StepSpec, ctx: StepContext
    ) -> AttemptResult:
        """Start the attempt in a `step_slots` token (when the daemon has them)."""
        if self.step_slots is None:
            self._apply(self.state.step_started(ctx.step_id, self.clock()))
            return await self._run_attempt(executor, spec, ctx)
        async with self.step_slots:
            self._apply(self.state.step_started(ctx.step_id, self.clock()))
            return await self._run_attempt(executor, spec, ctx)

    async def _gated_attempt(
        self, executor: StepExecutor, spec: StepSpec, ctx: StepContext
    ) -> AttemptResult | Skip:
        """An attempt of a step with a precondition or a wait_for (conditions.py): check the
        one, poll the other (the step is running, and says it waits), then run the attempt,
        in a `step_slots` token (the checks hold none: a step waiting for hours must not
        keep other runs' steps from running).
        A precondition that exits non-zero skips the step (a `Skip` for the caller to apply);
        a wait_for that times out fails the attempt."""
        state, sid = self.state, ctx.step_id
        checker = self._checker
        if checker is None:
            self._apply(state.step_started(sid, self.clock()))
            return AttemptResult(False, "precondition and wait_for need the local executor")
        if spec.precondition is not None:
            checked = await checker.check(spec.precondition, spec, ctx)
            if not checked.started:
                self._apply(state.step_started(sid, self.clock()))
                return AttemptResult(False, precondition_reason(checked))
            if not checked.ok:
                return Skip(precondition_reason(checked))
        wait_for = spec.wait_for
        if wait_for is not None:
            self._apply(state.step_polling(sid, self.clock()))
            command = wait_for.command
            error = await poll_until(lambda: checker.check(command, spec, ctx), wait_for)
            if error is not None:
                return AttemptResult(False, error)
        # The daemon's step slots are for commands, not for waiting.
        return await self._slotted_attempt(executor, spec, ctx)

    async def _run_attempt(
        self, executor: StepExecutor, spec: StepSpec, ctx: StepContext
    ) -> AttemptResult:
        """The executor's result; an unexpected error fails the attempt, never the run."""
        try:
            return await executor.run(spec, ctx, self.on_leftover)
        except Exception as exc:
            log.exception("step %s of run %s failed unexpectedly", ctx.step_id, ctx.run_id)
            return AttemptResult(False, f"internal error: {type(exc).__name__}: {exc}")

    def _notify(self) -> StepExecutor:
        """The notifier of `notify` handlers, made on first use."""
        if self._notifier is None:
            self._notifier = Notifier()
        return self._notifier

    async def _grace_timer(self, deadline: HandlerDeadline) -> None:
        await trio.sleep(max(0.0, deadline.at - self.clock()))
        if not self.state.status.finished:
            self._apply(self.state.grace_over(self.clock()))

    async def _retry_timer(self, retry: ScheduleRetry) -> None:
        await trio.sleep(max(0.0, retry.at - self.clock()))
        st = self.state.steps[retry.step_id]
        if self.state.status is RunStatus.RUNNING and st.status is StepStatus.RETRYING:
            self._apply(self.state.retry_due(retry.step_id, self.clock()))


async def run_dag(
    state: RunState,
    executors: StepExecutor | Mapping[str, StepExecutor] | None = None,
    publish: Publish | None = None,
    *,
    clock: WallClock = time.time,
    step_slots: trio.CapacityLimiter | None = None,
    pools: Pools | None = None,
) -> RunStatus:
    """Run a whole DAG run in this trio program and return its final status. `executors`:
    as `RunDriver` takes them (default: a `LocalExecutor` that keeps no logs); `publish` gets
    every event (default: dropped); `clock`, `step_slots` and `pools` as for `RunDriver`."""
    driver = RunDriver(
        state,
        LocalExecutor() if executors is None else executors,
        publish or (lambda event: None),
        clock=clock,
        step_slots=step_slots,
        pools=pools,
    )
    return await driver.run()
