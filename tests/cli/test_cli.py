"""The `dagd` command end to end: the operator commands against a real daemon process, and the
local ones (validate, run) on DAG folders.

Plain request/answer commands run in-process through click's CliRunner (from the config's
folder, with no flags, the way a person types them); whatever involves a second process or a
signal runs as a real `python -m dagd` subprocess.
"""

from __future__ import annotations

import re
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from clienthelp import DaemonProc, dagd, free_port, serving, start_dagd, wait_for

from dagd.cli.main import main

RUN_ID = re.compile(r"manual__\S+\+00:00")

DAGS = {
    "etl": """
        description = "extract, transform, load"
        [params]
        date = "2024-01-01"
        [steps.extract]
        command = 'echo "extract $DAGD_PARAM_DATE"; echo "warning from extract" >&2'
        [steps."extract.more"]
        command = "echo output-of-another-step"
        depends_on = ["extract"]
        [steps.transform]
        command = "sleep 0.1"
        depends_on = ["extract"]
        [steps.load]
        command = "true"
        depends_on = ["transform", "extract.more"]
    """,
    "failing": """
        [steps.prepare]
        command = "true"
        [steps.boom]
        command = "echo partial; echo bad input >&2; exit 3"
        depends_on = ["prepare"]
        [steps.after]
        command = "true"
        depends_on = ["boom"]
    """,
    "slow": """
        [steps.wait]
        command = "sleep 30"
    """,
}


def flaky_dag(marker: Path) -> str:
    return f"""
        [env]
        MARKER = "{marker}"
        [steps.first]
        command = "true"
        [steps.flaky]
        command = 'test -f "$MARKER" || {{ touch "$MARKER"; echo fails once >&2; exit 1; }}'
        depends_on = ["first"]
    """


