"""dagd.core.runstate: the run state machine, stepped synchronously, event by event.

Every call goes through `Harness`, which checks on *every* event what a client would see:

- each step status change emits exactly one StepStatusEvent whose fields (startTime, endTime,
  duration in ms, retryCount, error) match the step, and nothing is emitted without a change;
- every DagRunProgressEvent has completed+running+failed+pending == total, the right
  percentage, and the counts of a recount from the step statuses;
- run status changes emit one DagRunStatusEvent each, and FinishRun comes last, exactly once;
- StartStep/StopStep effects agree with which attempts are out, within max_active_steps;
- an illegal event raises IllegalTransition and leaves every bit of state as it was.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections import defaultdict

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagd.core.events import (
    DagRunProgressEvent,
    DagRunStatusEvent,
    ErrorEvent,
    StepStatusEvent,
)
from dagd.core.model import HANDLERS_OF, DagSpec, RunStatus, StepStatus
from dagd.core.runstate import (
    RUN_TRANSITIONS,
    FinishRun,
    HandlerDeadline,
    IllegalTransition,
    RunInput,
    RunState,
    ScheduleRetry,
    StartStep,
    StepState,
    StopStep,
)
from dagd.core.spec import parse_dag

# When a hypothesis test fails, its pytest plugin imports libcst, which trips a
# DeprecationWarning from mypy_extensions; under filterwarnings=error that hides the failure.
pytestmark = pytest.mark.filterwarnings("ignore:mypy_extensions.TypedDict:DeprecationWarning")

S = StepStatus
R = RunStatus
RUN_ID = "manual__2024-01-01T00:00:00+00:00"
T0 = 1_704_067_200.0  # 2024-01-01T00:00:00Z
EVENTS = (DagRunStatusEvent, StepStatusEvent, DagRunProgressEvent, ErrorEvent)
EFFECTS = (StartStep, ScheduleRetry, StopStep, FinishRun, HandlerDeadline)

# The protocol's progress buckets, written out independently of the implementation.
BUCKET = {
    S.SUCCESS: "completed",
    S.SKIPPED: "completed",
    S.RUNNING: "running",
    S.RETRYING: "running",
    S.FAILED: "failed",
    S.UPSTREAM_FAILED: "failed",
    S.CANCELLED: "failed",
    S.PENDING: "pending",
}


def make_dag(
    steps: dict[str, dict],
    *,
    dag_id: str = "d",
    max_active_steps=None,
    handlers: dict[str, dict] | None = None,
) -> DagSpec:
    """Build a DagSpec through the real parser. Each step and handler (by kind) defaults to
    `command = "true"`."""
    lines = [f'id = "{dag_id}"']
    if max_active_steps is not None:
        lines.append(f"max_active_steps = {max_active_steps}")
    tables = [(f"steps.{sid}", opts) for sid, opts in steps.items()]
    tables += [(f"handlers.{kind}", opts) for kind, opts in (handlers or {}).items()]
    for name, opts in tables:
        lines.append(f"[{name}]")
        for key, value in {"command": "true", **opts}.items():
            if isinstance(value, dict):  # an inline table
                inner = ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items())
                lines.append(f"{key} = {{ {inner} }}")
            else:
                lines.append(f"{key} = {json.dumps(value)}")
    return parse_dag("\n".join(lines), file=f"{dag_id}.toml")


def recount(rs: RunState) -> tuple[int, int, int, int]:
    counts = dict.fromkeys(("completed", "running", "failed", "pending"), 0)
    for state in rs.steps.values():
        counts[BUCKET[state.status]] += 1
    return counts["completed"], counts["running"], counts["failed"], counts["pending"]


def snapshot(rs: RunState) -> dict:
    """Everything a RunState holds except the (immutable) DAG: to prove nothing changed."""
    snap = {k: copy.deepcopy(v) for k, v in vars(rs).items() if k not in ("dag", "steps")}
    snap["steps"] = {
        sid: {f.name: copy.copy(getattr(state, f.name)) for f in attrs.fields(StepState)}
        for sid, state in rs.steps.items()
    }
    return snap


def expected_duration(start, end):
    return None if start is None or end is None else round((end - start) * 1000)


class Harness:
    """Drives a RunState like the engine would, checking every call's output."""

    def __init__(self, dag: DagSpec, *, progress_interval: float = 0.0, now: float = T0):
        self.dag = dag
        self.rs = RunState(dag, RUN_ID, progress_interval=progress_interval)
        self.now = now
        self.dispatched: set[str] = set()  # StartStep given, step_started not yet reported
        self.running: set[str] = set()  # step_started reported, no outcome yet
        self.polling: set[str] = set()  # step_polling reported, step_started not yet
        self.skipped_by_precondition: set[str] = set()
        self.retry_at: dict[str, float] = {}  # retry timers not yet fired
        self.stop_requested: set[str] = set()
        self.finished: list[RunStatus] = []  # FinishRun statuses, in order
        self.starts: defaultdict[str, list[int]] = defaultdict(list)  # attempts per step
        self.log: list[object] = []
        self.progress: list[DagRunProgressEvent] = []
        self.grace_at: float | None = None  # the HandlerDeadline given, if any
        self.handler_starts: list[str] = []  # handlers started, in order, this try of the run

    # ------------------------------------------------------------------ stepping

    def _tick(self, at: float | None, dt: float) -> float:
        self.now = self.now + dt if at is None else at
        return self.now

    def start(self, at=None, dt=0.0):
        now = self._tick(at, dt)
        return self._call("start", lambda: self.rs.start(now), now)

    def started(self, sid, at=None, dt=1.0):
        now = self._tick(at, dt)
        return self._call("step_started", lambda: self.rs.step_started(sid, now), now, sid)

    def poll(self, sid, at=None, dt=1.0):
        now = self._tick(at, dt)
        return self._call("step_polling", lambda: self.rs.step_polling(sid, now), now, sid)

    def skip(self, sid, reason="precondition exited 1: no", at=None, dt=1.0):
        now = self._tick(at, dt)
        return self._call("step_skipped", lambda: self.rs.step_skipped(sid, now, reason), now, sid)

    def ok(self, sid, at=None, dt=1.0, outputs=None):
        now = self._tick(at, dt)
        return self._call(
            "step_succeeded",
            lambda: self.rs.step_succeeded(sid, now, outputs=outputs),
            now,
            sid,
        )

    def fail(self, sid, error="boom", at=None, dt=1.0):
        now = self._tick(at, dt)
        return self._call(
            "step_failed", lambda: self.rs.step_failed(sid, now, error), now, sid, error
        )

    def timeout(self, sid, seconds=300, at=None, dt=1.0):
        now = self._tick(at, dt)
        error = None  # checked by the caller; the ErrorEvent must match the step's error
        return self._call(
            "step_timed_out", lambda: self.rs.step_timed_out(sid, now, seconds), now, sid, error
        )

    def retry_due(self, sid, at=None, dt=None):
        if at is None and dt is None:
            at = max(self.now, self.retry_at.get(sid, self.now))
        now = self._tick(at, dt or 0.0)
        self.retry_at.pop(sid, None)
        return self._call("retry_due", lambda: self.rs.retry_due(sid, now), now)

    def step_cancelled(self, sid, reason=None, at=None, dt=1.0):
        now = self._tick(at, dt)
        return self._call(
            "step_cancelled", lambda: self.rs.step_cancelled(sid, now, reason), now, sid
        )

    def cancel(self, reason="cancelled by user", at=None, dt=1.0):
        now = self._tick(at, dt)
        return self._call("cancel", lambda: self.rs.cancel(now, reason), now)

    def retry(self, at=None, dt=1.0):
        now = self._tick(at, dt)
        self.handler_starts, self.grace_at = [], None
        return self._call("retry", lambda: self.rs.retry(now), now)

    def grace_over(self, reason=None, at=None, dt=0.0):
        now = self._tick(at, dt)
        return self._call("grace_over", lambda: self.rs.grace_over(now, reason), now)

    def requeue(self, at=None, dt=1.0):
        now = self._tick(at, dt)
        self.handler_starts, self.grace_at = [], None
        return self._call("requeue", lambda: self.rs.requeue(now), now)

    def illegal(self, name, sid=None):
        """`name` must be refused without changing anything."""
        rs, now = self.rs, self.now + 1
        call = {
            "start": lambda: rs.start(now),
            "cancel": lambda: rs.cancel(now),
            "retry": lambda: rs.retry(now),
            "requeue": lambda: rs.requeue(now),
            "step_started": lambda: rs.step_started(sid, now),
            "step_succeeded": lambda: rs.step_succeeded(sid, now),
            "step_failed": lambda: rs.step_failed(sid, now, "boom"),
            "step_timed_out": lambda: rs.step_timed_out(sid, now, 300),
            "retry_due": lambda: rs.retry_due(sid, now),
            "step_cancelled": lambda: rs.step_cancelled(sid, now),
            "grace_over": lambda: rs.grace_over(now),
            "step_polling": lambda: rs.step_polling(sid, now),
            "step_skipped": lambda: rs.step_skipped(sid, now, "precondition exited 1"),
        }[name]
        before = snapshot(rs)
        with pytest.raises(IllegalTransition):
            call()
        assert snapshot(rs) == before

    # ------------------------------------------------------------------ checking

    def _call(self, name, fn, now, sid=None, error=None):
        rs = self.rs
        before_steps = {s: state.status for s, state in rs.steps.items()}
        was_polling = sid in self.polling
        before_run = rs.status
        before_counts = recount(rs)
        out = fn()
        self.log.extend(out)

        # Only known effect and event types; events carry this run and this time.
        assert all(isinstance(e, EVENTS + EFFECTS) for e in out), out
        for e in out:
            if isinstance(e, EVENTS):
                assert (e.dag_id, e.run_id, e.timestamp, e.seq) == (self.dag.id, RUN_ID, now, None)

        # Outcome reports end the attempt.
        if name in (
            "step_succeeded",
            "step_failed",
            "step_timed_out",
            "step_cancelled",
            "step_skipped",
        ):
            self.dispatched.discard(sid)
            self.running.discard(sid)
            self.polling.discard(sid)
            self.stop_requested.discard(sid)
            if name == "step_skipped":
                self.skipped_by_precondition.add(sid)
        elif name == "step_started":
            if was_polling:
                self.polling.remove(sid)
            else:
                self.dispatched.remove(sid)
            self.running.add(sid)
        elif name == "step_polling":
            self.dispatched.remove(sid)
            self.polling.add(sid)

        self._check_step_events(out, before_steps, now, sid if was_polling else None)
        self._check_run_events(out, before_run, now)
        self._check_progress(out, before_counts, now)
        self._check_errors(name, out, sid, error)
        self._check_effects(out, now)
        return out

    def _check_step_events(self, out, before_steps, now, stopped_polling=None):
        by_step = defaultdict(list)
        for e in out:
            if isinstance(e, StepStatusEvent):
                by_step[e.step_id].append(e)
        assert set(by_step) <= set(self.rs.steps)
        for sid, state in self.rs.steps.items():
            events = by_step.get(sid, [])
            chain = [before_steps[sid], *(e.status for e in events)]
            # One event per change: each event's status differs from the one before (but
            # a step whose polling ended says so, still running) ...
            if sid == stopped_polling and chain[:2] == [S.RUNNING, S.RUNNING]:
                chain = chain[1:]
                assert events[0].waiting_for is None
            assert all(a is not b for a, b in itertools.pairwise(chain)), (sid, chain)
            # A polling step's events, and only those, say what it waits for.
            waits = state.spec.wait_for is not None and sid in self.polling
            for e in events:
                assert (e.waiting_for is not None) == (waits and e is events[-1])
            # ... and they lead to the step's current status (no change -> no event).
            assert chain[-1] is state.status, (sid, chain)
            if events:
                last = events[-1]
                assert last.start_time == state.start_time
                assert last.end_time == state.end_time
                assert last.duration == expected_duration(state.start_time, state.end_time)
                assert last.duration is None or isinstance(last.duration, int)
                assert last.retry_count == max(0, state.attempt - 1)
                # (a dispatch sends no event: the last one came before its attempt was counted)
                dispatched = 1 if state.dispatched else 0
                assert last.attempt == state.attempts_before + state.attempt - dispatched
                assert last.error == state.error

    def _check_run_events(self, out, before_run, now):
        rs = self.rs
        chain = [before_run, *(e.status for e in out if isinstance(e, DagRunStatusEvent))]
        assert all(a is not b for a, b in itertools.pairwise(chain)), chain
        assert chain[-1] is rs.status
        finishes = [e for e in out if isinstance(e, FinishRun)]
        # A retried run passes through RUNNING and may finish in the same call (a cancelled
        # run whose steps had all succeeded): it must still say FinishRun, or its driver waits.
        if rs.status.finished and (not before_run.finished or R.RUNNING in chain):
            assert finishes == [FinishRun(rs.status)]
            assert out[-1] == FinishRun(rs.status)
            assert out[-2] == DagRunStatusEvent(self.dag.id, RUN_ID, rs.status, now)
            assert rs.ended_at == now
            assert all(state.status.finished for state in rs.steps.values())
            assert not self.dispatched and not self.running and not self.polling
            self.finished.append(rs.status)
        else:
            assert finishes == []

    def _check_progress(self, out, before_counts, now):
        progress = [e for e in out if isinstance(e, DagRunProgressEvent)]
        assert len(progress) <= 1
        counts = recount(self.rs)
        if counts != before_counts and self.rs.progress_interval == 0:
            assert len(progress) == 1, "counts changed but no progress event"
        for p in progress:
            check_progress_event(p)
            assert p.total_steps == len(self.dag.steps) + len(self.dag.handlers)
            assert (p.completed_steps, p.running_steps, p.failed_steps, p.pending_steps) == counts
            self.progress.append(p)

    def _check_errors(self, name, out, sid, error):
        errors = [e for e in out if isinstance(e, ErrorEvent)]
        if name in ("step_failed", "step_timed_out"):
            assert len(errors) == 1
            assert errors[0].step_id == sid
            assert errors[0].error == self.rs.steps[sid].error
            if error is not None:
                assert errors[0].error == error
        else:
            assert errors == []

    def _check_effects(self, out, now):
        rs = self.rs
        ordinary = self.dag.steps
        for e in out:
            if isinstance(e, StartStep) and e.step_id in self.dag.handlers:
                # A handler starts only once every ordinary step is final, only if it
                # matches the decided outcome, only within its grace, and one at a time.
                assert all(rs.steps[sid].status.finished for sid in ordinary)
                assert rs.decided is not None
                assert rs.steps[e.step_id].spec.handler in HANDLERS_OF[rs.decided]
                assert not rs._grace_over
                # Handlers run one at a time, in order: those before it are final, retries
                # included (a handler waiting to retry is not), and none other waits to retry.
                handlers = list(self.dag.handlers)
                before = handlers[: handlers.index(e.step_id)]
                assert all(rs.steps[sid].status.finished for sid in before)
                assert not any(
                    rs.steps[sid].status is S.RETRYING
                    for sid in handlers
                    if sid != e.step_id
                )
                if e.step_id not in self.handler_starts:
                    self.handler_starts.append(e.step_id)
            elif isinstance(e, StartStep):
                assert not rs.cancelling
                assert rs.decided is None
            if isinstance(e, HandlerDeadline):
                assert rs.cancelling and self.grace_at is None
                assert e.at == now + rs.handler_grace
                self.grace_at = e.at
            if isinstance(e, StartStep):
                assert e.step_id not in self.dispatched | self.running | self.polling
                self.dispatched.add(e.step_id)
                self.starts[e.step_id].append(e.attempt)
                state = rs.steps[e.step_id]
                # numbered over every try of the run; the budget counts this try only
                assert e.attempt == state.attempts_before + state.attempt
                assert state.attempt <= state.spec.max_attempts
            elif isinstance(e, ScheduleRetry):
                assert rs.steps[e.step_id].status is S.RETRYING
                assert e.at >= now
                self.retry_at[e.step_id] = e.at
            elif isinstance(e, StopStep):
                assert e.step_id in self.dispatched | self.running | self.polling
                self.stop_requested.add(e.step_id)
        # The state agrees with us on which attempts are out.
        assert self.dispatched == {s for s, state in rs.steps.items() if state.dispatched}
        running = {s for s, state in rs.steps.items() if state.status is S.RUNNING}
        assert self.running | self.polling == running
        assert self.polling == {s for s, state in rs.steps.items() if state.phase == "polling"}
        limit = self.dag.max_active_steps
        if limit is not None:
            assert len(self.dispatched) + len(self.running) + len(self.polling) <= limit
        out_handlers = (self.dispatched | self.running) & set(self.dag.handlers)
        assert len(out_handlers) <= 1
        if out_handlers:
            assert not (self.dispatched | self.running) - out_handlers

    # ------------------------------------------------------------------ queries

    def status(self, sid) -> StepStatus:
        return self.rs.steps[sid].status

    def statuses(self) -> dict[str, str]:
        return {sid: str(state.status) for sid, state in self.rs.steps.items()}

    def run_through(self, sid, outcome="success"):
        """Report an already dispatched step as started, then its outcome."""
        self.started(sid)
        if outcome == "success":
            return self.ok(sid)
        return self.fail(sid)


