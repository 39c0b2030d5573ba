"""`dagd dashboard`: the web dashboard's address with the token, printed and opened.

The token goes into the URL's fragment (`#token=...`): browsers never send a fragment to the
server, and the page moves it into the tab's sessionStorage and out of the address bar
(docs/dashboard.md). Nothing is asked of the daemon here: the address and token are found as
every client command finds them (dagd/cli/options.py).
"""

from __future__ import annotations

import html
import os
import subprocess
import sys
import tempfile
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


#: Seconds the hand-over page stays on disk: long enough for a browser's cold start.
HANDOVER_SECONDS = 60.0


def handover_page(url: str) -> Path:
    """Write a page that sends the browser on to `url` and return its path:
    `<dir>/dashboard.html` in a new directory of mode 0700 (under $XDG_RUNTIME_DIR when set,
    else the system's temporary folder), the file of mode 0600.

    A browser started with the address itself would have the token in its command line,
    which other local users can read (/proc/PID/cmdline); the command line gets this file's
    path instead. The page redirects with `<meta http-equiv="refresh">` (no script) and asks
    for no Referer. Raises OSError when the directory or file cannot be written.
    """
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    under = runtime if runtime and os.path.isdir(runtime) else None
    folder = Path(tempfile.mkdtemp(prefix="dagd-dashboard-", dir=under))
    path = folder / "dashboard.html"
    target = html.escape(url, quote=True)
    text = (
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">\n"
        '<meta name="referrer" content="no-referrer">\n'
        f'<meta http-equiv="refresh" content="0; url={target}">\n'
        "<title>dagd dashboard</title></head>\n"
        f'<body><p><a href="{target}">Open the dagd dashboard</a></p></body></html>\n'
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    return path


def remove_later(page: Path, seconds: float = HANDOVER_SECONDS) -> None:
    """Delete the hand-over page and its directory after `seconds`, from a detached process
    (the command itself returns at once; the process outlives it). A process that cannot
    be started leaves the page in place: the browser was opened all the same."""
    script = (
        "import shutil, sys, time; time.sleep(float(sys.argv[2])); "
        "shutil.rmtree(sys.argv[1], ignore_errors=True)"
    )
    argv = [sys.executable, "-c", script, str(page.parent), str(seconds)]
    try:
        if hasattr(os, "posix_spawn"):
            # No Popen object: nothing in this process waits for the child or warns about it.
            quiet = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
            os.posix_spawn(sys.executable, argv, os.environ, file_actions=quiet, setsid=True)
        else:
            subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        pass


def open_in_browser(url: str) -> str | None:
    """Open `url` in the default browser through a hand-over page (handover_page: the token
    stays out of the browser's command line); returns None when it was handed to one, else
    why not (for the message)."""
    if not graphical_session():
        return "no graphical display here (DISPLAY and WAYLAND_DISPLAY are unset)"
    import webbrowser  # here, not at the top: every `dagd` start (and shell Tab) would pay ~20 ms

    try:
        page = handover_page(url)
    except OSError as exc:
        return f"could not write the page that opens it ({exc})"
    try:
        opened = webbrowser.get().open(page.as_uri(), new=2)
    except webbrowser.Error as exc:
        opened = False
        why = f"no browser found ({exc})"
    else:
        why = "the browser could not be started"
    remove_later(page, HANDOVER_SECONDS if opened else 0.0)
    return None if opened else why


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
