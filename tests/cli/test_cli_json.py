"""`--json` and `trigger -q` end to end: one JSON document on stdout in the protocol's shapes
(checked by structuring it back with the protocol's converter), nothing else there, and the
exit codes of docs/cli.md."""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from clienthelp import DaemonProc, serving, wait_for
from clihelp import cli_in, invoke

from dagd.cli.main import main
from dagd.core.protocol.answers import (
    CancelAccepted,
    DagList,
    DagSummary,
    RetryAccepted,
    RunList,
    Triggered,
)
from dagd.core.protocol.converter import converter

DAGS = {
    "etl": """
        description = "extract, transform, load"
        schedule = "0 3 * * *"
        tags = ["nightly"]
        [params]
        date = "2024-01-01"
        [steps.extract]
        command = "true"
        [steps.load]
        command = "true"
        depends_on = ["extract"]
    """,
    "slow": """
        [steps.wait]
        command = "sleep 30"
    """,
    "failing": """
        [steps.boom]
        command = "exit 3"
    """,
}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    with serving(tmp_path_factory.mktemp("json"), DAGS) as d:
        yield d


@pytest.fixture
def cli(daemon: DaemonProc, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    return cli_in(daemon.root, monkeypatch)


def document(result: Result) -> Any:
    """The whole of stdout as one JSON document (fails if anything else is there)."""
    assert result.stdout.endswith("\n") and result.stdout.count("\n") == 1, result.stdout
    return json.loads(result.stdout)


def test_dags_json_is_the_protocols_dags_answer(cli: CliRunner) -> None:
    result = invoke(cli, "dags", "--json")
    assert result.exit_code == 0, result.output
    answer = converter.structure(document(result), DagList)
    by_id = {d.dag_id: d for d in answer.dags}
    assert sorted(by_id) == ["etl", "failing", "slow"]
    etl = by_id["etl"]
    assert etl.schedule == "0 3 * * *" and etl.next_run is not None
    assert etl.steps == ["extract", "load"] and etl.tags == ["nightly"]
    assert etl.params == {"date": "2024-01-01"}
    assert etl.paused is False and etl.file_error is None
    assert document(result)["dags"][0]["dagId"] == "etl"  # camelCase, as on the wire


def test_trigger_json_then_runs_json(cli: CliRunner, daemon: DaemonProc) -> None:
    result = invoke(cli, "trigger", "etl", "--json", "-p", "date=2024-05-05")
    assert result.exit_code == 0, result.output
    triggered = converter.structure(document(result), Triggered)
    assert triggered.dag_id == "etl"
    run_id = triggered.run_id
    wait_for(lambda: daemon.run_statuses().get(run_id) == "success", what="the run")

    result = invoke(cli, "runs", "etl", "--json")
    assert result.exit_code == 0, result.output
    runs = converter.structure(document(result), RunList).runs
    mine = next(r for r in runs if r.run_id == run_id)
    assert mine.status == "success" and mine.params == {"date": "2024-05-05"}
    assert mine.started_at is not None and mine.ended_at is not None


def test_trigger_quiet_prints_the_run_id_alone(cli: CliRunner, daemon: DaemonProc) -> None:
    result = invoke(cli, "trigger", "etl", "-q")
    assert result.exit_code == 0, result.output
    run_id = result.stdout.strip()
    assert re.fullmatch(r"manual__\S+", run_id), result.stdout
    assert result.stdout == run_id + "\n"
    wait_for(lambda: daemon.run_statuses().get(run_id) == "success", what="the run")


def test_trigger_wait_json_keeps_progress_off_stdout(cli: CliRunner) -> None:
    result = invoke(cli, "trigger", "failing", "--wait", "--json")
    assert result.exit_code == 1  # the run failed
    triggered = converter.structure(document(result), Triggered)
    assert f"run failing {triggered.run_id}: failed" in result.stderr


def test_cancel_and_retry_json(cli: CliRunner, daemon: DaemonProc) -> None:
    run_id = invoke(cli, "trigger", "slow", "-q").stdout.strip()
    wait_for(lambda: daemon.run_statuses().get(run_id) == "running", what="the run")
    result = invoke(cli, "cancel", run_id, "--json")
    assert result.exit_code == 0, result.output
    assert converter.structure(document(result), CancelAccepted) == CancelAccepted(run_id)
    wait_for(lambda: daemon.run_statuses().get(run_id) == "cancelled", what="the cancel")

    result = invoke(cli, "retry", run_id, "--json")
    assert result.exit_code == 0, result.output
    assert converter.structure(document(result), RetryAccepted) == RetryAccepted(run_id)
    invoke(cli, "cancel", run_id)

    result = invoke(cli, "cancel", "manual__nope", "--json")
    assert result.exit_code == 1
    assert result.stdout == "" and "manual__nope" in result.stderr


def test_an_unknown_dag_with_json_prints_nothing_on_stdout(cli: CliRunner) -> None:
    for args in (["runs", "etk", "--json"], ["trigger", "etk", "--json"]):
        result = invoke(cli, *args)
        assert result.exit_code == 1, args
        assert result.stdout == ""
        assert "unknown DAG 'etk': did you mean 'etl'?" in result.stderr


# ------------------------------------------------------------ local: list, validate

BROKEN = """
    [steps.a]
    command = "true"
    depends_on = ["ghost"]
"""


def folder(root: Path, files: dict[str, str]) -> Path:
    (root / "dags").mkdir(parents=True)
    for name, text in files.items():
        (root / "dags" / f"{name}.toml").write_text(textwrap.dedent(text))
    return root / "dags"


def test_list_and_validate_json_name_dags_and_problems(tmp_path: Path) -> None:
    dags = folder(tmp_path, {"etl": DAGS["etl"], "broken": BROKEN})
    runner = CliRunner()
    for command, code in (("list", 0), ("validate", 1)):
        result = runner.invoke(main, [command, "--dags", str(dags), "--json"])
        assert result.exit_code == code, (command, result.output)
        doc = document(result)
        assert set(doc) == {"dags", "problems"}
        [etl] = [converter.structure(d, DagSummary) for d in doc["dags"]]
        assert etl.dag_id == "etl" and etl.steps == ["extract", "load"]
        assert etl.next_run is None  # only the daemon's scheduler knows it
        [problem] = doc["problems"]
        assert set(problem) == {"file", "step", "field", "message"}
        assert problem["file"].endswith("broken.toml")
        assert problem["step"] == "a" and problem["field"] == "depends_on"
        assert "ghost" in problem["message"]


def test_list_exits_1_when_every_dag_file_is_broken(tmp_path: Path) -> None:
    dags = folder(tmp_path, {"broken": BROKEN})
    result = CliRunner().invoke(main, ["list", "--dags", str(dags)])
    assert result.exit_code == 1
    assert "broken.toml" in result.stderr and "no DAG could be loaded" in result.stderr
    result = CliRunner().invoke(main, ["list", "--dags", str(dags), "--json"])
    assert result.exit_code == 1
    assert document(result)["dags"] == []
    result = CliRunner().invoke(main, ["validate", "--dags", str(tmp_path / "nowhere"), "--json"])
    assert result.exit_code == 1
    assert "does not exist" in document(result)["problems"][0]["message"]


def test_validate_json_checks_executors_against_the_config(tmp_path: Path) -> None:
    dags = folder(tmp_path, {"remote": '[steps.a]\ncommand = "true"\nexecutor = "dask"\n'})
    result = CliRunner().invoke(main, ["validate", "--dags", str(dags), "--json"])
    assert result.exit_code == 1
    [problem] = document(result)["problems"]
    assert (problem["step"], problem["field"]) == ("a", "executor")
    assert "'dask'" in problem["message"]
