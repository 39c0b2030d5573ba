"""The run state machine: events in, transitions and effects out. No I/O, no clock.

Rules this file keeps:

- Every public method takes `now` (UNIX seconds), checks that the event is legal *before*
  touching anything (an illegal event raises `IllegalTransition` and leaves the state as it
  was), applies it, and returns the effects for the I/O layer to carry out, in order.
- Legality lives in two tables, never in `if`s: `RUN_TRANSITIONS[run phase][run input]` and
  `STEP_TRANSITIONS[step phase][step input]` give the next phase, and a missing key *is* the
  illegal transition. Which step runs next is a table too: `TRIGGER_RULES[rule](counts)`.
- Work per event is proportional to the steps it touches (counters, not scans), so a
  10,000-step run costs the same per step as a 3-step one.

Theory of operation. A run is queued, then running (or cancelling, once `cancel` was called),
then success, failed or cancelled; a failed or cancelled run can be queued again (a run retry).

Lifecycle handlers (`DagSpec.handlers`: on_success, on_failure, on_cancel, always) are steps
of the run that stand outside its graph. When every ordinary step is final, the run's outcome
is decided (`decided`: failed if a step failed or is upstream_failed, cancelled if the run was
cancelled, else success) and the run enters an `after_*` phase, still `running`: the handlers
that match the outcome (`HANDLERS_OF`) run one at a time, the others are skipped (a handler
waiting to retry is not final: the next waits for its last attempt). Once they are
final the run ends with the decided status, whatever they did. A cancelled run's handlers, and
handlers running when their run is cancelled, get `handler_grace` seconds (`HandlerDeadline`);
then `grace_over` stops them, as it does at once when called early (a second Ctrl-C). A run
cancelled while queued runs nothing, its handlers included; a run retry runs them again.
A step's phase is finer than its status, because the engine has to know where an attempt is
(`STEP_TRANSITIONS` in full):

    waiting    --triggered--> ready       --dispatch--> dispatched       --started--> running
    retry_wait --retry_due--> retry_ready --dispatch--> retry_dispatched --started--> running
    running --succeeded--> success, --failed--> failed, --failed_will_retry--> retry_wait
    dispatched, retry_dispatched --poll--> polling --started--> running (`wait_for` polls;
        polling --failed--> failed, --failed_will_retry--> retry_wait: it timed out)
    dispatched, retry_dispatched --declined--> skipped (the step's `precondition` said no)
    waiting --skip--> skipped, --upstream_failed--> upstream_failed
    dispatched, retry_dispatched, running --stopped--> cancelled
    waiting, ready, retry_wait, retry_ready --cancel--> cancelled
    every phase but success --reset--> waiting

`waiting`, `ready` and `dispatched` are all status `pending`; the three `retry_*` phases are
all status `retrying`; `polling` is status `running` (its events say what it waits for). A
run's cancel moves every waiting phase to `cancelled` at once and asks for the attempts that
are out (`dispatched`, `retry_dispatched`, `running`, `polling`) to stop; a run
retry resets every step that did not succeed to `waiting`. Trigger rules are small functions
of a step's upstream counters (how many upstreams, how many finished, succeeded, failed,
skipped), which `_finished` keeps up to date as upstream steps reach a final status; a rule
answers `triggered`, `skip`, `upstream_failed`, or None for "not yet", and its answer is fed
to the step table like any other input.

The effects (`Effect`, a closed union), in the order they must be carried out:

- `StartStep(step_id, attempt)`: run this attempt, then report `step_started` and an outcome;
- `ScheduleRetry(step_id, at)`: call `retry_due(step_id)` at time `at`;
- `StopStep(step_id)`: kill the running attempt, then report `step_cancelled`;
- `HandlerDeadline(at)`: call `grace_over(now)` at time `at`;
- an event of the run (`dagd.core.events.RunEvent`): publish it;
- `FinishRun(status)`: the run is over.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

import attrs

from dagd.core.backoff import retry_delay
from dagd.core.events import (
    DagRunProgressEvent,
    DagRunStatusEvent,
    ErrorEvent,
    RunEvent,
    StepStatusEvent,
    completion_percentage,
)
from dagd.core.model import (
    BUCKET_OF,
    FAILED_STEP,
    HANDLERS_OF,
    RUN_FAILING_STEP,
    DagSpec,
    ProgressBucket,
    RunStatus,
    StepSpec,
    StepStatus,
    TriggerRule,
    command_text,
)
from dagd.core.outcome import MAX_LISTED, FailedStep, RunOutcome
from dagd.core.outputs import (
    MAX_RUN_OUTPUT_BYTES,
    OutputError,
    encoded_size,
    run_outputs_too_large,
)

S = StepStatus
B = ProgressBucket

#: A step's record for `RunState.restore`: status, retry_count, start, end, error[, attempt].
StepRecordTuple = (
    tuple[StepStatus, int, float | None, float | None, str | None]
    | tuple[StepStatus, int, float | None, float | None, str | None, int]
)


class IllegalTransition(ValueError):
    """The caller fed an event that makes no sense in the current state (a bug in the caller)."""


# ------------------------------------------------------------------------------------ effects


@attrs.frozen(slots=True)
class StartStep:
    """Run attempt number `attempt` (1-based, counted over every try of the run) of a step."""

    step_id: str
    attempt: int


@attrs.frozen(slots=True)
class ScheduleRetry:
    """Call `RunState.retry_due(step_id, now)` at `at` (UNIX seconds)."""

    step_id: str
    at: float


@attrs.frozen(slots=True)
class StopStep:
    """Stop the step's attempt that is out, then report `step_cancelled`."""

    step_id: str


@attrs.frozen(slots=True)
class FinishRun:
    """The run is over with `status` (always a finished one)."""

    status: RunStatus


@attrs.frozen(slots=True)
class HandlerDeadline:
    """Call `RunState.grace_over(now)` at `at` (UNIX seconds): the handlers' grace ends."""

    at: float


#: What every event method returns a list of: commands for the engine and events to publish.
Effect = StartStep | ScheduleRetry | StopStep | FinishRun | HandlerDeadline | RunEvent
#: The `RunEvent` members of `Effect`, the most frequent first: a dispatcher's
#: `isinstance(effect, EVENT_CLASSES)` picks out the effects to publish.
EVENT_CLASSES: Final = (StepStatusEvent, DagRunProgressEvent, DagRunStatusEvent, ErrorEvent)


