"""`dagd validate` on hostile DAG and config files: one line per problem naming the file, a
non-zero exit, never a traceback. In-process through click's CliRunner, plus one real
subprocess (`python -m dagd`) for the exit code a shell sees."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from dagd.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
GOOD = '[steps.a]\ncommand = "true"\n'


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "good.toml").write_text(GOOD)
    (dags / "bom.toml").write_bytes("\ufeff".encode() + GOOD.encode())
    (dags / "deep.toml").write_text("x = " + "[" * 3000 + "]" * 3000)
    (dags / "inline.toml").write_text("x = " + "{a = " * 3000 + "1" + "}" * 3000)
    (dags / "timeout.toml").write_text(GOOD + "timeout = " + "9" * 400 + "\nretries = -1\n")
    (dags / "binary.toml").write_bytes(b"\x00\xff\xfe" * 50)
    (dags / "case.toml").write_text('params = { date = "1", DATE = "2" }\n' + GOOD)
    (dags / "env.toml").write_text('env = { PATH = "/opt/bin:${PATH" }\n' + GOOD)
    return dags


EXPECTED = {
    "deep.toml": "nested too deeply",
    "inline.toml": "nested too deeply",
    "timeout.toml": "step 'a': field 'timeout': duration must be between 0 and",
    "binary.toml": "not UTF-8 text",
    "case.toml": "params 'date' and 'DATE' would both be DAGD_PARAM_DATE",
    "env.toml": "field 'env': value of 'PATH': '${' at character 10",
}


def test_validate_prints_one_line_per_problem_and_fails(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(folder.parent)
    result = CliRunner().invoke(main, ["validate", "--dags", str(folder)])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.output + result.stderr
    *problems, summary = lines
    assert summary == "Error: 7 problem(s) in 6 file(s); 2 DAG(s) are fine"
    assert len(problems) == 7
    for name, says in EXPECTED.items():
        [_found] = [p for p in problems if p.startswith(f"{folder / name}: ") and says in p]
    assert sum(f"{folder / 'timeout.toml'}: " in p for p in problems) == 2  # and retries


def test_validate_with_a_hostile_config_is_one_line(tmp_path: Path) -> None:
    for text in (
        "x = " + "[" * 3000 + "]" * 3000,
        "kill_grace = " + "9" * 400,
        "[auth]\ntokens = 5",
        "\ufeffmax_parallel_steps = 0",
    ):
        config = tmp_path / "config.toml"
        config.write_text(text)
        result = CliRunner().invoke(main, ["validate", "--config", str(config)])
        assert result.exit_code == 1, result.output
        [line] = result.stderr.splitlines()
        assert line.startswith(f"Error: {config}: ")


def test_validate_in_a_real_process_exits_non_zero_without_a_traceback(folder: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "dagd", "validate", "--dags", str(folder)],
        capture_output=True,
        text=True,
        env=env,
        cwd=folder.parent,
        timeout=60,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 8
