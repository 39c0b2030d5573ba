"""`dagd show RUN_ID` and `dagd show --dag DAG_ID` against a real daemon: what a run did (every
step, attempt and error) and what a DAG is, as text and as `--json` in the protocol's shapes."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from clienthelp import DaemonProc, serving, wait_for
from clihelp import cli_in, invoke, start_run

from dagd.core.model import RunStatus, StepStatus, TriggerRule
from dagd.core.protocol.answers import DagDetail, RunDetail, TriggerKind
from dagd.core.protocol.codec import parse_server_message

SUPPORT = Path(__file__).resolve().parent.parent / "support"

DAGS = {
    "failing": """
        [params]
        date = "2024-01-01"
        [steps.prepare]
        command = "true"
        [steps.boom]
        command = "echo partial; echo 'bad input' >&2; exit 3"
        depends_on = ["prepare"]
        retries = 1
        [steps.after]
        command = "true"
        depends_on = ["boom"]
        [steps.python]
        call = "stepfuncs:raise_value_error"
    """,
    "nightly": '''
        description = "every night"
        schedule = "30 2 * * *"
        timezone = "Europe/Paris"
        tags = ["nightly", "core"]
        [params]
        who = 'say "hi"'
        [steps.script]
        command = """
        echo one
        echo two
        """
        retries = 2
        retry_delay = "5s"
        timeout = "1m"
        [steps.argv]
        command = ["echo", "it's"]
        depends_on = ["script"]
        trigger_rule = "all_done"
        description = "after the script"
        [steps.py]
        call = "stepfuncs:noop"
        depends_on = ["script", "argv"]
    ''',
    "mutable": """
        [steps.one]
        command = "true"
    """,
    "gated": """
        env = { GATE = "gate" }
        [steps.wait]
        command = 'while [ ! -e "$GATE" ]; do sleep 0.02; done'
    """,
    "handoff": """
        [steps.give]
        command = '''
        echo "rows=42" >> "$DAGD_OUTPUT"
        printf 'note<<EOF\\nline 1\\nline 2\\nEOF\\n' >> "$DAGD_OUTPUT"
        '''
        [steps.py]
        call = "outputfuncs:give"
        [steps.bad]
        command = 'echo "bad-key=1" >> "$DAGD_OUTPUT"'
        [steps.skipped]
        command = "true"
        precondition = 'echo "no rows today" >&2; exit 1'
        [steps.waits]
        command = 'echo "rows=$DAGD_OUTPUT_GIVE_ROWS" >> "$DAGD_OUTPUT"'
        depends_on = ["give"]
        wait_for = { command = "test -f handoff-ready", interval = "0.1s" }
    """,
    "nested": """
        after = ["nightly"]
        [steps.sub]
        run = "failing"
        params = { date = "${params.day}" }
        [params]
        day = "mon"
    """,
}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")]))
        with serving(tmp_path_factory.mktemp("show"), DAGS) as d:
            yield d


@pytest.fixture(scope="module")
def failed_run(daemon: DaemonProc) -> str:
    run_id = start_run(daemon, "failing")
    wait_for(lambda: daemon.run_statuses("failing").get(run_id) == "failed")
    return run_id


@pytest.fixture
def cli(daemon: DaemonProc, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    return cli_in(daemon.root, monkeypatch)


def field(text: str, name: str) -> str:
    match = re.search(rf"^{name} +(.*)$", text, re.MULTILINE)
    assert match, text
    return match.group(1)


def row(text: str, first: str) -> list[str]:
    """The cells of the table row starting with `first` (cells are 2+ spaces apart)."""
    for line in text.splitlines():
        if line.startswith(first + "  "):
            return re.split(r" {2,}", line.strip())
    raise AssertionError(f"no row {first!r} in:\n{text}")


def test_show_a_failed_run(cli: CliRunner, failed_run: str) -> None:
    result = invoke(cli, "show", failed_run)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert field(out, "run") == failed_run
    assert field(out, "dag") == "failing"
    assert field(out, "status") == "failed"
    assert field(out, "trigger") == "manual"
    assert field(out, "params") == "date=2024-01-01"
    assert re.fullmatch(r"\d+\.\ds", field(out, "duration"))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", field(out, "ended"))
    assert re.fullmatch(r"[0-9a-f]{12}", field(out, "definition"))
    assert out.splitlines()[11].split() == [
        "STEP", "STATUS", "ATTEMPTS", "STARTED", "DURATION", "ERROR"
    ]  # fmt: skip
    assert row(out, "prepare")[:3] == ["prepare", "success", "1"]
    boom = row(out, "boom")
    assert boom[:3] == ["boom", "failed", "2"]
    assert boom[-1] == "exit code 3: bad input"
    # A step tried twice lists both attempts, each with its own outcome and error.
    first, second = row(out, "  attempt 1"), row(out, "  attempt 2")
    assert first[1] == "failed" and first[-1] == "exit code 3: bad input"
    assert second[1] == "failed" and second[-1] == "exit code 3: bad input"
    assert row(out, "after") == ["after", "upstream_failed", "0", "-", "-"]
    assert row(out, "python")[-1] == "ValueError: bad value in python"
    assert out.count("attempt 1") == 1  # steps tried once list no attempt lines
    assert out.endswith(f"\n\noutput of a failed step: dagd logs {failed_run} boom\n")


def test_show_every_attempt(cli: CliRunner, failed_run: str) -> None:
    out = invoke(cli, "show", failed_run, "--attempts").stdout
    assert out.count("  attempt 1") == 3  # prepare, boom, python
    assert out.count("  attempt 2") == 1


def test_show_run_json(cli: CliRunner, failed_run: str) -> None:
    result = invoke(cli, "show", failed_run, "--json")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\n") == 1
    run = parse_server_message(result.stdout)
    assert isinstance(run, RunDetail)
    assert run.request_id is None
    assert run.record.run_id == failed_run
    assert run.record.status is RunStatus.FAILED
    assert run.trigger is TriggerKind.MANUAL
    assert run.duration is not None and run.duration >= 0
    steps = {s.step_id: s for s in run.steps}
    assert list(steps) == ["prepare", "boom", "after", "python"]
    boom = steps["boom"]
    assert (boom.status, boom.attempt, boom.retry_count) == (StepStatus.FAILED, 2, 1)
    assert [(a.attempt, a.status, a.error) for a in boom.attempts] == [
        (1, StepStatus.RETRYING, "exit code 3: bad input"),
        (2, StepStatus.FAILED, "exit code 3: bad input"),
    ]
    assert steps["after"].status is StepStatus.UPSTREAM_FAILED
    assert steps["after"].attempts == []
    assert steps["boom"].depends_on == ["prepare"]


def test_show_a_run_in_progress(daemon: DaemonProc, cli: CliRunner) -> None:
    gate = daemon.root / "gate"
    gate.unlink(missing_ok=True)
    run_id = start_run(daemon, "gated")
    try:
        wait_for(lambda: daemon.run_statuses("gated").get(run_id) == "running")

        def running_step() -> str | None:
            out = invoke(cli, "show", run_id).stdout
            return out if row(out, "wait")[1] == "running" else None

        out = wait_for(running_step)
        assert field(out, "status") == "running"
        assert field(out, "ended") == "-"
        assert field(out, "duration") == "-"
        assert row(out, "wait")[:3] == ["wait", "running", "1"]
    finally:
        gate.touch()
    wait_for(lambda: daemon.run_statuses("gated").get(run_id) == "success")
    assert field(invoke(cli, "show", run_id).stdout, "status") == "success"


def test_show_dag(cli: CliRunner) -> None:
    result = invoke(cli, "show", "--dag", "nightly")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert field(out, "dag") == "nightly"
    assert field(out, "description") == "every night"
    assert field(out, "schedule") == "30 2 * * * (Europe/Paris)"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:30:00\.000Z", field(out, "next run"))
    assert field(out, "paused") == "no"
    assert field(out, "tags") == "nightly, core"
    assert '  who = "say \\"hi\\""' in out.splitlines()
    assert "STEPS (3)" in out
    steps = out.split("STEPS (3)\n", 1)[1]
    assert steps == (
        "script\n"
        "  command: echo one\n"
        "           echo two\n"
        "  executor local, retries 2 (delay 5s), timeout 60s\n"
        "argv  <- script\n"
        "  description: after the script\n"
        "  command: echo 'it'\"'\"'s'\n"
        "  executor local, trigger rule all_done\n"
        "py  <- script, argv\n"
        "  call: stepfuncs:noop\n"
        "  executor local\n"
    )


def test_show_dag_with_a_sub_dag_step_and_after(cli: CliRunner) -> None:
    out = invoke(cli, "show", "--dag", "nested").stdout
    assert field(out, "after") == "nightly"
    assert out.split("STEPS (1)\n", 1)[1] == (
        'sub\n  run: failing (params: date = "${params.day}")\n  executor dag\n'
    )
    assert field(invoke(cli, "show", "--dag", "failing").stdout, "after") == "-"
    detail = json.loads(invoke(cli, "show", "--dag", "nested", "--json").stdout)
    (step,) = detail["steps"]
    assert (step["command"], step["call"], step["run"]) == (None, None, "failing")
    assert step["runParams"] == {"date": "${params.day}"}
    assert detail["after"] == ["nightly"]


def test_show_manual_dag(cli: CliRunner) -> None:
    out = invoke(cli, "show", "--dag", "failing").stdout
    assert field(out, "schedule") == "-"
    assert field(out, "next run") == "- (no schedule: runs only when triggered)"
    assert '  date = "2024-01-01"' in out.splitlines()


def test_show_dag_with_a_broken_file(daemon: DaemonProc, cli: CliRunner) -> None:
    path = daemon.root / "dags" / "mutable.toml"
    good = path.read_text()
    path.write_text(
        good + '\n[steps.two]\ncommand = 5\n[steps.three]\ncommand = "true"\nretries = "x"\n'
    )
    try:

        def file_error() -> str | None:
            out = invoke(cli, "show", "--dag", "mutable").stdout
            return out if "file error" in out else None

        out = wait_for(file_error, timeout=15)
        assert field(out, "file error") == "running the last good version of its file; now:"
        problems = out.split("file error", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
        assert len(problems) == 2
        assert problems[0].startswith("  ") and "mutable.toml: step 'two'" in problems[0]
        assert problems[1].startswith("  ") and "mutable.toml: step 'three'" in problems[1]
        assert "STEPS (1)" in out  # the last good version
    finally:
        path.write_text(good)
    wait_for(lambda: "file error" not in invoke(cli, "show", "--dag", "mutable").stdout, 15)


def test_show_dag_json(cli: CliRunner) -> None:
    result = invoke(cli, "show", "--dag", "nightly", "--json")
    assert result.exit_code == 0, result.output
    dag = parse_server_message(result.stdout)
    assert isinstance(dag, DagDetail)
    assert dag.summary.timezone == "Europe/Paris"
    assert dag.summary.params == {"who": 'say "hi"'}
    assert [(s.step_id, s.level) for s in dag.steps] == [("script", 0), ("argv", 1), ("py", 2)]
    argv = dag.steps[1]
    assert argv.command == ["echo", "it's"]
    assert argv.trigger_rule is TriggerRule.ALL_DONE
    assert dag.steps[2].call == "stepfuncs:noop"
    assert [(e.source, e.target) for e in dag.edges] == [
        ("script", "argv"),
        ("script", "py"),
        ("argv", "py"),
    ]


def test_unknown_run_and_dag(cli: CliRunner) -> None:
    result = invoke(cli, "show", "manual__2000-01-01T00:00:00+00:00")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "unknown run 'manual__2000-01-01T00:00:00+00:00'" in result.stderr
    result = invoke(cli, "show", "x" * 5000)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: unknown run 'xxx")
    assert len(result.stderr) < 200  # the id cut short, on one line
    result = invoke(cli, "show", "--dag", "nighty")
    assert result.exit_code == 1
    assert "unknown DAG 'nighty': did you mean 'nightly'?" in result.stderr
    result = invoke(cli, "show", "--dag", "nighty", "--json")
    assert result.exit_code == 1
    assert result.stdout == ""


@pytest.mark.parametrize("args", [[], ["RUN", "--dag", "nightly"]])
def test_run_or_dag_is_a_usage_error(cli: CliRunner, args: list[str]) -> None:
    result = invoke(cli, "show", *args)
    assert result.exit_code == 2
    assert "give a RUN_ID, or --dag DAG_ID (not both)" in result.stderr


def test_no_daemon(cli: CliRunner) -> None:
    result = invoke(cli, "show", "x", "--url", "ws://127.0.0.1:9/api/v1/ws", "--token", "t")
    assert result.exit_code == 1
    assert "cannot reach the daemon at ws://127.0.0.1:9/api/v1/ws" in result.stderr


def test_run_text_keeps_hostile_text_on_its_line() -> None:
    from dagd.cli.inspect import run_text
    from dagd.core.protocol.answers import StepDetail
    from dagd.core.records import AttemptRecord, RunRecord

    error = "line one\nline two\x1b[31m red"
    attempts = [
        AttemptRecord("s", 1, StepStatus.RETRYING, 10.0, 11.0, 1000, error, "tcp://10.0.0.7:4001"),
        AttemptRecord("s", 2, StepStatus.FAILED, 12.0, 12.5, 500, error, "tcp://10.0.0.8:4001"),
    ]
    step = StepDetail("s", StepStatus.FAILED, 12.0, 12.5, 500, 1, error, 2, [], attempts)
    record = RunRecord("d", "r 1", RunStatus.FAILED, {"k": "a\nb"}, 9.0, 10.0, 12.5)
    text = run_text(RunDetail(record, TriggerKind.MANUAL, 3500, None, [step]))
    assert "\x1b" not in text
    lines = text.splitlines()
    assert field(text, "params") == "k=a\\nb"
    assert field(text, "definition") == "-"
    assert row(text, "s")[-1] == "line one\\nline two\\x1b[31m red"
    assert (
        row(text, "  attempt 1")[-1] == "(on tcp://10.0.0.7:4001) line one\\nline two\\x1b[31m red"
    )
    assert row(text, "  attempt 2")[3] == "0.5s"
    assert lines[-1] == "output of a failed step: dagd logs 'r 1' s"


def test_show_outputs_skips_and_a_waiting_step(daemon: DaemonProc, cli: CliRunner) -> None:
    ready = daemon.root / "handoff-ready"
    ready.unlink(missing_ok=True)
    run_id = start_run(daemon, "handoff")
    try:

        def waiting() -> str | None:
            out = invoke(cli, "show", run_id).stdout
            return out if row(out, "waits")[1] == "running" else None

        out = wait_for(waiting)
        assert row(out, "waits")[-1] == "waiting for: test -f handoff-ready"
    finally:
        ready.touch()
    wait_for(lambda: daemon.run_statuses("handoff").get(run_id) == "failed")
    out = invoke(cli, "show", run_id).stdout
    assert row(out, "skipped")[:2] == ["skipped", "skipped"]
    assert row(out, "skipped")[-1] == "precondition exited 1: no rows today"
    assert row(out, "bad")[-1] == (
        "outputs of step 'bad': line 1: key 'bad-key' is not a valid output name (a letter or"
        " _, then letters, digits and _, at most 64)"
    )
    assert row(out, "waits")[1] == "success"  # once its file was there
    outputs = out.split("\nOUTPUTS\n")[1].split("\n\n")[0].splitlines()
    assert outputs == [
        '  give.rows = "42"',
        '  give.note = "line 1\\nline 2"',
        "  py.count = 3",
        '  py.label = "a b"',
        '  py.items = [1, "x"]',
        "  py.ok = true",
        "  py.none = null",
        '  waits.rows = "42"',
    ]
    result = invoke(cli, "show", run_id, "--json")
    steps = {s["stepId"]: s for s in json.loads(result.stdout)["steps"]}
    assert steps["give"]["outputs"] == {"rows": "42", "note": "line 1\nline 2"}
    assert steps["bad"]["outputs"] == {}
    assert "waitingFor" not in steps["waits"]


def test_show_dag_lists_preconditions_and_waits(cli: CliRunner) -> None:
    out = invoke(cli, "show", "--dag", "handoff").stdout
    lines = out.splitlines()
    skipped = lines.index("skipped")
    assert lines[skipped + 2] == '  precondition: echo "no rows today" >&2; exit 1'
    waits = lines.index("waits  <- give")
    assert lines[waits + 2] == "  wait for: test -f handoff-ready (every 100ms, up to 1h)"
    data = json.loads(invoke(cli, "show", "--dag", "handoff", "--json").stdout)
    steps = {s["stepId"]: s for s in data["steps"]}
    assert steps["waits"]["waitFor"] == "test -f handoff-ready (every 100ms, up to 1h)"
    assert "waitFor" not in steps["give"] and "precondition" not in steps["give"]
