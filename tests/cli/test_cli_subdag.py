"""Sub-DAGs and after-triggers from the command line (real `dagd` processes): `dagd validate`
refuses cross-DAG cycles and unknown DAG ids with file, step and field; a real daemon puts
`parentRunId` and `triggeredBy` on the wire, and `dagd runs` / `dagd show` show them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from clienthelp import dagd, serving, wait_for

from dagd.cli.main import main


def _validate(tmp_path: Path, dags: dict[str, str]) -> tuple[int, list[str]]:
    folder = tmp_path / "dags"
    folder.mkdir(exist_ok=True)
    for name, text in dags.items():
        (folder / f"{name}.toml").write_text(text)
    done = CliRunner().invoke(main, ["validate", "--dags", str(folder)], catch_exceptions=False)
    return done.exit_code, done.stderr.splitlines()


def test_validate_refuses_a_cycle_across_dags_and_unknown_dag_ids(tmp_path: Path) -> None:
    code, lines = _validate(
        tmp_path,
        {
            "a": '[steps.call_b]\nrun = "b"\n',
            "b": '[steps.call_a]\nrun = "a"\n',
            "c": 'after = ["nope"]\n[steps.s]\nrun = "missing"\nparams = { x = "1" }\n',
            "d": 'after = ["e"]\n[steps.s]\ncommand = "true"\n',
            "e": 'after = ["d"]\n[steps.s]\ncommand = "true"\n',
        },
    )
    assert code == 1
    problems = [line for line in lines if not line.startswith("Error:")]
    folder = tmp_path / "dags"
    cycle = "field 'run': DAGs cause each other's runs in a cycle: a -> b -> a"
    assert f"{folder}/a.toml: step 'call_b': {cycle}" in problems
    assert f"{folder}/b.toml: step 'call_a': {cycle}" in problems
    assert any(
        p.startswith(f"{folder}/c.toml: step 's': field 'run': no DAG 'missing' (DAGs: c)")
        for p in problems
    ), problems
    assert any(p.startswith(f"{folder}/c.toml: field 'after': no DAG 'nope'") for p in problems)
    assert any(
        p.startswith(f"{folder}/d.toml: field 'after': DAGs cause each other's runs in a cycle")
        for p in problems
    ), problems
    assert len(problems) == 6, problems
    # c loaded, but has problems across the folder: no DAG is fine
    assert lines[-1] == "Error: 6 problem(s) in 5 file(s); 0 DAG(s) are fine", lines


def test_validate_refuses_a_param_the_child_does_not_declare(tmp_path: Path) -> None:
    code, lines = _validate(
        tmp_path,
        {
            "p": '[steps.s]\nrun = "k"\nparams = { dayy = "x" }\n',
            "k": 'params = { day = "" }\n[steps.s]\ncommand = "true"\n',
        },
    )
    assert code == 1
    assert (
        f"{tmp_path / 'dags'}/p.toml: step 's': field 'params': DAG 'k' has no param 'dayy' "
        "(declared params: day)"
    ) in lines
    code, lines = _validate(tmp_path, {"p": '[steps.s]\nrun = "k"\nparams = { day = "x" }\n'})
    assert code == 0, lines


def test_parent_run_id_and_triggered_by_on_the_wire_and_in_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dags = {
        "parent": 'params = { day = "mon" }\n[steps.sub]\nrun = "child"\n'
        'params = { day = "${params.day}" }\n',
        "child": 'params = { day = "" }\n[steps.s]\ncommand = "true"\n',
        "report": 'after = ["child"]\nparams = { day = "" }\n[steps.s]\ncommand = "true"\n',
    }
    with serving(tmp_path, dags) as d:
        # The request/answer commands in-process (a real socket to the real daemon).
        monkeypatch.setenv("DAGD_CONFIG", str(d.config))
        monkeypatch.delenv("DAGD_URL", raising=False)
        monkeypatch.delenv("DAGD_TOKEN", raising=False)
        monkeypatch.setenv("COLUMNS", "200")

        def cli(*args: str) -> str:
            result = CliRunner().invoke(main, list(args), catch_exceptions=False)
            assert result.exit_code == 0, result.output
            return result.stdout

        parent = cli("trigger", "parent", "-p", "day=fri", "--quiet").strip()
        wait_for(
            lambda: set(d.run_statuses().values()) == {"success"} and len(d.run_statuses()) == 3,
            what="parent, child and report to succeed",
        )
        (child,) = d.run_statuses("child")
        (report,) = d.run_statuses("report")
        # On the wire: the stored events are the wire text; `runs --json` is the answer.
        statuses = [e["data"] for _, e in d.stored_events("child") if e["type"] == "dag_run_status"]
        assert statuses and all(s["parentRunId"] == parent for s in statuses)
        assert all(
            "parentRunId" not in e["data"]
            for _, e in d.stored_events("parent")
            if e["type"] == "dag_run_status"
        )
        answer = json.loads(cli("runs", "--json"))
        by_id = {r["runId"]: r for r in answer["runs"]}
        assert by_id[child]["parentRunId"] == parent and "triggeredBy" not in by_id[child]
        assert by_id[report]["triggeredBy"] == child and "parentRunId" not in by_id[report]
        assert by_id[report]["params"] == {"day": "fri"}
        assert "parentRunId" not in by_id[parent] and "triggeredBy" not in by_id[parent]
        lines = cli("runs").splitlines()
        assert any(child in line and line.endswith(f"(child of {parent})") for line in lines)
        assert any(report in line and line.endswith(f"(after {child})") for line in lines)
        shown = cli("show", child)
        assert f"parent run  {parent}" in shown
        shown = cli("show", report)
        assert f"triggered by  {child}" in shown


def test_dagd_run_runs_sub_dags_in_the_same_process(tmp_path: Path) -> None:
    """`dagd run` (no daemon) runs a sub-DAG step's child run itself, its lines beside the
    parent's, and fails the step with the child's failed step."""
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "parent.toml").write_text(
        'params = { day = "mon" }\n[steps.a]\ncommand = \'echo "n=5" >> "$DAGD_OUTPUT"\'\n'
        '[steps.sub]\nrun = "child"\ndepends_on = "a"\n'
        'params = { day = "${params.day}", n = "${outputs.a.n}" }\n'
    )
    (folder / "child.toml").write_text(
        'params = { day = "", n = "" }\n[steps.s]\n'
        "command = 'echo \"$DAGD_PARAM_DAY $DAGD_PARAM_N\" > out.txt'\n"
        "[steps.check]\ncommand = 'test \"$DAGD_PARAM_DAY\" = fri'\n"
    )
    done = dagd("run", "parent", "--dags", str(folder), "-p", "day=fri", "--plain", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "out.txt").read_text() == "fri 5\n"
    assert re.search(r"run child subdag__\S+: success", done.stdout), done.stdout
    done = dagd("run", "parent", "--dags", str(folder), "--plain", cwd=tmp_path)
    assert done.returncode == 1
    failed = r"sub +failed \(\S+\): child run subdag__\S+ of child failed: step check failed"
    assert re.search(failed, done.stdout), done.stdout
