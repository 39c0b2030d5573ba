"""Lifecycle handlers in the pure core: how a DAG file declares them (spec.py, the schema),
how a run's outcome is shown to them (outcome.py), and one run's exact events."""

from __future__ import annotations

import json

import attrs
import jsonschema
import pytest

from dagd.core.dagschema import dag_json_schema
from dagd.core.dagsnapshot import dag_from_json, dag_to_json
from dagd.core.events import DagRunStatusEvent, StepStatusEvent
from dagd.core.model import HandlerKind, RunStatus, StepStatus
from dagd.core.outcome import (
    FailedStep,
    RunOutcome,
    notification,
    outcome_env,
    redact_url,
    render,
    template_problem,
)
from dagd.core.runstate import FinishRun, HandlerDeadline, RunState, StartStep, StopStep
from dagd.core.spec import DagSpecError, parse_dag

STEP = '[steps.a]\ncommand = "true"\n'
T0 = 1_700_000_000.0


def problems(text: str) -> list[str]:
    with pytest.raises(DagSpecError) as caught:
        parse_dag(text, "h.toml", default_id="h")
    return [str(p) for p in caught.value.problems]


def schema_ok(text: str) -> bool:
    import tomllib

    return jsonschema.Draft202012Validator(dag_json_schema()).is_valid(tomllib.loads(text))


def test_handlers_load_in_the_order_they_run_whatever_the_file_order() -> None:
    text = (
        STEP
        + '[handlers.always]\ncommand = "x"\n'
        + '[handlers.on_failure]\nnotify = ["json://h/x"]\ntitle = "{dag}"\nretries = 2\n'
        + '[handlers.on_success]\ncall = "m:f"\n'
    )
    dag = parse_dag(text, "h.toml", default_id="h")
    assert list(dag.handlers) == ["@on_success", "@on_failure", "@always"]
    failure = dag.handlers["@on_failure"]
    assert (failure.handler, failure.notify, failure.title, failure.retries) == (
        HandlerKind.ON_FAILURE,
        ("json://h/x",),
        "{dag}",
        2,
    )
    assert list(dag.steps) == ["a"] and dag.order == ("a",)  # not part of the graph
    assert dag_from_json(dag_to_json(dag)) == dag
    assert schema_ok(text)


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        (
            '[handlers.on_fail]\ncommand = "x"\n',
            "h.toml: field 'handlers': unknown handler 'on_fail' (did you mean 'on_failure'?);"
            " choose from on_success, on_failure, on_cancel, always",
        ),
        (
            '[handlers.always]\ncommand = "x"\nnotify = ["json://h"]\n',
            "h.toml: step 'handlers.always': a handler needs exactly one of 'command', 'call'"
            " or 'notify'",
        ),
        (
            "[handlers.always]\ndescription = 'nothing'\n",
            "h.toml: step 'handlers.always': a handler needs exactly one of 'command', 'call'"
            " or 'notify'",
        ),
        (
            '[handlers.always]\ncommand = "x"\ndepends_on = ["a"]\n',
            "h.toml: step 'handlers.always': field 'depends_on': unknown key",
        ),
        (
            '[handlers.on_success]\ncommand = "x"\nprecondition = "true"\n',
            "h.toml: step 'handlers.on_success': field 'precondition': unknown key",
        ),
        (
            '[handlers.always]\ncommand = "x"\ntitle = "t"\n',
            "h.toml: step 'handlers.always': field 'title': only a notify handler takes it",
        ),
        (
            '[handlers.always]\nnotify = ["json://h"]\ncwd = "/tmp"\n',
            "h.toml: step 'handlers.always': field 'cwd': only a command or call handler takes it",
        ),
        (
            "[handlers.always]\nnotify = []\n",
            "h.toml: step 'handlers.always': field 'notify': must be a non-empty list of URLs",
        ),
        (
            '[handlers.always]\nnotify = ["json://h/${TOKEN"]\n',
            "h.toml: step 'handlers.always': field 'notify': URL 1: '${' at character 10 needs"
            " a name and a closing '}' (write '$$' for a literal '$')",
        ),
        (
            '[handlers.always]\nnotify = ["json://h"]\nbody = "{run} {"\n',
            "h.toml: step 'handlers.always': field 'body': unknown field {run} (fields: {dag},"
            " {run_id}, {status}, {duration}, {failed_steps}, {errors}, {params})",
        ),
        (
            '[handlers.always]\nnotify = ["json://h"]\ntitle = "a } b"\n',
            "h.toml: step 'handlers.always': field 'title': a lone '}' at character 3 (write '}}')",
        ),
        (
            "[handlers]\nalways = 3\n",
            "h.toml: step 'handlers.always': must be a table ([handlers.always])",
        ),
    ],
)
def test_a_bad_handler_is_a_problem_naming_where_it_is(table: str, expected: str) -> None:
    assert problems(STEP + table) == [expected]


