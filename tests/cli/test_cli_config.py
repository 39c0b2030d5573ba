"""Finding the daemon from any working directory: --config, DAGD_CONFIG, ./config.toml, then
$XDG_CONFIG_HOME/dagd/config.toml; --url/--token and DAGD_URL/DAGD_TOKEN on top. Each case
runs `python -m dagd` as a subprocess from a folder that is not the daemon's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from clienthelp import DaemonProc, dagd, serving

from dagd.cli.main import main

DAGS = {
    "etl": """
        [steps.a]
        command = "true"
    """
}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    with serving(tmp_path_factory.mktemp("config"), DAGS) as d:
        yield d


def user_config(home: Path, daemon: DaemonProc) -> Path:
    """$XDG_CONFIG_HOME/dagd/config.toml naming the daemon's state folder and port."""
    path = home / "dagd" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text(
        f'state_dir = "{daemon.state}"\ndags_dir = "{daemon.root / "dags"}"\n'
        f"[server]\nport = {daemon.port}\n"
    )
    return path


def test_the_user_config_folder_is_found_from_anywhere(daemon: DaemonProc, tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    user_config(xdg, daemon)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = dagd("dags", cwd=elsewhere, XDG_CONFIG_HOME=str(xdg))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "etl"
    # dagd list reads the same config's DAG folder
    result = dagd("list", cwd=elsewhere, XDG_CONFIG_HOME=str(xdg))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "etl"
    # ~/.config/dagd/config.toml when XDG_CONFIG_HOME is not set
    home = tmp_path / "home"
    user_config(home / ".config", daemon)
    result = dagd("dags", cwd=elsewhere, HOME=str(home), XDG_CONFIG_HOME="")
    assert result.returncode == 0, result.stderr


def test_order_config_option_then_variable_then_cwd_then_user(
    daemon: DaemonProc, tmp_path: Path
) -> None:
    xdg = tmp_path / "xdg"
    user_config(xdg, daemon)
    bad = tmp_path / "bad.toml"
    bad.write_text("nonsense = 1\n")
    here = tmp_path / "here"
    here.mkdir()
    (here / "config.toml").write_text("also_nonsense = 1\n")

    # ./config.toml wins over the user's: its error shows
    result = dagd("dags", cwd=here, XDG_CONFIG_HOME=str(xdg))
    assert result.returncode == 1 and "also_nonsense" in result.stderr
    # DAGD_CONFIG wins over ./config.toml
    result = dagd("dags", cwd=here, XDG_CONFIG_HOME=str(xdg), DAGD_CONFIG=str(bad))
    assert result.returncode == 1 and "nonsense" in result.stderr
    assert "also_nonsense" not in result.stderr
    # --config wins over DAGD_CONFIG
    result = dagd("dags", "--config", str(daemon.config), cwd=here, DAGD_CONFIG=str(bad))
    assert result.returncode == 0, result.stderr


def test_url_and_token_variables_override_the_config(daemon: DaemonProc, tmp_path: Path) -> None:
    result = dagd("dags", cwd=tmp_path, DAGD_URL=daemon.url, DAGD_TOKEN=daemon.token)
    assert result.returncode == 0, result.stderr
    result = dagd("dags", "--config", str(daemon.config), cwd=tmp_path, DAGD_TOKEN="wrong-token")
    assert result.returncode == 1 and "refused the token" in result.stderr
    result = dagd(
        "dags", "--token", daemon.token, cwd=tmp_path, DAGD_URL=daemon.url, DAGD_TOKEN="wrong"
    )
    assert result.returncode == 0, result.stderr


def test_no_config_anywhere_says_where_it_looked(tmp_path: Path) -> None:
    result = dagd("runs", cwd=tmp_path, XDG_CONFIG_HOME=str(tmp_path / "none"))
    assert result.returncode == 1
    assert "no token file at" in result.stderr
    assert "DAGD_CONFIG, ./config.toml, $XDG_CONFIG_HOME/dagd/config.toml" in result.stderr


@pytest.mark.parametrize("command", ["dags", "runs", "trigger", "cancel", "retry", "watch"])
def test_help_shows_every_options_variable(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())  # click wraps help at 80 columns
    for var in ("DAGD_CONFIG", "DAGD_URL", "DAGD_TOKEN"):
        assert f"[env var: {var}]" in text, (command, var)


@pytest.mark.parametrize("command", ["list", "validate", "run", "serve"])
def test_local_commands_help_shows_their_variables(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--help"])
    text = " ".join(result.stdout.split())
    assert "[env var: DAGD_CONFIG]" in text and "[env var: DAGD_DAGS]" in text
