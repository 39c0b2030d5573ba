"""The dashboard's browser tests: Debian's Chromium driven by Playwright, and daemons with
tokens of both roles.

Playwright's own browser download does not work on these machines, so the tests drive the
system Chromium (`/usr/bin/chromium`, Debian's `chromium` package) through
`executable_path`. Where it is missing the tests skip, saying how to install it; `.ci/run`
installs it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clienthelp import DaemonProc
from playwright.sync_api import BrowserContext, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INSTALL_HINT = (
    "Chromium is not installed at /usr/bin/chromium: the dashboard's browser tests need "
    "Debian's package (apt-get update && apt-get install chromium chromium-driver)"
)

#: Literal tokens of the dashboard daemons (tests only).
OPERATE_TOKEN = "operate-token-for-dashboard-tests"
READ_TOKEN = "read-token-for-dashboard-tests"

#: Where a failing test's screenshot goes (gitignored), relative to the repository root.
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def dashboard_daemon(root: Path, dags: Mapping[str, str], *, top: str = "") -> DaemonProc:
    """A DaemonProc (not started) with an operate and a read token configured
    (OPERATE_TOKEN, READ_TOKEN). The operate token is also written to the state folder's
    token file, where DaemonProc and the CLI look for a token."""
    tokens = (
        f'[[auth.tokens]]\nname = "ops"\nrole = "operate"\ntoken = "{OPERATE_TOKEN}"\n'
        f'[[auth.tokens]]\nname = "viewer"\nrole = "read"\ntoken = "{READ_TOKEN}"\n'
    )
    daemon = DaemonProc(root, dags, top=top, server=tokens)
    daemon.state.mkdir(parents=True, exist_ok=True)
    (daemon.state / "token").write_text(OPERATE_TOKEN + "\n")
    return daemon


def page_url(daemon: DaemonProc, token: str | None = OPERATE_TOKEN) -> str:
    """The dashboard's address on `daemon`, with `token` in the fragment as `dagd dashboard`
    prints it (None: no token)."""
    base = f"http://127.0.0.1:{daemon.port}/"
    return base if token is None else f"{base}#token={token}"


def open_dashboard(
    context: BrowserContext,
    daemon: DaemonProc,
    token: str | None = OPERATE_TOKEN,
    route: str = "#/",
) -> Page:
    """A new page of `context` on the dashboard of `daemon`, opened as `dagd dashboard` opens
    it, connected ("Live" in the banner), then moved to `route` (a hash route)."""
    page = context.new_page()
    page.goto(page_url(daemon, token))
    if token is not None:
        wait_live(page)
        if route != "#/":
            page.evaluate("(hash) => { window.location.hash = hash; }", route)
    return page


def wait_live(page: Page, timeout: float = 10.0) -> None:
    """Until the connection banner says the page is live."""
    page.wait_for_selector('#banner[data-phase="live"]', timeout=timeout * 1000)


def stored_seqs(daemon: DaemonProc, since: int) -> list[int]:
    """Seqs of every event in the daemon's event log after `since`, in order."""
    return [
        row[0]
        for row in daemon.query("SELECT seq FROM events WHERE seq > ? ORDER BY seq", (since,))
    ]


def stored_event(daemon: DaemonProc, seq: int) -> dict[str, Any]:
    [(body,)] = daemon.query("SELECT body FROM events WHERE seq = ?", (seq,))
    parsed: dict[str, Any] = json.loads(body)
    return parsed


def artifact_name(nodeid: str) -> str:
    """A file name for a test id: `tests/dashboard/test_x.py::test_y[a]` -> `test_x-test_y-a-`."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", nodeid.split("/")[-1])


def poll(predicate: Any, timeout: float = 10.0) -> Any:
    """Poll `predicate` until truthy or the deadline; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(0.05)