# ------------------------------------------------------------------------------ run lifecycle


class RunPhase(enum.StrEnum):
    """A run's place in its lifecycle: its status, with `running` split by whether `cancel`
    was called (a cancelling run takes step reports but cannot be cancelled again)."""

    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Every ordinary step is final; the handlers of the decided outcome run (status running).
    AFTER_SUCCESS = "after_success"
    AFTER_FAILURE = "after_failure"
    AFTER_CANCEL = "after_cancel"  # under handler_grace
    # Cancelled while its handlers ran: they get handler_grace; the outcome stays.
    AFTER_SUCCESS_CANCELLED = "after_success_cancelled"
    AFTER_FAILURE_CANCELLED = "after_failure_cancelled"


class RunInput(enum.StrEnum):
    """What happens to a run: the inputs of `RUN_TRANSITIONS`."""

    START = "start"
    CANCEL = "cancel"
    REPORT = "report"  # any step event: an attempt started, ended, or a retry is due
    FINISH_OK = "finish_ok"  # every step is final and none failed
    FINISH_FAILED = "finish_failed"  # every step is final and one failed
    REQUEUE = "requeue"  # a run retry
    HANDLE_OK = "handle_ok"  # every ordinary step is final, none failed; there are handlers
    HANDLE_FAILED = "handle_failed"  # every ordinary step is final, one failed; handlers
    HANDLERS_DONE = "handlers_done"  # every handler is final too
    GRACE_OVER = "grace_over"  # handler_grace passed (or a second Ctrl-C): stop handlers


RP, RI = RunPhase, RunInput

RUN_TRANSITIONS: Final[Mapping[RunPhase, Mapping[RunInput, RunPhase]]] = {
    RP.QUEUED: {RI.START: RP.RUNNING, RI.CANCEL: RP.CANCELLING},
    RP.RUNNING: {
        RI.REPORT: RP.RUNNING,
        RI.CANCEL: RP.CANCELLING,
        RI.FINISH_OK: RP.SUCCESS,
        RI.FINISH_FAILED: RP.FAILED,
        RI.HANDLE_OK: RP.AFTER_SUCCESS,
        RI.HANDLE_FAILED: RP.AFTER_FAILURE,
    },
    RP.CANCELLING: {
        RI.REPORT: RP.CANCELLING,
        RI.FINISH_OK: RP.CANCELLED,  # a cancelled run ends cancelled, whatever its steps did
        RI.FINISH_FAILED: RP.CANCELLED,
        RI.HANDLE_OK: RP.AFTER_CANCEL,
        RI.HANDLE_FAILED: RP.AFTER_CANCEL,
        RI.GRACE_OVER: RP.CANCELLING,  # its handlers will not run
    },
    RP.AFTER_SUCCESS: {
        RI.REPORT: RP.AFTER_SUCCESS,
        RI.CANCEL: RP.AFTER_SUCCESS_CANCELLED,
        RI.HANDLERS_DONE: RP.SUCCESS,
    },
    RP.AFTER_FAILURE: {
        RI.REPORT: RP.AFTER_FAILURE,
        RI.CANCEL: RP.AFTER_FAILURE_CANCELLED,
        RI.HANDLERS_DONE: RP.FAILED,
    },
    RP.AFTER_CANCEL: {
        RI.REPORT: RP.AFTER_CANCEL,
        RI.GRACE_OVER: RP.AFTER_CANCEL,
        RI.HANDLERS_DONE: RP.CANCELLED,
    },
    RP.AFTER_SUCCESS_CANCELLED: {
        RI.REPORT: RP.AFTER_SUCCESS_CANCELLED,
        RI.GRACE_OVER: RP.AFTER_SUCCESS_CANCELLED,
        RI.HANDLERS_DONE: RP.SUCCESS,  # the outcome was decided before the cancel
    },
    RP.AFTER_FAILURE_CANCELLED: {
        RI.REPORT: RP.AFTER_FAILURE_CANCELLED,
        RI.GRACE_OVER: RP.AFTER_FAILURE_CANCELLED,
        RI.HANDLERS_DONE: RP.FAILED,
    },
    RP.SUCCESS: {},
    RP.FAILED: {RI.REQUEUE: RP.QUEUED},
    RP.CANCELLED: {RI.REQUEUE: RP.QUEUED},
}

#: The phases in which a run's handlers run, and the outcome each has decided.
DECIDED_IN: Final[Mapping[RunPhase, RunStatus]] = {
    RP.AFTER_SUCCESS: RunStatus.SUCCESS,
    RP.AFTER_FAILURE: RunStatus.FAILED,
    RP.AFTER_CANCEL: RunStatus.CANCELLED,
    RP.AFTER_SUCCESS_CANCELLED: RunStatus.SUCCESS,
    RP.AFTER_FAILURE_CANCELLED: RunStatus.FAILED,
}

#: A run's status in each phase: the status of the same name; a cancelling run, and one
#: running its handlers, is running.
RUN_STATUS_OF: Final[Mapping[RunPhase, RunStatus]] = {
    phase: (
        RunStatus.RUNNING
        if phase is RP.CANCELLING or phase in DECIDED_IN
        else RunStatus(phase.value)
    )
    for phase in RunPhase
}


# ----------------------------------------------------------------------------- step lifecycle


class Phase(enum.StrEnum):
    """A step's place in its lifecycle; `STATUS_OF[phase]` is the status the world sees."""

    WAITING = "waiting"  # for its upstreams (its trigger rule has not fired)
    READY = "ready"  # in the ready queue, for a max_active_steps slot
    DISPATCHED = "dispatched"  # a StartStep is out and not yet answered
    RUNNING = "running"
    POLLING = "polling"  # the attempt polls its wait_for command, before its own command
    RETRY_WAIT = "retry_wait"  # a ScheduleRetry is out
    RETRY_READY = "retry_ready"
    RETRY_DISPATCHED = "retry_dispatched"
    SUCCESS = "success"
    FAILED = "failed"
    UPSTREAM_FAILED = "upstream_failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class StepInput(enum.StrEnum):
    """What happens to a step: the inputs of `STEP_TRANSITIONS`."""

    TRIGGERED = "triggered"  # the trigger rule fired (or the step has no upstreams)
    SKIP = "skip"  # the trigger rule decided the step will not run
    UPSTREAM_FAILED = "upstream_failed"  # likewise, because an upstream failed
    DISPATCH = "dispatch"  # a slot is free: StartStep
    STARTED = "started"
    POLL = "poll"  # the attempt's wait_for began polling
    DECLINED = "declined"  # the attempt's precondition said no: the step is skipped
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the attempt failed and the step has no attempt left
    FAILED_WILL_RETRY = "failed_will_retry"  # the attempt failed; another one follows
    RETRY_DUE = "retry_due"
    STOPPED = "stopped"  # the attempt that was out was stopped (step_cancelled)
    CANCEL = "cancel"  # the run was cancelled while the step waited
    RESET = "reset"  # a run retry: the step did not succeed, so it runs again
    REARM = "rearm"  # a run retry: a handler runs again, whatever it did


