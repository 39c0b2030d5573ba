"""dagd.core.spec: TOML text -> DagSpec, every problem reported at once with file, step, field."""

from __future__ import annotations

import itertools
import textwrap

import pytest

from dagd.core.model import DagSpec, StepSpec, TriggerRule
from dagd.core.spec import DagSpecError, Problem, parse_dag, parse_duration

FILE = "dags/etl.toml"


def dag_text(body: str) -> str:
    return textwrap.dedent(body).strip() + "\n"


def problems_of(text: str, file: str = FILE, default_id: str | None = "etl") -> list[Problem]:
    with pytest.raises(DagSpecError) as info:
        parse_dag(dag_text(text), file=file, default_id=default_id)
    err = info.value
    # The exception text is every problem's str, one per line, in order.
    assert str(err) == "\n".join(map(str, err.problems))
    assert all(p.file == file for p in err.problems)
    return err.problems


def only_problem(text: str, **kwargs) -> Problem:
    problems = problems_of(text, **kwargs)
    assert len(problems) == 1, problems
    return problems[0]


# --------------------------------------------------------------------------- a valid file


ETL = """
id = "etl"
description = "nightly"
schedule = "@daily"
timezone = "Europe/Berlin"
catchup = true
max_active_runs = 2
max_active_steps = 3
tags = ["prod", "etl"]

[params]
day = "today"
limit = 10
dry = false

[env]
REGION = "eu"
MODE = "dag"

[steps.extract]
command = "extract.sh"
retries = 2
retry_delay = "30s"
retry_backoff = 3
max_retry_delay = "5m"
timeout = "1h30m"

[steps.transform]
command = ["python", "-m", "transform", "--fast"]
depends_on = ["extract"]
env = { MODE = "step", EXTRA = 1 }
cwd = "/srv"

[steps.load]
call = "etl.jobs:load"
depends_on = "transform"

[steps.cleanup]
command = "rm -rf /tmp/etl"
depends_on = ["load", "load"]
trigger_rule = "all_done"
description = "always tidy up"
"""


def test_valid_file_parses_to_the_expected_spec():
    dag = parse_dag(dag_text(ETL), file=FILE)
    assert isinstance(dag, DagSpec)
    assert dag.id == "etl"
    assert dag.description == "nightly"
    assert dag.schedule == "@daily"
    assert dag.timezone == "Europe/Berlin"
    assert dag.catchup is True
    assert dag.max_active_runs == 2
    assert dag.max_active_steps == 3
    assert dag.tags == ("prod", "etl")
    assert dag.source == FILE
    assert dag.params == {"day": "today", "limit": "10", "dry": "false"}
    assert dag.env == {"REGION": "eu", "MODE": "dag"}
    assert list(dag.steps) == ["extract", "transform", "load", "cleanup"]
    assert dag.order == ("extract", "transform", "load", "cleanup")

    extract = dag.steps["extract"]
    assert extract == StepSpec(
        id="extract",
        command="extract.sh",
        retries=2,
        retry_delay=30.0,
        retry_backoff=3.0,
        max_retry_delay=300.0,
        timeout=5400.0,
        env={"REGION": "eu", "MODE": "dag"},
        env_order=(("REGION", "eu"), ("MODE", "dag")),
    )
    assert extract.max_attempts == 3

    transform = dag.steps["transform"]
    assert transform.command == ("python", "-m", "transform", "--fast")
    assert transform.depends_on == ("extract",)
    assert transform.cwd == "/srv"
    # The DAG's env is merged under the step's own: the step wins on a clash.
    assert transform.env == {"REGION": "eu", "MODE": "step", "EXTRA": "1"}
    # ... and `$VAR` expands entry by entry: the DAG's entries, then the step's.
    assert transform.env_order == (
        ("REGION", "eu"),
        ("MODE", "dag"),
        ("MODE", "step"),
        ("EXTRA", "1"),
    )

    load = dag.steps["load"]
    assert load.call == "etl.jobs:load"
    assert load.command is None
    assert load.depends_on == ("transform",)  # a single string is a one-item list

    cleanup = dag.steps["cleanup"]
    assert cleanup.depends_on == ("load",)  # duplicates collapse
    assert cleanup.trigger_rule is TriggerRule.ALL_DONE
    assert cleanup.description == "always tidy up"