def check_progress_event(p: DagRunProgressEvent) -> None:
    counts = p.completed_steps + p.running_steps + p.failed_steps + p.pending_steps
    assert counts == p.total_steps
    assert min(p.completed_steps, p.running_steps, p.failed_steps, p.pending_steps) >= 0
    assert p.completion_percentage == round(100 * p.completed_steps / p.total_steps, 1)


def starts(out) -> list[tuple[str, int]]:
    return [(e.step_id, e.attempt) for e in out if isinstance(e, StartStep)]


def step_events(out) -> list[tuple[str, str]]:
    return [(e.step_id, str(e.status)) for e in out if isinstance(e, StepStatusEvent)]


# =============================================================================== basics


def test_a_simple_run_end_to_end():
    dag = make_dag({"a": {}, "b": {"depends_on": ["a"]}, "c": {"depends_on": ["a"]}})
    h = Harness(dag)
    assert h.rs.status is R.QUEUED
    out = h.start()
    assert h.rs.status is R.RUNNING and h.rs.started_at == T0
    assert starts(out) == [("a", 1)]
    assert h.progress[-1].pending_steps == 3
    h.started("a")
    out = h.ok("a")
    assert starts(out) == [("b", 1), ("c", 1)]
    h.started("b")
    h.started("c")
    assert (h.progress[-1].running_steps, h.progress[-1].completed_steps) == (2, 1)
    assert h.progress[-1].completion_percentage == 33.3
    h.ok("c")
    out = h.ok("b")
    assert h.finished == [R.SUCCESS]
    assert out[-2:] == [DagRunStatusEvent("d", RUN_ID, R.SUCCESS, h.now), FinishRun(R.SUCCESS)]
    assert h.progress[-1].completion_percentage == 100.0


