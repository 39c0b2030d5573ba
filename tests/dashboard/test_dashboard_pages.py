"""The DAGs and DAG pages in a real headless Chromium, against a real `dagd serve` with real
DAG files and runs: what a person sees.

One daemon for the module (its tests only add runs, and look for their own); the browser is
the session's (conftest.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from clienthelp import DaemonProc
from dashhelp import OPERATE_TOKEN, READ_TOKEN, dashboard_daemon, open_dashboard, page_url
from playwright.sync_api import BrowserContext, Page, expect

from dagd.client import connect

ETL = """
description = "nightly ETL"
schedule = "30 2 * * *"
timezone = "Europe/Berlin"
tags = ["team-a", "nightly"]
[params]
date = "2024-01-01"
region = "eu"
[steps.extract]
command = 'echo "extract $DAGD_PARAM_DATE"'
[steps.transform]
command = "sleep 0.2"
depends_on = ["extract"]
[steps.load]
command = "true"
depends_on = ["transform"]
"""

WIDE = """
description = "one root, many leaves"
[handlers.on_failure]
command = "true"
[handlers.always]
command = "true"
[steps.root]
command = "true"
""" + "".join(f'[steps.leaf{i:02}]\ncommand = "true"\ndepends_on = ["root"]\n' for i in range(12))

FRAGILE = """
description = "edited while the page is open"
[steps.only]
command = "true"
"""

BROKEN = """
[steps.a]
command = "true"
timeout = "soon"
[steps.b]
command = "true"
depends_on = ["ghost"]
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    root: Path = tmp_path_factory.mktemp("dashboard")
    dags = {"etl": ETL, "wide": WIDE, "fragile": FRAGILE, "broken": BROKEN}
    with dashboard_daemon(root, dags, top='reload_interval = "0.1s"') as d:
        d.start()
        d.wait_ready()
        yield d


def test_the_token_moves_from_the_address_into_session_storage(
    context: BrowserContext, daemon: DaemonProc
) -> None:
    page = open_dashboard(context, daemon)
    assert "token" not in page.url and page.url.endswith("/#/")
    assert page.evaluate("sessionStorage.getItem('dagd.token')") == OPERATE_TOKEN
    assert page.evaluate("document.cookie") == ""
    page.reload()  # the tab keeps it: no form
    expect(page.locator("#banner")).to_have_attribute("data-phase", "live")
    expect(page.locator("table.dags")).to_be_visible()