def test_defaults():
    dag = parse_dag(dag_text('[steps.only]\ncommand = "true"'), file="dags/x.toml", default_id="x")
    assert dag.id == "x"
    assert dag.schedule is None
    assert dag.timezone == "UTC"
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert dag.max_active_steps is None
    assert dag.params == {} and dag.env == {} and dag.tags == ()
    step = dag.steps["only"]
    assert step == StepSpec(id="only", command="true")
    assert step.retries == 0 and step.retry_delay == 0.0 and step.retry_backoff == 2.0
    assert step.max_retry_delay is None and step.timeout is None
    assert step.trigger_rule is TriggerRule.ALL_SUCCESS
    assert step.env == {} and step.cwd is None and step.depends_on == ()


def test_executor_defaults_to_local_the_dag_sets_it_and_a_step_overrides_it():
    steps = '[steps.a]\ncommand = "x"\n[steps.b]\ncommand = "y"\nexecutor = "local"\n'
    dag = parse_dag(steps, default_id="d")
    assert [s.executor for s in dag.steps.values()] == ["local", "local"]
    dag = parse_dag('executor = "dask"\n' + steps, default_id="d")
    assert [s.executor for s in dag.steps.values()] == ["dask", "local"]


def test_id_defaults_to_the_file_stem_but_the_file_wins():
    body = '[steps.a]\ncommand = "true"'
    assert parse_dag(body, file="dags/nightly.toml", default_id="nightly").id == "nightly"
    assert parse_dag('id = "given"\n' + body, default_id="nightly").id == "given"


def test_missing_id_without_default():
    p = only_problem('[steps.a]\ncommand = "true"', default_id=None)
    assert (p.step, p.field) == (None, "id")
    assert str(p) == f"{FILE}: field 'id': missing 'id'"


def test_a_default_id_that_is_not_a_valid_id_is_reported():
    p = only_problem('[steps.a]\ncommand = "true"', default_id="my etl")
    assert p.field == "id" and "'my etl' is not a valid id" in p.message


# ------------------------------------------------------------------ one problem per file

