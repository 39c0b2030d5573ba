"""Errors that say what to do, end to end against a real daemon process: a http:// URL, a
path that is not dagd's, an unknown DAG, a missing DAG folder, a closed stdout. Each is one
line on stderr (never a Python repr or traceback) and the exit code of docs/cli.md."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from clienthelp import DaemonProc, clean_env, dagd, serving

DAGS = {
    "etl": """
        [steps.a]
        command = "true"
    """,
    "report": """
        [steps.a]
        command = "true"
    """,
    "idle": """
        [steps.a]
        command = "true"
    """,
}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    with serving(tmp_path_factory.mktemp("errors"), DAGS) as d:
        yield d


def assert_one_clean_line(stderr: str) -> None:
    assert "Traceback" not in stderr
    assert "(b'" not in stderr and "((" not in stderr, stderr  # no Python tuple repr


def test_an_http_url_says_to_use_ws(daemon: DaemonProc, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{daemon.port}/api/v1/ws"
    result = dagd("dags", "--url", url, "--token", daemon.token, cwd=tmp_path)
    assert result.returncode == 1
    assert f"use ws://HOST:PORT/api/v1/ws (here: ws://127.0.0.1:{daemon.port}/api/v1/ws)" in (
        result.stderr
    )
    assert "not running" not in result.stderr
    assert_one_clean_line(result.stderr)


def test_a_path_that_is_not_dagds_says_so(daemon: DaemonProc, tmp_path: Path) -> None:
    url = f"ws://127.0.0.1:{daemon.port}/wrong"
    result = dagd("runs", "--url", url, "--token", daemon.token, cwd=tmp_path)
    assert result.returncode == 1
    assert "no dagd endpoint at path /wrong" in result.stderr
    assert "HTTP 404" in result.stderr
    assert "use ws://HOST:PORT/api/v1/ws" in result.stderr
    assert "Is it running" not in result.stderr
    assert_one_clean_line(result.stderr)


def test_a_url_of_another_scheme_is_refused_before_connecting(tmp_path: Path) -> None:
    result = dagd("dags", "--url", "localhost:3000", "--token", "x", cwd=tmp_path)
    assert result.returncode == 1
    assert "is not a WebSocket URL: use ws://HOST:PORT/api/v1/ws" in result.stderr


@pytest.mark.parametrize("command", ["runs", "trigger"])
def test_an_unknown_dag_is_an_error_with_a_did_you_mean(daemon: DaemonProc, command: str) -> None:
    result = dagd(command, "etk", cwd=daemon.root)
    assert result.returncode == 1
    assert result.stderr.strip() == "Error: unknown DAG 'etk': did you mean 'etl'?"
    assert result.stdout == ""
    result = dagd(command, "zzz", cwd=daemon.root)
    assert result.returncode == 1
    assert result.stderr.strip() == "Error: unknown DAG 'zzz': DAGs: etl, idle, report"


def test_runs_of_a_known_dag_without_runs_is_not_an_error(daemon: DaemonProc) -> None:
    result = dagd("runs", "idle", cwd=daemon.root)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr.strip() == "no runs yet"


def test_a_usage_error_exits_2(tmp_path: Path) -> None:
    result = dagd("runs", "--limit", "0", cwd=tmp_path)
    assert result.returncode == 2
    result = dagd("nosuchcommand", cwd=tmp_path)
    assert result.returncode == 2


@pytest.mark.parametrize(
    "args", [["runs"], ["dags"], ["dags", "--json"], ["runs", "-n", "5", "--json"]]
)
def test_a_closed_stdout_ends_quietly_with_141(daemon: DaemonProc, args: list[str]) -> None:
    assert dagd("trigger", "report", cwd=daemon.root).returncode == 0  # a run to list
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before dagd writes: `dagd runs | head -0`
    try:
        done = subprocess.run(
            [sys.executable, "-m", "dagd", *args],
            cwd=daemon.root,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 141
    assert done.stderr == ""


def test_serve_warns_about_a_missing_dag_folder(tmp_path: Path) -> None:
    with DaemonProc(tmp_path, {}) as d:
        (tmp_path / "dags").rmdir()
        d.start()
        d.wait_ready()
        assert f"DAG folder {tmp_path / 'dags'} does not exist" in d.output()
        assert "WARNING" in d.output()


def test_watch_of_only_unknown_dags_is_an_error(daemon: DaemonProc) -> None:
    result = dagd("watch", "etk", "--plain", cwd=daemon.root, timeout=15)
    assert result.returncode == 1
    assert "unknown DAG 'etk': did you mean 'etl'?" in result.stderr
