"""The dashboard under conditions a person does not look at: a tab left hidden for hours (no
animation frames run), addresses that do not decode, a layout worker that fails.

One daemon for the module; the browser is the session's (conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from clienthelp import DaemonProc
from dashhelp import OPERATE_TOKEN, dashboard_daemon, open_dashboard, page_url, poll, wait_live
from playwright.sync_api import BrowserContext, expect

from dagd.cli.dashboard import handover_page

ONE = """
description = "one step"
[steps.only]
command = "true"
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    root: Path = tmp_path_factory.mktemp("robust")
    with dashboard_daemon(root, {"one": ONE}) as d:
        d.start()
        d.wait_ready()
        yield d


# A hidden tab runs no animation frames: requestAnimationFrame only records its callback.
HIDDEN_TAB = """async () => {
  const frames = [];
  window.requestAnimationFrame = (fn) => frames.push(fn);
  window.cancelAnimationFrame = () => {};
  const { frameBatcher, eventKey } = await import("/assets/dom.js");
  const { LogPane } = await import("/assets/steplog.js");
  let flushed = null;
  const events = frameBatcher((items) => { flushed = items; }, { key: eventKey });
  for (let i = 0; i < 50000; i++) {
    const status = ["queued", "running", "success"][i % 3];
    const data = { dagId: "d", runId: "r", stepId: `s${i % 100}`, status };
    events.push({ type: "step_status", data });
  }
  const queued = events.size;
  frames.splice(0).forEach((fn) => fn());
  const handed = flushed.length;
  const last = flushed[flushed.length - 1].data;

  let overflows = 0;
  let flushes = 0;
  const onOverflow = () => overflows++;
  const small = frameBatcher(() => flushes++, { key: eventKey, limit: 10, onOverflow });
  for (let i = 0; i < 11; i++) {
    small.push({ type: "dag_run_status", data: { dagId: "d", runId: `r${i}` } });
  }
  const afterOverflow = small.size;
  frames.splice(0).forEach((fn) => fn());

  const pane = new LogPane("out", "stdout", 1024);
  for (let i = 0; i < 10000; i++) pane.append("x".repeat(99) + "\\n", 100);
  return {
    queued, handed, last, afterOverflow, overflows, flushes,
    chunks: pane.pending.length, pendingBytes: pane.pendingBytes, dropped: pane.droppedBytes,
  };
}"""


def test_a_hidden_tab_queues_a_bounded_amount(context: BrowserContext, daemon: DaemonProc) -> None:
    """50,000 step events of 100 steps queue at most one per step and status; the newest
    event comes last; past the limit the page loads again instead; a log pane keeps only
    its newest maxBytes waiting and counts the rest as not shown."""
    page = open_dashboard(context, daemon)
    got = page.evaluate(HIDDEN_TAB)
    assert got["queued"] == 300
    assert got["handed"] == 300
    assert got["last"] == {"dagId": "d", "runId": "r", "stepId": "s99", "status": "running"}
    assert (got["afterOverflow"], got["overflows"], got["flushes"]) == (0, 1, 0)
    assert got["pendingBytes"] <= 1024 + 100
    assert got["chunks"] == got["pendingBytes"] // 100
    assert got["dropped"] + got["pendingBytes"] == 10000 * 100


# Counts the page's hashchange listeners (each Router adds one).
COUNT_HASH_LISTENERS = """
(() => {
  let count = 0;
  const add = window.addEventListener;
  const remove = window.removeEventListener;
  window.addEventListener = function (type, ...rest) {
    if (type === "hashchange") count++;
    return add.call(this, type, ...rest);
  };
  window.removeEventListener = function (type, ...rest) {
    if (type === "hashchange") count--;
    return remove.call(this, type, ...rest);
  };
  window.hashListeners = () => count;
})();
"""

# The daemon refuses the token at the next connection: a new token is asked for.
REFUSE_TOKEN = """() => {
  window.dagdClient.token = "not-a-token";
  window.dagdClient.ws.close();
}"""


def test_after_a_refused_token_only_the_new_router_follows_the_address(
    context: BrowserContext, daemon: DaemonProc
) -> None:
    context.add_init_script(COUNT_HASH_LISTENERS)
    page = open_dashboard(context, daemon)
    page.wait_for_selector("table.dags")
    listening = page.evaluate("window.hashListeners()")  # the app's own and one Router's
    page.evaluate(REFUSE_TOKEN)
    assert poll(lambda: page.evaluate("window.dagdClient.state.phase") != "live")
    assert poll(
        lambda: page.evaluate("window.dagdClient.reconnectNow() || window.dagdClient.state.phase")
        == "auth_failed"
    )
    page.fill("#token-input", OPERATE_TOKEN)
    page.click("form.token-form button[type=submit]")
    wait_live(page)
    page.wait_for_selector("table.dags")
    assert page.evaluate("window.hashListeners()") == listening
    page.evaluate("() => { window.location.hash = '#/dags/one'; }")
    expect(page.locator("h1")).to_contain_text("one")
    expect(page.locator(".error-text")).to_have_count(0)


def test_an_address_that_does_not_decode_shows_not_found(
    context: BrowserContext, daemon: DaemonProc
) -> None:
    page = open_dashboard(context, daemon, route="#/dags/%E0%A4%A")
    expect(page.locator("main h1")).to_have_text("Not found")
    page.evaluate("() => { window.location.hash = '#/dags/one'; }")
    expect(page.locator(".dag-head-card")).to_be_visible()  # the app still follows the address


def test_a_token_that_does_not_decode_asks_for_one(
    context: BrowserContext, daemon: DaemonProc
) -> None:
    page = context.new_page()
    page.goto(f"http://127.0.0.1:{daemon.port}/#token=%E0%A4%A")
    expect(page.locator("#token-input")).to_be_visible()
    assert page.evaluate("location.hash") == "#/"


def test_a_failed_layout_worker_shows_an_error_in_the_graph_box(
    context: BrowserContext, daemon: DaemonProc
) -> None:
    context.route("**/layout-worker.js", lambda route: route.fulfill(status=404, body="gone"))
    page = open_dashboard(context, daemon, route="#/dags/one")
    expect(page.locator(".graph-box .graph-error")).to_contain_text(
        "The graph could not be laid out"
    )


def test_the_handover_page_of_dagd_dashboard_opens_the_dashboard(
    context: BrowserContext, daemon: DaemonProc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file `dagd dashboard` hands the browser (the token stays out of its command line)
    leads to the dashboard, signed in."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    page = context.new_page()
    page.goto(handover_page(page_url(daemon)).as_uri())
    wait_live(page)
    assert page.evaluate("sessionStorage.getItem('dagd.token')") == OPERATE_TOKEN
    assert page.evaluate("location.hash") == "#/"