@pytest.mark.parametrize(
    "table",
    [
        '[handlers.on_fail]\ncommand = "x"\n',
        '[handlers.always]\ncommand = "x"\nnotify = ["json://h"]\n',
        '[handlers.always]\ncommand = "x"\ndepends_on = ["a"]\n',
        "[handlers.always]\nnotify = []\n",
    ],
)
def test_the_schema_refuses_what_the_loader_refuses(table: str) -> None:
    assert not schema_ok(STEP + table)


# ------------------------------------------------------------------------------- outcome

OUTCOME = RunOutcome(
    "etl",
    "manual__x",
    RunStatus.FAILED,
    {"date": "2024-01-01"},
    T0,
    T0 + 75.5,
    (FailedStep("load", StepStatus.FAILED, "exit code 3: table locked"),),
    1,
)


def test_the_outcome_as_environment_variables() -> None:
    env = outcome_env(OUTCOME)
    assert env["DAGD_RUN_STATUS"] == "failed"
    assert env["DAGD_FAILED_STEPS"] == "load"
    assert env["DAGD_FAILED_COUNT"] == "1"
    assert json.loads(env["DAGD_RUN_OUTCOME"]) == {
        "dagId": "etl",
        "runId": "manual__x",
        "status": "failed",
        "duration": 75.5,
        "failedCount": 1,
        "failedSteps": [
            {"stepId": "load", "status": "failed", "error": "exit code 3: table locked"}
        ],
    }


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0, "0ms"), (0.034, "34ms"), (0.3, "300ms"), (0.9999, "1.0s"), (12.34, "12.3s")],
)
def test_a_short_run_says_how_short(seconds: float, text: str) -> None:
    quick = attrs.evolve(OUTCOME, finished_at=T0 + seconds)
    assert notification(quick, None, "{duration}")[1] == text


def test_templates_paste_values_as_they_are() -> None:
    values = {"dag": "{status}", "status": "failed"}
    assert render("{{{dag}}} {status}", values) == "{{status}} failed"
    title, body = notification(OUTCOME, "{dag} {status} in {duration}", "{params}\n{errors}\n\n")
    assert title == "etl failed in 1m15s"
    assert body == "date=2024-01-01\nload: exit code 3: table locked"
    assert notification(OUTCOME)[0] == "dagd: etl failed"
    assert template_problem("{{x}} {dag}") is None


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("json://user:pw@127.0.0.1:8080/path/secret?token=abc", "json://127.0.0.1:8080/..."),
        ("mailtos://me:pw@smtp.example.com?to=ops@example.com", "mailtos://smtp.example.com/..."),
        ("slack://TokenA/TokenB/TokenC/#chan", "slack://..."),
        ("JSON://${HOST}/x", "json://..."),
        ("${WEBHOOK_URL}", "<not a URL>"),
        ("not a url", "<not a URL>"),
    ],
)
def test_urls_are_shown_without_secrets(url: str, shown: str) -> None:
    assert redact_url(url) == shown


# ---------------------------------------------------------------------- one exact run


def test_the_exact_events_of_a_failed_run_with_handlers() -> None:
    dag = parse_dag(
        STEP
        + '[handlers.on_success]\ncommand = "x"\n'
        + '[handlers.on_failure]\ncommand = "x"\n'
        + '[handlers.always]\ncommand = "x"\n',
        "h.toml",
        default_id="h",
    )
    rs = RunState(dag, "r")
    rs.start(T0)
    rs.step_started("a", T0)
    out = rs.step_failed("a", T0 + 1, "exit code 1")
    steps = [(e.step_id, e.status, e.handler) for e in out if isinstance(e, StepStatusEvent)]
    assert steps == [
        ("a", StepStatus.FAILED, None),
        ("@on_success", StepStatus.SKIPPED, HandlerKind.ON_SUCCESS),
    ]
    assert [e for e in out if isinstance(e, StartStep)] == [StartStep("@on_failure", 1)]
    assert rs.status is RunStatus.RUNNING and rs.decided is RunStatus.FAILED
    assert rs.outcome().failed == (FailedStep("a", StepStatus.FAILED, "exit code 1"),)
    rs.step_started("@on_failure", T0 + 1)
    out = rs.step_failed("@on_failure", T0 + 2, "mail server down")
    assert [e for e in out if isinstance(e, StartStep)] == [StartStep("@always", 1)]
    rs.step_started("@always", T0 + 2)
    out = rs.step_succeeded("@always", T0 + 3)
    assert out[-2:] == [
        DagRunStatusEvent("h", "r", RunStatus.FAILED, T0 + 3),
        FinishRun(RunStatus.FAILED),
    ]
    progress = out[-3]
    assert (progress.total_steps, progress.completed_steps, progress.failed_steps) == (4, 2, 2)