# (TOML body, step, field, substrings of the message)
SINGLE_PROBLEMS = [
    pytest.param(
        'shedule = "@daily"\n[steps.a]\ncommand = "x"',
        None,
        "shedule",
        ["unknown key", "did you mean 'schedule'?"],
        id="unknown-dag-key",
    ),
    pytest.param(
        'colour = "red"\n[steps.a]\ncommand = "x"',
        None,
        "colour",
        ["unknown key"],
        id="unknown-dag-key-no-suggestion",
    ),
    pytest.param(
        '[steps.a]\ncommand = "x"\nretires = 3',
        "a",
        "retires",
        ["unknown key", "did you mean 'retries'?"],
        id="unknown-step-key",
    ),
    pytest.param(
        '[steps.a]\ncommand = "x"\ndepend_on = ["b"]',
        "a",
        "depend_on",
        ["did you mean 'depends_on'?"],
        id="unknown-step-key-2",
    ),
    pytest.param(
        '[steps.a]\ndescription = "nothing to run"',
        "a",
        None,
        ["exactly one of 'command', 'call' or 'run'"],
        id="missing-command-and-call",
    ),
    pytest.param(
        '[steps.a]\ncommand = "x"\ncall = "m:f"',
        "a",
        None,
        ["exactly one of 'command', 'call' or 'run'"],
        id="both-command-and-call",
    ),
    pytest.param(
        '[steps.a]\ncall = "module.function"',
        "a",
        "call",
        ["'module.function' must look like 'package.module:function'"],
        id="call-without-colon",
    ),
    pytest.param(
        '[steps.a]\ncall = "pkg.mod:"',
        "a",
        "call",
        ["must look like 'package.module:function'"],
        id="call-without-function",
    ),
    pytest.param(
        '[steps.a]\ncall = "1pkg:f"',
        "a",
        "call",
        ["must look like"],
        id="call-bad-module",
    ),
    pytest.param(
        '[steps.a]\ncall = "pkg:f\\n"',
        "a",
        "call",
        ["must look like"],
        id="call-trailing-newline",
    ),
    pytest.param(
        "[steps.a]\ncall = 3",
        "a",
        "call",
        ["expected a string, got 3"],
        id="call-not-string",
    ),
    pytest.param(
        "[steps.a]\ncommand = []",
        "a",
        "command",
        ["an argv list must be a non-empty list of strings"],
        id="empty-argv",
    ),
    pytest.param(
        '[steps.a]\ncommand = ["ls", 3]',
        "a",
        "command",
        ["non-empty list of strings"],
        id="argv-not-strings",
    ),
    pytest.param(
        '[steps.a]\ncommand = "   "',
        "a",
        "command",
        ["must not be empty"],
        id="blank-command",
    ),
    pytest.param(
        "[steps.a]\ncommand = 5",
        "a",
        "command",
        ["expected a string or list, got 5"],
        id="command-wrong-type",
    ),
    pytest.param(
        '[steps.extract]\ncommand = "x"\n[steps.load]\ncommand = "y"\ndepends_on = ["extrakt"]',
        "load",
        "depends_on",
        ["unknown step 'extrakt'", "(did you mean 'extract'?)"],
        id="unknown-dependency",
    ),
    pytest.param(
        '[steps.a]\ncommand = "x"\ndepends_on = ["zzz"]',
        "a",
        "depends_on",
        ["unknown step 'zzz'"],
        id="unknown-dependency-no-suggestion",
    ),
    pytest.param(
        '[steps.a]\ncommand = "x"\ndepends_on = ["a"]',
        "a",
        "depends_on",
        ["a step cannot depend on itself"],
        id="self-dependency",
    ),
    pytest.param(
        '[steps.a]\ncommand = "x"\ndepends_on = [1]',
        "a",
        "depends_on",
        ["must be a list of step ids"],
        id="dependency-not-string",
    ),
    pytest.param(
        '[steps.a]\ncommand = "x"\ntrigger_rule = "all_sucess"',
        "a",
        "trigger_rule",
        ["unknown trigger rule 'all_sucess'", "did you mean 'all_success'?", "none_failed"],
        id="bad-trigger-rule",
    ),
    pytest.param(
        '[steps.a]\ncommand = "x"\ntrigger_rule = "whenever"',
        "a",
        "trigger_rule",
        ["unknown trigger rule 'whenever'", "choose from all_success, all_done"],
        id="bad-trigger-rule-no-suggestion",
    ),
    pytest.param(
        '[steps.a]\ncommand = "x"\nretry_delay = "5 minutes"',
        "a",
        "retry_delay",
        ["cannot read duration '5 minutes'"],
        id="bad-duration-words",
    ),
    pytest.param(
        '[steps.a]\ncommand = "x"\ntimeout = "1h30"',
        "a",
        "timeout",
        ["cannot read duration '1h30'"],
        id="bad-duration-missing-unit",
    ),
    pytest.param(
        '[steps.a]\ncommand = "x"\nmax_retry_delay = "m5"',
        "a",
        "max_retry_delay",
        ["cannot read duration 'm5'"],
        id="bad-duration-unit-first",
    ),
    pytest.param(
        '[steps.a]\ncommand = "x"\nretry_delay = -3',
        "a",
        "retry_delay",
        ["duration must be between 0 and 31536000 seconds (365 days), got -3"],
        id="negative-duration",
    ),
    pytest.param(
        '[steps.a]\ncommand = "x"\nretry_delay = true',
        "a",
        "retry_delay",
        ["expected a duration"],
        id="bool-duration",
    ),
    pytest.param(
        '[steps.a]\ncommand = "x"\nretries = -1',
        "a",
        "retries",
        ["must be from 0 to 1000, got -1"],
        id="negative-retries",
    ),
    pytest.param(
        '[steps.a]\ncommand = "x"\nretries = 1.5',
        "a",
        "retries",
        ["expected an integer, got 1.5"],
        id="fractional-retries",
    ),
    pytest.param(
        '[steps.a]\ncommand = "x"\nretries = true',
        "a",
        "retries",
        ["expected an integer, got True"],
        id="bool-retries",
    ),
    pytest.param(
        '[steps.a]\ncommand = "x"\nretry_backoff = 0.5',
        "a",
        "retry_backoff",
        ["must be a number from 1 to 100, got 0.5"],
        id="backoff-below-1",
    ),
    pytest.param(
        '[steps.a]\ncommand = "x"\nretry_backoff = true',
        "a",
        "retry_backoff",
        ["must be a number from 1 to 100, got True"],
        id="backoff-bool",
    ),
    pytest.param(
        '[steps.a]\ncommand = "x"\ntimeout = 0',
        "a",
        "timeout",
        ["must be greater than 0"],
        id="timeout-zero",
    ),
    pytest.param(
        '[steps.a]\ncommand = "x"\ntimeout = "0s"',
        "a",
        "timeout",
        ["must be greater than 0"],
        id="timeout-zero-string",
    ),
    pytest.param(
        'schedule = "61 * * * *"\n[steps.a]\ncommand = "x"',
        None,
        "schedule",
        ["invalid cron expression '61 * * * *'"],
        id="cron-bad-minute",
    ),
    pytest.param(
        'schedule = "* * * *"\n[steps.a]\ncommand = "x"',
        None,
        "schedule",
        ["must have 5 fields"],
        id="cron-four-fields",
    ),
    pytest.param(
        'schedule = "@reboot"\n[steps.a]\ncommand = "x"',
        None,
        "schedule",
        ["must have 5 fields"],
        id="cron-unknown-alias",
    ),
    pytest.param(
        'timezone = "Europe/Berln"\n[steps.a]\ncommand = "x"',
        None,
        "timezone",
        ["unknown time zone 'Europe/Berln'"],
        id="bad-timezone",
    ),
    pytest.param(
        'timezone = "../etc/passwd"\n[steps.a]\ncommand = "x"',
        None,
        "timezone",
        ["unknown time zone"],
        id="timezone-path",
    ),
    pytest.param(
        '[params]\n"bad-name" = "x"\n[steps.a]\ncommand = "x"',
        None,
        "params",
        ["'bad-name' is not a valid name"],
        id="bad-param-name",
    ),
    pytest.param(
        '[params]\nday = [1, 2]\n[steps.a]\ncommand = "x"',
        None,
        "params",
        ["value of 'day' must be a string or number"],
        id="bad-param-value",
    ),
    pytest.param(
        '[env]\n"1X" = "y"\n[steps.a]\ncommand = "x"',
        None,
        "env",
        ["'1X' is not a valid name"],
        id="bad-env-name",
    ),
    pytest.param(
        '[steps.a]\ncommand = "x"\nenv = { "A-B" = "1" }',
        "a",
        "env",
        ["'A-B' is not a valid name"],
        id="bad-step-env-name",
    ),
    pytest.param(
        'id = "my dag!"\n[steps.a]\ncommand = "x"',
        None,
        "id",
        ["'my dag!' is not a valid id"],
        id="bad-dag-id",
    ),
    pytest.param(
        'id = "etl\\n"\n[steps.a]\ncommand = "x"',
        None,
        "id",
        ["is not a valid id"],
        id="dag-id-trailing-newline",
    ),
    pytest.param(
        'id = "-etl"\n[steps.a]\ncommand = "x"',
        None,
        "id",
        ["is not a valid id"],
        id="dag-id-leading-dash",
    ),
    pytest.param(
        'id = "' + "x" * 129 + '"\n[steps.a]\ncommand = "x"',
        None,
        "id",
        ["is not a valid id"],
        id="dag-id-too-long",
    ),
    pytest.param(
        '[steps."my step"]\ncommand = "x"',
        "my step",
        None,
        ["step ids use letters, digits"],
        id="bad-step-id",
    ),
    pytest.param(
        '[steps."a\\n"]\ncommand = "x"',
        "a\n",
        None,
        ["step ids use letters, digits"],
        id="step-id-trailing-newline",
    ),
    pytest.param(
        "[steps]\na = 3",
        "a",
        None,
        ["must be a table"],
        id="step-not-a-table",
    ),
    pytest.param(
        'steps = "a"',
        None,
        "steps",
        ["expected a table"],
        id="steps-not-a-table",
    ),
    pytest.param(
        'id = "x"',
        None,
        None,
        ["a DAG needs at least one step"],
        id="no-steps",
    ),
    pytest.param(
        "[steps]",
        None,
        None,
        ["a DAG needs at least one step"],
        id="empty-steps-table",
    ),
    pytest.param(
        'max_active_steps = 0\n[steps.a]\ncommand = "x"',
        None,
        "max_active_steps",
        ["must be from 1 to 10000, got 0"],
        id="max-active-steps-zero",
    ),
    pytest.param(
        'max_active_runs = 0\n[steps.a]\ncommand = "x"',
        None,
        "max_active_runs",
        ["must be from 1 to 10000, got 0"],
        id="max-active-runs-zero",
    ),
    pytest.param(
        'catchup = "yes"\n[steps.a]\ncommand = "x"',
        None,
        "catchup",
        ["expected a bool, got 'yes'"],
        id="catchup-not-bool",
    ),
    pytest.param(
        'tags = ["a", 1]\n[steps.a]\ncommand = "x"',
        None,
        "tags",
        ["must be a list of strings"],
        id="tags-not-strings",
    ),
    pytest.param(
        'executor = "my cluster"\n[steps.a]\ncommand = "x"',
        None,
        "executor",
        ["'my cluster' is not an executor name (letters, digits, '_', '-')"],
        id="bad-dag-executor",
    ),
    pytest.param(
        '[steps.a]\ncommand = "x"\nexecutor = 1',
        "a",
        "executor",
        ["expected a string, got 1"],
        id="step-executor-not-string",
    ),
    pytest.param(
        '[steps.a]\ncommand = "x"\nexecuter = "dask"',
        "a",
        "executer",
        ["did you mean 'executor'?"],
        id="step-executor-typo",
    ),
]


