"""`dagd dashboard`: the web dashboard's address with the token, printed and opened.

The token goes into the URL's fragment (`#token=...`): browsers never send a fragment to the
server, and the page moves it into the tab's sessionStorage and out of the address bar
(docs/dashboard.md). Nothing is asked of the daemon here: the address and token are found as
every client command finds them (dagd/cli/options.py).
"""

from __future__ import annotations

import os
import sys
import urllib.parse
from pathlib import Path

import click

from dagd.cli.options import config_option, endpoint, token_option, url_option


def dashboard_url(ws_url: str, token: str) -> str:
    """The dashboard's address for the daemon at `ws_url` (ws://HOST:PORT/api/v1/ws): the
    same host and port over http (https for wss), path `/`, the token in the fragment
    (percent-encoded). `ws://127.0.0.1:3000/api/v1/ws` -> `http://127.0.0.1:3000/#token=...`.
    """
    parts = urllib.parse.urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return f"{scheme}://{parts.netloc}/#token={urllib.parse.quote(token, safe='')}"


def graphical_session() -> bool:
    """Whether a browser window can be shown: always on macOS and Windows, on other systems
    only with an X11 or Wayland display (without one, `webbrowser` would start a text browser
    such as lynx inside this terminal)."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def open_in_browser(url: str) -> str | None:
    """Open `url` in the default browser; returns None when it was handed to one, else why
    not (for the message)."""
    if not graphical_session():
        return "no graphical display here (DISPLAY and WAYLAND_DISPLAY are unset)"
    import webbrowser  # here, not at the top: every `dagd` start (and shell Tab) would pay ~20 ms

    try:
        opened = webbrowser.get().open(url, new=2)
    except webbrowser.Error as exc:
        return f"no browser found ({exc})"
    return None if opened else "the browser could not be started"


@click.command()
@config_option
@url_option
@token_option
@click.option("--no-open", is_flag=True, help="Only print the address; do not start a browser.")
def dashboard(config_path: Path | None, url: str | None, token: str | None, no_open: bool) -> None:
    """Open the daemon's web dashboard.

    Prints http://HOST:PORT/#token=TOKEN (the daemon's address from the config or --url, the
    token as for every client command) and opens it in the default browser when there is
    one. The token is in the URL's fragment, which is never sent over the network; the page
    keeps it for the tab only. Anyone with this address can use the daemon with that token's
    role: do not paste it into chats or tickets.
    """
    where = endpoint(config_path, url, token)
    address = dashboard_url(where.url, where.token)
    click.echo(address)
    if no_open:
        return
    why_not = open_in_browser(address)
    if why_not is None:
        click.echo("opened in your browser", err=True)
    else:
        click.echo(f"not opened: {why_not}; open the address above yourself", err=True)


COMMANDS: list[click.Command] = [dashboard]
