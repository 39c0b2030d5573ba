"""Text output off a terminal: `dagd run` writes plain lines that are never wrapped, `--quiet`
keeps only failures and the summary, and `dagd trigger --wait` behaves the same against a
daemon. Every case is a real `python -m dagd` process with its stdout on a pipe and no
COLUMNS set, as in a CI log."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from clienthelp import dagd, serving

LONG = "x" * 150 + " end-of-the-message"
DAGS = {
    "mixed": f"""
        [steps.first]
        command = "true"
        [steps.second]
        command = "true"
        depends_on = ["first"]
        [steps.boom]
        command = "echo '{LONG}' >&2; exit 4"
        depends_on = ["first"]
    """,
    "fine": """
        [steps.a]
        command = "true"
        [steps.b]
        command = "true"
        depends_on = ["a"]
    """,
}


@pytest.fixture
def local(tmp_path: Path) -> Path:
    (tmp_path / "dags").mkdir()
    for name, text in DAGS.items():
        (tmp_path / "dags" / f"{name}.toml").write_text(textwrap.dedent(text))
    return tmp_path


def test_plain_lines_are_not_wrapped_in_a_pipe(local: Path) -> None:
    result = dagd("run", "mixed", cwd=local)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    failed = [line for line in lines if re.search(r"\sboom\s+failed", line)]
    assert len(failed) == 1 and failed[0].endswith(f"exit code 4: {LONG}"), result.stdout
    assert f"  ✘ boom: exit code 4: {LONG}" in lines  # the summary, on one line too
    assert any(re.search(r"\ssecond\s+success", line) for line in lines)
    assert "mixed manual__" in result.stdout and ": failed in " in result.stdout


def test_quiet_prints_only_failures_and_the_summary(local: Path) -> None:
    result = dagd("run", "mixed", "--quiet", cwd=local)
    assert result.returncode == 1
    out = result.stdout
    assert re.search(r"\sboom\s+failed", out) and f"✘ boom: exit code 4: {LONG}" in out
    assert "first" not in out and "second" not in out and "running" not in out
    assert re.search(r"^mixed manual__\S+: failed in ", out, re.M), out

    result = dagd("run", "fine", "-q", cwd=local)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"fine manual__\S+: success in \S+", lines[0]), result.stdout
    assert lines[1:] == ["  2 success", "  logs: none (no step wrote any output)"]


def test_trigger_wait_plain_is_not_wrapped_either(local: Path) -> None:
    with serving(local / "daemon", {"mixed": DAGS["mixed"]}) as daemon:
        result = dagd("trigger", "mixed", "--wait", "--plain", cwd=daemon.root)
    assert result.returncode == 1
    assert f"exit code 4: {LONG}\n" in result.stdout
    assert result.stderr.startswith("triggered mixed: manual__")