@pytest.mark.parametrize(("body", "step", "field", "fragments"), SINGLE_PROBLEMS)
def test_each_problem_is_reported_with_its_step_and_field(body, step, field, fragments):
    p = only_problem(body)
    assert (p.file, p.step, p.field) == (FILE, step, field)
    for fragment in fragments:
        assert fragment in p.message
    # What the user reads names the file, then the step, then the field, then the message.
    text = str(p)
    expected_prefix = FILE
    if step is not None:
        expected_prefix += f": step {step!r}"
    if field is not None:
        expected_prefix += f": field {field!r}"
    assert text == f"{expected_prefix}: {p.message}"


def test_problem_str_names_file_step_and_field():
    p = only_problem('[steps.load]\ncommand = "x"\nretries = -2')
    assert str(p) == "dags/etl.toml: step 'load': field 'retries': must be from 0 to 1000, got -2"


def test_not_toml():
    p = only_problem("this is = = not toml")
    assert (p.step, p.field) == (None, None)
    assert p.message.startswith("not valid TOML: ")
    assert str(p).startswith("dags/etl.toml: not valid TOML: ")


@pytest.mark.parametrize(
    ("cycle_deps", "expected"),
    [
        # b runs after a, c after b, a after c: work flows a -> b -> c -> a.
        ({"a": ["c"], "b": ["a"], "c": ["b"]}, "a -> b -> c -> a"),
        ({"a": ["b"], "b": ["a"]}, "a -> b -> a"),
        # `start` is upstream of the cycle, `end` downstream; neither is part of the path.
        (
            {"start": [], "x": ["start", "z"], "y": ["x"], "z": ["y"], "end": ["z"]},
            "x -> y -> z -> x",
        ),
    ],
)
def test_cycle_is_shown_upstream_to_downstream(cycle_deps, expected):
    body = "\n".join(
        f'[steps.{sid}]\ncommand = "x"\ndepends_on = {deps!r}'.replace("'", '"')
        for sid, deps in cycle_deps.items()
    )
    p = only_problem(body)
    assert (p.step, p.field) == (None, "depends_on")
    assert p.message == f"dependency cycle: {expected}"
    # Every arrow really is "upstream -> downstream" in the file.
    names = expected.split(" -> ")
    for up, down in itertools.pairwise(names):
        assert up in cycle_deps[down]