def test_exact_event_stream_with_a_retry():
    """What a subscriber sees, field by field (progress events are checked by the harness)."""
    dag = make_dag({"a": {"retries": 1, "retry_delay": "30s"}, "b": {"depends_on": ["a"]}})
    h = Harness(dag)
    h.start(at=T0)
    h.started("a", at=T0 + 1)
    h.fail("a", "boom", at=T0 + 3)
    h.retry_due("a", at=T0 + 33)
    h.started("a", at=T0 + 34)
    h.ok("a", at=T0 + 35.5)
    h.started("b", at=T0 + 36)
    h.fail("b", "exit 1", at=T0 + 40)

    def step(sid, status, start, end, duration, retries, error, at):
        return StepStatusEvent("d", RUN_ID, sid, status, start, end, duration, retries, error, at)

    seen = [e for e in h.log if not isinstance(e, DagRunProgressEvent)]
    assert seen == [
        DagRunStatusEvent("d", RUN_ID, R.RUNNING, T0),
        StartStep("a", 1),
        step("a", S.RUNNING, T0 + 1, None, None, 0, None, T0 + 1),
        ErrorEvent("d", RUN_ID, "a", "boom", T0 + 3),
        step("a", S.RETRYING, T0 + 1, T0 + 3, 2000, 0, "boom", T0 + 3),
        ScheduleRetry("a", T0 + 33),
        StartStep("a", 2),
        step("a", S.RUNNING, T0 + 34, None, None, 1, None, T0 + 34),
        step("a", S.SUCCESS, T0 + 34, T0 + 35.5, 1500, 1, None, T0 + 35.5),
        StartStep("b", 1),
        step("b", S.RUNNING, T0 + 36, None, None, 0, None, T0 + 36),
        ErrorEvent("d", RUN_ID, "b", "exit 1", T0 + 40),
        step("b", S.FAILED, T0 + 36, T0 + 40, 4000, 0, "exit 1", T0 + 40),
        DagRunStatusEvent("d", RUN_ID, R.FAILED, T0 + 40),
        FinishRun(R.FAILED),
    ]
    progress = [
        (p.completed_steps, p.running_steps, p.failed_steps, p.pending_steps) for p in h.progress
    ]
    assert progress[0] == (0, 0, 0, 2)  # start
    assert progress[-1] == (1, 0, 1, 0)  # end
    assert (0, 1, 0, 1) in progress and (1, 1, 0, 0) in progress


def test_progress_matches_the_seed_example():
    """4 steps, 2 completed, 1 running, 1 pending -> 50.0%."""
    dag = make_dag(
        {
            "a": {},
            "b": {"depends_on": ["a"]},
            "c": {"depends_on": ["b"]},
            "d": {"depends_on": ["c"]},
        }
    )
    h = Harness(dag)
    h.start()
    h.run_through("a")
    h.run_through("b")
    h.started("c")
    p = h.progress[-1]
    assert (p.total_steps, p.completed_steps, p.running_steps, p.failed_steps, p.pending_steps) == (
        4,
        2,
        1,
        0,
        1,
    )
    assert p.completion_percentage == 50.0


def test_progress_interval_throttles_but_start_and_end_always_report():
    dag = make_dag({f"s{i}": {} for i in range(4)})
    h = Harness(dag, progress_interval=10.0)
    h.start(at=T0)
    assert len(h.progress) == 1
    h.started("s0", at=T0 + 1)
    h.started("s1", at=T0 + 2)
    assert len(h.progress) == 1  # within 10 s of the last report
    h.started("s2", at=T0 + 11)
    assert len(h.progress) == 2 and h.progress[-1].running_steps == 3
    h.started("s3", at=T0 + 12)
    h.ok("s0", at=T0 + 13)
    h.ok("s1", at=T0 + 14)
    h.ok("s2", at=T0 + 15)
    assert len(h.progress) == 2
    h.ok("s3", at=T0 + 16)  # done: reported even within the interval
    assert len(h.progress) == 3 and h.progress[-1].completed_steps == 4


def test_a_dag_run_object_exposes_totals():
    dag = make_dag({"a": {}, "b": {}})
    rs = RunState(dag, RUN_ID, {"day": "x"})
    assert rs.total_steps == 2 and rs.params == {"day": "x"} and rs.status is R.QUEUED
    p = rs.progress(T0)
    assert (p.total_steps, p.pending_steps, p.completion_percentage) == (2, 2, 0.0)


# ======================================================================= legal transitions

CHAIN = {"a": {"retries": 1, "retry_delay": 10}, "b": {"depends_on": ["a"]}}


def setup_dispatched(h):
    h.start()


def setup_running(h):
    h.start()
    h.started("a")


def setup_retrying(h):
    setup_running(h)
    h.fail("a")


def setup_retry_dispatched(h):
    setup_retrying(h)
    h.retry_due("a")


def setup_cancelling(h):
    setup_running(h)
    h.cancel()


def setup_upstream_on_last_attempt(h):
    setup_retry_dispatched(h)
    h.started("a")


def setup_cancel_dispatched(h):
    setup_dispatched(h)
    h.cancel()


def setup_failed(h):
    setup_upstream_on_last_attempt(h)
    h.fail("a")


def nothing(h):
    pass


ACTIONS = {
    "start": lambda h: h.start(),
    "started": lambda h: h.started("a"),
    "ok": lambda h: h.ok("a"),
    "fail": lambda h: h.fail("a"),
    "timeout": lambda h: h.timeout("a"),
    "retry_due": lambda h: h.retry_due("a"),
    "cancel": lambda h: h.cancel(),
    "step_cancelled": lambda h: h.step_cancelled("a"),
    "retry": lambda h: h.retry(),
    "requeue": lambda h: h.requeue(),
    "poll": lambda h: h.poll("a"),
    "skip": lambda h: h.skip("a"),
}

# (name, setup, action, step, expected step status, attempt, dispatched, run status)
LEGAL = [
    ("queued->running", nothing, "start", "a", S.PENDING, 1, True, R.RUNNING),
    ("dispatched->running", setup_dispatched, "started", "a", S.RUNNING, 1, False, R.RUNNING),
    ("running->success", setup_running, "ok", "a", S.SUCCESS, 1, False, R.RUNNING),
    ("running->retrying", setup_running, "fail", "a", S.RETRYING, 1, False, R.RUNNING),
    ("timed-out->retrying", setup_running, "timeout", "a", S.RETRYING, 1, False, R.RUNNING),
    ("retrying->dispatched", setup_retrying, "retry_due", "a", S.RETRYING, 2, True, R.RUNNING),
    ("retrying->running", setup_retry_dispatched, "started", "a", S.RUNNING, 2, False, R.RUNNING),
    ("running->failed", setup_upstream_on_last_attempt, "fail", "a", S.FAILED, 2, False, R.FAILED),
    (
        "pending->upstream_failed",
        setup_upstream_on_last_attempt,
        "fail",
        "b",
        S.UPSTREAM_FAILED,
        0,
        False,
        R.FAILED,
    ),
    ("pending->cancelled", setup_running, "cancel", "b", S.CANCELLED, 0, False, R.RUNNING),
    ("running-until-stopped", setup_running, "cancel", "a", S.RUNNING, 1, False, R.RUNNING),
    (
        "running->cancelled",
        setup_cancelling,
        "step_cancelled",
        "a",
        S.CANCELLED,
        1,
        False,
        R.CANCELLED,
    ),
    ("retrying->cancelled", setup_retrying, "cancel", "a", S.CANCELLED, 1, False, R.CANCELLED),
    (
        "dispatched->cancelled",
        setup_cancel_dispatched,
        "step_cancelled",
        "a",
        S.CANCELLED,
        1,
        False,
        R.CANCELLED,
    ),
    ("queued->cancelled", nothing, "cancel", "a", S.CANCELLED, 0, False, R.CANCELLED),
    ("failed->pending(retry)", setup_failed, "retry", "a", S.PENDING, 1, True, R.RUNNING),
    ("failed->queued(requeue)", setup_failed, "requeue", "a", S.PENDING, 0, False, R.QUEUED),
    ("dispatched->polling", setup_dispatched, "poll", "a", S.RUNNING, 1, False, R.RUNNING),
    ("dispatched->skipped", setup_dispatched, "skip", "a", S.SKIPPED, 0, False, R.SUCCESS),
    ("retrying->skipped", setup_retry_dispatched, "skip", "a", S.SKIPPED, 1, False, R.SUCCESS),
    ("retrying->polling", setup_retry_dispatched, "poll", "a", S.RUNNING, 2, False, R.RUNNING),
]


@pytest.mark.parametrize(
    ("setup", "action", "sid", "status", "attempt", "dispatched", "run_status"),
    [pytest.param(*row[1:], id=row[0]) for row in LEGAL],
)
def test_legal_transitions(setup, action, sid, status, attempt, dispatched, run_status):
    h = Harness(make_dag(CHAIN))
    setup(h)
    ACTIONS[action](h)
    state = h.rs.steps[sid]
    assert (state.status, state.attempt, state.dispatched) == (status, attempt, dispatched)
    assert h.rs.status is run_status


# ===================================================================== illegal transitions


def setup_a_success(h):
    h.start()
    h.run_through("a")


def setup_retry_ready_waiting_for_slot(h):
    """a waits for a retry slot (ready, not dispatched) while x holds the only slot."""
    h.start()
    h.started("a")
    h.fail("a")  # x takes the slot
    h.started("x")
    h.retry_due("a")
    assert h.rs.steps["a"].ready and not h.rs.steps["a"].dispatched


def setup_finished(h):
    h.start()
    h.run_through("a")  # max_active_steps = 1: a, then x, then b
    h.run_through("x")
    h.run_through("b")
    assert h.rs.status is R.SUCCESS


def setup_failed_run(h):
    h.start()
    h.started("a")
    h.fail("a")
    h.run_through("x")
    h.retry_due("a")
    h.run_through("a", "failed")
    assert h.rs.status is R.FAILED


def setup_cancelling_run(h):
    h.start()
    h.started("a")
    h.cancel()


ILLEGAL_DAG = {
    "a": {"retries": 1},
    "b": {"depends_on": ["a"]},
    "x": {},
}
STEP_EVENTS = [
    "step_started",
    "step_succeeded",
    "step_failed",
    "step_timed_out",
    "retry_due",
    "step_cancelled",
]

