"""The Run page (`#/runs/<run id>`) in a real Chromium against a real `dagd serve`: what a
person sees of a run as it happens: the graph's nodes turning green, a retried step's two
bars in the timeline, a failing step's error text, cancel and retry, and no controls for a
read-only token.

One daemon serves the whole module; each test triggers runs of its own. Steps that must wait
for the test wait on a file named by the run's `gate` param, which the test creates.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from clienthelp import DaemonProc, wait_for
from dashhelp import (
    OPERATE_TOKEN,
    READ_TOKEN,
    dashboard_daemon,
    open_dashboard,
    page_url,
    wait_live,
)
from playwright.sync_api import BrowserContext, Locator, Page, WebSocketRoute, expect
from websockets.sync.client import connect


def wide_dag(levels: int = 50, chains: int = 10) -> str:
    lines = ['[params]\ngate = ""']
    for level in range(levels):
        for chain in range(chains):
            lines.append(f"[steps.s{level:02d}_{chain}]")
            if level == 0:
                lines.append("command = 'until [ -e \"$DAGD_PARAM_GATE\" ]; do sleep 0.05; done'")
            else:
                lines.append('command = "true"')
                lines.append(f'depends_on = ["s{level - 1:02d}_{chain}"]')
    return "\n".join(lines) + "\n"


WIDE = wide_dag()

DAGS = {
    # `hold` waits for the gate file; `after` runs once it is through.
    "gated": """
        [params]
        gate = ""
        [steps.hold]
        command = 'echo waiting; until [ -e "$DAGD_PARAM_GATE" ]; do sleep 0.02; done; echo through'
        [steps.after]
        command = "true"
        depends_on = ["hold"]
    """,
    # `flaky` fails its first attempt and succeeds on its retry.
    "flaky": """
        [steps.flaky]
        command = 'if [ "$DAGD_ATTEMPT" -lt 2 ]; then echo "not yet" >&2; exit 3; fi'
        retries = 1
        [steps.after]
        command = "true"
        depends_on = ["flaky"]
    """,
    # `talk` prints 300 numbered lines, waits for the gate, prints 300 more.
    "talkative": """
        [params]
        gate = ""
        [steps.talk]
        command = '''
        seq -f "line %g" 1 300
        until [ -e "$DAGD_PARAM_GATE" ]; do sleep 0.02; done
        seq -f "line %g" 301 600
        '''
    """,
    # `flood` prints 310,000 bytes (5,000 lines of 62), more than the page keeps (256 KiB).
    "flood": """
        [steps.flood]
        command = 'seq -f "line %04g: ##################################################" 1 5000'
    """,
    # `bad` fails with markup in its stderr, which the page must show as text.
    "broken": """
        [steps.bad]
        command = 'echo "<b>boom</b> & <img src=x onerror=alert(1)>" >&2; exit 3'
        [handlers.on_failure]
        command = "true"
    """,
    # 500 steps in 50 levels (10 chains): a graph far wider than the window. The first
    # level waits for the gate, so the run stays small while the test looks at it.
    "wide": WIDE,
}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    d = dashboard_daemon(tmp_path_factory.mktemp("runpage"), DAGS)
    with d:
        d.start()
        d.wait_ready()
        yield d


def ask(d: DaemonProc, request: dict[str, Any]) -> dict[str, Any]:
    """One request over the daemon's WebSocket (an operate token), its answer (a subprocess
    of the CLI per request would cost a second each on a busy machine)."""
    with connect(d.url, open_timeout=10) as ws:
        ws.send(json.dumps({"type": "auth", "token": OPERATE_TOKEN}))
        assert json.loads(ws.recv(10))["type"] == "auth_success"
        ws.send(json.dumps({**request, "requestId": "t"}))
        while True:
            answer = json.loads(ws.recv(10))
            if answer.get("requestId") == "t":
                assert answer["type"] != "error", answer
                return answer


def trigger(d: DaemonProc, dag_id: str, wait: bool = False, **params: str) -> str:
    run_id: str = ask(d, {"type": "trigger", "dagId": dag_id, "params": params})["runId"]
    if wait:
        wait_for(
            lambda: d.run_statuses(dag_id).get(run_id) in ("success", "failed", "cancelled"),
            what=f"run {run_id} to end",
        )
    return run_id


def gate(d: DaemonProc) -> Path:
    return d.root / f"gate-{uuid.uuid4().hex}"


LOG_OUT = '.step-log .log-stream[data-stream="out"] .log-text'


def run_route(run_id: str, step: str | None = None) -> str:
    route = f"#/runs/{quote(run_id, safe='')}"
    return route if step is None else f"{route}?step={quote(step, safe='')}"


def open_run(
    context: BrowserContext, d: DaemonProc, run_id: str, token: str = OPERATE_TOKEN
) -> Page:
    page = open_dashboard(context, d, token, run_route(run_id))
    expect(page.locator(".run-header h1")).to_contain_text(run_id)
    return page


def node(page: Page, step: str) -> Locator:
    return page.locator(f'.run-graph .node[data-step-id="{step}"]')


def status_badge(page: Page) -> Locator:
    return page.locator(".run-header .run-status")


def test_graph_nodes_turn_success_live(context: BrowserContext, daemon: DaemonProc) -> None:
    g = gate(daemon)
    run_id = trigger(daemon, "gated", gate=str(g))
    page = open_run(context, daemon, run_id)
    expect(node(page, "hold")).to_have_attribute("data-status", "running")
    expect(node(page, "after")).to_have_attribute("data-status", "pending")
    expect(status_badge(page)).to_have_attribute("data-status", "running")

    g.touch()
    expect(node(page, "hold")).to_have_attribute("data-status", "success")
    expect(node(page, "after")).to_have_attribute("data-status", "success")
    expect(status_badge(page)).to_have_attribute("data-status", "success")
    expect(page.locator('.run-counts [data-status="success"] .count')).to_have_text("2")
    # The step table and the timeline follow the same events.
    expect(page.locator('.st-row[data-step-id="after"] .st-status')).to_have_text("success")
    after_bars = page.locator('.gantt-row[data-step-id="after"] .bar[data-status="success"]')
    expect(after_bars).to_have_count(1)


def test_retried_step_shows_a_bar_per_attempt(context: BrowserContext, daemon: DaemonProc) -> None:
    run_id = trigger(daemon, "flaky", wait=True)
    page = open_run(context, daemon, run_id)
    bars = page.locator('.gantt-row[data-step-id="flaky"] .bar')
    expect(bars).to_have_count(2)
    expect(bars.nth(0)).to_have_attribute("data-status", "retrying")
    expect(bars.nth(0)).to_have_attribute("data-attempt", "1")
    expect(bars.nth(1)).to_have_attribute("data-status", "success")
    expect(bars.nth(1)).to_have_attribute("data-attempt", "2")
    # Each bar names its attempt (the tooltip), the failed one with its error.
    expect(bars.nth(0).locator("title")).to_contain_text("attempt 1, retrying")
    expect(bars.nth(0).locator("title")).to_contain_text("exit code 3: not yet")
    expect(page.locator('.gantt-row[data-step-id="after"] .bar')).to_have_count(1)
    expect(page.locator('.st-row[data-step-id="flaky"] .st-retries')).to_have_text("1")
    # The critical path is the chain that ended last: flaky, then after.
    expect(page.locator(".gantt-critical .critical-steps")).to_have_text("flaky → after")
    expect(page.locator(".gantt-row.critical")).to_have_count(2)


def test_failing_step_error_text_is_shown_as_text(
    context: BrowserContext, daemon: DaemonProc
) -> None:
    run_id = trigger(daemon, "broken", wait=True)
    page = open_run(context, daemon, run_id)
    error = page.locator('.st-row[data-step-id="bad"] .st-error')
    expected = "exit code 3: <b>boom</b> & <img src=x onerror=alert(1)>"
    expect(error).to_have_text(expected)
    expect(error.locator("b, img")).to_have_count(0)
    expect(page.locator('.st-row[data-step-id="bad"]')).to_have_attribute("data-status", "failed")
    expect(status_badge(page)).to_have_attribute("data-status", "failed")
    expect(page.locator('.gantt-row[data-step-id="bad"] .bar')).to_have_attribute(
        "data-status", "failed"
    )
    # The failure handler ran after `bad`: a row of its own, no node in the graph, and the
    # last link of the critical path.
    expect(page.locator('.st-row[data-step-id="@on_failure"]')).to_have_attribute(
        "data-status", "success"
    )
    expect(node(page, "bad")).to_have_count(1)
    expect(node(page, "@on_failure")).to_have_count(0)
    expect(page.locator(".gantt-critical .critical-steps")).to_have_text("bad → @on_failure")
    # Choosing the step shows its error above its log, as text too.
    page.locator('.st-row[data-step-id="bad"]').click()
    expect(page.locator(".step-log .log-error")).to_have_text(expected)
    expect(page.locator(".step-log .log-error b")).to_have_count(0)
    assert page.evaluate("location.hash").endswith("?step=bad")
    # The keyboard reaches the rows too: ArrowDown to the handler's row, Enter chooses it.
    page.locator('.st-row[data-step-id="bad"]').focus()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    expect(page.locator(".step-log h2")).to_have_text("Log of @on_failure")


def test_live_log_line_appears_while_the_step_runs(
    context: BrowserContext, daemon: DaemonProc
) -> None:
    g = gate(daemon)
    run_id = trigger(daemon, "gated", gate=str(g))
    page = open_dashboard(context, daemon, OPERATE_TOKEN, run_route(run_id, "hold"))
    stdout = page.locator('.step-log .log-stream[data-stream="out"]')
    expect(stdout.locator(".log-text")).to_have_text("waiting\n")
    # The line came while the step still runs: nothing released it yet.
    expect(node(page, "hold")).to_have_attribute("data-status", "running")
    expect(stdout.locator(".log-state")).to_have_text("following…")

    g.touch()
    expect(stdout.locator(".log-text")).to_have_text("waiting\nthrough\n")
    expect(stdout.locator(".log-state")).to_have_text("")  # the log ended: complete
    expect(page.locator('.step-log .log-stream[data-stream="err"] .log-state')).to_have_text(
        "(no output)"
    )


def test_log_resumes_after_a_reconnect_without_repeating(
    context: BrowserContext, daemon: DaemonProc
) -> None:
    g = gate(daemon)
    run_id = trigger(daemon, "gated", gate=str(g))
    page = context.new_page()
    links: list[WebSocketRoute] = []

    def link(ws: WebSocketRoute) -> None:
        ws.connect_to_server()
        links.append(ws)

    page.route_web_socket(re.compile(r".*/api/v1/ws$"), link)
    page.goto(page_url(daemon, OPERATE_TOKEN))
    wait_live(page)
    page.evaluate("(hash) => { window.location.hash = hash; }", run_route(run_id, "hold"))
    text = page.locator(LOG_OUT)
    expect(text).to_have_text("waiting\n")

    with page.expect_websocket():  # the page connects again
        links[-1].close(code=1001, reason="test")  # as when the daemon restarts
    wait_live(page)
    assert len(links) == 2
    g.touch()
    expect(text).to_have_text("waiting\nthrough\n")  # the rest once, nothing twice
    expect(node(page, "hold")).to_have_attribute("data-status", "success")


def test_log_follows_the_newest_line_until_scrolled_up(
    context: BrowserContext, daemon: DaemonProc
) -> None:
    g = gate(daemon)
    run_id = trigger(daemon, "talkative", gate=str(g))
    page = open_dashboard(context, daemon, OPERATE_TOKEN, run_route(run_id, "talk"))
    text = page.locator('.step-log .log-stream[data-stream="out"] .log-text')
    expect(text).to_contain_text("line 300\n")
    at_bottom = "(el) => el.scrollTop + el.clientHeight >= el.scrollHeight - 4"
    page.wait_for_function(f"() => ({at_bottom})(document.querySelector('{LOG_OUT}'))")

    text.evaluate("(el) => { el.scrollTop = 0; el.dispatchEvent(new Event('scroll')); }")
    g.touch()
    expect(text).to_contain_text("line 600\n")
    assert text.evaluate("(el) => el.scrollTop") == 0  # the person's place is kept

    # Back at the bottom, it follows again.
    text.evaluate("(el) => { el.scrollTop = el.scrollHeight; }")
    page.wait_for_function(f"() => ({at_bottom})(document.querySelector('{LOG_OUT}'))")


def test_log_keeps_the_last_part_of_a_long_output(
    context: BrowserContext, daemon: DaemonProc
) -> None:
    run_id = trigger(daemon, "flood", wait=True)
    received = {"log": 0}

    def count(payload: str | bytes) -> None:
        if isinstance(payload, str) and '"type":"log_chunk"' in payload.replace(" ", ""):
            received["log"] += len(payload.encode())

    context.on("page", lambda p: p.on("websocket", lambda ws: ws.on("framereceived", count)))
    page = open_dashboard(context, daemon, OPERATE_TOKEN, run_route(run_id, "flood"))
    pane = page.locator('.step-log .log-stream[data-stream="out"]')
    last = f"line 5000: {'#' * 50}\n"
    expect(pane.locator(".log-text")).to_contain_text(last)
    expect(pane.locator(".log-note")).to_contain_text("dagd logs RUN STEP prints all of it")
    shown = pane.locator(".log-text").evaluate("(el) => el.textContent")
    assert shown.endswith(last)
    assert "line 0001:" not in shown  # the start was dropped
    assert len(shown.encode()) <= 256 * 1024
    # What is shown is whole lines of the end of the log, in order, nothing twice.
    lines = shown.splitlines()
    assert lines[0].startswith("line ")  # whole lines only
    first = int(lines[0][5:9])
    assert [int(x[5:9]) for x in lines if x.startswith("line ")] == list(range(first, 5001))
    # Only the end of the log came over the socket (follow_log's `tail`), not all 310,000 bytes.
    assert 200_000 < received["log"] < 256 * 1024 + 10_000


def test_cancel_and_retry_from_the_page(context: BrowserContext, daemon: DaemonProc) -> None:
    g = gate(daemon)
    run_id = trigger(daemon, "gated", gate=str(g))
    page = open_run(context, daemon, run_id)
    cancel = page.get_by_role("button", name="Cancel run")
    retry = page.get_by_role("button", name="Retry run")
    expect(node(page, "hold")).to_have_attribute("data-status", "running")
    expect(retry).to_be_disabled()

    cancel.click()
    expect(status_badge(page)).to_have_attribute("data-status", "cancelled")
    expect(page.locator(".run-message")).to_contain_text("Cancel accepted")
    expect(node(page, "hold")).to_have_attribute("data-status", "cancelled")
    expect(cancel).to_be_disabled()

    retry.click()
    expect(page.locator(".run-message")).to_contain_text("Retry accepted")
    expect(node(page, "hold")).to_have_attribute("data-status", "running")
    g.touch()
    expect(status_badge(page)).to_have_attribute("data-status", "success")
    # The cancelled attempt and the one after the retry are two bars of one row.
    bars = page.locator('.gantt-row[data-step-id="hold"] .bar')
    expect(bars).to_have_count(2)
    expect(bars.nth(0)).to_have_attribute("data-status", "cancelled")
    expect(bars.nth(1)).to_have_attribute("data-status", "success")


def test_the_daemons_refusal_is_shown(context: BrowserContext, daemon: DaemonProc) -> None:
    """A page that has not yet heard that someone else retried the run offers Retry; the
    daemon refuses it (`not_finished`) and the page says so."""
    g = gate(daemon)
    run_id = trigger(daemon, "gated", gate=str(g))
    ask(daemon, {"type": "cancel", "runId": run_id})
    wait_for(lambda: daemon.run_statuses("gated")[run_id] == "cancelled", what="the cancel")
    page = context.new_page()
    held = {"on": False}

    def link(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()
        ws.on_message(lambda message: server.send(message))
        # While `held`, DAG events (they carry "seq" and "data") do not reach the page.
        server.on_message(
            lambda message: (
                None
                if held["on"] and isinstance(message, str) and '"data"' in message
                else ws.send(message)
            )
        )

    page.route_web_socket(re.compile(r".*/api/v1/ws$"), link)
    page.goto(page_url(daemon, OPERATE_TOKEN))
    wait_live(page)
    page.evaluate("(hash) => { window.location.hash = hash; }", run_route(run_id))
    expect(status_badge(page)).to_have_attribute("data-status", "cancelled")

    held["on"] = True
    ask(daemon, {"type": "retry", "runId": run_id})
    page.get_by_role("button", name="Retry run").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("not_finished")
    g.touch()


def test_read_token_sees_no_controls(context: BrowserContext, daemon: DaemonProc) -> None:
    run_id = trigger(daemon, "broken", wait=True)
    page = open_run(context, daemon, run_id, token=READ_TOKEN)
    expect(status_badge(page)).to_have_attribute("data-status", "failed")
    expect(page.locator('.st-row[data-step-id="bad"]')).to_be_visible()
    expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
    expect(page.get_by_role("button", name="Retry run")).to_have_count(0)
    expect(page.locator(".run-controls button")).to_have_count(0)


def test_unknown_run_is_said_plainly(context: BrowserContext, daemon: DaemonProc) -> None:
    page = open_dashboard(context, daemon, OPERATE_TOKEN, run_route("manual__no-such-run"))
    expect(page.get_by_role("alert")).to_contain_text("No run manual__no-such-run")


CRITICAL_PATH = """async (steps) => {
    const { RunModel, criticalPath } = await import("/assets/runmodel.js");
    const t = (ms) => new Date(Date.UTC(2024, 0, 1) + ms).toISOString();
    const answer = {
        record: {dagId: "d", runId: "r", status: "success", params: {}},
        steps: steps.map(([stepId, dependsOn, start, end, handler]) => ({
            stepId, dependsOn, status: "success", handler,
            attempts: [{attempt: 1, status: "success", startTime: t(start), endTime: t(end)}],
        })),
    };
    return criticalPath(new RunModel(answer), 0);
}"""


@pytest.mark.parametrize(
    ("steps", "path"),
    [
        # The chain the run's end waited for: the upstream that finished last, each time.
        (
            [
                ["a", [], 0, 10, None],
                ["b", ["a"], 10, 50, None],
                ["c", ["a"], 10, 20, None],
                ["d", ["b", "c"], 50, 60, None],
            ],
            ["a", "b", "d"],
        ),
        # Fast steps end in the same ms: the deeper step is the later one.
        (
            [
                ["root", [], 0, 0, None],
                ["m1", ["root"], 0, 1, None],
                ["m2", ["root"], 0, 1, None],
                ["sink", ["m1", "m2"], 1, 1, None],
            ],
            ["root", "m2", "sink"],
        ),
        # A lifecycle handler waited for every ordinary step and the handlers before it.
        (
            [
                ["x", [], 0, 30, None],
                ["y", [], 0, 10, None],
                ["@on_failure", [], 30, 35, "on_failure"],
                ["@always", [], 35, 40, "always"],
            ],
            ["x", "@on_failure", "@always"],
        ),
    ],
)
def test_critical_path(
    context: BrowserContext, daemon: DaemonProc, steps: list[list[Any]], path: list[str]
) -> None:
    page = open_dashboard(context, daemon, OPERATE_TOKEN)
    assert page.evaluate(CRITICAL_PATH, steps) == path


def test_a_wide_run_graph_stays_in_its_card_and_draws_only_the_part_in_view(
    context: BrowserContext, daemon: DaemonProc
) -> None:
    g = gate(daemon)
    run_id = trigger(daemon, "wide", gate=str(g))
    try:
        page = open_run(context, daemon, run_id)
        info = page.locator(".run-graph .graph-info")
        expect(info).to_contain_text("only the part in view is drawn")
        box = page.locator(".run-graph .graph-box")
        sizes = page.evaluate(
            """() => ({
                page: document.documentElement.scrollWidth,
                window: window.innerWidth,
                box: document.querySelector(".run-graph .graph-box").getBoundingClientRect().width,
                card: document.querySelector(".run-graph").getBoundingClientRect().width,
            })"""
        )
        assert sizes["page"] <= sizes["window"], sizes
        assert sizes["box"] <= sizes["card"] + 1 and sizes["card"] < sizes["window"], sizes
        drawn = page.locator(".run-graph g.node").count()
        assert 0 < drawn < 500, drawn
        svg = box.locator("svg.graph")
        wide = float(svg.get_attribute("width") or 0)
        page.locator(".run-graph .graph-tools button", has_text="Fit").click()
        box_width = box.evaluate("(el) => el.clientWidth")
        fitted = float(svg.get_attribute("width") or 0)
        assert fitted < wide and fitted <= box_width, (wide, fitted, box_width)
    finally:
        ask(daemon, {"type": "cancel", "runId": run_id})


LEFT_OF = """([first, second]) => {
    // Where each word is drawn: a right-to-left override before them would swap them.
    const box = (word) => {
        const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
        for (let node = walker.nextNode(); node; node = walker.nextNode()) {
            const at = node.data.indexOf(word);
            if (at < 0) continue;
            const range = document.createRange();
            range.setStart(node, at);
            range.setEnd(node, at + word.length);
            return range.getBoundingClientRect().left;
        }
        return null;
    };
    return [box(first), box(second)];
}"""


def test_a_right_to_left_override_in_an_id_does_not_reverse_the_text_after_it(
    context: BrowserContext, daemon: DaemonProc
) -> None:
    run_id = "manual__\u202eevil"
    page = open_dashboard(context, daemon, OPERATE_TOKEN, run_route(run_id))
    expect(page.get_by_role("alert")).to_contain_text("history retention")
    history, retention = page.evaluate(LEFT_OF, ["history", "retention"])
    assert history is not None and retention is not None
    assert history < retention  # read left to right, as written


def test_a_right_to_left_override_in_a_param_stays_inside_the_value(
    context: BrowserContext, daemon: DaemonProc
) -> None:
    run_id = trigger(daemon, "gated", gate="\u202eevil")
    try:
        page = open_run(context, daemon, run_id)
        value = page.locator(".run-params bdi", has_text="evil")
        expect(value).to_have_count(1)
        assert value.evaluate("(el) => getComputedStyle(el).unicodeBidi") == "isolate"
    finally:
        ask(daemon, {"type": "cancel", "runId": run_id})