def test_all_problems_are_reported_at_once():
    body = """
    shedule = "@daily"

    [steps.extract]
    command = "x"
    retries = -1

    [steps.load]
    command = "y"
    depends_on = ["extrakt"]
    """
    problems = problems_of(body)
    assert [(p.step, p.field) for p in problems] == [
        (None, "shedule"),
        ("extract", "retries"),
        ("load", "depends_on"),
    ]
    assert len(str(DagSpecError(problems)).splitlines()) == 3


def test_many_problems_in_one_step_and_one_dag():
    body = """
    id = "bad id"
    timezone = "Nowhere/City"
    schedule = "every day"

    [steps.a]
    command = "x"
    call = "nope"
    retries = -1
    retry_backoff = 0
    timeout = 0
    trigger_rule = "sometimes"
    depends_on = ["a", "ghost"]
    colour = "blue"
    """
    problems = problems_of(body)
    where = sorted((p.step or "", p.field or "") for p in problems)
    assert where == sorted(
        [
            ("", "id"),
            ("", "schedule"),
            ("", "timezone"),
            ("a", "colour"),
            ("a", "call"),
            ("a", ""),  # both command and call
            ("a", "trigger_rule"),
            ("a", "retry_backoff"),
            ("a", "timeout"),
            ("a", "retries"),
            ("a", "depends_on"),  # itself
            ("a", "depends_on"),  # ghost
        ]
    )


