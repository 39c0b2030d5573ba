"""`dagd dashboard`: the dashboard's address with the token in the fragment."""

from __future__ import annotations

import stat
import time
import urllib.parse
from pathlib import Path

import pytest
from clihelp import cli_in, invoke

from dagd.cli.dashboard import dashboard_url, handover_page, remove_later
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

    removed: list[tuple[Path, float]] = []
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setattr("webbrowser.get", lambda: Browser())
    monkeypatch.setattr(
        "dagd.cli.dashboard.remove_later", lambda page, seconds: removed.append((page, seconds))
    )
    result = invoke(cli_in(tmp_path, monkeypatch), "dashboard")
    assert result.stdout == "http://127.0.0.1:3456/#token=tok\n"
    assert "opened in your browser" in result.stderr
    # The browser's command line names a private page, not the token.
    (uri,) = opened
    assert "tok" not in uri
    page = Path(urllib.parse.unquote(urllib.parse.urlsplit(uri).path))
    assert page.parent.parent == tmp_path
    assert removed == [(page, 60.0)]
    assert stat.S_IMODE(page.stat().st_mode) == 0o600
    assert stat.S_IMODE(page.parent.stat().st_mode) == 0o700
    assert (
        '<meta http-equiv="refresh" content="0; url=http://127.0.0.1:3456/#token=tok">'
        in page.read_text()
    )


def test_the_handover_page_escapes_the_address_and_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    page = handover_page('http://h:1/#token=a"b<c>&d')
    assert 'url=http://h:1/#token=a&quot;b&lt;c&gt;&amp;d"' in page.read_text()
    remove_later(page, 0.0)
    deadline = time.monotonic() + 10
    while page.parent.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not page.parent.exists()


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