def test_a_token_link_opened_in_a_dashboard_tab_is_taken_up(
    context: BrowserContext, daemon: DaemonProc
) -> None:
    page = open_dashboard(context, daemon)
    expect(page.locator("table.dags")).to_be_visible()
    page.evaluate("(t) => { window.location.hash = '#token=' + t; }", READ_TOKEN)
    expect(page.locator("#role")).to_have_text("read-only")
    expect(page.locator("table.dags")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('dagd.token')") == READ_TOKEN
    assert page.evaluate("window.dagdClient.token") == READ_TOKEN
    assert "token" not in page.url and page.url.endswith("/#/")
    assert READ_TOKEN not in page.locator("body").inner_text()
    # and while the page asks for a token (no router yet)
    form = context.new_page()
    form.goto(page_url(daemon, token=None))
    expect(form.locator("#token-input")).to_be_visible()
    form.evaluate("(t) => { window.location.hash = '#token=' + t; }", OPERATE_TOKEN)
    expect(form.locator("#role")).to_have_text("operator")
    assert "token" not in form.url


def test_without_a_token_the_page_asks_for_one_and_says_when_it_is_refused(
    context: BrowserContext, daemon: DaemonProc
) -> None:
    page = context.new_page()
    page.goto(page_url(daemon, token=None))
    page.get_by_label("Token").fill("not-the-token")
    page.get_by_role("button", name="Connect").click()
    expect(page.get_by_role("alert")).to_contain_text("refused")
    expect(page.locator("#banner")).to_contain_text("refused the token")
    page.get_by_label("Token").fill(READ_TOKEN)
    page.get_by_role("button", name="Connect").click()
    expect(page.locator("table.dags")).to_be_visible()
    expect(page.locator("#role")).to_have_text("read-only")


def test_the_dags_page_lists_every_dag_and_the_broken_file_with_its_errors(
    context: BrowserContext, daemon: DaemonProc
) -> None:
    page = open_dashboard(context, daemon)
    rows = page.locator("table.dags tbody tr")
    expect(rows).to_have_count(3)
    etl = page.locator('tr[data-dag-id="etl"]')
    expect(etl).to_contain_text("nightly ETL")
    expect(etl).to_contain_text("30 2 * * *")
    expect(etl).to_contain_text("Europe/Berlin")
    expect(etl).to_contain_text("team-a")
    expect(etl.locator(".next-run")).to_contain_text("in ")
    expect(page.locator('tr[data-dag-id="wide"]')).to_contain_text("manual only")
    broken = page.locator("section.broken-files")
    expect(broken).to_contain_text("Broken DAG files (1)")
    expect(broken).to_contain_text("broken.toml")
    expect(broken).to_contain_text("step 'a' field 'timeout'")
    expect(broken).to_contain_text("step 'b' field 'depends_on'")
    expect(broken).to_contain_text("ghost")


def test_a_run_triggered_from_the_form_shows_its_param_and_turns_green_live(
    context: BrowserContext, daemon: DaemonProc
) -> None:
    page = open_dashboard(context, daemon, route="#/dags/etl")
    expect(page.locator("svg.graph .node")).to_have_count(3)
    params = page.get_by_role("region", name="Params")
    expect(params).to_contain_text("2024-01-01")
    date = page.get_by_label("date", exact=True)
    expect(date).to_have_value("2024-01-01")  # the default, offered
    date.fill("2030-05-17")
    page.get_by_role("button", name="Trigger run").click()
    result = page.locator(".trigger-result a")
    expect(result).to_contain_text("manual__")
    run_id = result.inner_text()
    selected = page.get_by_role("region", name="Selected run")
    expect(selected.locator(".sel-run-link")).to_have_text(run_id)
    expect(selected.locator(".sel-run-params")).to_contain_text("date = 2030-05-17")
    expect(selected.locator(".sel-run-params")).to_contain_text("region = eu")
    for step in ("extract", "transform", "load"):
        node = page.locator(f'svg.graph .node[data-step-id="{step}"]')
        expect(node).to_have_attribute("data-status", "success")
        expect(node).to_have_attribute("aria-label", f"step {step}: success")
    expect(selected.locator(".sel-run-status")).to_contain_text("success")
    # the grid has the run's column with a green cell per step, each opening that step
    cell = page.locator('table.grid tr[data-step-id="load"] a.cell[href*="step=load"]').last
    expect(cell).to_have_attribute("data-status", "success")
    assert run_id.replace(":", "%3A").replace("+", "%2B") in (cell.get_attribute("href") or "")
    # and the DAGs page shows the run as a green square, most recent last
    page.get_by_role("link", name="← All DAGs").click()
    square = page.locator('tr[data-dag-id="etl"] .square').last
    expect(square).to_have_attribute("data-status", "success")
    expect(square).to_have_attribute("title", f"{run_id}: success")


def test_a_read_token_is_offered_no_control(context: BrowserContext, daemon: DaemonProc) -> None:
    page = open_dashboard(context, daemon, token=READ_TOKEN, route="#/dags/etl")
    expect(page.locator("svg.graph .node")).to_have_count(3)
    expect(page.locator("#role")).to_have_text("read-only")
    expect(page.get_by_role("region", name="Params")).to_contain_text("region")
    expect(page.locator("form.trigger-form")).to_have_count(0)
    for name in ("Trigger", "Cancel", "Retry", "Pause"):
        expect(page.get_by_role("button", name=name)).to_have_count(0)


def test_clicking_a_step_shows_its_definition(context: BrowserContext, daemon: DaemonProc) -> None:
    page = open_dashboard(context, daemon, route="#/dags/wide")
    expect(page.locator("svg.graph .node")).to_have_count(13)
    page.locator('svg.graph .node[data-step-id="leaf07"]').click()
    step = page.get_by_role("region", name="Step")
    expect(step).to_contain_text("Step leaf07")
    expect(step).to_contain_text("Depends on")
    expect(step).to_contain_text("root")


def test_the_layout_puts_upstreams_left_of_their_downstreams(
    context: BrowserContext, daemon: DaemonProc
) -> None:
    page: Page = open_dashboard(context, daemon, route="#/dags/etl")
    expect(page.locator("svg.graph .node")).to_have_count(3)
    xs = page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('svg.graph .node')]
            .map((g) => [g.dataset.stepId, g.getBBox().x + g.transform.baseVal[0].matrix.e]))"""
    )
    assert xs["extract"] < xs["transform"] < xs["load"]
    expect(page.locator("svg.graph path.edge")).to_have_count(2)


def test_a_fan_out_keeps_its_steps_in_file_order(
    context: BrowserContext, daemon: DaemonProc
) -> None:
    page = open_dashboard(context, daemon, route="#/dags/wide")
    expect(page.locator("svg.graph .node")).to_have_count(13)
    leaves = page.evaluate(
        """() => [...document.querySelectorAll('svg.graph .node')]
            .filter((g) => g.dataset.stepId.startsWith('leaf'))
            .sort((a, b) => a.transform.baseVal[0].matrix.f - b.transform.baseVal[0].matrix.f)
            .map((g) => g.dataset.stepId)"""
    )
    assert leaves == [f"leaf{i:02}" for i in range(12)]


def test_a_file_that_breaks_shows_its_error_live_and_clears_when_fixed(
    context: BrowserContext, daemon: DaemonProc
) -> None:
    page = open_dashboard(context, daemon)
    row = page.locator('tr[data-dag-id="fragile"]')
    expect(row).to_contain_text("edited while the page is open")
    path = daemon.root / "dags" / "fragile.toml"
    try:
        write_later(path, FRAGILE.replace('command = "true"', "retries = -3"))
        expect(row.locator(".badge.broken")).to_contain_text("running the last good version")
        expect(row.locator(".file-error")).to_contain_text("fragile.toml: step 'only'")
    finally:
        write_later(path, FRAGILE)
    expect(row.locator(".badge.broken")).to_have_count(0)
    expect(page.locator("section.broken-files")).to_contain_text("Broken DAG files (1)")


def write_later(path: Path, text: str) -> None:
    """Rewrite a DAG file with an mtime the reload cannot miss (coarse filesystem ticks)."""
    before = path.stat().st_mtime
    path.write_text(text)
    os.utime(path, (before + 2, before + 2))


PACING = """async () => {
  const { DagdClient } = await import("/assets/ws.js");
  // A WebSocket that answers at once and records when each request went out.
  class Fake {
    constructor() {
      this.readyState = 0; this.sent = []; this.on = {}; Fake.last = this;
      setTimeout(() => { this.readyState = 1; this.on.open(); }, 0);
    }
    addEventListener(type, fn) { this.on[type] = fn; }
    answer(message) { setTimeout(() => this.on.message({ data: JSON.stringify(message) }), 0); }
    send(text) {
      const m = JSON.parse(text);
      this.sent.push([performance.now(), m.type]);
      if (m.type === "auth") this.answer({ type: "auth_success", role: "read", seq: 0 });
      if (m.type === "subscribe") this.answer({ type: "subscribed", dagIds: ["*"] });
      if (m.type === "list_dags") this.answer({ type: "dags", dags: [], requestId: m.requestId });
    }
    close() {}
  }
  const url = "ws://127.0.0.1:9/api/v1/ws";
  const client = new DagdClient({ url, token: "t", WebSocketClass: Fake });
  client.start();
  const started = performance.now();
  await Promise.all(Array.from({ length: 60 }, () => client.request({ type: "list_dags" })));
  const took = performance.now() - started;
  client.close();
  const times = Fake.last.sent.filter(([, type]) => type === "list_dags").map(([at]) => at);
  let most = 0;
  for (let i = 0; i < times.length; i++) {
    let j = i;
    while (j < times.length && times[j] - times[i] < 1000) j++;
    most = Math.max(most, j - i);
  }
  return { sent: times.length, most, took };
}"""


def test_the_client_paces_requests_below_the_daemons_rate_limit(
    context: BrowserContext, daemon: DaemonProc
) -> None:
    """60 requests at once: 50 go out, the other 10 a second later (the daemon closes a
    client sending over 100 messages a second)."""
    page = open_dashboard(context, daemon)
    result = page.evaluate(PACING)
    assert result["sent"] == 60
    assert result["most"] <= 50
    assert result["took"] >= 1000


def test_lifecycle_handlers_are_shown_beside_the_graph_with_their_status(
    context: BrowserContext, daemon: DaemonProc
) -> None:
    page = open_dashboard(context, daemon, route="#/dags/wide")
    expect(page.locator("svg.graph .node")).to_have_count(13)  # handlers are not in the graph
    page.get_by_role("button", name="Trigger run").click()
    expect(page.locator('.node[data-step-id="leaf11"]')).to_have_attribute("data-status", "success")
    always = page.locator('.handler-chip[data-step-id="@always"]')
    expect(always).to_have_attribute("data-status", "success")
    expect(always).to_have_attribute("aria-label", "handler @always: success")
    on_failure = page.locator('.handler-chip[data-step-id="@on_failure"]')
    expect(on_failure).to_have_attribute("data-status", "skipped")
    expect(page.locator('table.grid tr[data-step-id="@always"] a.cell').last).to_have_attribute(
        "data-status", "success"
    )
    on_failure.click()
    expect(page.get_by_role("region", name="Step")).to_contain_text("on_failure")


def test_an_operator_pauses_and_resumes_the_schedule(
    context: BrowserContext, daemon: DaemonProc
) -> None:
    page = open_dashboard(context, daemon, route="#/dags/etl")
    head = page.get_by_role("region", name="DAG", exact=True)
    expect(head).to_contain_text("in ")  # the next run
    try:
        head.get_by_role("button", name="Pause schedule").click()
        expect(head.locator(".badge.paused")).to_have_text("paused")
        expect(head.locator(".facts")).to_contain_text("Next runpaused")
        head.get_by_role("button", name="Resume schedule").click()
        expect(head.locator(".badge.paused")).to_have_count(0)
        expect(head.get_by_role("button", name="Pause schedule")).to_be_visible()
    finally:
        trio.run(unpause, daemon.url, "etl")
    page.get_by_role("link", name="← All DAGs").click()
    expect(page.locator('tr[data-dag-id="etl"] .badge.paused')).to_have_count(0)


async def unpause(url: str, dag_id: str) -> None:
    async with connect(url, OPERATE_TOKEN, []) as client:
        await client.unpause(dag_id)