ILLEGAL = [
    # A queued run takes no step events, and cannot be retried.
    *[("queued", lambda h: None, name, "a") for name in STEP_EVENTS],
    ("queued", lambda h: None, "retry", None),
    # a dispatched but not started: only started/cancelled make sense.
    ("dispatched", lambda h: h.start(), "start", None),
    ("dispatched", lambda h: h.start(), "step_succeeded", "a"),
    ("dispatched", lambda h: h.start(), "step_failed", "a"),
    ("dispatched", lambda h: h.start(), "step_timed_out", "a"),
    ("dispatched", lambda h: h.start(), "retry_due", "a"),
    ("dispatched", lambda h: h.start(), "retry", None),
    # b is waiting for a: nothing may happen to it yet.
    *[("waiting", lambda h: h.start(), name, "b") for name in STEP_EVENTS],
    # Unknown step ids.
    *[("unknown", lambda h: h.start(), name, "nope") for name in STEP_EVENTS],
    # a running.
    ("running", lambda h: (h.start(), h.started("a")), "step_started", "a"),
    ("running", lambda h: (h.start(), h.started("a")), "retry_due", "a"),
    # a succeeded: no more reports for it.
    *[("success", setup_a_success, name, "a") for name in STEP_EVENTS],
    # a waiting for its retry timer.
    ("retrying", lambda h: (h.start(), h.started("a"), h.fail("a")), "step_started", "a"),
    ("retrying", lambda h: (h.start(), h.started("a"), h.fail("a")), "step_succeeded", "a"),
    ("retrying", lambda h: (h.start(), h.started("a"), h.fail("a")), "step_failed", "a"),
    ("retrying", lambda h: (h.start(), h.started("a"), h.fail("a")), "step_cancelled", "a"),
    # a's retry is due but it waits for a slot: the timer cannot fire twice, it cannot start.
    ("retry-ready", setup_retry_ready_waiting_for_slot, "retry_due", "a"),
    ("retry-ready", setup_retry_ready_waiting_for_slot, "step_started", "a"),
    ("retry-ready", setup_retry_ready_waiting_for_slot, "step_cancelled", "a"),
    # A finished run takes nothing but (if failed or cancelled) a retry.
    *[("success-run", setup_finished, name, sid) for name in STEP_EVENTS for sid in "abx"],
    ("success-run", setup_finished, "start", None),
    ("success-run", setup_finished, "cancel", None),
    ("success-run", setup_finished, "retry", None),
    *[("failed-run", setup_failed_run, name, "a") for name in STEP_EVENTS],
    ("failed-run", setup_failed_run, "cancel", None),
    ("failed-run", setup_failed_run, "start", None),
    # A run being cancelled cannot be cancelled again or retried.
    ("cancelling", setup_cancelling_run, "cancel", None),
    ("cancelling", setup_cancelling_run, "retry", None),
    ("cancelling", setup_cancelling_run, "step_cancelled", "b"),  # b was cancelled at once
    ("cancelling", setup_cancelling_run, "step_started", "x"),  # x was never dispatched
]


@pytest.mark.parametrize(
    ("setup", "name", "sid"),
    [
        pytest.param(setup, name, sid, id=f"{where}-{name}-{sid}")
        for where, setup, name, sid in ILLEGAL
    ],
)
def test_illegal_events_raise_and_change_nothing(setup, name, sid):
    h = Harness(make_dag(ILLEGAL_DAG, max_active_steps=1))
    setup(h)
    h.illegal(name, sid)


def test_cancelled_retry_timer_firing_late_is_illegal():
    h = Harness(make_dag({"a": {"retries": 2, "retry_delay": 60}, "b": {}}))
    h.start()
    h.started("a")
    h.started("b")
    h.fail("a")
    h.cancel()
    assert h.status("a") is S.CANCELLED
    h.illegal("retry_due", "a")  # the run still waits for b
    h.step_cancelled("b")
    assert h.rs.status is R.CANCELLED
    h.illegal("retry_due", "a")


# ============================================================================ trigger rules

OUTCOME_SETUP = {
    # outcome -> (steps making upstream `u` end that way, root to drive, root's result)
    "success": lambda u: ({u: {}}, u, "success"),
    "failed": lambda u: ({u: {}}, u, "failed"),
    "skipped": lambda u: (
        {f"{u}_root": {}, u: {"depends_on": [f"{u}_root"], "trigger_rule": "one_failed"}},
        f"{u}_root",
        "success",
    ),
    "upstream_failed": lambda u: (
        {f"{u}_root": {}, u: {"depends_on": [f"{u}_root"]}},
        f"{u}_root",
        "failed",
    ),
}

SU, F, K, U = "success", "failed", "skipped", "upstream_failed"
WAIT, RUN = "waiting", "run"

# (rule, u1 outcome, t after u1 only (u2 still running), u2 outcome, t at the end)
TRIGGER = [
    ("all_success", SU, WAIT, SU, RUN),
    ("all_success", SU, WAIT, F, U),
    ("all_success", SU, WAIT, K, K),
    ("all_success", SU, WAIT, U, U),
    ("all_success", F, U, SU, U),  # eager
    ("all_success", U, U, SU, U),
    ("all_success", K, K, SU, K),
    ("all_success", K, K, F, K),  # decided on the first outcome
    ("all_success", F, U, K, U),
    ("all_done", SU, WAIT, SU, RUN),
    ("all_done", F, WAIT, F, RUN),
    ("all_done", SU, WAIT, F, RUN),
    ("all_done", F, WAIT, SU, RUN),
    ("all_done", K, WAIT, U, RUN),
    ("all_done", U, WAIT, K, RUN),
    ("one_failed", F, RUN, SU, RUN),  # eager: runs while u2 is still running
    ("one_failed", U, RUN, SU, RUN),
    ("one_failed", SU, WAIT, F, RUN),
    ("one_failed", SU, WAIT, U, RUN),
    ("one_failed", K, WAIT, F, RUN),
    ("one_failed", SU, WAIT, SU, K),
    ("one_failed", K, WAIT, K, K),
    ("one_failed", SU, WAIT, K, K),
    ("one_success", SU, RUN, F, RUN),  # eager
    ("one_success", SU, RUN, SU, RUN),
    ("one_success", F, WAIT, SU, RUN),
    ("one_success", K, WAIT, SU, RUN),
    ("one_success", F, WAIT, F, U),
    ("one_success", U, WAIT, K, U),
    ("one_success", K, WAIT, F, U),
    ("one_success", K, WAIT, K, K),
    ("none_failed", SU, WAIT, SU, RUN),
    ("none_failed", SU, WAIT, K, RUN),
    ("none_failed", K, WAIT, K, RUN),
    ("none_failed", K, WAIT, SU, RUN),
    ("none_failed", F, U, SU, U),  # eager
    ("none_failed", U, U, K, U),
    ("none_failed", SU, WAIT, F, U),
    ("none_failed", K, WAIT, U, U),
]


def target_state(h: Harness) -> str:
    state = h.rs.steps["t"]
    if state.status is S.PENDING:
        return RUN if state.dispatched else WAIT
    return str(state.status)


@pytest.mark.parametrize(
    ("rule", "first", "after_first", "second", "final"),
    [pytest.param(*row, id="-".join(row)) for row in TRIGGER],
)
def test_trigger_rules(rule, first, after_first, second, final):
    steps1, root1, result1 = OUTCOME_SETUP[first]("u1")
    steps2, root2, result2 = OUTCOME_SETUP[second]("u2")
    dag = make_dag({**steps1, **steps2, "t": {"depends_on": ["u1", "u2"], "trigger_rule": rule}})
    h = Harness(dag)
    h.start()
    h.started(root1)
    h.started(root2)  # u2's branch is running while u1's outcome arrives

    h.ok(root1) if result1 == SU else h.fail(root1)
    assert h.status("u1") == first
    assert target_state(h) == after_first
    assert h.rs.status is R.RUNNING  # u2 still runs, whatever t does

    h.ok(root2) if result2 == SU else h.fail(root2)
    assert h.status("u2") == second
    assert target_state(h) == final

    if final == RUN:
        h.run_through("t")
        assert h.status("t") is S.SUCCESS
    # The run is over, and failed exactly when some step failed or was upstream_failed.
    assert h.rs.status.finished
    bad = {S.FAILED, S.UPSTREAM_FAILED}
    assert (h.rs.status is R.FAILED) == any(s.status in bad for s in h.rs.steps.values())


@pytest.mark.parametrize(
    ("rule", "outcome", "expected"),
    [
        ("all_success", SU, RUN),
        ("all_success", F, U),
        ("all_success", K, K),
        ("all_success", U, U),
        ("all_done", SU, RUN),
        ("all_done", F, RUN),
        ("all_done", K, RUN),
        ("all_done", U, RUN),
        ("one_failed", SU, K),
        ("one_failed", F, RUN),
        ("one_failed", K, K),
        ("one_failed", U, RUN),
        ("one_success", SU, RUN),
        ("one_success", F, U),
        ("one_success", K, K),
        ("one_success", U, U),
        ("none_failed", SU, RUN),
        ("none_failed", F, U),
        ("none_failed", K, RUN),
        ("none_failed", U, U),
    ],
)
def test_trigger_rules_with_one_upstream(rule, outcome, expected):
    steps, root, result = OUTCOME_SETUP[outcome]("u1")
    h = Harness(make_dag({**steps, "t": {"depends_on": ["u1"], "trigger_rule": rule}}))
    h.start()
    h.started(root)
    h.ok(root) if result == SU else h.fail(root)
    assert target_state(h) == expected


