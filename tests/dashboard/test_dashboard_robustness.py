"""The dashboard under conditions a person does not look at: a tab left hidden for hours (no
animation frames run), addresses that do not decode, a layout worker that fails.

One daemon for the module; the browser is the session's (conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from clienthelp import DaemonProc
from dashhelp import dashboard_daemon, open_dashboard
from playwright.sync_api import BrowserContext

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
