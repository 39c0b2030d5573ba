// The Run page, `#/runs/<run id>[?step=<step id>]`: one run of a DAG, live.
//
// It reads the run with `get_run` (docs/protocol.md, "One run"), subscribes to the run's DAG and
// keeps a RunModel (runmodel.js) current from the run's events; changes are drawn at most every
// REDRAW_MS: the header (status, times, counts), the graph (graph.js, nodes
// coloured by this run's step statuses), the Gantt chart of attempts (gantt.js), the step table
// (runtable.js) and the log of the chosen step (steplog.js). An `operate` token sees Cancel and
// Retry; the daemon's answer, or its error, is shown under them.

import { drawGraph } from "./graph.js";
import { dagHref, runHref } from "./routes.js";
import { Gantt } from "./gantt.js";
import { FINISHED_RUN, RunModel, formatDuration, formatTime, graphOf } from "./runmodel.js";
import { StepTable } from "./runtable.js";
import { h } from "./dom.js";
import { rateLimit } from "./runvlist.js";
import { StepLog } from "./steplog.js";

// Least time between two redraws of the page while events flow (ms): a person cannot follow
// faster, and a 2,000-step fan-out's burst of events then costs a few redraws, not hundreds.
const REDRAW_MS = 150;
// Most graph nodes recoloured per redraw (see recolourGraph).
const GRAPH_BATCH = 250;

const COUNT_ORDER = ["success", "running", "retrying", "pending", "failed", "upstream_failed", "cancelled", "skipped"];
const COUNT_LABEL = {
  success: "succeeded",
  running: "running",
  retrying: "retrying",
  pending: "pending",
  failed: "failed",
  upstream_failed: "upstream failed",
  cancelled: "cancelled",
  skipped: "skipped",
};

/**
 * Mount the page in `root` (app.js's page contract, docs/dashboard.md).
 * @param ctx.client the tab's DagdClient (ws.js)
 * @param ctx.params.runId the run (decoded)
 * @param ctx.query URLSearchParams: `step` selects a step
 * @param ctx.role "read" | "operate": only operate sees Cancel and Retry
 * @returns {{destroy(): void, update(query): void}}
 */
export function mount(root, ctx) {
  const page = new RunPage(root, ctx.client, ctx.role, ctx.params.runId, ctx.query.get("step"));
  page.start();
  return { destroy: () => page.destroy(), update: (query) => page.choose(query.get("step"), false) };
}

class RunPage {
  constructor(root, conn, role, runId, step) {
    this.root = root;
    this.conn = conn;
    this.role = role;
    this.runId = runId;
    this.wanted = step ?? null;
    this.model = null;
    this.graph = null;
    this.graphTimer = null;
    this.destroyed = false;
    this.buffer = [];
    this.changedSteps = new Set();
    this.graphPending = new Set(); // steps whose node still shows an older status
    this.frame = rateLimit(() => this.draw(), REDRAW_MS);
    this.ticker = null;
    this.page = h("div", { class: "run-page" });
    this.page.append(h("p", { class: "run-loading" }, "Loading the run…"));
    root.replaceChildren(this.page);
  }

  async start() {
    // The client is subscribed to every DAG from its start: listen before asking for the run,
    // hold what arrives until the answer, then apply it (an event the answer already contains
    // changes nothing for good: a later event of the same step always follows it).
    this.offEvent = this.conn.on("event", (ev) => this.event(ev));
    this.offResync = this.conn.on("resync", () => this.load());
    await this.load();
  }

  /** Read the run (again, after a resync) and draw it, applying the events that came meanwhile. */
  async load() {
    this.buffer = [];
    this.buffering = true;
    let answer;
    try {
      answer = await this.conn.request({ type: "get_run", runId: this.runId });
    } catch (err) {
      this.buffering = false;
      if (this.destroyed) return;
      if (this.model) {
        this.say(describe(err), "error");
        return;
      }
      const why =
        err.code === "unknown_run"
          ? ["No run ", h("bdi", {}, this.runId), " (history retention may have deleted it)."]
          : h("bdi", {}, describe(err));
      this.page.replaceChildren(h("h1", {}, "Run"), h("p", { class: "run-message", "data-kind": "error", role: "alert" }, why));
      return;
    }
    if (this.destroyed) return;
    const fresh = new RunModel(answer);
    for (const ev of this.buffer) fresh.apply(ev);
    this.buffering = false;
    this.buffer = [];
    if (this.model === null) {
      this.model = fresh;
      this.build();
      return;
    }
    this.model.reset(fresh);
    for (const id of this.model.order) this.changedSteps.add(id);
    this.frame.schedule();
  }

  event(ev) {
    if (this.destroyed) return;
    if (this.buffering) {
      if (ev.data && ev.data.runId === this.runId) this.buffer.push(ev);
      return;
    }
    if (!this.model) return;
    const changed = this.model.apply(ev);
    if (!changed) return;
    if (changed.step) this.changedSteps.add(changed.step);
    this.frame.schedule();
  }