def test_skip_and_upstream_failed_propagate_down_a_branch():
    dag = make_dag(
        {
            "a": {},
            "alert": {"depends_on": ["a"], "trigger_rule": "one_failed"},
            "after_alert": {"depends_on": ["alert"]},
            "b": {"depends_on": ["a"]},
            "after_b": {"depends_on": ["b"]},
            "always": {"depends_on": ["after_alert", "after_b"], "trigger_rule": "all_done"},
        }
    )
    h = Harness(dag)
    h.start()
    h.started("a")
    out = h.ok("a")
    assert step_events(out) == [("a", "success"), ("alert", "skipped"), ("after_alert", "skipped")]
    assert starts(out) == [("b", 1)]
    h.started("b")
    out = h.fail("b")
    assert ("after_b", "upstream_failed") in step_events(out)
    assert starts(out) == [("always", 1)]
    h.run_through("always")
    assert h.rs.status is R.FAILED


# ================================================================================= retries


@pytest.mark.parametrize(
    ("options", "delays"),
    [
        ({"retry_delay": 10}, [10, 20, 40]),  # default backoff 2
        ({"retry_delay": 10, "retry_backoff": 2, "max_retry_delay": 25}, [10, 20, 25]),
        ({"retry_delay": "5s", "retry_backoff": 1}, [5, 5, 5]),
        ({"retry_delay": 1.5, "retry_backoff": 3}, [1.5, 4.5, 13.5]),
        ({"retry_delay": "1m", "retry_backoff": 10, "max_retry_delay": "1h"}, [60, 600, 3600]),
        ({}, [0, 0, 0]),
    ],
)
@pytest.mark.parametrize("last", ["success", "failed"])
def test_retries_back_off_and_end(options, delays, last):
    h = Harness(make_dag({"a": {"retries": 3, **options}, "b": {"depends_on": ["a"]}}))
    h.start()
    for n, delay in enumerate(delays):
        h.started("a")
        assert h.rs.steps["a"].retry_count == n
        out = h.fail("a", f"attempt {n + 1} failed")
        failed_at = h.now
        assert h.status("a") is S.RETRYING
        assert [e for e in out if isinstance(e, ScheduleRetry)] == [
            ScheduleRetry("a", pytest.approx(failed_at + delay))
        ]
        assert starts(out) == []  # nothing runs until the timer fires
        assert h.status("b") is S.PENDING
        assert h.progress[-1].running_steps == 1  # retrying counts as running
        out = h.retry_due("a")
        assert starts(out) == [("a", n + 2)]
    h.started("a")
    assert h.rs.steps["a"].retry_count == 3
    if last == "success":
        out = h.ok("a")
        assert h.status("a") is S.SUCCESS
        assert starts(out) == [("b", 1)]
        h.run_through("b")
        assert h.rs.status is R.SUCCESS
    else:
        out = h.fail("a", "gave up")
        assert h.status("a") is S.FAILED
        assert not any(isinstance(e, ScheduleRetry) for e in out)
        assert h.status("b") is S.UPSTREAM_FAILED
        assert h.rs.status is R.FAILED
    final = [e for e in out if isinstance(e, StepStatusEvent) and e.step_id == "a"][-1]
    assert final.retry_count == 3
    assert final.error == (None if last == "success" else "gave up")
    assert h.starts["a"] == [1, 2, 3, 4]


def test_no_retries_means_one_attempt():
    h = Harness(make_dag({"a": {}}))
    h.start()
    h.started("a")
    out = h.fail("a", "nope")
    assert h.status("a") is S.FAILED and h.rs.status is R.FAILED
    assert not any(isinstance(e, ScheduleRetry) for e in out)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(300, "300s"), (300.0, "300s"), (1.5, "1.5s"), (0.25, "0.25s"), (5400, "5400s")],
)
def test_timeouts(seconds, text):
    h = Harness(make_dag({"a": {"timeout": seconds}, "b": {"depends_on": ["a"]}}))
    h.start()
    h.started("a")
    out = h.timeout("a", h.rs.dag.steps["a"].timeout)
    assert h.status("a") is S.FAILED
    assert h.rs.steps["a"].error == f"timed out after {text}"
    assert [e.error for e in out if isinstance(e, ErrorEvent)] == [f"timed out after {text}"]
    assert h.status("b") is S.UPSTREAM_FAILED


def test_a_timeout_is_retried_like_a_failure():
    h = Harness(make_dag({"a": {"timeout": "5m", "retries": 1, "retry_delay": "1s"}}))
    h.start()
    h.started("a")
    out = h.timeout("a", 300)
    assert h.status("a") is S.RETRYING
    assert h.rs.steps["a"].error == "timed out after 300s"
    assert [type(e) for e in out if isinstance(e, ScheduleRetry)] == [ScheduleRetry]
    h.retry_due("a")
    h.started("a")
    assert h.rs.steps["a"].error is None  # a new attempt starts clean
    h.ok("a")
    assert h.rs.status is R.SUCCESS


# ========================================================================= max_active_steps


def test_max_active_steps_limits_outstanding_attempts():
    h = Harness(make_dag({f"s{i}": {} for i in range(6)}, max_active_steps=2))
    assert starts(h.start()) == [("s0", 1), ("s1", 1)]
    # Dispatched-but-not-started attempts hold their slot too.
    assert starts(h.started("s0")) == []
    assert starts(h.ok("s0")) == [("s2", 1)]
    h.started("s1")
    assert starts(h.fail("s1")) == [("s3", 1)]
    h.started("s2")
    h.started("s3")
    assert starts(h.ok("s2")) == [("s4", 1)]
    assert starts(h.ok("s3")) == [("s5", 1)]
    h.run_through("s4")
    h.run_through("s5")
    assert h.rs.status is R.FAILED  # the harness checked <= 2 outstanding after every event


def test_a_waiting_retry_gives_its_slot_away_and_queues_for_one():
    h = Harness(make_dag({"a": {"retries": 1, "retry_delay": 5}, "b": {}}, max_active_steps=1))
    assert starts(h.start()) == [("a", 1)]
    h.started("a")
    out = h.fail("a")
    assert starts(out) == [("b", 1)]  # a's slot goes to b while a waits
    h.started("b")
    assert starts(h.retry_due("a")) == []  # due, but b holds the only slot
    assert h.rs.steps["a"].ready
    assert starts(h.ok("b")) == [("a", 2)]
    h.run_through("a")
    assert h.rs.status is R.SUCCESS


def test_max_active_steps_with_a_downstream_fan_out():
    steps = {"root": {}, **{f"w{i}": {"depends_on": ["root"]} for i in range(5)}}
    steps["join"] = {"depends_on": [f"w{i}" for i in range(5)]}
    h = Harness(make_dag(steps, max_active_steps=3))
    h.start()
    out = h.run_through("root")
    assert starts(out) == [("w0", 1), ("w1", 1), ("w2", 1)]
    for i in range(5):
        h.run_through(f"w{i}")
    h.run_through("join")
    assert h.rs.status is R.SUCCESS
    assert max(p.running_steps for p in h.progress) <= 3


# =================================================================================== cancel


def test_cancel_stops_running_steps_and_cancels_waiting_ones():
    dag = make_dag(
        {
            "run": {},
            "disp": {},
            "retry": {"retries": 2, "retry_delay": 60},
            "done": {},
            "down": {"depends_on": ["run"]},
        }
    )
    h = Harness(dag)
    h.start()
    h.started("run")
    h.started("retry")
    h.fail("retry")
    h.run_through("done")
    # "disp" has been dispatched but has not reported step_started.
    out = h.cancel("operator said stop")
    assert sorted(e.step_id for e in out if isinstance(e, StopStep)) == ["disp", "run"]
    assert sorted(step_events(out)) == [("down", "cancelled"), ("retry", "cancelled")]
    assert h.rs.steps["down"].error == "operator said stop"
    assert h.rs.steps["retry"].error == "operator said stop"
    assert h.rs.steps["down"].end_time == h.now
    assert h.rs.status is R.RUNNING and h.rs.cancelling  # waits for the stops
    assert h.status("done") is S.SUCCESS

    out = h.step_cancelled("run")
    assert h.status("run") is S.CANCELLED
    assert h.rs.steps["run"].error == "operator said stop"
    assert h.rs.status is R.RUNNING

    h.started("disp")  # it got going before the stop arrived: still fine
    out = h.step_cancelled("disp", "killed by SIGTERM")
    assert h.rs.steps["disp"].error == "killed by SIGTERM"
    assert h.rs.status is R.CANCELLED
    assert out[-1] == FinishRun(R.CANCELLED)
    assert h.statuses() == {
        "run": "cancelled",
        "disp": "cancelled",
        "retry": "cancelled",
        "done": "success",
        "down": "cancelled",
    }
    assert h.progress[-1].failed_steps == 4 and h.progress[-1].completed_steps == 1


def test_a_step_that_finishes_despite_the_stop_keeps_its_outcome():
    dag = make_dag({"a": {"retries": 3}, "b": {}, "c": {"depends_on": ["b"]}})
    h = Harness(dag)
    h.start()
    h.started("a")
    h.started("b")
    h.cancel()
    h.ok("b")  # finished before the kill landed
    assert h.status("b") is S.SUCCESS
    assert h.status("c") is S.CANCELLED  # nothing new starts while cancelling
    out = h.fail("a")  # retries left, but the run is being cancelled: no retry
    assert h.status("a") is S.FAILED
    assert not any(isinstance(e, ScheduleRetry | StartStep) for e in out)
    assert h.rs.status is R.CANCELLED


def test_cancel_a_queued_run():
    h = Harness(make_dag({"a": {}, "b": {"depends_on": ["a"]}}))
    out = h.cancel("not needed")
    assert h.rs.status is R.CANCELLED
    assert starts(out) == [] and not any(isinstance(e, StopStep) for e in out)
    assert step_events(out) == [("a", "cancelled"), ("b", "cancelled")]
    run_events = [e.status for e in out if isinstance(e, DagRunStatusEvent)]
    assert run_events == [R.CANCELLED]
    assert out[-1] == FinishRun(R.CANCELLED)
    assert h.progress[-1].failed_steps == 2
    h.illegal("start")
    h.illegal("cancel")