def talk_dag(gate: Path) -> str:
    return f"""
        [steps.talk]
        command = 'echo first; while [ ! -e "{gate}" ]; do sleep 0.02; done; echo second >&2'
    """


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    root = tmp_path_factory.mktemp("cli")
    dags = {**DAGS, "flaky": flaky_dag(root / "flaky.marker"), "talk": talk_dag(root / "gate")}
    with serving(root, dags) as d:
        yield d


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """In-process `dagd`; run from the folder a test chdirs to."""
    for var in ("DAGD_URL", "DAGD_TOKEN", "DAGD_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("COLUMNS", "200")  # rich: no wrapping of long plain lines
    return CliRunner()


def invoke(cli: CliRunner, *args: str) -> Result:
    return cli.invoke(main, list(args), catch_exceptions=False)


def run_id_of(text: str) -> str:
    match = RUN_ID.search(text)
    assert match, text
    return match.group(0)


# --------------------------------------------------------------- queries


def test_dags_and_runs_need_no_flags_in_the_config_folder(
    daemon: DaemonProc, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(daemon.root)
    result = invoke(cli, "dags")
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert set(lines) == {"etl", "failing", "slow", "flaky", "talk"}
    assert "manual" in lines["etl"]
    assert "4 steps" in lines["etl"]
    assert "extract, transform, load" in lines["etl"]

    result = invoke(cli, "runs", "slow")
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and result.stderr.strip() == "no runs yet"


def test_dags_with_config_from_another_folder(daemon: DaemonProc, tmp_path: Path) -> None:
    result = dagd("dags", "--config", str(daemon.config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "etl" in result.stdout and "slow" in result.stdout
    # ... or with --url and --token, no config at all.
    result = dagd("dags", "--url", daemon.url, "--token", daemon.token, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "failing" in result.stdout


# -------------------------------------------------------------- trigger


def test_trigger_wait_plain_succeeds_then_runs_and_logs_show_it(
    daemon: DaemonProc, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(daemon.root)
    result = invoke(cli, "trigger", "etl", "-p", "date=2024-05-05", "--wait", "--plain")
    assert result.exit_code == 0, result.output
    run_id = run_id_of(result.stderr)
    assert result.stderr.startswith(f"triggered etl: {run_id}")
    out = result.stdout
    assert f"run etl {run_id}: running" in out
    for step in ("extract", "extract.more", "transform", "load"):
        assert re.search(rf"\s{re.escape(step)}\s+success", out), out
    assert f"run etl {run_id}: success" in out
    assert f"etl {run_id}: success in " in out  # the summary
    assert "4 success" in out
    assert daemon.run_statuses()[run_id] == "success"

    result = invoke(cli, "runs")
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stdout.splitlines() if run_id in line)
    assert line.split()[:2] == ["success", "etl"]

    result = invoke(cli, "logs", run_id, "extract")
    assert result.exit_code == 0, result.output
    assert "extract 2024-05-05" in result.stdout
    assert "warning from extract" in result.stdout
    assert "==> attempt 1 stdout" in result.stdout
    assert "==> attempt 1 stderr" in result.stdout
    assert result.stdout.index("extract 2024-05-05") < result.stdout.index("warning from")
    # Only this step's logs, not those of "extract.more".
    assert "output-of-another-step" not in result.stdout

    result = invoke(cli, "logs", run_id, "extract.more", "--attempt", "1")
    assert result.exit_code == 0, result.output
    assert "output-of-another-step" in result.stdout
    assert "extract 2024-05-05" not in result.stdout
    result = invoke(cli, "logs", run_id, "extract", "--attempt", "2")
    assert result.exit_code == 1
    assert "no attempt 2 of step 'extract'" in result.stderr

    # transform ran (sleep) and wrote nothing: said so, not an error
    result = invoke(cli, "logs", run_id, "transform")
    assert result.exit_code == 0, result.output
    assert result.stdout == "==> attempt 1: no output <==\n"

    result = invoke(cli, "logs", run_id, "nosuchstep")
    assert result.exit_code == 1
    assert f"no step 'nosuchstep' in run {run_id!r}" in result.stderr


def test_trigger_without_wait_prints_the_run_id(
    daemon: DaemonProc, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(daemon.root)
    result = invoke(cli, "trigger", "etl")
    assert result.exit_code == 0, result.output
    run_id = run_id_of(result.stdout)
    assert result.stdout.strip() == f"triggered etl: {run_id}"
    wait_for(lambda: daemon.run_statuses().get(run_id) == "success", what="the run to end")


def test_trigger_wait_of_a_failing_dag_exits_1(
    daemon: DaemonProc, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(daemon.root)
    result = invoke(cli, "trigger", "failing", "--wait", "--plain")
    assert result.exit_code == 1, result.output
    run_id = run_id_of(result.stderr)
    out = result.stdout
    assert re.search(r"\sboom\s+failed \(\d+\.\ds\): exit code 3: bad input", out), out
    assert re.search(r"\safter\s+upstream_failed", out), out
    assert "error in failing/boom: exit code 3: bad input" in out
    assert f"run failing {run_id}: failed" in out
    assert "✘ boom: exit code 3: bad input" in out
    assert daemon.run_statuses()[run_id] == "failed"

    result = invoke(cli, "logs", run_id, "boom")
    assert "partial" in result.stdout and "bad input" in result.stdout
    result = invoke(cli, "logs", run_id, "after")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"step 'after' of run {run_id!r} did not run (upstream_failed)\n"


def test_trigger_errors_are_clear(
    daemon: DaemonProc, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(daemon.root)
    result = invoke(cli, "trigger", "etl", "-p", "colour=blue")
    assert result.exit_code == 1
    assert "has no param 'colour'" in result.stderr
    assert "declared params: date" in result.stderr

    result = invoke(cli, "trigger", "nope")
    assert result.exit_code == 1
    assert "nope" in result.stderr

    result = invoke(cli, "trigger", "etl", "-p", "date")
    assert result.exit_code == 2
    assert "is not NAME=VALUE" in result.stderr


def test_cancel_makes_trigger_wait_exit_130(
    daemon: DaemonProc, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    waiter = start_dagd("trigger", "slow", "--wait", "--plain", cwd=daemon.root, COLUMNS="200")
    try:
        assert waiter.stderr is not None
        first = waiter.stderr.readline()  # "triggered slow: <run id>"
        run_id = run_id_of(first)
        wait_for(lambda: daemon.run_statuses().get(run_id) == "running", what="the run")
        monkeypatch.chdir(daemon.root)
        result = invoke(cli, "cancel", run_id)
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == f"cancel accepted: {run_id}"
        out, _ = waiter.communicate(timeout=10)
        assert waiter.returncode == 130, out
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    assert f"run slow {run_id}: cancelled" in out
    assert re.search(r"\swait\s+(cancelled|failed)", out), out
    assert daemon.run_statuses()[run_id] == "cancelled"

    # Cancelling it again: the daemon's answer, as a message.
    result = invoke(cli, "cancel", run_id)
    assert result.exit_code == 1
    assert "Error:" in result.stderr and run_id in result.stderr
    result = invoke(cli, "cancel", "manual__nope")
    assert result.exit_code == 1
    assert "manual__nope" in result.stderr


def test_retry_reruns_a_failed_run(
    daemon: DaemonProc, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(daemon.root)
    result = invoke(cli, "trigger", "flaky", "--wait", "--plain")
    assert result.exit_code == 1, result.output
    run_id = run_id_of(result.stderr)
    assert "fails once" in result.stdout

    result = invoke(cli, "retry", run_id)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"retry accepted: {run_id}"
    wait_for(lambda: daemon.run_statuses()[run_id] == "success", what="the retried run")

    result = invoke(cli, "runs", "flaky")
    assert result.stdout.split()[:3] == ["success", "flaky", run_id]
    result = invoke(cli, "logs", run_id, "flaky")
    assert "==> attempt 1 stderr" in result.stdout  # the failed first run's attempt

    result = invoke(cli, "retry", run_id)  # it succeeded now
    assert result.exit_code == 1
    assert "Error:" in result.stderr


# --------------------------------------------------------------- errors


def test_daemon_not_running_is_a_clear_error(tmp_path: Path) -> None:
    stopped = DaemonProc(tmp_path / "stopped", DAGS)
    stopped.state.mkdir()
    (stopped.state / "token").write_text("some-token\n")
    result = dagd("dags", cwd=stopped.root)
    assert result.returncode == 1
    assert "cannot reach the daemon" in result.stderr
    assert stopped.url in result.stderr
    assert "dagd serve" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [["runs"], ["trigger", "etl"], ["trigger", "etl", "--wait"], ["cancel", "x"], ["retry", "x"]],
)
def test_every_command_says_when_the_daemon_is_not_running(
    tmp_path: Path, cli: CliRunner, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    stopped = DaemonProc(tmp_path, DAGS)
    stopped.state.mkdir()
    (stopped.state / "token").write_text("some-token\n")
    monkeypatch.chdir(tmp_path)
    result = invoke(cli, *args)
    assert result.exit_code == 1
    assert "cannot reach the daemon" in result.stderr
    assert "dagd serve" in result.stderr


def test_no_token_file_says_to_start_the_daemon(
    tmp_path: Path, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    DaemonProc(tmp_path, DAGS)  # config and DAGs, never started
    monkeypatch.chdir(tmp_path)
    result = invoke(cli, "dags")
    assert result.exit_code == 1
    assert "no token file" in result.stderr
    assert "dagd serve" in result.stderr


def test_wrong_token_is_named_as_the_problem(
    daemon: DaemonProc, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(daemon.root)
    result = invoke(cli, "dags", "--token", "not-the-token")
    assert result.exit_code == 1
    assert "refused the token" in result.stderr
    assert "Traceback" not in result.output
    # watch retries a lost daemon, but never a refused token.
    monkeypatch.setenv("DAGD_TOKEN", "not-the-token")
    result = invoke(cli, "watch", "--plain")
    assert result.exit_code == 1
    assert "refused the token" in result.stderr


# ------------------------------------------------------------- validate


BROKEN = """
    [steps.extract]
    command = "true"
    retires = 3
    [steps.transform]
    command = "true"
    depends_on = ["extrct"]
    [steps.load]
    command = "true"
    timeout = "soon"
"""


def test_validate_lists_every_problem_with_file_step_and_field(
    tmp_path: Path, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    dags_dir = tmp_path / "dags"
    dags_dir.mkdir()
    (dags_dir / "good.toml").write_text(textwrap.dedent(DAGS["etl"]))
    (dags_dir / "broken.toml").write_text(textwrap.dedent(BROKEN))
    (dags_dir / "cycle.toml").write_text(
        textwrap.dedent(
            """
            [steps.a]
            command = "true"
            depends_on = ["b"]
            [steps.b]
            command = "true"
            depends_on = ["a"]
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    result = invoke(cli, "validate")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    problems = [line for line in lines if not line.startswith("Error:")]
    assert len(problems) == 4, result.stderr
    assert any(
        "broken.toml" in p and "step 'extract'" in p and "'retires'" in p and "retries" in p
        for p in problems
    ), problems
    assert any(
        "broken.toml" in p and "step 'transform'" in p and "depends_on" in p and "'extrct'" in p
        for p in problems
    ), problems
    assert any("broken.toml" in p and "step 'load'" in p and "timeout" in p for p in problems), (
        problems
    )
    assert any("cycle.toml" in p and "cycle" in p for p in problems), problems
    assert lines[-1] == "Error: 4 problem(s) in 2 file(s); 1 DAG(s) are fine"
    assert "ok" not in result.stdout

    (dags_dir / "broken.toml").unlink()
    (dags_dir / "cycle.toml").unlink()
    result = invoke(cli, "validate")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "ok: 1 DAG(s)"
    assert result.stderr == ""


def test_validate_list_and_run_share_the_daemons_rule_for_duplicate_ids(
    tmp_path: Path, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first file by sorted path keeps the id; the other is a problem naming both files
    (dagd/daemon/dagfolder.py, the loader the daemon reloads with)."""
    dags_dir = tmp_path / "dags"
    dags_dir.mkdir()
    (dags_dir / "b.toml").write_text('id = "same"\n[steps.s]\ncommand = "echo from-b"\n')
    (dags_dir / "a.toml").write_text('id = "same"\n[steps.s]\ncommand = "echo from-a"\n')
    monkeypatch.chdir(tmp_path)
    result = invoke(cli, "validate")
    assert result.exit_code == 1
    first, second = dags_dir / "a.toml", dags_dir / "b.toml"
    problem = f"{second}: field 'id': DAG id 'same' is already used by {first}"
    assert result.stderr.splitlines()[0] == problem
    assert result.stderr.splitlines()[-1] == "Error: 1 problem(s) in 1 file(s); 1 DAG(s) are fine"
    result = invoke(cli, "list")
    assert result.stdout.split()[0] == "same"
    assert "b.toml" in result.stderr and "broken" in result.stderr
    result = invoke(cli, "run", "same", "--plain")
    assert result.exit_code == 0, result.output
    run_id = run_id_of(result.stdout)
    logs = tmp_path / "state" / "logs" / "same" / run_id
    assert (logs / "s.1.out").read_text() == "from-a\n"


# ----------------------------------------------------------------- run


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config folder for `dagd run` (no daemon)."""
    DaemonProc(tmp_path, DAGS)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_run_succeeds_and_prints_a_summary(local: Path, cli: CliRunner) -> None:
    result = invoke(cli, "run", "etl", "-p", "date=2030-01-02", "--plain")
    assert result.exit_code == 0, result.output
    run_id = run_id_of(result.stdout)
    assert f"etl {run_id}: success in " in result.stdout
    assert "4 success" in result.stdout
    assert f"logs: {local / 'state' / 'logs' / 'etl' / run_id}" in result.stdout
    log = local / "state" / "logs" / "etl" / run_id / "extract.1.out"
    assert log.read_text() == "extract 2030-01-02\n"


def test_run_of_quiet_steps_says_there_are_no_logs(local: Path, cli: CliRunner) -> None:
    (local / "dags" / "quiet.toml").write_text('[steps.s]\ncommand = "true"\n')
    result = invoke(cli, "run", "quiet", "--plain")
    assert result.exit_code == 0, result.output
    assert "logs: none (no step wrote any output)" in result.stdout
    assert not (local / "state" / "logs" / "quiet").exists()


def test_run_of_a_failing_dag_exits_1_with_the_error(local: Path, cli: CliRunner) -> None:
    result = invoke(cli, "run", "failing")
    assert result.exit_code == 1, result.output
    assert re.search(r"failing manual__\S+: failed in ", result.stdout), result.stdout
    assert "1 failed, 1 success, 1 upstream_failed" in result.stdout
    assert "✘ boom: exit code 3: bad input" in result.stdout


def test_run_with_an_undeclared_param_is_a_clear_error(local: Path, cli: CliRunner) -> None:
    result = invoke(cli, "run", "etl", "-p", "colour=blue")
    assert result.exit_code == 1
    assert "has no param 'colour'" in result.stderr
    assert "declared params: date" in result.stderr
    assert "Traceback" not in result.output

    result = invoke(cli, "run", "nope")
    assert result.exit_code == 1
    assert "unknown DAG 'nope' in " in result.stderr
    assert "etl" in result.stderr  # lists the DAGs there are


def test_run_is_interrupted_by_sigint_and_exits_130(local: Path) -> None:
    proc = start_dagd("run", "slow", "--plain", cwd=local, COLUMNS="200")
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 10
        line = ""
        while "running" not in line or "wait" not in line:
            assert time.monotonic() < deadline, "the step never started"
            line = proc.stdout.readline()
        proc.send_signal(2)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert re.search(r"slow manual__\S+: cancelled", out), out


def test_serve_refuses_a_port_in_use(tmp_path: Path) -> None:
    import socket

    port = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        DaemonProc(tmp_path, DAGS)
        result = dagd("serve", "--port", str(port), cwd=tmp_path, timeout=20)
    assert result.returncode == 1
    assert "cannot start" in result.stderr


def test_logs_follow_prints_output_as_it_comes_until_the_step_ends(
    daemon: DaemonProc, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(daemon.root)
    result = invoke(cli, "trigger", "talk")
    assert result.exit_code == 0, result.output
    run_id = run_id_of(result.stdout)
    follower = start_dagd("logs", run_id, "talk", "--follow", cwd=daemon.root)
    try:
        assert follower.stdout is not None
        seen = []
        deadline = time.monotonic() + 10
        while "first" not in seen and time.monotonic() < deadline:
            seen.append(follower.stdout.readline().strip())
        assert "first" in seen, seen  # printed while the step still waits for its gate
        assert follower.poll() is None
        (daemon.root / "gate").touch()
        out, err = follower.communicate(timeout=10)
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    assert seen[0].startswith("==> attempt 1 stdout (")
    lines = out.splitlines()
    assert lines[-1] == "second"
    assert lines[-2].startswith("==> attempt 1 stderr (")
