"""`dagd logs` against a real daemon: `--raw` gives back a step's bytes exactly as written
(invalid UTF-8 and NUL bytes included), a Python step that raised shows its traceback, and
`--follow` goes through the daemon when it is reachable."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from clienthelp import DaemonProc, clean_env, serving, wait_for
from clihelp import cli_in, invoke, start_run

from dagd.cli.main import main

SUPPORT = Path(__file__).resolve().parent.parent / "support"

DAGS = {
    "binary": r"""
        [steps.bytes]
        command = '''printf 'out\377\000one\n'; printf 'err\300\000' >&2; printf 'out-two' '''
        [steps.quiet]
        command = "true"
        depends_on = ["bytes"]
    """,
    "flaky": r"""
        [steps.twice]
        command = '''
        if [ "$DAGD_ATTEMPT" = 1 ]; then printf 'first\376' ; exit 1; fi
        printf 'second\000' >&2
        '''
        retries = 1
    """,
    "split": r"""
        env = { GATE = "gate" }
        [steps.split]
        command = '''
        printf 'caf\303'
        while [ ! -e "$GATE" ]; do sleep 0.02; done
        printf '\251!\000'
        '''
    """,
    "pyfail": """
        [steps.boom]
        call = "stepfuncs:raise_value_error"
        [steps.never]
        call = "stepfuncs:noop"
        depends_on = ["boom"]
    """,
}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    # The daemon imports `stepfuncs` for the Python steps, as an installed module would be.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")]))
        with serving(tmp_path_factory.mktemp("logs"), DAGS) as d:
            yield d


def finished_run(daemon: DaemonProc, dag_id: str) -> str:
    """Trigger `dag_id`; its run id once the run is over."""
    run_id = start_run(daemon, dag_id)
    wait_for(
        lambda: daemon.run_statuses(dag_id).get(run_id) in ("success", "failed"),
        what=f"run {run_id} to end",
    )
    return run_id


@pytest.fixture
def cli(daemon: DaemonProc, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    return cli_in(daemon.root, monkeypatch)


def test_raw_gives_back_the_exact_bytes(daemon: DaemonProc, cli: CliRunner) -> None:
    run_id = finished_run(daemon, "binary")
    result = invoke(cli, "logs", run_id, "bytes", "--raw")
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == b"out\xff\x00one\nout-two" + b"err\xc0\x00"
    assert result.stderr == ""
    # As text the same bytes are readable, each undecodable byte a replacement character,
    # each control character escaped.
    result = invoke(cli, "logs", run_id, "bytes")
    assert "out\ufffd\\x00one" in result.stdout
    assert "==> attempt 1 stderr" in result.stdout


def test_raw_through_a_real_pipe(daemon: DaemonProc) -> None:
    run_id = finished_run(daemon, "binary")
    proc = subprocess.run(
        [sys.executable, "-m", "dagd", "logs", run_id, "bytes", "--raw"],
        cwd=daemon.root,
        env=clean_env(),
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"out\xff\x00one\nout-two" + b"err\xc0\x00"


def test_raw_every_attempt_in_order_or_one(daemon: DaemonProc, cli: CliRunner) -> None:
    run_id = finished_run(daemon, "flaky")
    assert daemon.run_statuses("flaky")[run_id] == "success"
    result = invoke(cli, "logs", run_id, "twice", "--raw")
    assert result.stdout_bytes == b"first\xfe" + b"second\x00"
    result = invoke(cli, "logs", run_id, "twice", "--raw", "--attempt", "2")
    assert result.stdout_bytes == b"second\x00"
    result = invoke(cli, "logs", run_id, "twice", "--raw", "--attempt", "3")
    assert result.exit_code == 1
    assert result.stdout_bytes == b""
    assert "no attempt 3 of step 'twice'" in result.stderr


def test_raw_of_a_step_without_output_writes_nothing(daemon: DaemonProc, cli: CliRunner) -> None:
    run_id = finished_run(daemon, "binary")
    result = invoke(cli, "logs", run_id, "quiet", "--raw")
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == b""


def test_raw_of_a_step_that_did_not_run(daemon: DaemonProc, cli: CliRunner) -> None:
    run_id = finished_run(daemon, "pyfail")
    result = invoke(cli, "logs", run_id, "never", "--raw")
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == b""
    assert result.stderr == f"step 'never' of run {run_id!r} did not run (upstream_failed)\n"


def test_raw_unknown_step_is_an_error(daemon: DaemonProc, cli: CliRunner) -> None:
    run_id = finished_run(daemon, "binary")
    result = invoke(cli, "logs", run_id, "nosuchstep", "--raw")
    assert result.exit_code == 1
    assert result.stdout_bytes == b""
    assert f"no step 'nosuchstep' in run {run_id!r}" in result.stderr


def test_python_step_failure_shows_its_traceback(daemon: DaemonProc, cli: CliRunner) -> None:
    run_id = finished_run(daemon, "pyfail")
    assert daemon.run_statuses("pyfail")[run_id] == "failed"
    result = invoke(cli, "logs", run_id, "boom")
    assert result.exit_code == 0, result.output
    assert "no output" not in result.stdout
    assert "==> attempt 1 stderr" in result.stdout
    assert "Traceback (most recent call last):" in result.stdout
    assert 'raise ValueError(f"bad value in {ctx.step_id}")' in result.stdout
    assert result.stdout.endswith("ValueError: bad value in boom\n")


@pytest.mark.parametrize("raw", [True, False])
def test_follow_across_a_split_utf8_sequence(daemon: DaemonProc, raw: bool) -> None:
    gate = daemon.root / "gate"
    gate.unlink(missing_ok=True)
    run_id = start_run(daemon, "split")
    out = daemon.root / f"follow-{raw}.out"
    log = daemon.state / "logs" / "split" / run_id / "split.1.out"
    wait_for(log.exists, what="the step's first output")
    with open(out, "wb") as stdout:
        follower = subprocess.Popen(
            [sys.executable, "-m", "dagd", "logs", run_id, "split", "--follow"]
            + (["--raw"] if raw else []),
            cwd=daemon.root,
            env=clean_env(),
            stdout=stdout,
            stderr=subprocess.PIPE,
        )
    try:
        # The follower has read the first bytes, which end inside the two-byte "é".
        wait_for(lambda: b"caf" in out.read_bytes() or b"==>" in out.read_bytes())
        gate.touch()
        _, err = follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0, err
    data = out.read_bytes()
    if raw:
        assert data == b"caf\xc3\xa9!\x00"
    else:
        assert data.decode() == f"==> attempt 1 stdout ({log}) <==\ncafé!\\x00"


def test_follow_goes_through_the_daemon(
    daemon: DaemonProc, cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a daemon reachable, --follow reads through it (follow_log): here the CLI's own
    config has an empty state folder, so the files are out of its reach, yet every attempt
    of a retried step is shown, in order, with its headers."""
    run_id = finished_run(daemon, "flaky")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "config.toml").write_text('state_dir = "state"\n')
    monkeypatch.setenv("DAGD_URL", daemon.url)
    monkeypatch.setenv("DAGD_TOKEN", daemon.token)
    monkeypatch.chdir(elsewhere)
    result = invoke(cli, "logs", run_id, "twice", "--follow")
    assert result.exit_code == 0, result.output
    logs = elsewhere / "state" / "logs" / "flaky" / run_id
    assert result.stdout == (
        f"==> attempt 1 stdout ({logs / 'twice.1.out'}) <==\n"
        "first\ufffd"
        f"==> attempt 2 stderr ({logs / 'twice.2.err'}) <==\n"
        "second\\x00"
    )
    # An attempt the step did not make, and a step the run does not have.
    result = cli.invoke(main, ["logs", run_id, "twice", "--follow", "--attempt", "3"])
    assert result.exit_code == 1
    assert "no attempt 3 of step 'twice'" in result.output
    result = cli.invoke(main, ["logs", run_id, "nope", "--follow"])
    assert (result.exit_code, "no step 'nope'" in result.output) == (1, True)