# ------------------------------------------------------------------------------ durations


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("1d", 86400.0),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        (" 2m ", 120.0),
        ("1h 30m", 5400.0),
        ("42", 42.0),
        ("0", 0.0),
        (42, 42.0),
        (1.5, 1.5),
        (0, 0.0),
    ],
)
def test_parse_duration(value, seconds):
    assert parse_duration(value) == pytest.approx(seconds)
    assert isinstance(parse_duration(value), float)


@pytest.mark.parametrize(
    "value",
    ["", "  ", "5 minutes", "1h30", "m5", "5mm", "-5s", "-1", "inf", "nan", "1x", True, None, []],
)
def test_parse_duration_rejects(value):
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize(
    ("field", "text", "seconds"),
    [
        ("retry_delay", '"90s"', 90.0),
        ("retry_delay", '"250ms"', 0.25),
        ("max_retry_delay", '"1h30m"', 5400.0),
        ("timeout", '"5m"', 300.0),
        ("timeout", "42", 42.0),
        ("timeout", "1.5", 1.5),
    ],
)
def test_duration_fields_in_a_file(field, text, seconds):
    dag = parse_dag(f'[steps.a]\ncommand = "x"\n{field} = {text}\n', default_id="d")
    assert getattr(dag.steps["a"], field) == pytest.approx(seconds)


# ------------------------------------------------------------------------------- params


def test_bind_params():
    dag = parse_dag('[params]\nday = "today"\nn = 3\n[steps.a]\ncommand = "x"', default_id="d")
    assert dag.bind_params(None) == {"day": "today", "n": "3"}
    assert dag.bind_params({"day": "2024-01-01"}) == {"day": "2024-01-01", "n": "3"}
    assert dag.bind_params({"n": 5}) == {"day": "today", "n": "5"}
    with pytest.raises(ValueError, match=r"DAG 'd' has no param 'dya' \(declared params: day, n\)"):
        dag.bind_params({"dya": "x"})


def test_bind_params_without_declared_params():
    dag = parse_dag('[steps.a]\ncommand = "x"', default_id="d")
    assert dag.bind_params({}) == {}
    with pytest.raises(ValueError, match=r"no param 'a', 'b' \(declared params: none\)"):
        dag.bind_params({"b": "1", "a": "2"})


# ---------------------------------------------------------------------------- big files


def test_ten_thousand_step_chain():
    n = 10_000
    parts = ['[steps.s0]\ncommand = "true"']
    # Written in reverse so file order is not already a topological order.
    for i in range(n - 1, 0, -1):
        parts.append(f'[steps.s{i}]\ncommand = "true"\ndepends_on = ["s{i - 1}"]')
    dag = parse_dag("\n".join(parts), default_id="chain")
    assert len(dag.steps) == n
    assert dag.order == tuple(f"s{i}" for i in range(n))


def test_ten_thousand_step_cycle_is_reported():
    n = 10_000
    parts = [f'[steps.s{i}]\ncommand = "true"\ndepends_on = ["s{(i - 1) % n}"]' for i in range(n)]
    p = only_problem("\n".join(parts))
    path = p.message.removeprefix("dependency cycle: ").split(" -> ")
    assert len(path) == n + 1 and path[0] == path[-1]
    assert path[:3] == ["s0", "s1", "s2"]