P, E = Phase, StepInput  # short names for the tables below

# Parts that several rows share: what a trigger rule's verdict does to a waiting step, what
# an attempt's outcome does to a running one, and how a run's cancel and retry reach a step.
_VERDICTS: Final = {E.TRIGGERED: P.READY, E.SKIP: P.SKIPPED, E.UPSTREAM_FAILED: P.UPSTREAM_FAILED}
_OUTCOMES: Final = {E.SUCCEEDED: P.SUCCESS, E.FAILED: P.FAILED, E.FAILED_WILL_RETRY: P.RETRY_WAIT}
_CANCEL_OR_RESET: Final = {E.CANCEL: P.CANCELLED, E.RESET: P.WAITING, E.REARM: P.WAITING}
_STOP_OR_RESET: Final = {E.STOPPED: P.CANCELLED, E.RESET: P.WAITING, E.REARM: P.WAITING}
_RESET: Final = {E.RESET: P.WAITING, E.REARM: P.WAITING}

# What a dispatched attempt may do before its command runs: start it, poll its wait_for, or
# be skipped by its precondition.
_BEGIN: Final = {E.STARTED: P.RUNNING, E.POLL: P.POLLING, E.DECLINED: P.SKIPPED}

STEP_TRANSITIONS: Final[Mapping[Phase, Mapping[StepInput, Phase]]] = {
    P.WAITING: {**_VERDICTS, **_CANCEL_OR_RESET},
    P.READY: {E.DISPATCH: P.DISPATCHED, **_CANCEL_OR_RESET},
    P.DISPATCHED: {**_BEGIN, **_STOP_OR_RESET},
    P.RUNNING: {**_OUTCOMES, **_STOP_OR_RESET},
    # A wait_for that timed out fails the attempt (and may be retried) as a command would.
    P.POLLING: {
        E.STARTED: P.RUNNING,
        E.FAILED: P.FAILED,
        E.FAILED_WILL_RETRY: P.RETRY_WAIT,
        **_STOP_OR_RESET,
    },
    P.RETRY_WAIT: {E.RETRY_DUE: P.RETRY_READY, **_CANCEL_OR_RESET},
    P.RETRY_READY: {E.DISPATCH: P.RETRY_DISPATCHED, **_CANCEL_OR_RESET},
    P.RETRY_DISPATCHED: {**_BEGIN, **_STOP_OR_RESET},
    P.SUCCESS: {E.REARM: P.WAITING},  # kept by a run retry, unless it is a handler
    P.FAILED: _RESET,
    P.UPSTREAM_FAILED: _RESET,
    P.SKIPPED: _RESET,
    P.CANCELLED: _RESET,
}

STATUS_OF: Final[Mapping[Phase, StepStatus]] = {
    P.WAITING: S.PENDING,
    P.READY: S.PENDING,
    P.DISPATCHED: S.PENDING,
    P.RUNNING: S.RUNNING,
    P.POLLING: S.RUNNING,  # after RUNNING: a running step rests in RUNNING (RESTING_PHASE)
    P.RETRY_WAIT: S.RETRYING,
    P.RETRY_READY: S.RETRYING,
    P.RETRY_DISPATCHED: S.RETRYING,
    P.SUCCESS: S.SUCCESS,
    P.FAILED: S.FAILED,
    P.UPSTREAM_FAILED: S.UPSTREAM_FAILED,
    P.SKIPPED: S.SKIPPED,
    P.CANCELLED: S.CANCELLED,
}

#: The phase a step rests in with a given status when no attempt is out or queued (a step
#: restored from a record, or reset by a run retry): the first phase of that status.
RESTING_PHASE: Final[Mapping[StepStatus, Phase]] = {
    status: phase for phase, status in reversed(list(STATUS_OF.items()))
}

#: Phases with an attempt out: a run's cancel stops them (StopStep) rather than ending them.
ATTEMPT_OUT: Final = frozenset({P.DISPATCHED, P.RETRY_DISPATCHED, P.RUNNING, P.POLLING})

# The hot path reads enum members through module names: on Python 3.11 an attribute of an
# Enum class costs about 100 ns, a global about 10 (bench/engine_overhead.py runs through here).
_WAITING, _READY, _POLLING = P.WAITING, P.READY, P.POLLING
_TRIGGERED, _SKIP, _UPSTREAM_FAILED = E.TRIGGERED, E.SKIP, E.UPSTREAM_FAILED
_DISPATCH, _STARTED, _SUCCEEDED = E.DISPATCH, E.STARTED, E.SUCCEEDED
_REPORT = RI.REPORT
_SUCCESS, _SKIPPED = S.SUCCESS, S.SKIPPED
_COMPLETED, _RUNNING, _FAILED, _PENDING = B.COMPLETED, B.RUNNING, B.FAILED, B.PENDING


# ------------------------------------------------------------------------------ trigger rules


class UpstreamCounts(Protocol):
    """A step's counters over its upstream steps' outcomes (`StepState` keeps them)."""

    @property
    def up_total(self) -> int: ...
    @property
    def up_done(self) -> int: ...
    @property
    def up_success(self) -> int: ...
    @property
    def up_failed(self) -> int: ...
    @property
    def up_skipped(self) -> int: ...


#: A trigger rule's verdict: TRIGGERED (run), SKIP, UPSTREAM_FAILED, or None (not yet).
Verdict = StepInput | None


def _all_success(c: UpstreamCounts) -> Verdict:
    if c.up_failed:
        return _UPSTREAM_FAILED
    if c.up_skipped:
        return _SKIP
    return _TRIGGERED if c.up_done == c.up_total else None