  build() {
    const m = this.model;
    this.title = h("h1");
    this.facts = h("dl", { class: "run-facts" });
    this.counts = h("ul", { class: "run-counts", "aria-label": "steps by status" });
    this.controls = h("div", { class: "run-controls" });
    this.message = h("p", { class: "run-message", role: "status" });
    const header = h("header", { class: "run-header" });
    header.append(this.title, this.facts, this.counts, this.controls, this.message);

    const graphBox = h("div", { class: "run-graph-box" });
    const ganttBox = h("div");
    const tableBox = h("div");
    const logBox = h("div");
    this.page.replaceChildren(
      header,
      section("Graph", graphBox, "run-graph"),
      section("Timeline", ganttBox, "run-gantt"),
      section("Steps", tableBox, "run-steps"),
      logBox,
    );
    const onSelect = (id) => this.choose(id, true);
    this.graphBox = graphBox;
    this.gantt = new Gantt(ganttBox, m, { onSelect });
    this.table = new StepTable(tableBox, m, { onSelect });
    this.log = new StepLog(logBox, this.conn, this.runId);
    this.buildHeader();
    this.buildControls();
    for (const id of m.order) this.changedSteps.add(id);
    this.draw();
    if (this.wanted) this.choose(this.wanted, false);
    // The graph of a big run is the costliest part to lay out: draw it in a task of its own,
    // after the rest of the page is shown.
    this.graphTimer = setTimeout(() => this.drawGraphNow(), 0);
  }

  /** Recolour at most GRAPH_BATCH nodes now, the rest at the next redraws: the browser lays
   * out every recoloured node again, and a thousand at once is a task of several hundred ms. */
  recolourGraph() {
    if (!this.graph || this.graphPending.size === 0) return;
    let n = 0;
    for (const id of this.graphPending) {
      if (n++ >= GRAPH_BATCH) break;
      this.graph.setStatus(id, this.model.steps.get(id).status);
      this.graphPending.delete(id);
    }
    if (this.graphPending.size) this.frame.schedule();
  }

  drawGraphNow() {
    if (this.destroyed) return;
    this.graph = drawGraph(this.graphBox, graphOf(this.model), { onSelect: (id) => this.choose(id, true) });
    for (const id of this.model.order) this.graphPending.add(id);
    this.recolourGraph();
    if (this.selected) this.graph.select?.(this.selected);
  }

  buildControls() {
    if (this.role !== "operate") {
      this.controls.hidden = true;
      return;
    }
    this.cancelButton = h("button", { type: "button", class: "run-cancel" }, "Cancel run");
    this.retryButton = h("button", { type: "button", class: "run-retry" }, "Retry run");
    this.cancelButton.addEventListener("click", () => this.control("cancel", "cancel_accepted"));
    this.retryButton.addEventListener("click", () => this.control("retry", "retry_accepted"));
    this.controls.append(this.cancelButton, this.retryButton);
  }

  async control(type, accepted) {
    const button = type === "cancel" ? this.cancelButton : this.retryButton;
    button.disabled = true;
    this.say(type === "cancel" ? "Cancelling…" : "Queueing the run again…", "info");
    try {
      const answer = await this.conn.request({ type, runId: this.runId });
      if (this.destroyed) return;
      this.say(
        answer.type === accepted
          ? type === "cancel"
            ? "Cancel accepted: running steps are being stopped."
            : "Retry accepted: the failed and cancelled steps run again."
          : `Unexpected answer: ${answer.type}`,
        "info",
      );
    } catch (err) {
      if (!this.destroyed) this.say(describe(err), "error");
    } finally {
      if (!this.destroyed) this.drawControls();
    }
  }

  say(text, kind) {
    this.message.setAttribute("data-kind", kind);
    this.message.setAttribute("role", kind === "error" ? "alert" : "status");
    this.message.textContent = text;
  }

  /** Select a step (graph, Gantt or table click, or the route's ?step=). */
  choose(stepId, byPerson) {
    if (!this.model) {
      this.wanted = stepId;
      return;
    }
    const step = stepId !== null ? this.model.steps.get(stepId) ?? null : null;
    this.selected = step ? stepId : null;
    this.graph?.select?.(this.selected);
    this.gantt.select(this.selected);
    this.table.select(this.selected);
    this.log.show(step);
    if (byPerson && step) {
      // The address names the step (a link to it can be shared); replaceState changes it
      // without a hashchange, so the page is not mounted again.
      const hash = runHref(this.runId, stepId);
      if (location.hash !== hash) history.replaceState(null, "", hash);
    }
  }

