"""`dagd graph`: a DAG drawn from the DAG folder (no daemon), as layered text, Mermaid and DOT;
ids that could break either syntax come out escaped."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path
from xml.etree import ElementTree

import pytest
from click.testing import CliRunner, Result

from dagd.cli.graphtext import dot_graph, dot_string, mermaid_graph, mermaid_text
from dagd.cli.main import main
from dagd.core.model import DagSpec, StepSpec

DIAMOND = """
    description = "fan out, fan in"
    [steps.extract]
    command = "true"
    [steps.transform]
    command = "true"
    depends_on = ["extract"]
    [steps."extract.more"]
    call = "json:dumps"
    depends_on = ["extract"]
    [steps.load]
    command = "true"
    depends_on = ["transform", "extract.more"]
    [steps.alert]
    command = "true"
    depends_on = ["load", "extract"]
    trigger_rule = "one_failed"
"""


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config and a DAG folder under tmp_path; the tests run from another folder."""
    for var in ("DAGD_URL", "DAGD_TOKEN", "DAGD_CONFIG", "DAGD_DAGS"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "diamond.toml").write_text(textwrap.dedent(DIAMOND))
    (tmp_path / "dags" / "broken.toml").write_text("[steps.a]\ncommand = 1\n")
    (tmp_path / "config.toml").write_text('dags_dir = "dags"\nstate_dir = "state"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return tmp_path


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_text_groups_steps_by_level(folder: Path) -> None:
    result = invoke("graph", "diamond", "--config", str(folder / "config.toml"))
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "diamond: fan out, fan in\n"
        "5 steps in 4 levels; '<-' lists a step's upstreams\n"
        "\n"
        "level 0  extract\n"
        "level 1  transform     <- extract\n"
        "         extract.more  <- extract\n"
        "level 2  load          <- transform, extract.more\n"
        "level 3  alert         <- load, extract  [one_failed]\n"
    )


def test_mermaid_and_dot(folder: Path) -> None:
    dags = str(folder / "dags")
    result = invoke("graph", "diamond", "--dags", dags, "--format", "mermaid")
    assert result.exit_code == 0, result.output
    assert result.stdout == textwrap.dedent(
        """\
        %% dagd DAG diamond
        flowchart LR
            s0["extract"]
            s1["transform"]
            s2["extract.more"]
            s3["load"]
            s4["alert"]
            s0 --> s1
            s0 --> s2
            s1 --> s3
            s2 --> s3
            s3 -. one_failed .-> s4
            s0 -. one_failed .-> s4
        """
    )
    result = invoke("graph", "diamond", "--dags", dags, "--format", "dot")
    assert result.exit_code == 0, result.output
    assert result.stdout == textwrap.dedent(
        """\
        digraph "diamond" {
            rankdir=LR;
            node [shape=box];
            s0 [label="extract"];
            s1 [label="transform"];
            s2 [label="extract.more"];
            s3 [label="load"];
            s4 [label="alert"];
            s0 -> s1;
            s0 -> s2;
            s1 -> s3;
            s2 -> s3;
            s3 -> s4 [style=dashed, label="one_failed"];
            s0 -> s4 [style=dashed, label="one_failed"];
        }
        """
    )


def test_unknown_dag_suggests_the_closest(folder: Path) -> None:
    result = invoke("graph", "diamnd", "--config", str(folder / "config.toml"))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "unknown DAG 'diamnd'" in result.stderr
    assert "did you mean 'diamond'?" in result.stderr


def test_broken_file_shows_its_problem(folder: Path) -> None:
    result = invoke("graph", "broken", "--config", str(folder / "config.toml"))
    assert result.exit_code == 1
    assert "broken.toml" in result.stderr and "command" in result.stderr


def test_unknown_format_is_a_usage_error(folder: Path) -> None:
    result = invoke("graph", "diamond", "--dags", str(folder / "dags"), "--format", "png")
    assert result.exit_code == 2
    assert "'png' is not one of 'text', 'mermaid', 'dot'" in result.stderr


# Step ids the DAG file format refuses, built in code: the output must hold up anyway.
HOSTILE = [
    'say "hi"',
    "back\\slash\\",
    "two words",
    "é ü 数据 🚀",
    "end",
    "#35; <b>&amp;</b> `md`",
    "line\nbreak",
    "graph",
]


def hostile_dag() -> DagSpec:
    steps: dict[str, StepSpec] = {}
    prev: tuple[str, ...] = ()
    for step_id in HOSTILE:
        steps[step_id] = StepSpec(step_id, command="true", depends_on=prev)
        prev = (step_id,)
    return DagSpec(id='dag "x"', steps=steps, order=tuple(steps))


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ('say "hi"', "say #quot;hi#quot;"),
        ("#35;", "#35;35;"),
        ("<b>&</b>", "#lt;b#gt;#amp;#lt;/b#gt;"),
        ("`md`", "#96;md#96;"),
        ("line\nbreak\x00", "line\\nbreak\\x00"),
        ("é 数据 🚀", "é 数据 🚀"),
    ],
)
def test_mermaid_text(text: str, escaped: str) -> None:
    assert mermaid_text(text) == escaped


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash\\", '"back\\\\slash\\\\"'),
        ("&amp; &lt;", '"&amp;amp; &amp;lt;"'),
        ("line\nbreak", '"line\\\\nbreak"'),
        ("é 数据 🚀", '"é 数据 🚀"'),
    ],
)
def test_dot_string(text: str, quoted: str) -> None:
    assert dot_string(text) == quoted


def test_hostile_ids_never_reach_the_syntax() -> None:
    dag = hostile_dag()
    mermaid = mermaid_graph(dag)
    # Every node line is `sN["label"]` with no quote, newline or '#'-less entity inside.
    node_lines = [line.strip() for line in mermaid.splitlines()[2:] if "[" in line]
    assert len(node_lines) == len(HOSTILE)
    for line in node_lines:
        label = line.split('["', 1)[1].removesuffix('"]')
        assert '"' not in label and "\n" not in label
    assert len(mermaid.splitlines()) == 2 + 2 * len(HOSTILE) - 1
    dot = dot_graph(dag)
    assert dot.splitlines()[0] == 'digraph "dag \\"x\\"" {'
    assert len(dot.splitlines()) == 3 + 2 * len(HOSTILE) - 1 + 1


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_graphviz_reads_the_hostile_labels_back() -> None:
    proc = subprocess.run(
        ["dot", "-Tsvg"], input=dot_graph(hostile_dag()), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    svg = ElementTree.fromstring(proc.stdout)
    ns = "{http://www.w3.org/2000/svg}"
    nodes = [g for g in svg.iter(f"{ns}g") if g.get("class") == "node"]
    labels = [g.find(f"{ns}text").text for g in nodes]  # type: ignore[union-attr]
    # Graphviz shows each id as written (the newline as the two characters backslash-n).
    assert labels == [s.replace("\n", "\\n") for s in HOSTILE]
    edges = [g for g in svg.iter(f"{ns}g") if g.get("class") == "edge"]
    assert len(edges) == len(HOSTILE) - 1