def _all_done(c: UpstreamCounts) -> Verdict:
    return _TRIGGERED if c.up_done == c.up_total else None


def _one_failed(c: UpstreamCounts) -> Verdict:
    if c.up_failed:
        return _TRIGGERED
    return _SKIP if c.up_done == c.up_total else None


def _one_success(c: UpstreamCounts) -> Verdict:
    if c.up_success:
        return _TRIGGERED
    if c.up_done == c.up_total:
        return _UPSTREAM_FAILED if c.up_failed else _SKIP
    return None


def _none_failed(c: UpstreamCounts) -> Verdict:
    if c.up_failed:
        return _UPSTREAM_FAILED
    return _TRIGGERED if c.up_done == c.up_total else None


#: Each rule as a function of the upstream counts (Airflow's meanings; see `TriggerRule`).
TRIGGER_RULES: Final[Mapping[TriggerRule, Callable[[UpstreamCounts], Verdict]]] = {
    TriggerRule.ALL_SUCCESS: _all_success,
    TriggerRule.ALL_DONE: _all_done,
    TriggerRule.ONE_FAILED: _one_failed,
    TriggerRule.ONE_SUCCESS: _one_success,
    TriggerRule.NONE_FAILED: _none_failed,
}


# ---------------------------------------------------------------------------------- the state


@attrs.define(slots=True, eq=False)
class StepState:
    """One step within one run: its phase and status, attempt numbers, times, and counters
    over its upstream steps' outcomes (so trigger rules never rescan upstreams)."""

    spec: StepSpec
    downstream: list[str]
    status: StepStatus = S.PENDING  # always STATUS_OF[phase]
    phase: Phase = P.WAITING
    attempt: int = 0  # attempts dispatched in this try of the run; retry_count is attempt - 1
    attempts_before: int = 0  # attempts made in earlier tries (a run retry numbers onwards)
    start_time: float | None = None
    end_time: float | None = None
    error: str | None = None
    worker: str | None = None  # where the latest attempt ran, when its executor said
    outputs: Mapping[str, Any] | None = None  # what it handed downstream, once it succeeded
    queued_in: str | None = None  # the pool whose slot its dispatched attempt waits for
    up_total: int = 0
    up_done: int = 0
    up_success: int = 0
    up_failed: int = 0
    up_skipped: int = 0

    @property
    def retry_count(self) -> int:
        """Retries made in this try of the run: the attempt number minus one, at least 0."""
        return max(0, self.attempt - 1)

    @property
    def ready(self) -> bool:
        """Waiting in the ready queue for a max_active_steps slot."""
        return self.phase is P.READY or self.phase is P.RETRY_READY

    @property
    def dispatched(self) -> bool:
        """A StartStep is out and not yet answered by `step_started`."""
        return self.phase is P.DISPATCHED or self.phase is P.RETRY_DISPATCHED


def waiting_for(st: StepState) -> str | None:
    """What a step waits for while it polls its wait_for (its command, as one line), or
    while its dispatched attempt waits for a slot of its pool (`pool <name>`); None when it
    waits for neither."""
    if st.queued_in is not None and st.dispatched:
        return f"pool {st.queued_in}"
    wait_for = st.spec.wait_for
    if st.phase is not _POLLING or wait_for is None:
        return None
    return command_text(wait_for.command)


def duration_ms(start: float | None, end: float | None) -> int | None:
    """Milliseconds from `start` to `end` (UNIX seconds), rounded, never negative; None when
    either is unknown."""
    if start is None or end is None:
        return None
    return max(0, round((end - start) * 1000))


def format_seconds(seconds: float) -> str:
    """300 -> '300s', 1.5 -> '1.5s', 1000000 -> '1000000s' (never '1e+06s')."""
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{seconds:.3f}".rstrip("0") + "s"


_TRANSITIONS = STEP_TRANSITIONS  # module-level aliases, read on every event
_RUN = RUN_TRANSITIONS