  draw() {
    if (this.destroyed || !this.model) return;
    const m = this.model;
    const now = Date.now();
    this.drawHeader(now);
    if (this.changedSteps.size) {
      this.gantt.update();
      this.table.update();
    }
    for (const id of this.changedSteps) this.graphPending.add(id);
    if (this.selected && this.changedSteps.has(this.selected)) this.log.show(m.steps.get(this.selected));
    this.changedSteps.clear();
    this.recolourGraph();
    this.drawControls();
    // Running bars and durations grow while the run is not over.
    const live = !FINISHED_RUN.has(m.status);
    if (live && this.ticker === null) {
      this.ticker = setInterval(() => {
        this.gantt.update();
        this.table.update(false);
        this.frame.schedule();
      }, 1000);
    } else if (!live && this.ticker !== null) {
      clearInterval(this.ticker);
      this.ticker = null;
      this.gantt.update();
    }
  }

  /** The header's parts that never change for a run (DAG, trigger, parent, params), and
   * placeholders for the rest, which drawHeader fills. */
  buildHeader() {
    const m = this.model;
    this.statusBadge = h("span", { class: "run-status", "data-status": m.status }, m.status);
    this.title.replaceChildren(document.createTextNode("Run "), h("code", {}, m.runId), document.createTextNode(" "), this.statusBadge);
    const facts = [
      ["DAG", h("a", { href: dagHref(m.dagId) }, m.dagId)],
      ["Trigger", m.trigger ?? "unknown"],
    ];
    if (m.parentRunId) {
      facts.push(["Parent run", h("a", { href: runHref(m.parentRunId) }, m.parentRunId)]);
    }
    if (m.triggeredBy) {
      facts.push(["Triggered by", h("a", { href: runHref(m.triggeredBy) }, m.triggeredBy)]);
    }
    const keys = Object.keys(m.params).sort();
    if (keys.length) {
      const list = h("ul", { class: "run-params" });
      for (const k of keys) {
        const li = h("li");
        // Each outside string in a <bdi>: a bidi control in one cannot reorder the rest.
        li.append(h("code", {}, h("bdi", {}, k), " = ", h("bdi", {}, String(m.params[k]))));
        list.append(li);
      }
      facts.push(["Params", list]);
    } else {
      facts.push(["Params", "none"]);
    }
    this.times = {};
    for (const k of ["Queued", "Started", "Ended", "Duration"]) {
      this.times[k] = h("dd", { "data-fact": k.toLowerCase() });
      facts.push([k, this.times[k]]);
    }
    const out = [];
    for (const [k, v] of facts) {
      let dd = v;
      if (!(v instanceof HTMLElement && v.tagName === "DD")) {
        dd = h("dd", { "data-fact": k.toLowerCase().replace(" ", "-") });
        if (typeof v === "string") dd.textContent = v;
        else dd.append(v);
      }
      out.push(h("dt", {}, k), dd);
    }
    this.facts.replaceChildren(...out);
    this.countsKey = "";
  }

  /** Update what changes: status, times, duration, counts (text written only when it differs,
   * so an unchanged header costs the browser no layout). */
  drawHeader(now) {
    const m = this.model;
    if (this.statusBadge.getAttribute("data-status") !== m.status) {
      this.statusBadge.setAttribute("data-status", m.status);
      this.statusBadge.textContent = m.status;
    }
    setText(this.times.Queued, formatTime(m.queuedAt) || "—");
    setText(this.times.Started, formatTime(m.startedAt) || "not yet");
    setText(this.times.Ended, formatTime(m.endedAt) || (FINISHED_RUN.has(m.status) ? "—" : "not yet"));
    setText(this.times.Duration, formatDuration(m.duration(now)) || "—");

    const counts = m.counts();
    const key = COUNT_ORDER.map((st) => counts[st] || 0).join(",");
    if (key === this.countsKey) return;
    this.countsKey = key;
    const items = [h("li", { class: "run-total", "data-status": "total" }, `${m.order.length} steps`)];
    for (const status of COUNT_ORDER) {
      if (!counts[status]) continue;
      const li = h("li", { "data-status": status });
      li.append(h("span", { class: "count" }, String(counts[status])), document.createTextNode(` ${COUNT_LABEL[status]}`));
      items.push(li);
    }
    this.counts.replaceChildren(...items);
  }

  drawControls() {
    if (!this.cancelButton) return;
    const status = this.model.status;
    this.cancelButton.disabled = !(status === "queued" || status === "running");
    this.retryButton.disabled = !(status === "failed" || status === "cancelled");
  }

  destroy() {
    this.destroyed = true;
    this.frame.cancel();
    if (this.ticker !== null) clearInterval(this.ticker);
    clearTimeout(this.graphTimer);
    this.offEvent?.();
    this.offResync?.();
    this.graph?.destroy?.();
    this.gantt?.destroy();
    this.table?.destroy();
    this.log?.destroy();
  }
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function section(title, body, cls) {
  const s = h("section", { class: cls });
  s.append(h("h2", {}, title), body);
  return s;
}

/** "code: the daemon's message" for a DagdError (ws.js), the message for anything else. */
function describe(err) {
  if (err && err.code) return `${err.code}: ${err.detail ?? err.message ?? ""}`;
  return String(err?.message ?? err);
}
