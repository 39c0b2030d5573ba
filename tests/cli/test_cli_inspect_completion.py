"""Shell completion of DAG ids, run ids and step ids, through click's own mechanism: the
installed `dagd` script run with `_DAGD_COMPLETE=<shell>_complete`, `COMP_WORDS` and
`COMP_CWORD`, exactly as the shell scripts of `_DAGD_COMPLETE=bash_source dagd` call it. The
finer cases go through the same click classes in this process (a `dagd` start costs about half
a second).

Run ids come from a real daemon's SQLite history, read without the daemon (it is stopped
before the last checks)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from click.shell_completion import BashComplete, ShellComplete, ZshComplete
from clienthelp import DaemonProc, clean_env, serving, wait_for

from dagd.cli.main import main
from dagd.client import connect

DAGS = {
    "etl": """
        description = "extract, transform, load"
        [steps.extract]
        command = "true"
        [steps."extract.more"]
        command = "true"
        depends_on = ["extract"]
        [steps.load]
        command = "true"
        depends_on = ["extract.more"]
    """,
    "eta": """
        id = "estimate"
        [steps.guess]
        command = "true"
    """,
    "report": """
        [steps.fetch]
        command = "true"
    """,
}


def dagd_script() -> list[str]:
    """The `dagd` console script installed beside this Python, else the same entry point
    under that name."""
    script = Path(sys.executable).parent / "dagd"
    if script.is_file():
        return [str(script)]
    found = shutil.which("dagd")
    if found:
        return [found]
    return [sys.executable, "-c", "from dagd.cli.main import main; main(prog_name='dagd')"]


def complete(cwd: Path, line: str, shell: str = "bash", **env: str) -> list[str]:
    """What `dagd` offers for the last word of `line` (a line ending in a space completes a
    new, empty word): bash's `type,value` lines, or zsh's value/help line pairs."""
    words = line.split()
    if line.endswith(" "):
        words.append("")
    proc = subprocess.run(
        dagd_script(),
        cwd=cwd,
        env=clean_env(
            _DAGD_COMPLETE=f"{shell}_complete",
            COMP_WORDS=line,
            COMP_CWORD=str(len(words) - 1),
            **env,
        ),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return [line for line in proc.stdout.splitlines() if line]  # nothing: one empty line


def complete_here(
    cwd: Path, line: str, monkeypatch: pytest.MonkeyPatch, shell: str = "bash"
) -> list[str]:
    """`complete` in this process: the same click classes, the same output lines."""
    monkeypatch.chdir(cwd)
    for var in ("DAGD_CONFIG", "DAGD_DAGS"):
        monkeypatch.delenv(var, raising=False)
    words = line.split() + ([""] if line.endswith(" ") else [])
    kind: type[ShellComplete] = BashComplete if shell == "bash" else ZshComplete
    comp = kind(main, {}, "dagd", "_DAGD_COMPLETE")
    items = comp.get_completions(words[1:-1], words[-1])
    return [line for item in items for line in comp.format_completion(item).splitlines()]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    with serving(tmp_path_factory.mktemp("completion"), DAGS) as d:
        yield d


@pytest.fixture(scope="module")
def run_ids(daemon: DaemonProc) -> list[str]:
    """Two finished runs of etl and one of report, oldest first."""

    async def trigger() -> list[str]:
        async with connect(daemon.url, daemon.token) as client:
            found = []
            for dag_id in ("etl", "report", "etl"):
                found.append(await client.trigger(dag_id))
                await trio.sleep(0.002)  # distinct queue times, for the order
            return found

    ids = trio.run(trigger)
    wait_for(lambda: all(daemon.run_statuses().get(r) == "success" for r in ids))
    return ids


def test_through_the_installed_script(daemon: DaemonProc, run_ids: list[str]) -> None:
    assert complete(daemon.root, "dagd graph ") == [
        "plain,estimate",
        "plain,etl",
        "plain,report",
    ]
    # zsh gets each description as help ("_" when there is none).
    assert complete(daemon.root, "dagd graph e", "zsh") == [
        "plain",
        "estimate",
        "_",
        "plain",
        "etl",
        "extract, transform, load",
    ]
    etl_1, report, etl_2 = run_ids
    assert complete(daemon.root, "dagd logs ") == [  # newest first; bash sorts them itself
        f"plain,{etl_2}",
        f"plain,{report}",
        f"plain,{etl_1}",
    ]


def test_dag_ids(daemon: DaemonProc, monkeypatch: pytest.MonkeyPatch) -> None:
    assert complete_here(daemon.root, "dagd graph et", monkeypatch) == ["plain,etl"]
    assert complete_here(daemon.root, "dagd show --dag r", monkeypatch) == ["plain,report"]
    for command in ("pause", "unpause", "backfill"):
        assert complete_here(daemon.root, f"dagd {command} es", monkeypatch) == ["plain,estimate"]


def test_dag_ids_from_another_folder(
    daemon: DaemonProc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = str(daemon.config)
    line = f"dagd graph --config {config} r"
    assert complete_here(tmp_path, line, monkeypatch) == ["plain,report"]
    line = f"dagd graph --dags {daemon.root / 'dags'} r"
    assert complete_here(tmp_path, line, monkeypatch) == ["plain,report"]
    assert complete_here(tmp_path, "dagd graph ", monkeypatch) == []  # no config, no folder
    monkeypatch.setenv("DAGD_CONFIG", config)
    comp = BashComplete(main, {}, "dagd", "_DAGD_COMPLETE")
    assert [i.value for i in comp.get_completions(["graph"], "r")] == ["report"]


def test_run_and_step_ids_from_the_history(
    daemon: DaemonProc, run_ids: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    etl_1, report, etl_2 = run_ids
    root = daemon.root
    assert complete_here(root, "dagd show ", monkeypatch) == [
        f"plain,{etl_2}",
        f"plain,{report}",
        f"plain,{etl_1}",
    ]
    assert complete_here(root, f"dagd logs {etl_1}", monkeypatch) == [f"plain,{etl_1}"]
    assert complete_here(root, "dagd logs manual_x", monkeypatch) == []  # '_' is no wildcard
    assert complete_here(root, f"dagd logs {etl_1} ", monkeypatch) == [
        "plain,extract",
        "plain,extract.more",
        "plain,load",
    ]
    assert complete_here(root, f"dagd logs {etl_1} extract.", monkeypatch, "zsh") == [
        "plain",
        "extract.more",
        "success",
    ]
    assert complete_here(root, "dagd logs no-such-run ", monkeypatch) == []


def test_history_is_read_without_the_daemon(
    daemon: DaemonProc, run_ids: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon.stop()
    try:
        assert len(complete_here(daemon.root, "dagd logs ", monkeypatch)) == len(run_ids)
    finally:
        daemon.start()
        daemon.wait_ready()


def test_nothing_to_complete_without_a_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config.toml").write_text('state_dir = "state"\n')
    assert complete_here(tmp_path, "dagd logs ", monkeypatch) == []
    assert not (tmp_path / "state").exists()  # read-only: nothing made
    (tmp_path / "config.toml").write_text("not = [valid toml\n")
    assert complete_here(tmp_path, "dagd logs ", monkeypatch) == []
    assert complete_here(tmp_path, "dagd graph ", monkeypatch) == []