class RunState:
    """One run of one DAG. Create with `RunState(dag, run_id, params)`, then `start(now)`.

    `status` (a `RunStatus`) and `steps[step_id].status` (a `StepStatus`) are what clients
    see; `phase` and `steps[step_id].phase` are where the tables keep them. `cancelling` is
    True from `cancel` until a run retry.
    """

    def __init__(
        self,
        dag: DagSpec,
        run_id: str,
        params: Mapping[str, str] | None = None,
        *,
        progress_interval: float = 0.0,
        handler_grace: float = 30.0,
        parent_run_id: str | None = None,
        triggered_by: str | None = None,
    ) -> None:
        self.dag = dag
        self.run_id = run_id
        # The run whose sub-DAG step made this one, and the run whose success triggered it
        # (`after`): both stay None for most runs (docs/dags.md).
        self.parent_run_id = parent_run_id
        self.triggered_by = triggered_by
        self.params = dict(params or {})
        self.phase = RP.QUEUED
        self.status = RunStatus.QUEUED  # always RUN_STATUS_OF[phase]
        self.cancelling = False
        self.cancel_reason: str | None = None
        # When the run was last queued (UNIX seconds), set by whoever queues it: pools serve
        # the attempts of earlier-queued runs first (dagd/core/pools.py). None: unknown.
        self.queued_at: float | None = None
        self.progress_interval = progress_interval
        self.steps: dict[str, StepState] = {
            sid: StepState(spec=spec, downstream=[], up_total=len(spec.depends_on))
            for sid, spec in dag.steps.items()
        }
        for sid, spec in dag.steps.items():
            for up in spec.depends_on:
                self.steps[up].downstream.append(sid)
        # Handlers come last (`steps` holds them too), outside the graph.
        for sid, spec in dag.handlers.items():
            self.steps[sid] = StepState(spec=spec, downstream=[])
        self._ordinary = len(dag.steps)
        # finished_steps at which the run moves on: its ordinary steps', then every step's.
        self._goal = self._ordinary
        self._limit = dag.max_active_steps  # handlers run one at a time
        self.handler_grace = handler_grace  # seconds
        # The status the run ends with, decided when its ordinary steps are all final (its
        # handlers run then), and that moment (UNIX seconds).
        self.decided: RunStatus | None = None
        self.decided_at: float | None = None
        self.grace_at: float | None = None  # when handler_grace ends (HandlerDeadline)
        self._grace_over = False  # handlers stop, or never start
        self._grace_reason: str | None = None  # the error of handlers stopped then
        self.counts: dict[ProgressBucket, int] = {
            B.COMPLETED: 0,
            B.RUNNING: 0,
            B.FAILED: 0,
            B.PENDING: len(self.steps),
        }
        self.active = 0  # dispatched or running: what max_active_steps limits
        self.finished_steps = 0
        self._ready: deque[str] = deque()
        self._last_progress: float | None = None
        self._progress_dirty = False
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self._requeued = False  # set by requeue(): start() must apply trigger rules at once
        # Whether any step has outputs: until one has, no step needs its upstreams' looked up.
        self.has_outputs = False
        self.output_bytes = 0  # of every step's outputs together (MAX_RUN_OUTPUT_BYTES)
        self._position: dict[str, int] | None = None  # step id -> place in dag.order

    @classmethod
    def restore(
        cls,
        dag: DagSpec,
        run_id: str,
        params: Mapping[str, str] | None,
        status: RunStatus,
        steps: Mapping[str, StepRecordTuple],
        outputs: Mapping[str, Mapping[str, Any]] | None = None,
        **kwargs: Any,
    ) -> RunState:
        """Rebuild a finished run from its record, e.g. to retry it after a restart.

        `steps` maps step id -> (status, retry_count, start_time, end_time, error[, attempt]),
        `attempt` being the latest attempt number over all tries (0: unknown, as in records
        from before it was kept); steps the record does not know (never touched, or added to
        the DAG since) are pending. `outputs`: the stored outputs by step id (those of steps
        restored as successful are kept, for the steps a retry runs again). `kwargs` go to the
        constructor (`progress_interval`).
        Raises `IllegalTransition` if `status` is not a finished one.
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
        for sid, given in (outputs or {}).items():
            st = state.steps.get(sid)
            if st is not None and st.status is _SUCCESS and given:
                state._keep_outputs(st, given)
        state._run_enter(RunPhase(status.value))
        state._recount()
        return state

    # ----------------------------------------------------------------- queries

    @property
    def total_steps(self) -> int:
        """The number of steps in the run's DAG."""
        return len(self.steps)

    def progress(self, now: float) -> DagRunProgressEvent:
        """The run's progress event as of `now`: the four bucket counts (summing to the total)
        and the percentage completed, rounded to 0.1."""
        c = self.counts
        total = len(self.steps)
        completed = c[_COMPLETED]
        return DagRunProgressEvent(
            self.dag.id,
            self.run_id,
            total,
            completed,
            c[_RUNNING],
            c[_FAILED],
            c[_PENDING],
            completion_percentage(completed, total),
            now,
        )

    def step_event(self, step_id: str, now: float) -> StepStatusEvent:
        """The step's status event as of `now` (duration in ms). Raises KeyError for an
        unknown step id."""
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
            worker=st.worker,
            handler=st.spec.handler,
            waiting_for=(
                waiting_for(st) if st.phase is _POLLING or st.queued_in is not None else None
            ),
            outputs=st.outputs,
        )

    @property
    def handling(self) -> bool:
        """Every ordinary step is final and the run's handlers run (its status is running)."""
        return self.phase in DECIDED_IN

    def outcome(self) -> RunOutcome:
        """How the run ended, for its handlers: the decided status, the run's start and its
        ordinary steps' end, and the failed steps with their errors (dagd/core/outcome.py).
        Raises `IllegalTransition` before every ordinary step is final."""
        if self.decided is None or self.decided_at is None:
            raise IllegalTransition(f"run {self.run_id} has no outcome yet")
        failed = [
            FailedStep(sid, st.status, st.error)
            for sid in self.dag.order
            if (st := self.steps[sid]).status is S.FAILED
        ]
        return RunOutcome(
            self.dag.id,
            self.run_id,
            self.decided,
            dict(self.params),
            self.started_at,
            self.decided_at,
            tuple(failed[:MAX_LISTED]),
            len(failed),
        )

    def run_event(self, now: float) -> DagRunStatusEvent:
        """The run's status event as of `now`."""
        return DagRunStatusEvent(
            self.dag.id, self.run_id, self.status, now, None, self.parent_run_id
        )

    def upstream_outputs(self, step_id: str) -> dict[str, Mapping[str, Any]]:
        """The outputs a step receives: those of every step upstream of it (through
        `depends_on`, transitively) that has any, by step id, upstream steps first (the DAG's
        topological order). Empty, at once, while no step of the run has outputs; else the
        work is in proportion to the step's upstream steps, not to the DAG's size."""
        if not self.has_outputs:
            return {}
        steps = self.steps
        seen: set[str] = set()
        todo = list(steps[step_id].spec.depends_on)
        while todo:
            up = todo.pop()
            if up not in seen:
                seen.add(up)
                todo.extend(steps[up].spec.depends_on)
        givers = [sid for sid in seen if steps[sid].outputs]
        if len(givers) > 1:
            position = self._position
            if position is None:  # once per run, and only for runs with outputs
                position = self._position = {sid: i for i, sid in enumerate(self.dag.order)}
            givers.sort(key=position.__getitem__)
        return {sid: given for sid in givers if (given := steps[sid].outputs) is not None}

    # ------------------------------------------------------------------ events

    def start(self, now: float) -> list[Effect]:
        """queued -> running: the run begins; steps without upstreams are dispatched.
        Raises `IllegalTransition` unless the run is queued."""
        phase = self._run_next(RI.START)
        out: list[Effect] = []
        self._run_enter(phase)
        self.started_at = now
        out.append(self.run_event(now))
        requeued, self._requeued = self._requeued, False
        for sid in self.dag.order:
            st = self.steps[sid]
            if st.phase is not _WAITING:  # kept, or decided
                continue
            if st.up_total == 0:  # a step without upstreams always runs
                st.phase = _TRANSITIONS[_WAITING][_TRIGGERED]
                self._ready.append(sid)
            elif requeued and self._evaluate(st, now, out):
                # A retried run's upstreams may be final already: the step may be skipped or
                # upstream_failed at once (counted, and its downstream told).
                self._finished(st, now, out)
        self._pump(out)
        return self._settle(out, now, force_progress=True)

    def step_started(self, step_id: str, now: float) -> list[Effect]:
        """A dispatched attempt's command now actually runs (after its wait_for, if it
        polled: the step stays running, with the start time of its polling). Raises
        `IllegalTransition` unless the step was dispatched or polling and the run is running."""
        st = self._reported(step_id)
        phase = self._next(st, _STARTED)
        out: list[Effect] = []
        if st.phase is not _POLLING:
            st.start_time, st.end_time, st.error, st.worker = now, None, None, None
        self._enter(st, phase, now, out)
        return self._settle(out, now)

    def step_polling(self, step_id: str, now: float) -> list[Effect]:
        """A dispatched attempt polls its step's `wait_for` command: the step is running, and
        its events say what it waits for (`waiting_for`). Raises `IllegalTransition` unless
        the step was dispatched and the run is running."""
        st = self._reported(step_id)
        phase = self._next(st, E.POLL)
        out: list[Effect] = []
        st.start_time, st.end_time, st.error, st.worker = now, None, None, None
        self._enter(st, phase, now, out)
        return self._settle(out, now)

    def step_queued(self, step_id: str, now: float, pool: str) -> list[Effect]:
        """A dispatched attempt waits for a slot of `pool`: the step stays pending, and its
        events say what it waits for (`waiting_for`: `pool <name>`) until `step_dequeued`
        or its cancel. Raises `IllegalTransition` unless the step was dispatched and the run
        takes step events."""
        st = self._reported(step_id)
        if not st.dispatched:
            raise IllegalTransition(f"step {step_id!r} is {st.status} ({st.phase}): not queued")
        st.queued_in = pool
        out: list[Effect] = []
        self._enter(st, st.phase, now, out)
        return self._settle(out, now)

    def step_dequeued(self, step_id: str, now: float) -> list[Effect]:
        """The queued attempt got its pool slots: the step is pending without waiting for a
        pool (until `step_started`). Nothing happens for a step that was not queued. Raises
        `IllegalTransition` unless the run takes step events."""
        st = self._reported(step_id)
        out: list[Effect] = []
        if st.queued_in is not None:
            st.queued_in = None
            if st.dispatched:
                self._enter(st, st.phase, now, out)
        return self._settle(out, now)

    def step_skipped(self, step_id: str, now: float, reason: str) -> list[Effect]:
        """A dispatched attempt's precondition said no: the attempt is not made, the step is
        skipped with `reason` (its `error`), and its downstream steps' trigger rules count it
        as skipped. Raises `IllegalTransition` unless the step was dispatched and the run is
        running."""
        st = self._reported(step_id)
        phase = self._next(st, E.DECLINED)
        out: list[Effect] = []
        self.active -= 1
        st.attempt -= 1  # never made: the numbering goes on from the last attempt made
        st.start_time, st.end_time, st.error, st.worker = None, now, reason, None
        self._enter(st, phase, now, out)
        self._finished(st, now, out)
        return self._settle(out, now)

    def step_succeeded(
        self,
        step_id: str,
        now: float,
        worker: str | None = None,
        outputs: Mapping[str, Any] | None = None,
    ) -> list[Effect]:
        """The running attempt succeeded (on `worker`, when its executor named one), handing
        `outputs` (key -> JSON value, checked by dagd/core/outputs.py) to the steps downstream.
        Raises `IllegalTransition` unless it was running."""
        st = self._reported(step_id)
        phase = self._next(st, _SUCCEEDED)
        out: list[Effect] = []
        self.active -= 1
        st.end_time, st.error, st.worker = now, None, worker
        if outputs:
            self._keep_outputs(st, outputs)
        self._enter(st, phase, now, out)
        self._finished(st, now, out)
        return self._settle(out, now)

    def step_failed(
        self, step_id: str, now: float, error: str, worker: str | None = None
    ) -> list[Effect]:
        """The attempt failed (on `worker`, when its executor named one): retry it if it has
        attempts left (and the run is not being cancelled), else the step has failed. Raises
        `IllegalTransition` unless it was running."""
        st = self._reported(step_id)
        # A cancelled run's handlers still retry, during their grace.
        will_retry = st.attempt < st.spec.max_attempts and (
            not self.cancelling or (st.spec.handler is not None and not self._grace_over)
        )
        phase = self._next(st, E.FAILED_WILL_RETRY if will_retry else E.FAILED)
        out: list[Effect] = []
        self.active -= 1
        st.end_time, st.error, st.worker = now, error, worker
        out.append(ErrorEvent(self.dag.id, self.run_id, step_id, error, now))
        self._enter(st, phase, now, out)
        if will_retry:
            out.append(ScheduleRetry(step_id, now + retry_delay(st.spec, st.attempt)))
            self._pump(out)
        else:
            self._finished(st, now, out)
        return self._settle(out, now)

    def step_timed_out(self, step_id: str, now: float, timeout: float) -> list[Effect]:
        """`step_failed` with the error 'timed out after <timeout>s' (`timeout` in seconds)."""
        return self.step_failed(step_id, now, f"timed out after {format_seconds(timeout)}")

    def retry_due(self, step_id: str, now: float) -> list[Effect]:
        """A retry's waiting time is over: queue its next attempt. Raises `IllegalTransition`
        unless the step waits for exactly this retry."""
        st = self._reported(step_id)
        phase = self._next(st, E.RETRY_DUE)
        out: list[Effect] = []
        st.phase = phase
        if st.spec.handler is not None:  # it goes on before the handlers that follow it
            self._ready.appendleft(step_id)
        else:
            self._ready.append(step_id)
        self._pump(out)
        return self._settle(out, now)

    def step_cancelled(self, step_id: str, now: float, reason: str | None = None) -> list[Effect]:
        """A running (or dispatched) attempt was stopped; the step is cancelled with `reason`,
        else the run's cancel reason, else 'cancelled'. Raises `IllegalTransition` unless an
        attempt of the step was out."""
        st = self._reported(step_id)
        phase = self._next(st, E.STOPPED)
        out: list[Effect] = []
        self.active -= 1
        st.end_time = now
        st.queued_in = None  # a cancel takes it out of its pool's queue
        if reason is None and st.spec.handler is not None:
            reason = self._grace_reason
        st.error = reason or self.cancel_reason or "cancelled"
        self._enter(st, phase, now, out)
        self._finished(st, now, out)
        return self._settle(out, now)

    def cancel(self, now: float, reason: str = "cancelled by user") -> list[Effect]:
        """Stop the run: waiting steps are cancelled now, running ones are asked to stop.
        A run whose handlers run keeps them running, for handler_grace seconds at most (a
        HandlerDeadline); a queued run's handlers are cancelled with its steps. Raises
        `IllegalTransition` if the run is finished or already being cancelled."""
        run_phase = self._run_next(RI.CANCEL)
        out: list[Effect] = []
        queued = self.phase is RP.QUEUED
        self.cancelling = True
        self.cancel_reason = reason
        if self.decided is not None:  # its handlers run: they get their grace
            self._run_enter(run_phase)
            self.grace_at = now + self.handler_grace
            out.append(HandlerDeadline(self.grace_at))
            return self._settle(out, now)
        self._ready.clear()
        self._run_enter(run_phase)  # a queued run goes straight to cancelled below
        if queued:  # nothing of it runs, its handlers included
            self._goal = len(self.steps)
        cancel = E.CANCEL
        for sid, st in self.steps.items():
            if st.spec.handler is not None and not queued:
                continue  # they run once the steps are final
            if st.phase in ATTEMPT_OUT:
                out.append(StopStep(sid))
                continue
            phase = _TRANSITIONS[st.phase].get(cancel)
            if phase is not None:  # a waiting step; a final one stays as it is
                st.end_time, st.error = now, reason
                self._enter(st, phase, now, out)
                self.finished_steps += 1
        return self._settle(out, now)

    def grace_over(self, now: float, reason: str | None = None) -> list[Effect]:
        """A cancelled run's handlers are out of time (handler_grace passed, or a second
        Ctrl-C): those waiting are cancelled with `reason` (default: 'stopped: handler_grace
        of <n>s passed'), those running are stopped (StopStep), and those that have yet to
        start never will. Calling it again changes nothing more. Raises `IllegalTransition`
        unless the run was cancelled and has not ended."""
        phase = self._run_next(RI.GRACE_OVER)
        out: list[Effect] = []
        self._grace_over = True
        self._run_enter(phase)
        error = reason or f"stopped: handler_grace of {format_seconds(self.handler_grace)} passed"
        self._grace_reason = error  # the error of the handlers stopped now (not of steps)
        if self.decided is not None:
            self._ready.clear()
            cancel = E.CANCEL
            for sid in self.dag.handlers:
                st = self.steps[sid]
                if st.phase in ATTEMPT_OUT:
                    out.append(StopStep(sid))
                    continue
                next_phase = _TRANSITIONS[st.phase].get(cancel)
                if next_phase is not None:
                    st.end_time, st.error = now, error
                    self._enter(st, next_phase, now, out)
                    self.finished_steps += 1
        return self._settle(out, now)

    def requeue(self, now: float) -> list[Effect]:
        """failed/cancelled -> queued, for a retry: successful steps stay, the rest are pending
        again. The run then waits for a slot like a new one; `start(now)` begins it. Raises
        `IllegalTransition` unless the run failed or was cancelled."""
        out = self._requeue(now)
        out.append(self.progress(now))
        return out

    def retry(self, now: float) -> list[Effect]:
        """`requeue(now)` and `start(now)` at once (one progress event): a retry that need
        not wait for a slot. Raises `IllegalTransition` as `requeue` does."""
        return self._requeue(now) + self.start(now)

    def _requeue(self, now: float) -> list[Effect]:
        run_phase = self._run_next(RI.REQUEUE)
        out: list[Effect] = []
        self.cancelling, self.cancel_reason, self.ended_at = False, None, None
        self.decided = self.decided_at = self.grace_at = None
        self._grace_over, self._grace_reason = False, None
        self._limit = self.dag.max_active_steps
        self._run_enter(run_phase)
        self._requeued = True
        out.append(self.run_event(now))
        for st in self.steps.values():
            # every step but a successful one; every handler
            phase = _TRANSITIONS[st.phase].get(E.REARM if st.spec.handler else E.RESET)
            if phase is not None:
                if st.outputs:
                    self.output_bytes -= _size(st.outputs)
                st.start_time = st.end_time = st.error = st.outputs = None
                st.attempts_before += st.attempt  # numbering goes on; the retry budget is new
                st.attempt = 0
                self._enter(st, phase, now, out)
        self._recount()
        return out

    def outputs_problem(self, step_id: str, outputs: Mapping[str, Any] | None) -> str | None:
        """Why `outputs` (checked by dagd/core/outputs.py), given by a successful attempt of
        `step_id`, cannot be kept: the run's outputs would exceed MAX_RUN_OUTPUT_BYTES
        together; None if they can. The caller fails the attempt with it instead."""
        if not outputs:
            return None
        st = self.steps[step_id]
        total = self.output_bytes - (_size(st.outputs) if st.outputs else 0) + _size(outputs)
        if total > MAX_RUN_OUTPUT_BYTES:
            return f"outputs of step {step_id!r}: {run_outputs_too_large(total)}"
        return None

    # --------------------------------------------------------------- internals

    def _keep_outputs(self, st: StepState, outputs: Mapping[str, Any]) -> None:
        if st.outputs:
            self.output_bytes -= _size(st.outputs)
        st.outputs = outputs
        self.output_bytes += _size(outputs)
        self.has_outputs = True

    def _run_next(self, event: RunInput) -> RunPhase:
        """The run's next phase on `event`; raises `IllegalTransition` if it has none."""
        try:
            return _RUN[self.phase][event]
        except KeyError:
            raise IllegalTransition(
                f"run {self.run_id} is {self.phase}: no '{event}' then"
            ) from None

    def _run_enter(self, phase: RunPhase) -> None:
        self.phase = phase
        self.status = RUN_STATUS_OF[phase]

    def _reported(self, step_id: str) -> StepState:
        """The step a step event is about, once the run takes step events at all."""
        if _REPORT not in _RUN[self.phase]:
            raise IllegalTransition(f"run {self.run_id} is {self.status}, not running")
        try:
            return self.steps[step_id]
        except KeyError:
            raise IllegalTransition(f"run {self.run_id} has no step {step_id!r}") from None

    @staticmethod
    def _next(st: StepState, event: StepInput) -> Phase:
        """The step's next phase on `event`; raises `IllegalTransition` if it has none."""
        try:
            return _TRANSITIONS[st.phase][event]
        except KeyError:
            raise IllegalTransition(
                f"step {st.spec.id!r} is {st.status} ({st.phase}): no '{event}' then"
            ) from None

    def _enter(self, st: StepState, phase: Phase, now: float, out: list[Effect]) -> None:
        """Move a step to `phase`, whose status differs from or restates the step's: count
        it in its progress bucket and report it with a StepStatusEvent."""
        st.phase = phase
        status = STATUS_OF[phase]
        old_bucket, new_bucket = BUCKET_OF[st.status], BUCKET_OF[status]
        if old_bucket is not new_bucket:
            counts = self.counts
            counts[old_bucket] -= 1
            counts[new_bucket] += 1
            self._progress_dirty = True
        st.status = status
        out.append(self.step_event(st.spec.id, now))

    def _recount(self) -> None:
        """Rebuild every counter from the step statuses (after a run retry or a restore);
        every step rests in the phase of its status."""
        self.counts = dict.fromkeys(B, 0)
        for st in self.steps.values():
            self.counts[BUCKET_OF[st.status]] += 1
            st.up_done = st.up_success = st.up_failed = st.up_skipped = 0
            st.phase = RESTING_PHASE[st.status]
        self._ready.clear()
        for st in self.steps.values():
            for up in st.spec.depends_on:
                self._count_upstream(st, self.steps[up].status)
        self.finished_steps = sum(st.status.finished for st in self.steps.values())
        self.active = 0
        self._goal = self._ordinary

    @staticmethod
    def _count_upstream(st: StepState, up_status: StepStatus) -> None:
        if not up_status.finished:
            return
        st.up_done += 1
        if up_status is _SUCCESS:
            st.up_success += 1
        elif up_status is _SKIPPED:
            st.up_skipped += 1
        elif up_status in FAILED_STEP:
            st.up_failed += 1

    def _finished(self, st: StepState, now: float, out: list[Effect]) -> None:
        """`st` reached a final status: tell its downstream steps, iteratively (long chains)."""
        self.finished_steps += 1
        work = [st]
        while work:
            done = work.pop()
            for down_id in done.downstream:
                down = self.steps[down_id]
                self._count_upstream(down, done.status)
                # only a waiting step has a rule to apply: an eager rule may have fired already
                if down.phase is _WAITING and not self.cancelling:
                    final = self._evaluate(down, now, out)
                    if final:
                        self.finished_steps += 1
                        work.append(down)
        self._pump(out)

    def _evaluate(self, st: StepState, now: float, out: list[Effect]) -> bool:
        """Apply the trigger rule of a waiting step. Returns True if it became final."""
        verdict = TRIGGER_RULES[st.spec.trigger_rule](st)
        if verdict is None:
            return False
        phase = _TRANSITIONS[_WAITING][verdict]
        if phase is _READY:
            st.phase = phase
            self._ready.append(st.spec.id)
            return False
        st.end_time = now
        self._enter(st, phase, now, out)
        return True

    def _pump(self, out: list[Effect]) -> None:
        """Dispatch ready steps while the DAG's max_active_steps allows."""
        limit = self._limit
        ready = self._ready
        if self.decided is not None and any(
            self.steps[sid].phase is P.RETRY_WAIT for sid in self.dag.handlers
        ):
            return  # a handler waiting to retry is not final: the next one waits for it
        while ready and (limit is None or self.active < limit):
            sid = ready.popleft()
            st = self.steps[sid]
            st.phase = _TRANSITIONS[st.phase][_DISPATCH]
            st.attempt += 1
            self.active += 1
            out.append(StartStep(sid, st.attempts_before + st.attempt))

    def _settle(self, out: list[Effect], now: float, force_progress: bool = False) -> list[Effect]:
        """Finish the run if every step is final (once its ordinary steps are, its handlers
        run first); add a progress event when one is due."""
        done = self.finished_steps == self._goal and self.active == 0
        if done and self._goal != len(self.steps):
            done = self._handle(out, now)
        last = self._last_progress
        if (
            force_progress
            or done
            or (self._progress_dirty and (last is None or now - last >= self.progress_interval))
        ):
            out.append(self.progress(now))
            self._last_progress = now
            self._progress_dirty = False
        if done:
            if self.decided is not None:
                self._run_enter(self._run_next(RI.HANDLERS_DONE))
            else:
                failed = any(st.status in RUN_FAILING_STEP for st in self.steps.values())
                self._run_enter(self._run_next(RI.FINISH_FAILED if failed else RI.FINISH_OK))
            self.ended_at = now
            out.append(self.run_event(now))
            out.append(FinishRun(self.status))
        return out

    def _handle(self, out: list[Effect], now: float) -> bool:
        """Every ordinary step is final: decide the outcome, skip the handlers that do not
        match it and queue the others, one at a time (cancelled at once after `grace_over`).
        Returns True if the run is over already (no handler to run)."""
        failed = any(self.steps[sid].status in RUN_FAILING_STEP for sid in self.dag.steps)
        self._run_enter(self._run_next(RI.HANDLE_FAILED if failed else RI.HANDLE_OK))
        decided = self.decided = DECIDED_IN[self.phase]
        self.decided_at = now
        self._goal = len(self.steps)
        self._limit = 1
        matching = HANDLERS_OF[decided]
        for sid, spec in self.dag.handlers.items():
            st = self.steps[sid]
            if spec.handler not in matching:
                phase = _TRANSITIONS[_WAITING][_SKIP]
            elif self._grace_over:
                phase = _TRANSITIONS[_WAITING][E.CANCEL]
                st.error = self._grace_reason
            else:
                st.phase = _TRANSITIONS[_WAITING][_TRIGGERED]
                self._ready.append(sid)
                continue
            st.end_time = now
            self._enter(st, phase, now, out)
            self.finished_steps += 1
        if self.cancelling and self._ready and self.grace_at is None:
            self.grace_at = now + self.handler_grace
            out.append(HandlerDeadline(self.grace_at))
        self._pump(out)
        return self.finished_steps == self._goal and self.active == 0


def _size(outputs: Mapping[str, Any]) -> int:
    """Bytes of outputs as the store keeps them; 0 for what cannot be encoded (checked
    outputs always can)."""
    try:
        return encoded_size(outputs)
    except (OutputError, TypeError, ValueError):
        return 0
