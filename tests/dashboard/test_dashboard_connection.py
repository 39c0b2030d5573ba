"""The dashboard's connection: the banner says when the daemon is gone, and after a restart
the page catches up on what happened meanwhile with no gap and no duplicate (compared with the
daemon's own event log)."""

from __future__ import annotations

import shutil
from pathlib import Path

import trio
from dashhelp import OPERATE_TOKEN, dashboard_daemon, open_dashboard, poll, stored_seqs
from playwright.sync_api import BrowserContext, Page, expect

from dagd.client import connect

QUICK = """
[params]
note = "none"
[steps.one]
command = "true"
[steps.two]
command = "true"
depends_on = ["one"]
[steps.three]
command = "true"
depends_on = ["one"]
"""


def trigger(url: str, dag_id: str, params: dict[str, str]) -> str:
    async def go() -> str:
        async with connect(url, OPERATE_TOKEN, []) as client:
            return await client.trigger(dag_id, params)

    return trio.run(go)


RECONNECT_NOW = """() => {
  window.dagdClient.reconnectNow();  // the Reconnect now button's action; only when waiting
  return window.dagdClient.state.phase === "live";
}"""


def reconnect_now(page: Page) -> None:
    """Skip the page's backoff (up to 30 s) now that the daemon is back: press Reconnect now
    whenever the page is waiting to retry, until it is live."""
    assert poll(lambda: page.evaluate(RECONNECT_NOW), timeout=20), "the page did not reconnect"


def test_a_restart_shows_disconnected_then_the_page_catches_up_with_no_gap(
    context: BrowserContext, tmp_path: Path
) -> None:
    with dashboard_daemon(tmp_path, {"quick": QUICK}) as daemon:
        daemon.start()
        daemon.wait_ready()
        page = open_dashboard(context, daemon, route="#/dags/quick")
        expect(page.locator("svg.graph .node")).to_have_count(3)
        since = page.evaluate("window.dagdClient.lastSeq")
        page.evaluate(
            "() => { window.seen = []; dagdClient.on('event', (e) => window.seen.push(e.seq)); }"
        )
        first = trigger(daemon.url, "quick", {"note": "before"})
        expect(page.locator('.node[data-step-id="three"]')).to_have_attribute(
            "data-status", "success"
        )

        daemon.stop()
        banner = page.locator("#banner")
        expect(banner).to_have_attribute("data-phase", "disconnected")
        expect(banner).to_contain_text("Reconnecting in")
        expect(page.get_by_role("button", name="Reconnect now")).to_be_visible()

        daemon.start()  # the same state folder and port
        daemon.wait_ready()
        # A run while the page is (most likely) still waiting out its backoff.
        second = trigger(daemon.url, "quick", {"note": "while away"})
        assert poll(lambda: daemon.run_statuses("quick").get(second) == "success")
        reconnect_now(page)
        expect(banner).to_have_attribute("data-phase", "live")

        # The log is read again each time: the run's last events may commit after its status.
        assert poll(lambda: page.evaluate("window.seen") == stored_seqs(daemon, since)), (
            page.evaluate("window.seen"),
            stored_seqs(daemon, since),
        )
        # what a person sees: the run that happened while away, selected and green
        selected = page.get_by_role("region", name="Selected run")
        expect(selected.locator(".sel-run-link")).to_have_text(second)
        expect(selected.locator(".sel-run-params")).to_contain_text("note = while away")
        for step in ("one", "two", "three"):
            expect(page.locator(f'.node[data-step-id="{step}"]')).to_have_attribute(
                "data-status", "success"
            )
        grid_heads = page.locator("table.grid th.run-head")
        expect(grid_heads).to_have_count(2)
        assert [grid_heads.nth(i).get_attribute("data-run-id") for i in range(2)] == [first, second]


def test_a_daemon_with_a_new_event_log_is_taken_from_a_snapshot(
    context: BrowserContext, tmp_path: Path
) -> None:
    """The page's last seq is from another event log (the state folder was replaced): the
    daemon answers replay_ahead, the page takes a snapshot, reloads what it shows, and then
    follows the new log from its start."""
    with dashboard_daemon(tmp_path, {"quick": QUICK}) as daemon:
        daemon.start()
        daemon.wait_ready()
        for note in ("a", "b"):
            run_id = trigger(daemon.url, "quick", {"note": note})
            assert poll(lambda run_id=run_id: daemon.run_statuses().get(run_id) == "success")
        page = open_dashboard(context, daemon)
        squares = page.locator('tr[data-dag-id="quick"] .square')
        expect(squares).to_have_count(2)
        daemon.stop()
        expect(page.locator("#banner")).to_have_attribute("data-phase", "disconnected")
        for path in daemon.state.iterdir():  # a new state folder, the same token file
            if path.is_dir():
                shutil.rmtree(path)
            elif path.name != "token":
                path.unlink()
        daemon.start()
        daemon.wait_ready()
        reconnect_now(page)
        expect(page.locator("#banner")).to_have_attribute("data-phase", "live")
        expect(page.locator('tr[data-dag-id="quick"]')).to_contain_text("no runs yet")
        fresh = trigger(daemon.url, "quick", {"note": "new log"})
        square = page.locator('tr[data-dag-id="quick"] .square')
        expect(square).to_have_count(1)
        expect(square).to_have_attribute("title", f"{fresh}: success")
