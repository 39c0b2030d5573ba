"""How the `dagd` command shows lifecycle handlers: `dagd graph` lists them apart from the
graph, `dagd show --dag` in their own section (notification URLs redacted), `dagd show RUN`
marks their steps."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from dagd.cli.inspect import dag_text, run_text
from dagd.cli.main import main
from dagd.core.detail import dag_detail, live_run_detail
from dagd.core.protocol.answers import DagSummary
from dagd.core.records import RunRecord
from dagd.core.runstate import RunState
from dagd.core.spec import parse_dag

DAG = """
[steps.extract]
command = "true"
[steps.load]
command = "true"
depends_on = ["extract"]
[handlers.always]
command = "rm -rf /tmp/scratch"
[handlers.on_failure]
notify = ["slack://TokenA/TokenB/TokenC", "json://user:pw@10.0.0.5:8080/hook?key=k3y"]
retries = 2
"""


def test_graph_lists_the_handlers_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DAGD_URL", "DAGD_TOKEN", "DAGD_CONFIG", "DAGD_DAGS"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "h.toml").write_text(
        DAG.replace("slack://TokenA/TokenB/TokenC", "json://x")
    )
    (tmp_path / "config.toml").write_text('dags_dir = "dags"\nstate_dir = "state"\n')
    result = CliRunner().invoke(main, ["graph", "h", "--config", str(tmp_path / "config.toml")])
    assert result.exit_code == 0, result.output
    tail = result.output.split("\n\n")[-1].splitlines()
    assert tail == [
        "handlers (after every step is final, one at a time):",
        "  @on_failure",
        "  @always",
    ]


def test_show_dag_has_a_handlers_section_without_secrets() -> None:
    dag = parse_dag(DAG, "h.toml", default_id="h")
    text = dag_text(dag_detail(dag, DagSummary("h", "", None, None, list(dag.steps), [], {})))
    section = text.split("HANDLERS")[1]
    assert section.splitlines()[1:] == [
        "@on_failure",
        "  notify: slack://..., json://10.0.0.5:8080/...",
        "  executor local, retries 2 (delay 0s)",
        "@always",
        "  command: rm -rf /tmp/scratch",
        "  executor local",
    ]
    assert "Token" not in text and "k3y" not in text and "pw" not in text


def test_show_run_marks_the_handlers_steps() -> None:
    dag = parse_dag(DAG, "h.toml", default_id="h")
    state = RunState(dag, "r")
    state.start(1.0)
    state.step_started("extract", 1.0)
    state.step_failed("extract", 2.0, "exit code 1")
    state.step_started("@on_failure", 2.0)
    state.step_failed("@on_failure", 3.0, "notify URL 1 (slack://...): not delivered")
    record = RunRecord("h", "r", state.status, {}, 0.0, 1.0, None)
    lines = run_text(live_run_detail(state, record, {}, None)).splitlines()
    rows = {line.split()[0]: line for line in lines if line.startswith(("extract", "load", "@"))}
    assert rows["@on_failure"].split()[1:3] == ["(handler)", "retrying"]  # retries = 2
    assert rows["@always"].split()[1:3] == ["(handler)", "pending"]  # one at a time
    assert rows["load"].split()[1] == "upstream_failed"
    # the failed step's output first, not the handler's
    assert lines[-1] == "output of a failed step: dagd logs r extract"