def test_cancel_with_nothing_running_ends_at_once():
    h = Harness(make_dag({"a": {"retries": 1, "retry_delay": 60}, "b": {"depends_on": ["a"]}}))
    h.start()
    h.started("a")
    h.fail("a")
    out = h.cancel()
    assert out[-1] == FinishRun(R.CANCELLED)
    assert h.statuses() == {"a": "cancelled", "b": "cancelled"}


def test_a_cancelled_run_stays_cancelled_even_if_a_step_had_failed():
    h = Harness(make_dag({"a": {}, "b": {}}))
    h.start()
    h.run_through("a", "failed")
    h.started("b")
    h.cancel()
    h.step_cancelled("b")
    assert h.rs.status is R.CANCELLED


# ==================================================================================== retry


def test_retry_a_failed_run_keeps_successes_and_reruns_the_rest():
    dag = make_dag(
        {"a": {}, "b": {"depends_on": ["a"], "retries": 1}, "c": {"depends_on": ["b"]}, "x": {}}
    )
    h = Harness(dag)
    h.start()
    h.run_through("a")
    h.run_through("x")
    h.started("b")
    h.fail("b")
    h.retry_due("b")
    h.run_through("b", "failed")
    assert h.statuses() == {"a": "success", "b": "failed", "c": "upstream_failed", "x": "success"}
    assert h.rs.status is R.FAILED
    a_times = (h.rs.steps["a"].start_time, h.rs.steps["a"].end_time)

    out = h.retry()
    assert [e.status for e in out if isinstance(e, DagRunStatusEvent)] == [R.QUEUED, R.RUNNING]
    assert sorted(step_events(out)) == [("b", "pending"), ("c", "pending")]
    assert starts(out) == [("b", 3)]  # numbering goes on after b's 2 attempts
    assert (h.rs.steps["a"].start_time, h.rs.steps["a"].end_time) == a_times
    assert h.rs.steps["b"].error is None and h.rs.steps["b"].start_time is None
    p = h.progress[-1]
    assert (p.completed_steps, p.running_steps, p.failed_steps, p.pending_steps) == (2, 0, 0, 2)
    assert h.rs.ended_at is None

    h.started("b")
    h.fail("b")  # the retry budget is back
    assert h.status("b") is S.RETRYING
    h.retry_due("b")
    out = h.run_through("b")
    assert starts(out) == [("c", 1)]
    h.run_through("c")
    assert h.rs.status is R.SUCCESS
    assert h.finished == [R.FAILED, R.SUCCESS]


def test_retry_a_cancelled_run():
    h = Harness(make_dag({"a": {}, "b": {"depends_on": ["a"]}}))
    h.start()
    h.run_through("a")
    h.started("b")
    h.cancel()
    h.step_cancelled("b")
    assert h.rs.status is R.CANCELLED
    out = h.retry()
    assert starts(out) == [("b", 2)]
    assert not h.rs.cancelling and h.rs.cancel_reason is None
    h.run_through("b")
    assert h.rs.status is R.SUCCESS


def test_retry_re_decides_skipped_steps_and_finishes():
    """A one_failed alert that was skipped is skipped again, and the run still ends."""
    dag = make_dag(
        {
            "a": {},
            "alert": {"depends_on": ["a"], "trigger_rule": "one_failed"},
            "after_alert": {"depends_on": ["alert"]},
            "b": {"depends_on": ["a"]},
        }
    )
    h = Harness(dag)
    h.start()
    h.run_through("a")
    h.run_through("b", "failed")
    assert h.rs.status is R.FAILED
    assert h.status("alert") is S.SKIPPED and h.status("after_alert") is S.SKIPPED
    out = h.retry()
    assert starts(out) == [("b", 2)]
    assert h.status("alert") is S.SKIPPED and h.status("after_alert") is S.SKIPPED
    out = h.run_through("b")
    assert h.rs.status is R.SUCCESS
    assert out[-1] == FinishRun(R.SUCCESS)


def test_retry_reruns_a_root_whatever_its_trigger_rule():
    """start() runs every step without upstreams; retry() must do the same."""
    dag = make_dag({"r": {"trigger_rule": "one_failed"}, "s": {"trigger_rule": "one_success"}})
    h = Harness(dag)
    assert sorted(starts(h.start())) == [("r", 1), ("s", 1)]
    h.run_through("r", "failed")
    h.run_through("s")
    assert h.rs.status is R.FAILED
    assert starts(h.retry()) == [("r", 2)]
    h.run_through("r")
    assert h.rs.status is R.SUCCESS


def test_retry_all_failed_run_with_max_active_steps():
    h = Harness(make_dag({f"s{i}": {} for i in range(4)}, max_active_steps=2))
    h.start()
    for i in range(4):
        if f"s{i}" in h.dispatched:
            h.run_through(f"s{i}", "failed")
        else:
            pytest.fail(f"s{i} was not dispatched")
    assert h.rs.status is R.FAILED
    assert starts(h.retry()) == [("s0", 2), ("s1", 2)]
    for i in range(4):
        h.run_through(f"s{i}")
    assert h.rs.status is R.SUCCESS


# ============================================================================ final status


def run_script(steps, script):
    """script: step -> outcome, applied in DAG order to whatever gets dispatched."""
    h = Harness(make_dag(steps))
    h.start()
    while h.dispatched:
        sid = next(s for s in h.rs.dag.order if s in h.dispatched)
        h.run_through(sid, script.get(sid, "success"))
    assert h.rs.status.finished
    return h


@pytest.mark.parametrize(
    ("steps", "script", "statuses", "run_status"),
    [
        pytest.param(
            {"a": {}, "b": {"depends_on": ["a"]}},
            {},
            {"a": "success", "b": "success"},
            R.SUCCESS,
            id="all-success",
        ),
        pytest.param(
            {"a": {}, "b": {"depends_on": ["a"]}},
            {"b": "failed"},
            {"a": "success", "b": "failed"},
            R.FAILED,
            id="leaf-failed",
        ),
        pytest.param(
            {
                "extract": {},
                "transform": {"depends_on": ["extract"]},
                "load": {"depends_on": ["transform"]},
                "cleanup": {"depends_on": ["load"], "trigger_rule": "all_done"},
            },
            {"transform": "failed"},
            {
                "extract": "success",
                "transform": "failed",
                "load": "upstream_failed",
                "cleanup": "success",
            },
            R.FAILED,
            id="etl-cleanup-after-failure",
        ),
        pytest.param(
            {
                "extract": {},
                "transform": {"depends_on": ["extract"]},
                "cleanup": {"depends_on": ["transform"], "trigger_rule": "all_done"},
            },
            {},
            {"extract": "success", "transform": "success", "cleanup": "success"},
            R.SUCCESS,
            id="etl-all-good",
        ),
        pytest.param(
            {"a": {}, "alert": {"depends_on": ["a"], "trigger_rule": "one_failed"}},
            {"a": "failed"},
            {"a": "failed", "alert": "success"},
            R.FAILED,
            id="alert-ran-after-failure",
        ),
        pytest.param(
            {"a": {}, "alert": {"depends_on": ["a"], "trigger_rule": "one_failed"}},
            {},
            {"a": "success", "alert": "skipped"},
            R.SUCCESS,
            id="skipped-is-not-failure",
        ),
        pytest.param(
            {
                "a": {},
                "b": {},
                "either": {"depends_on": ["a", "b"], "trigger_rule": "one_success"},
            },
            {"a": "failed"},
            {"a": "failed", "b": "success", "either": "success"},
            R.FAILED,
            id="one-success-still-failed-run",
        ),
    ],
)
def test_final_run_status(steps, script, statuses, run_status):
    h = run_script(steps, script)
    assert h.statuses() == statuses
    assert h.rs.status is run_status
    assert h.finished == [run_status]


# ============================================================================== long chains


def chain_dag(n: int, **first_options) -> DagSpec:
    steps = {"s0": first_options}
    steps.update({f"s{i}": {"depends_on": [f"s{i - 1}"]} for i in range(1, n)})
    return make_dag(steps)


def test_upstream_failed_propagates_down_ten_thousand_steps():
    n = 10_000
    h = Harness(chain_dag(n))
    h.start()
    h.started("s0")
    out = h.fail("s0", "broke")
    assert step_events(out) == [("s0", "failed")] + [
        (f"s{i}", "upstream_failed") for i in range(1, n)
    ]
    assert h.rs.status is R.FAILED
    p = h.progress[-1]
    assert (p.failed_steps, p.completed_steps, p.completion_percentage) == (n, 0, 0.0)


def test_skipped_propagates_down_ten_thousand_steps():
    n = 10_000
    steps = {"a": {}, "s0": {"depends_on": ["a"], "trigger_rule": "one_failed"}}
    steps.update({f"s{i}": {"depends_on": [f"s{i - 1}"]} for i in range(1, n)})
    h = Harness(make_dag(steps))
    h.start()
    out = h.run_through("a")
    assert len(step_events(out)) == n + 1
    assert h.rs.status is R.SUCCESS and h.progress[-1].completion_percentage == 100.0


def test_ten_thousand_step_chain_runs_step_by_step():
    """Every progress event of a long run keeps the invariant; work per event stays small."""
    n = 10_000
    rs = RunState(chain_dag(n), RUN_ID)
    now = T0
    seen = 0
    out = rs.start(now)
    for i in range(n):
        sid = f"s{i}"
        assert StartStep(sid, 1) in out
        now += 1
        rs.step_started(sid, now)
        now += 1
        out = rs.step_succeeded(sid, now)
        for e in out:
            if isinstance(e, DagRunProgressEvent):
                check_progress_event(e)
                assert e.completed_steps == i + 1
                seen += 1
    assert seen == n
    assert rs.status is R.SUCCESS and out[-1] == FinishRun(R.SUCCESS)


