"""The Run page of a sub-DAG's child run and of an `after` run, in a real Chromium against a
real `dagd serve`: each links to the run that made it, and the link opens that run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from clienthelp import DaemonProc, wait_for
from dashhelp import OPERATE_TOKEN, dashboard_daemon, open_dashboard
from playwright.sync_api import BrowserContext, expect
from websockets.sync.client import connect

DAGS = {
    "parent": '[steps.sub]\nrun = "child"\n',
    "child": '[steps.s]\ncommand = "true"\n',
    "report": 'after = ["child"]\n[steps.s]\ncommand = "true"\n',
}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    d = dashboard_daemon(tmp_path_factory.mktemp("subdagpage"), DAGS)
    with d:
        d.start()
        d.wait_ready()
        yield d


def trigger(d: DaemonProc, dag_id: str) -> str:
    """A run of `dag_id`, triggered over the daemon's WebSocket (an operate token)."""
    with connect(d.url, open_timeout=10) as ws:
        ws.send(json.dumps({"type": "auth", "token": OPERATE_TOKEN}))
        assert json.loads(ws.recv(10))["type"] == "auth_success"
        ws.send(json.dumps({"type": "trigger", "dagId": dag_id, "requestId": "t"}))
        while True:
            answer = json.loads(ws.recv(10))
            if answer.get("requestId") == "t":
                run_id: str = answer["runId"]
                return run_id


def test_child_and_after_runs_link_to_the_runs_that_made_them(
    context: BrowserContext, daemon: DaemonProc
) -> None:
    parent = trigger(daemon, "parent")
    wait_for(
        lambda: sorted(daemon.run_statuses().values()) == ["success"] * 3,
        what="parent, child and report to succeed",
    )
    (child,) = daemon.run_statuses("child")
    (report,) = daemon.run_statuses("report")

    page = open_dashboard(context, daemon, route=f"#/runs/{quote(child, safe='')}")
    link = page.locator('.run-header [data-fact="parent-run"] a')
    expect(link).to_have_text(parent)
    expect(page.locator('.run-header [data-fact="triggered-by"]')).to_have_count(0)

    page.goto(page.url.split("#")[0] + f"#/runs/{quote(report, safe='')}")
    after = page.locator('.run-header [data-fact="triggered-by"] a')
    expect(after).to_have_text(child)
    after.click()
    expect(page.locator(".run-header h1")).to_contain_text(child)
    expect(page.locator('.run-header [data-fact="parent-run"] a')).to_have_text(parent)
