"""dagd.core.runstate's tables: the lifecycles are closed and agree with the statuses, and each
trigger rule, as a function of the upstream counts, gives the verdict its name promises.

(tests/core/test_core_runstate.py drives the whole state machine; this file checks the tables
it is made of.)
"""

from __future__ import annotations

import typing

import attrs
import pytest

from dagd.core.events import RunEvent
from dagd.core.model import FINISHED_STEP, RunStatus, StepStatus, TriggerRule
from dagd.core.runstate import (
    ATTEMPT_OUT,
    DECIDED_IN,
    EVENT_CLASSES,
    RESTING_PHASE,
    RUN_STATUS_OF,
    RUN_TRANSITIONS,
    STATUS_OF,
    STEP_TRANSITIONS,
    TRIGGER_RULES,
    Phase,
    RunInput,
    RunPhase,
    StepInput,
)

P, E, S = Phase, StepInput, StepStatus


def test_event_classes_are_every_dag_event():
    # RunDriver._apply publishes the effects that are EVENT_CLASSES instances.
    assert set(EVENT_CLASSES) == set(typing.get_args(RunEvent))
    assert len(EVENT_CLASSES) == len(set(EVENT_CLASSES))


def test_every_phase_has_a_row_and_a_status():
    assert set(STEP_TRANSITIONS) == set(Phase) == set(STATUS_OF)
    assert set(RUN_TRANSITIONS) == set(RunPhase) == set(RUN_STATUS_OF)
    assert set(STATUS_OF.values()) == set(StepStatus)
    assert set(RUN_STATUS_OF.values()) == set(RunStatus)


def test_resting_phases_invert_the_statuses():
    assert set(RESTING_PHASE) == set(StepStatus)
    for status, phase in RESTING_PHASE.items():
        assert STATUS_OF[phase] is status


def test_final_phases_take_nothing_but_a_run_retry():
    for phase, row in STEP_TRANSITIONS.items():
        if STATUS_OF[phase] in FINISHED_STEP:
            assert set(row) <= {E.RESET, E.REARM}
            assert row.get(E.RESET, P.WAITING) is P.WAITING
    # a run retry keeps a success, unless the step is a handler (which runs again)
    assert STEP_TRANSITIONS[P.SUCCESS] == {E.REARM: P.WAITING}


def test_a_run_retry_resets_every_step_that_did_not_succeed_and_every_handler():
    for phase, row in STEP_TRANSITIONS.items():
        assert (E.RESET in row) == (phase is not P.SUCCESS)
        assert row.get(E.REARM) is P.WAITING


def test_a_run_cancel_reaches_every_unfinished_phase():
    # Each unfinished phase is either cancelled at once or has an attempt out to stop.
    for phase, row in STEP_TRANSITIONS.items():
        unfinished = STATUS_OF[phase] not in FINISHED_STEP
        assert unfinished == ((E.CANCEL in row) or (phase in ATTEMPT_OUT))
        assert (phase in ATTEMPT_OUT) == (E.STOPPED in row)


def test_every_target_is_a_phase_and_every_phase_is_reached():
    targets = {t for row in STEP_TRANSITIONS.values() for t in row.values()}
    assert targets == set(Phase)  # WAITING through RESET
    run_targets = {t for row in RUN_TRANSITIONS.values() for t in row.values()}
    assert run_targets | {RunPhase.QUEUED} == set(RunPhase)


def test_step_reports_only_while_running_or_cancelling():
    takes = {phase for phase, row in RUN_TRANSITIONS.items() if RunInput.REPORT in row}
    assert takes == {RunPhase.RUNNING, RunPhase.CANCELLING} | set(DECIDED_IN)
    assert all(RUN_STATUS_OF[phase] is RunStatus.RUNNING for phase in takes)


def test_handler_phases_end_with_the_outcome_they_decided():
    for phase, outcome in DECIDED_IN.items():
        assert RUN_TRANSITIONS[phase][RunInput.HANDLERS_DONE] is RunPhase(outcome.value)
        # a cancel never changes the outcome: it only limits the handlers' time
        after_cancel = RUN_TRANSITIONS[phase].get(RunInput.CANCEL, phase)
        assert DECIDED_IN[after_cancel] is outcome
        assert RunInput.GRACE_OVER in RUN_TRANSITIONS[after_cancel]
    # a run that is not running its handlers finishes without them
    for phase, row in RUN_TRANSITIONS.items():
        assert (RunInput.HANDLERS_DONE in row) == (phase in DECIDED_IN)


@attrs.define
class Counts:
    up_total: int
    up_done: int = 0
    up_success: int = 0
    up_failed: int = 0
    up_skipped: int = 0


RUN, SKIP, UF = E.TRIGGERED, E.SKIP, E.UPSTREAM_FAILED

# (rule, counts: total, done, success, failed, skipped -> verdict); None is "not yet".
RULES = [
    ("all_success", (2, 0, 0, 0, 0), None),
    ("all_success", (2, 1, 1, 0, 0), None),
    ("all_success", (2, 2, 2, 0, 0), RUN),
    ("all_success", (2, 1, 0, 1, 0), UF),  # eager
    ("all_success", (2, 1, 0, 0, 1), SKIP),  # eager
    ("all_success", (2, 2, 0, 1, 1), UF),  # a failure outweighs a skip
    ("all_done", (2, 1, 0, 1, 0), None),
    ("all_done", (2, 2, 0, 1, 1), RUN),
    ("all_done", (2, 2, 2, 0, 0), RUN),
    ("one_failed", (2, 1, 0, 1, 0), RUN),  # eager
    ("one_failed", (2, 1, 1, 0, 0), None),
    ("one_failed", (2, 2, 1, 0, 1), SKIP),
    ("one_success", (2, 1, 1, 0, 0), RUN),  # eager
    ("one_success", (2, 1, 0, 1, 0), None),
    ("one_success", (2, 2, 0, 1, 1), UF),
    ("one_success", (2, 2, 0, 0, 2), SKIP),
    ("none_failed", (2, 1, 0, 1, 0), UF),  # eager
    ("none_failed", (2, 1, 0, 0, 1), None),
    ("none_failed", (2, 2, 1, 0, 1), RUN),
    ("none_failed", (2, 2, 0, 0, 2), RUN),
]


def test_every_trigger_rule_has_a_function():
    assert set(TRIGGER_RULES) == set(TriggerRule)


@pytest.mark.parametrize(
    ("rule", "counts", "verdict"),
    [pytest.param(*row, id=f"{row[0]}-{'-'.join(map(str, row[1]))}") for row in RULES],
)
def test_trigger_rule_verdicts(rule, counts, verdict):
    assert TRIGGER_RULES[TriggerRule(rule)](Counts(*counts)) is verdict
    if verdict is not None:  # what the verdict does to a waiting step
        assert verdict in STEP_TRANSITIONS[P.WAITING]
