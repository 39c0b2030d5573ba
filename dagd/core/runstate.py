"""The run state machine: events in, transitions and effects out. No I/O, no clock.

Every public method takes `now` (UNIX seconds), checks that the event is legal *before* touching
anything (an illegal event raises `IllegalTransition` and leaves the state as it was), applies it,
and returns the effects for the I/O layer to carry out, in order:

- `StartStep(step_id, attempt)`: run this attempt, then report `step_started` and an outcome;
- `ScheduleRetry(step_id, at)`: call `retry_due(step_id)` at time `at`;
- `StopStep(step_id)`: kill the running attempt, then report `step_cancelled`;
- an event (`dagd.core.events`): publish it;
- `FinishRun(status)`: the run is over.

Work per event is proportional to the steps it touches (counters, not scans), so a 10,000-step
run costs the same per step as a 3-step one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

import attrs

from dagd.core.backoff import retry_delay
from dagd.core.events import (
    DagRunProgressEvent,
    DagRunStatusEvent,
    ErrorEvent,
    StepStatusEvent,
)
from dagd.core.model import (
    FAILED_STEP,
    DagSpec,
    RunStatus,
    StepSpec,
    StepStatus,
    TriggerRule,
)

S = StepStatus

#: A step's record for `RunState.restore`: status, retry_count, start, end, error[, attempt].
StepRecordTuple = (
    tuple[StepStatus, int, float | None, float | None, str | None]
    | tuple[StepStatus, int, float | None, float | None, str | None, int]
)


class IllegalTransition(ValueError):
    """The caller fed an event that makes no sense in the current state (a bug in the caller)."""


@attrs.frozen(slots=True)
class StartStep:
    step_id: str
    attempt: int


@attrs.frozen(slots=True)
class ScheduleRetry:
    step_id: str
    at: float


@attrs.frozen(slots=True)
class StopStep:
    step_id: str


@attrs.frozen(slots=True)
class FinishRun:
    status: RunStatus


# Which progress bucket each step status counts in (the protocol's definition).
_COMPLETED = frozenset({S.SUCCESS, S.SKIPPED})
_RUNNING = frozenset({S.RUNNING, S.RETRYING})
_FAILED = frozenset({S.FAILED, S.UPSTREAM_FAILED, S.CANCELLED})
_BUCKET = {
    s: (
        "completed"
        if s in _COMPLETED
        else "running"
        if s in _RUNNING
        else "failed"
        if s in _FAILED
        else "pending"
    )
    for s in StepStatus
}


@attrs.define(slots=True, eq=False)
class StepState:
    spec: StepSpec
    downstream: list[str]
    status: StepStatus = S.PENDING
    attempt: int = 0  # attempts dispatched in this try of the run; retry_count is attempt - 1
    attempts_before: int = 0  # attempts made in earlier tries (a run retry numbers onwards)
    ready: bool = False  # waiting in the ready queue for a max_active_steps slot
    dispatched: bool = False  # a StartStep is out and not yet answered
    start_time: float | None = None
    end_time: float | None = None
    error: str | None = None
    # Counters over upstream outcomes, so trigger rules never rescan upstreams.
    up_total: int = 0
    up_done: int = 0
    up_success: int = 0
    up_failed: int = 0
    up_skipped: int = 0

    @property
    def retry_count(self) -> int:
        return max(0, self.attempt - 1)


def duration_ms(start: float | None, end: float | None) -> int | None:
    if start is None or end is None:
        return None
    return max(0, round((end - start) * 1000))


def format_seconds(seconds: float) -> str:
    """300 -> '300s', 1.5 -> '1.5s', 1000000 -> '1000000s' (never '1e+06s')."""
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{seconds:.3f}".rstrip("0") + "s"


class RunState:
    """One run of one DAG. Create with `RunState(dag, run_id, params)`, then `start(now)`."""

    def __init__(
        self,
        dag: DagSpec,
        run_id: str,
        params: Mapping[str, str] | None = None,
        *,
        progress_interval: float = 0.0,
    ) -> None:
        self.dag = dag
        self.run_id = run_id
        self.params = dict(params or {})
        self.status = RunStatus.QUEUED
        self.cancelling = False
        self.cancel_reason: str | None = None
        self.progress_interval = progress_interval
        self.steps: dict[str, StepState] = {
            sid: StepState(spec=spec, downstream=[], up_total=len(spec.depends_on))
            for sid, spec in dag.steps.items()
        }
        for sid, spec in dag.steps.items():
            for up in spec.depends_on:
                self.steps[up].downstream.append(sid)
        self.counts = {"completed": 0, "running": 0, "failed": 0, "pending": len(self.steps)}
        self.active = 0  # dispatched or running: what max_active_steps limits
        self.finished_steps = 0
        self._ready: deque[str] = deque()
        self._last_progress: float | None = None
        self._progress_dirty = False
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self._requeued = False  # set by requeue(): start() must apply trigger rules at once

    @classmethod
    def restore(
        cls,
        dag: DagSpec,
        run_id: str,
        params: Mapping[str, str] | None,
        status: RunStatus,
        steps: Mapping[str, StepRecordTuple],
        **kwargs: float,
    ) -> RunState:
        """Rebuild a finished run from its record, e.g. to retry it after a restart.

        `steps` maps step id -> (status, retry_count, start_time, end_time, error[, attempt]),
        `attempt` being the latest attempt number over all tries (0: unknown, as in records
        from before it was kept); steps the record does not know (never touched, or added to
        the DAG since) are pending.
        """
        if not status.finished:
            raise IllegalTransition(f"only a finished run can be restored, not a {status} one")
        state = cls(dag, run_id, params, **kwargs)
        for sid, (st_status, retry_count, start, end, error, *rest) in steps.items():
            st = state.steps.get(sid)
            if st is not None:
                st.status = StepStatus(st_status)
                # a step that never started in the last try (upstream_failed, skipped,
                # cancelled while pending) made no attempt in it
                st.attempt = retry_count + 1 if start is not None else 0
                st.attempts_before = max(0, (rest[0] if rest else 0) - st.attempt)
                st.start_time, st.end_time, st.error = start, end, error
        state.status = status
        state._recount()
        return state

    # ----------------------------------------------------------------- queries

    @property
    def total_steps(self) -> int:
        return len(self.steps)

    def progress(self, now: float) -> DagRunProgressEvent:
        c = self.counts
        total = len(self.steps)
        pct = round(100.0 * c["completed"] / total, 1) if total else 100.0
        return DagRunProgressEvent(
            self.dag.id,
            self.run_id,
            total,
            c["completed"],
            c["running"],
            c["failed"],
            c["pending"],
            pct,
            now,
        )

    def step_event(self, step_id: str, now: float) -> StepStatusEvent:
        st = self.steps[step_id]
        return StepStatusEvent(
            self.dag.id,
            self.run_id,
            step_id,
            st.status,
            st.start_time,
            st.end_time,
            duration_ms(st.start_time, st.end_time),
            st.retry_count,
            st.error,
            now,
            attempt=st.attempts_before + st.attempt,
        )

    def run_event(self, now: float) -> DagRunStatusEvent:
        return DagRunStatusEvent(self.dag.id, self.run_id, self.status, now)

    # ------------------------------------------------------------------ events

    def start(self, now: float) -> list[object]:
        """queued -> running: the run begins; steps without upstreams are dispatched."""
        if self.status is not RunStatus.QUEUED:
            raise IllegalTransition(f"run {self.run_id} is {self.status}, not queued")
        out: list[object] = []
        self.status = RunStatus.RUNNING
        self.started_at = now
        out.append(self.run_event(now))
        requeued, self._requeued = self._requeued, False
        for sid in self.dag.order:
            st = self.steps[sid]
            if st.status is not S.PENDING or st.ready or st.dispatched:  # kept, or decided
                continue
            if st.up_total == 0:  # a step without upstreams always runs
                st.ready = True
                self._ready.append(sid)
            elif requeued and self._evaluate(st, now, out):
                # A retried run's upstreams may be final already: the step may be skipped or
                # upstream_failed at once (counted, and its downstream told).
                self._finished(st, now, out)
        self._pump(out)
        return self._settle(out, now, force_progress=True)

    def step_started(self, step_id: str, now: float) -> list[object]:
        """A dispatched attempt is now actually running."""
        st = self._step(step_id)
        if not st.dispatched or st.status not in (S.PENDING, S.RETRYING):
            raise IllegalTransition(f"step {step_id} is {st.status} and was not dispatched")
        out: list[object] = []
        st.dispatched = False
        st.start_time, st.end_time, st.error = now, None, None
        self._set(st, S.RUNNING, now, out)
        return self._settle(out, now)

    def step_succeeded(self, step_id: str, now: float) -> list[object]:
        st = self._running(step_id)
        out: list[object] = []
        self.active -= 1
        st.end_time, st.error = now, None
        self._set(st, S.SUCCESS, now, out)
        self._finished(st, now, out)
        return self._settle(out, now)

    def step_failed(self, step_id: str, now: float, error: str) -> list[object]:
        """The attempt failed: retry it if it has attempts left, else the step has failed."""
        st = self._running(step_id)
        out: list[object] = []
        self.active -= 1
        st.end_time, st.error = now, error
        out.append(ErrorEvent(self.dag.id, self.run_id, step_id, error, now))
        if st.attempt < st.spec.max_attempts and not self.cancelling:
            self._set(st, S.RETRYING, now, out)
            out.append(ScheduleRetry(step_id, now + retry_delay(st.spec, st.attempt)))
            self._pump(out)
        else:
            self._set(st, S.FAILED, now, out)
            self._finished(st, now, out)
        return self._settle(out, now)

    def step_timed_out(self, step_id: str, now: float, timeout: float) -> list[object]:
        return self.step_failed(step_id, now, f"timed out after {format_seconds(timeout)}")

    def retry_due(self, step_id: str, now: float) -> list[object]:
        """A retry's waiting time is over: queue its next attempt."""
        st = self._step(step_id)
        if st.status is not S.RETRYING or st.dispatched or st.ready:
            raise IllegalTransition(f"step {step_id} is {st.status}, not waiting for a retry")
        out: list[object] = []
        st.ready = True
        self._ready.append(step_id)
        self._pump(out)
        return self._settle(out, now)

    def step_cancelled(self, step_id: str, now: float, reason: str | None = None) -> list[object]:
        """A running (or dispatched) attempt was stopped."""
        st = self._step(step_id)
        if not (st.status is S.RUNNING or st.dispatched):
            raise IllegalTransition(f"step {step_id} is {st.status}, nothing to cancel")
        out: list[object] = []
        self.active -= 1
        st.dispatched = False
        st.end_time = now
        st.error = reason or self.cancel_reason or "cancelled"
        self._set(st, S.CANCELLED, now, out)
        self._finished(st, now, out)
        return self._settle(out, now)

    def cancel(self, now: float, reason: str = "cancelled by user") -> list[object]:
        """Stop the run: waiting steps are cancelled now, running ones are asked to stop."""
        if self.status.finished or self.cancelling:
            raise IllegalTransition(f"run {self.run_id} is {self.status}, cannot cancel")
        out: list[object] = []
        self.cancelling = True
        self.cancel_reason = reason
        self._ready.clear()
        if self.status is RunStatus.QUEUED:
            self.status = RunStatus.RUNNING  # a queued run goes straight to cancelled below
        for sid, st in self.steps.items():
            if st.status is S.RUNNING or st.dispatched:
                out.append(StopStep(sid))
            elif st.status in (S.PENDING, S.RETRYING):
                st.ready = False
                st.end_time, st.error = now, reason
                self._set(st, S.CANCELLED, now, out)
                self.finished_steps += 1
        return self._settle(out, now)

    def requeue(self, now: float) -> list[object]:
        """failed/cancelled -> queued, for a retry: successful steps stay, the rest are pending
        again. The run then waits for a slot like a new one; `start(now)` begins it."""
        out = self._requeue(now)
        out.append(self.progress(now))
        return out

    def retry(self, now: float) -> list[object]:
        """`requeue(now)` and `start(now)` at once (one progress event): a retry that need
        not wait for a slot."""
        return self._requeue(now) + self.start(now)

    def _requeue(self, now: float) -> list[object]:
        if self.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
            raise IllegalTransition(
                f"run {self.run_id} is {self.status}; only failed or cancelled runs can be retried"
            )
        out: list[object] = []
        self.cancelling, self.cancel_reason, self.ended_at = False, None, None
        self.status = RunStatus.QUEUED
        self._requeued = True
        out.append(self.run_event(now))
        for st in self.steps.values():
            if st.status is not S.SUCCESS:
                st.start_time = st.end_time = st.error = None
                st.attempts_before += st.attempt  # numbering goes on; the retry budget is new
                st.attempt = 0
                self._set(st, S.PENDING, now, out)
        self._recount()
        return out

    # --------------------------------------------------------------- internals

    def _step(self, step_id: str) -> StepState:
        if self.status is not RunStatus.RUNNING:
            raise IllegalTransition(f"run {self.run_id} is {self.status}, not running")
        try:
            return self.steps[step_id]
        except KeyError:
            raise IllegalTransition(f"run {self.run_id} has no step {step_id!r}") from None

    def _running(self, step_id: str) -> StepState:
        st = self._step(step_id)
        if st.status is not S.RUNNING:
            raise IllegalTransition(f"step {step_id} is {st.status}, not running")
        return st

    def _set(self, st: StepState, status: StepStatus, now: float, out: list[object]) -> None:
        old = st.status
        old_bucket, new_bucket = _BUCKET[old], _BUCKET[status]
        if old_bucket != new_bucket:
            counts = self.counts
            counts[old_bucket] -= 1
            counts[new_bucket] += 1
            self._progress_dirty = True
        st.status = status
        out.append(self.step_event(st.spec.id, now))

    def _recount(self) -> None:
        """Rebuild every counter from the step statuses (after a run retry)."""
        self.counts = dict.fromkeys(("completed", "running", "failed", "pending"), 0)
        for st in self.steps.values():
            self.counts[_BUCKET[st.status]] += 1
            st.up_done = st.up_success = st.up_failed = st.up_skipped = 0
            st.ready = st.dispatched = False
        self._ready.clear()
        for st in self.steps.values():
            for up in st.spec.depends_on:
                self._count_upstream(st, self.steps[up].status)
        self.finished_steps = sum(st.status.finished for st in self.steps.values())
        self.active = 0

    @staticmethod
    def _count_upstream(st: StepState, up_status: StepStatus) -> None:
        if not up_status.finished:
            return
        st.up_done += 1
        if up_status is S.SUCCESS:
            st.up_success += 1
        elif up_status is S.SKIPPED:
            st.up_skipped += 1
        elif up_status in FAILED_STEP:
            st.up_failed += 1

    def _finished(self, st: StepState, now: float, out: list[object]) -> None:
        """`st` reached a final status: tell its downstream steps, iteratively (long chains)."""
        self.finished_steps += 1
        work = [st]
        while work:
            done = work.pop()
            for down_id in done.downstream:
                down = self.steps[down_id]
                self._count_upstream(down, done.status)
                waiting = not (down.ready or down.dispatched)  # an eager rule may have fired
                if down.status is S.PENDING and waiting and not self.cancelling:
                    final = self._evaluate(down, now, out)
                    if final:
                        self.finished_steps += 1
                        work.append(down)
        self._pump(out)

    def _evaluate(self, st: StepState, now: float, out: list[object]) -> bool:
        """Apply the trigger rule of a pending step. Returns True if it became final."""
        rule = st.spec.trigger_rule
        all_done = st.up_done == st.up_total
        verdict: StepStatus | None = None  # None: not yet; RUNNING: dispatch
        if rule is TriggerRule.ALL_SUCCESS:
            if st.up_failed:
                verdict = S.UPSTREAM_FAILED
            elif st.up_skipped:
                verdict = S.SKIPPED
            elif all_done:
                verdict = S.RUNNING
        elif rule is TriggerRule.ALL_DONE:
            if all_done:
                verdict = S.RUNNING
        elif rule is TriggerRule.ONE_FAILED:
            if st.up_failed:
                verdict = S.RUNNING
            elif all_done:
                verdict = S.SKIPPED
        elif rule is TriggerRule.ONE_SUCCESS:
            if st.up_success:
                verdict = S.RUNNING
            elif all_done:
                verdict = S.UPSTREAM_FAILED if st.up_failed else S.SKIPPED
        elif rule is TriggerRule.NONE_FAILED:
            if st.up_failed:
                verdict = S.UPSTREAM_FAILED
            elif all_done:
                verdict = S.RUNNING
        if verdict is None:
            return False
        if verdict is S.RUNNING:
            st.ready = True
            self._ready.append(st.spec.id)
            return False
        st.end_time = now
        self._set(st, verdict, now, out)
        return True

    def _pump(self, out: list[object]) -> None:
        """Dispatch ready steps while the DAG's max_active_steps allows."""
        limit = self.dag.max_active_steps
        ready = self._ready
        while ready and (limit is None or self.active < limit):
            sid = ready.popleft()
            st = self.steps[sid]
            st.ready, st.dispatched = False, True
            st.attempt += 1
            self.active += 1
            out.append(StartStep(sid, st.attempts_before + st.attempt))

    def _settle(self, out: list[object], now: float, force_progress: bool = False) -> list[object]:
        """Finish the run if every step is final; add a progress event when one is due."""
        done = self.finished_steps == len(self.steps) and self.active == 0
        last = self._last_progress
        if (
            force_progress
            or done
            or (self._progress_dirty and (last is None or now - last >= self.progress_interval))
        ):
            out.append(self.progress(now))
            self._last_progress = now
            self._progress_dirty = False
        if done and self.status is RunStatus.RUNNING:
            if self.cancelling:
                self.status = RunStatus.CANCELLED
            elif any(st.status in (S.FAILED, S.UPSTREAM_FAILED) for st in self.steps.values()):
                self.status = RunStatus.FAILED
            else:
                self.status = RunStatus.SUCCESS
            self.ended_at = now
            out.append(self.run_event(now))
            out.append(FinishRun(self.status))
        return out