# ============================================================== random DAGs, random outcomes

RULES = ["all_success", "all_done", "one_failed", "one_success", "none_failed"]


@st.composite
def random_dags(draw) -> DagSpec:
    n = draw(st.integers(1, 7))
    steps = {}
    for i in range(n):
        ups = draw(st.lists(st.integers(0, i - 1), max_size=3, unique=True)) if i else []
        steps[f"s{i}"] = {
            "depends_on": [f"s{j}" for j in ups],
            "trigger_rule": draw(st.sampled_from(RULES)),
            "retries": draw(st.integers(0, 2)),
            "retry_delay": draw(st.sampled_from([0, 1, 5])),
        }
        if draw(st.integers(0, 3)) == 0:
            steps[f"s{i}"]["precondition"] = "true"
        if draw(st.integers(0, 3)) == 0:
            steps[f"s{i}"]["wait_for"] = {"command": "true"}
    # Shuffle file order: the state machine must not depend on it.
    names = draw(st.permutations(list(steps)))
    kinds = draw(st.lists(st.sampled_from(HANDLER_KINDS), unique=True, max_size=4))
    handlers = {kind: {"retries": draw(st.integers(0, 1))} for kind in kinds}
    return make_dag(
        {name: steps[name] for name in names},
        max_active_steps=draw(st.none() | st.integers(1, 3)),
        handlers=handlers,
    )


HANDLER_KINDS = ["on_success", "on_failure", "on_cancel", "always"]


def possible_actions(h: Harness) -> list[tuple[str, str]]:
    actions = [("started", sid) for sid in sorted(h.dispatched)]
    for sid in sorted(h.dispatched):
        spec = h.rs.steps[sid].spec  # (a handler's too)
        if spec.precondition is not None:
            actions.append(("skip", sid))
        if spec.wait_for is not None:
            actions.append(("poll", sid))
    for sid in sorted(h.polling):
        actions += [("started", sid), ("fail", sid)]
    for sid in sorted(h.running):
        actions += [("ok", sid), ("fail", sid), ("timeout", sid)]
    actions += [("step_cancelled", sid) for sid in sorted(h.stop_requested)]
    actions += [("retry_due", sid) for sid in sorted(h.retry_at)]
    if RunInput.GRACE_OVER in RUN_TRANSITIONS[h.rs.phase]:
        actions.append(("grace_over", None))  # the deadline, or a second Ctrl-C before it
    return actions


def illegal_actions(h: Harness) -> list[tuple[str, str | None]]:
    """Events the harness knows to be illegal right now."""
    rs = h.rs
    if rs.status is not R.RUNNING:
        return [(name, sid) for name in STEP_EVENTS for sid in rs.steps]
    out: list[tuple[str, str | None]] = [("start", None), ("retry", None), ("requeue", None)]
    if rs.cancelling:
        out.append(("cancel", None))
    if RunInput.GRACE_OVER not in RUN_TRANSITIONS[rs.phase]:
        out.append(("grace_over", None))
    for sid in rs.steps:
        if sid not in h.dispatched and sid not in h.polling:
            out.append(("step_started", sid))
        if sid not in h.dispatched:
            out += [("step_polling", sid), ("step_skipped", sid)]
        if sid not in h.running:
            out.append(("step_succeeded", sid))
        if sid not in h.running and sid not in h.polling:
            out += [("step_failed", sid), ("step_timed_out", sid)]
        if sid not in h.dispatched and sid not in h.running and sid not in h.polling:
            out.append(("step_cancelled", sid))
        if sid not in h.retry_at:
            out.append(("retry_due", sid))
    return out


def check_final_statuses(h: Harness, fresh: bool) -> None:
    """After a run that was neither cancelled nor retried: each outcome fits its trigger rule."""
    rs = h.rs
    bad = {S.FAILED, S.UPSTREAM_FAILED}
    # Handlers never change the run's status: only the ordinary steps decide it.
    ordinary = [rs.steps[sid] for sid in h.dag.steps]
    assert (rs.status is R.FAILED) == any(s.status in bad for s in ordinary)
    assert rs.status in (R.FAILED, R.SUCCESS)
    if not fresh:
        return
    for state in ordinary:
        spec = state.spec
        if spec.id in h.skipped_by_precondition:
            assert state.status is S.SKIPPED and state.error == "precondition exited 1: no"
            continue
        ups = [rs.steps[u].status for u in spec.depends_on]
        # Skipped by its own precondition, an upstream counts as skipped.
        ran = state.status in (S.SUCCESS, S.FAILED)
        assert ran == (state.attempt > 0)
        assert state.status in (S.SUCCESS, S.FAILED, S.SKIPPED, S.UPSTREAM_FAILED)
        if state.status is S.FAILED:
            assert state.attempt == spec.max_attempts
        if not ups:
            assert ran  # steps without upstreams always run
            continue
        failed = [u for u in ups if u in (S.FAILED, S.UPSTREAM_FAILED)]
        success = [u for u in ups if u is S.SUCCESS]
        skipped = [u for u in ups if u is S.SKIPPED]
        rule = spec.trigger_rule
        if rule == "all_success":
            if ran:
                assert len(success) == len(ups)
            elif state.status is S.SKIPPED:
                assert skipped
            else:
                assert failed
        elif rule == "all_done":
            assert ran
        elif rule == "one_failed":
            assert ran == bool(failed)
            if not ran:
                assert state.status is S.SKIPPED
        elif rule == "one_success":
            assert ran == bool(success)
            if not ran:
                assert state.status is (S.UPSTREAM_FAILED if failed else S.SKIPPED)
        elif rule == "none_failed":
            assert ran == (not failed)
            if not ran:
                assert state.status is S.UPSTREAM_FAILED


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(dag=random_dags(), data=st.data())
def test_random_runs_keep_every_invariant(dag, data):
    h = Harness(dag)
    cancel_at = data.draw(st.none() | st.integers(0, 25), label="cancel_at")
    queued_cancel = cancel_at == 0 and data.draw(st.booleans(), label="cancel queued")
    if queued_cancel:
        h.cancel()
    else:
        h.start()
    cancelled = h.rs.cancelling
    decided_at_cancel = None  # the outcome decided when the run was cancelled, if any
    graced_early = False  # grace_over came before the handlers' phase
    rounds = 0
    for i in itertools.count():
        assert i < 1000, "the run did not finish"
        if h.rs.status.finished:
            check_handlers(h, queued_cancel, graced_early)
            if not cancelled:
                check_final_statuses(h, fresh=rounds == 0)
            elif decided_at_cancel is not None:
                assert h.rs.status is decided_at_cancel  # a late cancel changes no outcome
            else:
                assert h.rs.status is R.CANCELLED
            if rounds < 2 and h.rs.status is not R.SUCCESS and data.draw(st.booleans()):
                if data.draw(st.booleans(), label="wait queued before the retry starts"):
                    h.requeue()
                    h.start()
                else:
                    h.retry()
                rounds += 1
                cancelled = queued_cancel = graced_early = False
                decided_at_cancel = cancel_at = None
                continue
            break
        if i == cancel_at and not h.rs.cancelling:
            decided_at_cancel = h.rs.decided
            h.cancel()
            cancelled = True
            continue
        if data.draw(st.integers(0, 4), label="try illegal") == 0:
            name, sid = data.draw(st.sampled_from(illegal_actions(h)), label="illegal")
            h.illegal(name, sid)
        actions = possible_actions(h)
        assert actions, f"run is stuck: {h.statuses()}"
        name, sid = data.draw(st.sampled_from(actions), label="action")
        if name == "grace_over":
            graced_early = graced_early or h.rs.decided is None
            h.grace_over()
        elif name == "retry_due":
            # Like the engine's timer: it only fires for a step still waiting for it.
            if h.status(sid) is not S.RETRYING:
                h.retry_at.pop(sid)
                continue
            h.retry_due(sid)
        elif name == "started":
            h.started(sid)
        elif name == "ok":
            h.ok(sid)
        elif name == "fail":
            h.fail(sid, f"{sid} failed")
        elif name == "timeout":
            h.timeout(sid, 30)
        elif name == "poll":
            h.poll(sid)
        elif name == "skip":
            h.skip(sid)
        else:
            h.step_cancelled(sid)
    # Every progress event of every round kept the invariant (checked as emitted).
    assert h.progress and all(p.total_steps == len(h.rs.steps) for p in h.progress)


def check_handlers(h: Harness, queued_cancel: bool, graced_early: bool) -> None:
    """At the end of a try of a run: exactly the handlers matching its outcome ran (in
    HandlerKind order), the others were skipped; none ran for a run cancelled while queued
    (all cancelled) or whose grace ended before they could start (the matching ones are
    cancelled)."""
    rs = h.rs
    if queued_cancel:
        assert h.handler_starts == []
        assert all(rs.steps[sid].status is S.CANCELLED for sid in h.dag.handlers)
        return
    kinds = HANDLERS_OF[rs.status]
    matching = [sid for sid, spec in h.dag.handlers.items() if spec.handler in kinds]
    for sid in h.dag.handlers:
        if sid not in matching:
            assert rs.steps[sid].status is S.SKIPPED
    if graced_early:
        assert h.handler_starts == []
        assert all(rs.steps[sid].status is S.CANCELLED for sid in matching)
        return
    # each matching one ran, unless the grace ended first; in order, one at a time
    assert h.handler_starts == matching[: len(h.handler_starts)]
    for sid in matching[len(h.handler_starts) :]:
        assert rs.steps[sid].status is S.CANCELLED and rs._grace_over
    if not rs._grace_over:
        assert h.handler_starts == matching
        assert all(rs.steps[sid].status in (S.SUCCESS, S.FAILED) for sid in matching)


