"""`precondition` and `wait_for` in DAG files: what they read to, and their problems with
file, step and field."""

from __future__ import annotations

import pytest

from dagd.core.model import WaitFor, command_text
from dagd.core.spec import DagSpecError, format_duration, parse_dag, parse_duration


def test_both_keys_read_to_the_step_spec() -> None:
    dag = parse_dag(
        '[steps.a]\ncommand = "x"\nprecondition = "test -f ready"\n'
        'wait_for = { command = ["test", "-f", "my file"], interval = "5s", timeout = "2h" }\n'
        '[steps.b]\ncall = "m:f"\nprecondition = ["true"]\nwait_for = { command = "true" }\n',
        "d.toml",
        "d",
    )
    a, b = dag.steps["a"], dag.steps["b"]
    assert a.precondition == "test -f ready"
    assert a.wait_for == WaitFor(("test", "-f", "my file"), 5.0, 7200.0)
    assert command_text(a.wait_for.command) == "test -f 'my file'"
    assert b.precondition == ("true",)
    assert b.wait_for == WaitFor("true", 30.0, 3600.0)  # the declared defaults
    plain = parse_dag('[steps.a]\ncommand = "x"\n', "d.toml", "d").steps["a"]
    assert (plain.precondition, plain.wait_for) == (None, None)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('precondition = ""', "field 'precondition': must not be empty"),
        ("precondition = 3", "field 'precondition': expected a string or list, got 3"),
        ('wait_for = "x"', "field 'wait_for': expected a table, got 'x'"),
        ('wait_for = { interval = "1s" }', "field 'wait_for.command': is required"),
        (
            'wait_for = { command = "x", intervl = "1s" }',
            "field 'wait_for.intervl': unknown key (did you mean 'interval'?)",
        ),
        (
            'wait_for = { command = "x", timeout = "soon" }',
            "field 'wait_for.timeout': cannot read duration 'soon'",
        ),
        ("wait_for = { command = [] }", "field 'wait_for.command': an argv list must be"),
    ],
)
def test_problems_name_the_file_step_and_field(line: str, problem: str) -> None:
    with pytest.raises(DagSpecError) as err:
        parse_dag(f'[steps.a]\ncommand = "x"\n{line}\n', "d.toml", "d")
    assert str(err.value).startswith(f"d.toml: step 'a': {problem}"), str(err.value)


@pytest.mark.parametrize("seconds", [0.25, 1.5, 30, 90, 3600, 5400, 7200, 86400 * 3 + 7])
def test_format_duration_reads_back(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds
