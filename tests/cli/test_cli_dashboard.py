"""`dagd dashboard`: the dashboard's address with the token in the fragment."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import pytest
from clihelp import cli_in, invoke

from dagd.cli.dashboard import dashboard_url
from dagd.cli.main import main


def write_config(root: Path, port: int, token: str) -> None:
    (root / "state").mkdir(parents=True)
    (root / "state" / "token").write_text(token + "\n")
    (root / "config.toml").write_text(f'state_dir = "state"\n[server]\nport = {port}\n')


def test_prints_the_address_with_the_token_file_in_the_fragment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(tmp_path, 3456, "s3cr/t+=x")
    result = invoke(cli_in(tmp_path, monkeypatch), "dashboard", "--no-open")
    assert result.exit_code == 0, result.output
    address = result.stdout.strip()
    parts = urllib.parse.urlsplit(address)
    assert (parts.scheme, parts.netloc, parts.path, parts.query) == (
        "http",
        "127.0.0.1:3456",
        "/",
        "",
    )
    assert parts.fragment.startswith("token=")
    assert urllib.parse.unquote(parts.fragment.removeprefix("token=")) == "s3cr/t+=x"


def test_url_and_token_options_win_and_wss_becomes_https(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(tmp_path, 3456, "from-file")
    result = invoke(
        cli_in(tmp_path, monkeypatch),
        "dashboard",
        "--no-open",
        "--url",
        "wss://ops.example.com:8443/api/v1/ws",
        "--token",
        "t1",
    )
    assert result.stdout == "https://ops.example.com:8443/#token=t1\n"


def test_without_a_display_it_says_so_and_still_prints_the_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(tmp_path, 3456, "tok")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    result = invoke(cli_in(tmp_path, monkeypatch), "dashboard")
    assert result.exit_code == 0
    assert result.stdout == "http://127.0.0.1:3456/#token=tok\n"
    assert "not opened: no graphical display here" in result.stderr


def test_with_a_display_it_hands_the_address_to_the_browser(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(tmp_path, 3456, "tok")
    opened: list[str] = []

    class Browser:
        def open(self, url: str, new: int = 0) -> bool:
            opened.append(url)
            return True

    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr("webbrowser.get", lambda: Browser())
    result = invoke(cli_in(tmp_path, monkeypatch), "dashboard")
    assert opened == ["http://127.0.0.1:3456/#token=tok"]
    assert "opened in your browser" in result.stderr


def test_no_token_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config.toml").write_text('state_dir = "state"\n')
    result = cli_in(tmp_path, monkeypatch).invoke(main, ["dashboard", "--no-open"])
    assert result.exit_code == 1
    assert "no token file" in result.output


@pytest.mark.parametrize(
    ("ws", "http"),
    [
        ("ws://127.0.0.1:3000/api/v1/ws", "http://127.0.0.1:3000/#token=a"),
        ("ws://[::1]:3000/api/v1/ws", "http://[::1]:3000/#token=a"),
        ("wss://dagd.example/api/v1/ws", "https://dagd.example/#token=a"),
    ],
)
def test_dashboard_url(ws: str, http: str) -> None:
    assert dashboard_url(ws, "a") == http