def test_requeue_waits_as_queued_until_start():
    # The daemon requeues a retried run and starts it when max_active_runs allows: in between
    # it is queued, with its failed steps pending again and nothing dispatched.
    dag = make_dag({"a": {}, "b": {"depends_on": ["a"]}, "c": {"depends_on": ["b"]}})
    rs = RunState(dag, RUN_ID)
    rs.start(T0)
    rs.step_started("a", T0)
    rs.step_succeeded("a", T0 + 1)
    rs.step_started("b", T0 + 1)
    rs.step_failed("b", T0 + 2, "exit code 1")
    assert rs.status is R.FAILED
    with pytest.raises(IllegalTransition):
        RunState(dag, RUN_ID).requeue(T0 + 3)  # a queued run has nothing to retry

    out = rs.requeue(T0 + 3)
    assert rs.status is R.QUEUED
    assert [type(e).__name__ for e in out] == [
        "DagRunStatusEvent",
        "StepStatusEvent",
        "StepStatusEvent",
        "DagRunProgressEvent",
    ]
    assert out[0].status is R.QUEUED
    assert sorted(step_events(out)) == [("b", "pending"), ("c", "pending")]
    p = out[-1]
    assert (p.completed_steps, p.running_steps, p.failed_steps, p.pending_steps) == (1, 0, 0, 2)
    assert starts(out) == []
    with pytest.raises(IllegalTransition):
        rs.requeue(T0 + 4)  # already queued: nothing changes
    assert rs.status is R.QUEUED

    out = rs.start(T0 + 5)
    assert rs.status is R.RUNNING
    assert starts(out) == [("b", 2)]  # a kept its success; b's upstream is already done
    assert rs.started_at == T0 + 5


@pytest.mark.parametrize("wait_queued", [False, True])
def test_retry_dispatches_a_step_freed_by_a_redecided_upstream_once(wait_queued):
    # Found by hypothesis: on retry, `s` is skipped again at once, which frees `after` (all_done)
    # and dispatches it; the scan over the steps must then not dispatch `after` a second time.
    dag = make_dag(
        {
            "a": {},
            "s": {"depends_on": ["a"], "trigger_rule": "one_failed"},
            "after": {"depends_on": ["s"], "trigger_rule": "all_done"},
        }
    )
    h = Harness(dag)
    h.start()
    h.run_through("a")
    assert h.status("s") is S.SKIPPED
    h.started("after")
    h.fail("after")
    assert h.rs.status is R.FAILED
    if wait_queued:
        h.requeue()
        out = h.start()
    else:
        out = h.retry()
    assert starts(out) == [("after", 2)]
    assert h.status("s") is S.SKIPPED


def test_restore_then_retry_numbers_attempts_onwards():
    # What the daemon does after a restart: rebuild the failed run from its record, retry it.
    dag = make_dag({"a": {}, "b": {"depends_on": ["a"], "retries": 2}, "c": {"depends_on": ["b"]}})
    record = {
        "a": (S.SUCCESS, 0, T0, T0 + 1, None, 1),
        # b's third attempt (retry_count 2) failed; it was the 5th over two earlier tries
        "b": (S.FAILED, 2, T0 + 1, T0 + 2, "exit code 1", 5),
        "c": (S.UPSTREAM_FAILED, 0, None, T0 + 2, None, 0),
    }
    rs = RunState.restore(dag, RUN_ID, {}, R.FAILED, record)
    assert rs.requeue(T0 + 3)[0] == DagRunStatusEvent(dag.id, RUN_ID, R.QUEUED, T0 + 3)
    assert starts(rs.start(T0 + 4)) == [("b", 6)]
    rs.step_started("b", T0 + 4)
    (event,) = [e for e in rs.step_failed("b", T0 + 5, "again") if isinstance(e, StepStatusEvent)]
    assert (event.status, event.retry_count, event.attempt) == (S.RETRYING, 0, 6)
    assert starts(rs.retry_due("b", T0 + 6)) == [("b", 7)]


def test_restore_of_a_record_without_attempt_numbers():
    # Records written before attempt numbers were kept: the last try's count is all we know.
    dag = make_dag({"a": {"retries": 1}})
    rs = RunState.restore(dag, RUN_ID, {}, R.FAILED, {"a": (S.FAILED, 1, T0, T0 + 1, "x")})
    assert starts(rs.retry(T0 + 2)) == [("a", 3)]


def test_cancel_a_requeued_run_before_it_starts():
    dag = make_dag({"a": {}, "b": {"depends_on": ["a"]}})
    h = Harness(dag)
    h.start()
    h.run_through("a")
    h.started("b")
    h.fail("b")
    h.requeue()
    out = h.cancel()
    assert h.rs.status is R.CANCELLED
    assert h.statuses() == {"a": "success", "b": "cancelled"}
    assert out[-1] == FinishRun(R.CANCELLED)
    assert h.finished == [R.FAILED, R.CANCELLED]


# ======================================================= precondition, wait_for, outputs

GATED_DAG = {
    "a": {"precondition": "true", "wait_for": {"command": "true"}, "retries": 1},
    "b": {"depends_on": ["a"]},
    "c": {"depends_on": ["a"], "trigger_rule": "none_failed"},
}


def test_a_declined_precondition_skips_the_step_and_downstream_sees_a_skip():
    h = Harness(make_dag(GATED_DAG))
    h.start()
    out = h.skip("a", "precondition exited 1: no data")
    a = h.rs.steps["a"]
    assert (a.status, a.error, a.attempt, a.start_time) == (
        S.SKIPPED,
        "precondition exited 1: no data",
        0,  # the attempt was not made
        None,
    )
    assert not [e for e in out if isinstance(e, ErrorEvent)]
    assert h.status("b") is S.SKIPPED  # all_success: an upstream skipped
    assert ("c", 1) in starts(out)  # none_failed: a skip is fine
    h.run_through("c")
    assert h.rs.status is R.SUCCESS


def test_polling_is_running_then_the_command_runs_from_the_same_start():
    h = Harness(make_dag(GATED_DAG))
    h.start()
    out = h.poll("a", at=T0 + 10)
    [event] = [e for e in out if isinstance(e, StepStatusEvent)]
    assert (event.status, event.waiting_for, event.start_time) == (S.RUNNING, "true", T0 + 10)
    out = h.started("a", at=T0 + 70)
    [event] = [e for e in out if isinstance(e, StepStatusEvent)]
    assert (event.status, event.waiting_for, event.start_time) == (S.RUNNING, None, T0 + 10)
    h.ok("a", at=T0 + 80)
    assert h.rs.steps["a"].start_time == T0 + 10


def test_a_wait_for_that_timed_out_is_retried_like_a_failure_then_fails():
    h = Harness(make_dag(GATED_DAG))
    h.start()
    h.poll("a")
    h.fail("a", "wait_for timed out after 1h: the last poll exited 1")
    assert h.status("a") is S.RETRYING
    h.retry_due("a")
    h.poll("a")
    h.fail("a", "wait_for timed out after 1h: the last poll exited 1")
    assert h.status("a") is S.FAILED
    assert h.status("b") is S.UPSTREAM_FAILED
    assert h.rs.status is R.FAILED


def test_a_cancel_stops_a_polling_step():
    h = Harness(make_dag(GATED_DAG))
    h.start()
    h.poll("a")
    out = h.cancel()
    assert StopStep("a") in out
    h.step_cancelled("a")
    assert h.rs.status is R.CANCELLED


def test_a_precondition_is_checked_again_before_a_retry_attempt():
    h = Harness(make_dag(GATED_DAG))
    h.start()
    h.started("a")
    h.fail("a")
    h.retry_due("a")
    h.skip("a")
    a = h.rs.steps["a"]
    assert (a.status, a.attempt, a.error) == (S.SKIPPED, 1, "precondition exited 1: no")
    assert h.status("b") is S.SKIPPED


def test_outputs_reach_every_step_downstream_and_a_run_retry_keeps_the_kept_ones():
    dag = make_dag(
        {
            "a": {},
            "x": {},
            "b": {"depends_on": ["a"]},
            "c": {"depends_on": ["b", "x"]},
        }
    )
    h = Harness(dag)
    h.start()
    assert h.rs.upstream_outputs("c") == {}
    h.started("a")
    out = h.ok("a", outputs={"n": 1})
    [event] = [e for e in out if isinstance(e, StepStatusEvent) and e.step_id == "a"]
    assert event.outputs == {"n": 1}
    h.started("x")
    h.fail("x")
    assert h.rs.upstream_outputs("b") == {"a": {"n": 1}}
    assert h.rs.upstream_outputs("c") == {"a": {"n": 1}}  # through b, transitively
    assert h.rs.upstream_outputs("x") == {}
    h.started("b")
    h.ok("b", outputs={"m": "2"})
    assert list(h.rs.upstream_outputs("c")) == ["a", "b"]  # upstream first
    assert h.rs.status is R.FAILED
    h.retry()
    assert h.rs.steps["a"].outputs == {"n": 1}  # kept: a is not run again
    assert h.rs.upstream_outputs("c") == {"a": {"n": 1}, "b": {"m": "2"}}


def test_restore_keeps_the_outputs_of_successful_steps_only():
    dag = make_dag({"a": {}, "b": {"depends_on": ["a"]}})
    rows = {"a": (S.SUCCESS, 0, T0, T0 + 1, None, 1), "b": (S.FAILED, 0, T0 + 1, T0 + 2, "x", 1)}
    rs = RunState.restore(
        dag, RUN_ID, {}, R.FAILED, rows, outputs={"a": {"k": "v"}, "b": {"lost": 1}}
    )
    assert rs.has_outputs and rs.steps["a"].outputs == {"k": "v"}
    assert rs.steps["b"].outputs is None
    rs.retry(T0 + 3)
    assert rs.upstream_outputs("b") == {"a": {"k": "v"}}
    plain = RunState.restore(dag, RUN_ID, {}, R.FAILED, rows)
    assert not plain.has_outputs and plain.upstream_outputs("b") == {}