def test_always_waits_for_a_retrying_handler() -> None:
    # on_failure fails with retries left: always starts only once on_failure is final.
    dag = parse_dag(
        STEP
        + '[handlers.on_failure]\ncommand = "x"\nretries = 2\nretry_delay = "2s"\n'
        + '[handlers.always]\ncommand = "x"\n',
        "h.toml",
        default_id="h",
    )
    rs = RunState(dag, "r")
    rs.start(T0)
    rs.step_started("a", T0)
    out = rs.step_failed("a", T0 + 1, "exit code 1")
    assert [e for e in out if isinstance(e, StartStep)] == [StartStep("@on_failure", 1)]
    rs.step_started("@on_failure", T0 + 1)
    out = rs.step_failed("@on_failure", T0 + 2, "exit code 1")
    assert [e for e in out if isinstance(e, StartStep)] == []
    assert rs.steps["@on_failure"].status is StepStatus.RETRYING
    assert rs.steps["@always"].status is StepStatus.PENDING
    out = rs.retry_due("@on_failure", T0 + 4)
    assert [e for e in out if isinstance(e, StartStep)] == [StartStep("@on_failure", 2)]
    rs.step_started("@on_failure", T0 + 4)
    rs.step_failed("@on_failure", T0 + 5, "exit code 1")
    out = rs.retry_due("@on_failure", T0 + 7)
    assert [e for e in out if isinstance(e, StartStep)] == [StartStep("@on_failure", 3)]
    rs.step_started("@on_failure", T0 + 7)
    out = rs.step_failed("@on_failure", T0 + 8, "exit code 1")
    assert rs.steps["@on_failure"].status is StepStatus.FAILED
    assert [e for e in out if isinstance(e, StartStep)] == [StartStep("@always", 1)]
    rs.step_started("@always", T0 + 8)
    out = rs.step_succeeded("@always", T0 + 9)
    assert out[-1] == FinishRun(RunStatus.FAILED)


def test_a_cancel_during_handlers_keeps_the_outcome_and_sets_a_deadline() -> None:
    dag = parse_dag(STEP + '[handlers.on_success]\ncommand = "x"\n', "h.toml", default_id="h")
    rs = RunState(dag, "r", handler_grace=10)
    rs.start(T0)
    rs.step_started("a", T0)
    rs.step_succeeded("a", T0 + 1)
    rs.step_started("@on_success", T0 + 1)
    assert rs.cancel(T0 + 2) == [HandlerDeadline(T0 + 12)]
    assert rs.status is RunStatus.RUNNING
    assert rs.grace_over(T0 + 12) == [StopStep("@on_success")]
    out = rs.step_cancelled("@on_success", T0 + 13)
    assert rs.steps["@on_success"].error == "stopped: handler_grace of 10s passed"
    assert out[-1] == FinishRun(RunStatus.SUCCESS)  # decided before the cancel


def test_grace_over_before_the_handlers_start_means_they_never_do() -> None:
    # A second Ctrl-C while the cancelled steps are still stopping: the steps keep the
    # cancel's reason, the handlers never start and say why.
    dag = parse_dag(STEP + '[handlers.on_cancel]\ncommand = "x"\n', "h.toml", default_id="h")
    rs = RunState(dag, "r")
    rs.start(T0)
    rs.step_started("a", T0)
    assert rs.cancel(T0 + 1, "cancelled: the daemon is shutting down") == [StopStep("a")]
    assert rs.grace_over(T0 + 2, "stopped: dagd was told to stop again") == []
    out = rs.step_cancelled("a", T0 + 3)
    assert rs.steps["a"].error == "cancelled: the daemon is shutting down"
    assert rs.steps["@on_cancel"].status is StepStatus.CANCELLED
    assert rs.steps["@on_cancel"].error == "stopped: dagd was told to stop again"
    assert not [e for e in out if isinstance(e, StartStep | HandlerDeadline)]
    assert out[-1] == FinishRun(RunStatus.CANCELLED)
