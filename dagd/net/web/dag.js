// The DAG page (#/dags/<dagId>): the DAG as a graph coloured by the selected run's step
// statuses (live), its params with their defaults, a trigger form offering them (operate
// tokens only), the selected run (status, params, times), the definition of a clicked step,
// and the grid of recent runs by step.
//
// The selected run is the newest one, following new runs as they start, until a person picks
// a run in the grid's head; a run triggered from the form is selected.
//
// Data: get_dag (steps, edges, levels), list_runs (recent runs), get_run (the selected run,
// and the grid's runs: at most GRID_CELLS / steps of them, so a 1,000-step DAG fetches a few
// runs, not twenty thousand step rows). Live: step_status and dag_run_status events of this
// DAG; after a resync (events lost) everything is loaded again.

import { debounce, eventKey, frameBatcher, h, inBatches, replace } from "./dom.js";
import { dateTime, duration, relative } from "./format.js";
import { createGraph } from "./graph.js";
import { createGrid } from "./grid.js";
import { dagsHref, runHref } from "./routes.js";
import { statusLabel, statusSymbol } from "./status.js";

const RECENT_RUNS = 20;
const GRID_CELLS = 5000;

export function mount(root, ctx) {
  const page = new DagPage(root, ctx);
  page.load();
  return page;
}

function pill(status) {
  return h("span", { class: "status-pill", dataset: { status: status || "" } },
    h("span", { "aria-hidden": "true" }, statusSymbol(status)), statusLabel(status));
}

function fact(term, ...value) {
  return h("div", {}, h("dt", {}, term), h("dd", {}, ...value));
}

class DagPage {
  constructor(root, ctx) {
    this.root = root;
    this.client = ctx.client;
    this.dagId = ctx.params.dagId;
    this.canOperate = ctx.role === "operate";
    this.detail = null;
    this.graph = null;
    this.grid = null;
    this.runs = [];               // [{runId, status, ...record}], oldest first
    this.selected = null;         // run id whose statuses colour the graph
    this.pinned = false;          // a person chose the run: do not follow new ones
    this.selectedLive = new Map();  // step statuses of the selected run seen in events
    this.gridLive = new Map();    // runId -> Map(stepId -> status) seen while loading
    this.destroyed = false;
    this.generation = 0;
    // Bounded while the tab is hidden: the newest event per step and status, else a new load.
    this.batch = frameBatcher((events) => this.apply(events), { key: eventKey, onOverflow: () => this.load() });
    this.reloadHead = debounce(() => this.loadHead(), 500);
    this.offs = [
      this.client.on("event", (event) => {
        if (event.data && event.data.dagId === this.dagId) this.batch.push(event);
      }),
      this.client.on("resync", () => this.load()),
    ];
    replace(root, h("p", { class: "muted loading" }, `Loading ${this.dagId}…`));
  }

  destroy() {
    this.destroyed = true;
    this.offs.forEach((off) => off());
    this.batch.cancel();
    this.reloadHead.cancel();
    this.graph?.destroy();
    this.grid?.destroy();
  }

  // ------------------------------------------------------------------ loading

  async load() {
    const generation = ++this.generation;
    // Step events while this load runs, for the grid's columns; dropped however the load
    // ends (a failed get_dag must not leave it recording every event for good).
    this.gridLive = new Map();
    try {
      await this.loadAll(generation);
    } finally {
      if (generation === this.generation) this.gridLive = null;
    }
  }

  async loadAll(generation) {
    let detail;
    try {
      detail = await this.client.request({ type: "get_dag", dagId: this.dagId });
    } catch (err) {
      if (!this.destroyed) this.showError(err);
      return;
    }
    if (this.destroyed || generation !== this.generation) return;
    this.detail = detail;
    this.layout();
    this.graph?.destroy();
    this.graph = createGraph(this.graphBox, detail, { onSelect: (stepId) => this.showStep(stepId) });
    this.grid?.destroy();
    this.handlers = detail.handlers || [];
    this.drawHandlers();
    this.grid = createGrid(this.gridBox, [...detail.steps, ...this.handlers].map((st) => st.stepId), {
      onSelectRun: (runId) => this.selectRun(runId, true),
    });
    let runs = [];
    try {
      runs = (await this.client.request(
        { type: "list_runs", dagId: this.dagId, limit: RECENT_RUNS },
      )).runs.reverse();
    } catch (err) {
      replace(this.gridBox, h("p", { class: "error-text" }, `Could not list runs: ${err.message}`));
    }
    if (this.destroyed || generation !== this.generation) return;
    this.runs = runs;
    const newest = runs.length ? runs[runs.length - 1].runId : null;
    const keep = this.selected && runs.some((r) => r.runId === this.selected);
    this.selectRun(keep ? this.selected : newest, this.pinned && keep);
    await this.loadGrid(generation);
  }

  async loadGrid(generation) {
    const steps = Math.max(1, this.detail.steps.length);
    const count = Math.min(this.runs.length, Math.max(3, Math.floor(GRID_CELLS / steps)));
    const runs = this.runs.slice(-count);
    const details = await inBatches(runs.map((run) => () => this.client.request(
      { type: "get_run", runId: run.runId },
    )));
    if (this.destroyed || generation !== this.generation) return;
    // Runs that started while the answers came are columns too, from their events so far.
    const started = this.runs.filter((run) => !runs.includes(run));
    this.grid.setRuns([...runs, ...started].map((run, i) => {
      const steps = {};
      const answer = details[i];
      if (answer && !(answer instanceof Error)) {
        for (const step of answer.steps) steps[step.stepId] = step.status;
      }
      for (const [stepId, status] of this.gridLive.get(run.runId) || []) steps[stepId] = status;
      return { runId: run.runId, status: run.status, steps };
    }));
    this.gridLive = null;
    this.grid.selectRun(this.selected);
  }

  async loadHead() {
    // paused / next run / file error moved: the summary is cheap to ask again
    try {
      const detail = await this.client.request({ type: "get_dag", dagId: this.dagId });
      if (this.destroyed) return;
      this.detail.summary = detail.summary;
      replace(this.head, ...this.headContent());
    } catch {
      // the next event or resync tries again
    }
  }

  showError(err) {
    const unknown = err.code === "unknown_dag";
    replace(this.root, h("section", { class: "card" },
      h("h1", {}, this.dagId),
      h("p", { class: "error-text", role: "alert" }, unknown
        ? "The daemon has no DAG with this id loaded."
        : `Could not load this DAG: ${err.message}`),
      h("p", {}, h("a", { href: dagsHref() }, "All DAGs"))));
  }

  // ------------------------------------------------------------------ selection

  async selectRun(runId, pinned) {
    this.pinned = pinned;
    if (runId !== this.selected) {
      this.selected = runId;
      this.selectedLive = new Map();
      this.graph?.clearStatuses();
      this.handlerStatuses = new Map();
      this.paintHandlers();
    }
    this.grid?.selectRun(runId);
    this.renderSelected(runId ? this.runs.find((r) => r.runId === runId) || { runId } : null);
    if (!runId) return;
    let detail;
    try {
      detail = await this.client.request({ type: "get_run", runId });
    } catch {
      return;
    }
    if (this.destroyed || this.selected !== runId) return;
    const statuses = {};
    for (const step of detail.steps) {
      statuses[step.stepId] = this.selectedLive.get(step.stepId) || step.status;
    }
    this.graph.setStatuses(statuses);
    for (const handler of this.handlers) {
      if (statuses[handler.stepId]) this.handlerStatuses.set(handler.stepId, statuses[handler.stepId]);
    }
    this.paintHandlers();
    const record = this.runs.find((r) => r.runId === runId);
    const merged = { ...detail.record, status: record?.status || detail.record.status };
    this.renderSelected(merged, detail);
  }

  // ------------------------------------------------------------------ live events

  apply(events) {
    if (!this.detail) return;
    let headChanged = false;
    let selectedChanged = false;
    let handlersChanged = false;
    for (const { type, data } of events) {
      if (type === "step_status") {
        if (this.gridLive) {
          if (!this.gridLive.has(data.runId)) this.gridLive.set(data.runId, new Map());
          this.gridLive.get(data.runId).set(data.stepId, data.status);
        }
        this.grid?.setStepStatus(data.runId, data.stepId, data.status);
        if (data.runId === this.selected) {
          this.selectedLive.set(data.stepId, data.status);
          this.graph?.setStatus(data.stepId, data.status);
          if (this.handlerChips?.has(data.stepId)) {
            this.handlerStatuses.set(data.stepId, data.status);
            handlersChanged = true;
          }
        }
      } else if (type === "dag_run_status") {
        let run = this.runs.find((r) => r.runId === data.runId);
        if (!run) {
          run = { runId: data.runId, status: data.status, params: null };
          this.runs.push(run);
          if (this.runs.length > RECENT_RUNS) this.runs.shift();
          if (!this.pinned) this.selectRun(data.runId, false);
        }
        run.status = data.status;
        if (data.status === "running" && !run.startedAt) run.startedAt = data.timestamp;
        if (["success", "failed", "cancelled"].includes(data.status)) run.endedAt = data.timestamp;
        this.grid?.setRunStatus(data.runId, data.status);
        if (data.runId === this.selected) selectedChanged = true;
      } else if (type === "dag_status") {
        this.detail.summary.paused = data.paused;
        this.detail.summary.fileError = data.fileError;
        headChanged = true;
      }
    }
    if (headChanged) {
      replace(this.head, ...this.headContent());
      this.reloadHead.call();  // nextRun follows paused
    }
    if (selectedChanged) this.refreshSelectedStatus();
    if (handlersChanged) this.paintHandlers();
  }

  refreshSelectedStatus() {
    const run = this.runs.find((r) => r.runId === this.selected);
    const el = this.selectedBox.querySelector(".sel-run-status");
    if (run && el) replace(el, pill(run.status));
  }

  // ------------------------------------------------------------------ drawing

  layout() {
    const summary = this.detail.summary;
    this.head = h("section", { class: "card dag-head-card", "aria-label": "DAG" });
    this.pauseMessage = h("p", { class: "pause-message" });
    replace(this.head, ...this.headContent());
    this.graphBox = h("div", { class: "graph-container" });
    this.handlersBox = h("div", { class: "handlers" });
    this.gridBox = h("div", { class: "grid-box" });
    this.selectedBox = h("section", { class: "card selected-run", "aria-label": "Selected run" });
    this.stepBox = h("section", { class: "card step-definition", "aria-label": "Step" },
      h("h2", {}, "Step"), h("p", { class: "muted" }, "Click a step in the graph to see its definition."));
    replace(this.root,
      h("p", {}, h("a", { href: dagsHref() }, "← All DAGs")),
      this.head,
      h("div", { class: "dag-columns" },
        h("div", {},
          h("section", { class: "card", "aria-label": "Graph" },
            h("h2", {}, "Graph"),
            h("div", { class: "legend", "aria-hidden": "true" }, ["pending", "running", "retrying", "success", "failed", "upstream_failed", "skipped", "cancelled"].map((st) => h("span", {}, h("span", { class: "square", dataset: { status: st } }), `${statusSymbol(st)} ${statusLabel(st)}`))),
            this.graphBox,
            this.handlersBox),
          h("section", { class: "card", "aria-label": "Recent runs" },
            h("h2", {}, "Recent runs"),
            h("p", { class: "muted" }, "A column per run (newest right), a row per step. Click a cell to open that step of that run, a column's head to colour the graph with that run."),
            this.gridBox)),
        h("div", {},
          this.canOperate ? this.triggerForm(summary) : null,
          this.paramsCard(summary),
          this.selectedBox,
          this.stepBox)));
  }

  headContent() {
    const summary = this.detail.summary;
    return [
      h("div", { class: "dag-head" },
        h("h1", {}, summary.dagId),
        summary.paused ? h("span", { class: "badge paused" }, "paused") : null,
        summary.fileError ? h("span", { class: "badge broken" }, "file broken: running the last good version") : null,
        this.canOperate && summary.schedule ? this.pauseButton(summary) : null),
      this.pauseMessage,
      summary.description ? h("p", { class: "description" }, summary.description) : null,
      h("dl", { class: "facts" },
        fact("Schedule", summary.schedule
          ? [h("code", {}, summary.schedule), ` (${summary.timezone})`]
          : "manual only"),
        fact("Next run", summary.nextRun
          ? h("span", { title: `${summary.nextRun} (UTC); shown in your time zone` },
            `${dateTime(summary.nextRun)} (${relative(summary.nextRun)})`)
          : summary.paused ? "paused" : "–"),
        fact("Steps", String(this.detail.steps.length)),
        fact("Max active runs", String(this.detail.maxActiveRuns)),
        fact("Catchup", this.detail.catchup ? "yes" : "no"),
        (summary.tags || []).length
          ? fact("Tags", summary.tags.map((t) => h("span", { class: "tag" }, t)))
          : null),
      summary.fileError ? h("pre", { class: "file-error" }, summary.fileError) : null,
    ];
  }

  /** Pause or resume the schedule (operate tokens, scheduled DAGs). The badge and the next
   * run follow from the daemon's dag_status event, not from the click. */
  pauseButton(summary) {
    const pausing = !summary.paused;
    const button = h("button", {
      type: "button", class: "pause-toggle",
      title: pausing
        ? "Stop the schedule from starting runs (triggers and backfills still run)"
        : "Let the schedule start runs again",
    }, pausing ? "Pause schedule" : "Resume schedule");
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await this.client.request({ type: pausing ? "pause" : "unpause", dagId: this.dagId });
        replace(this.pauseMessage);
      } catch (err) {
        replace(this.pauseMessage, h("span", { class: "error-text", role: "alert" },
          `${pausing ? "Not paused" : "Not resumed"}: ${err.message}`));
        button.disabled = false;
      }
    });
    return button;
  }

  paramsCard(summary) {
    const names = Object.keys(summary.params || {});
    return h("section", { class: "card params", "aria-label": "Params" },
      h("h2", {}, "Params"),
      names.length
        ? h("table", { class: "list" },
          h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Default"))),
          h("tbody", {}, names.map((name) => h("tr", {},
            h("td", {}, h("code", {}, name)),
            h("td", {}, summary.params[name] === "" ? h("span", { class: "muted" }, "(empty)") : summary.params[name])))))
        : h("p", { class: "muted" }, "This DAG declares no params."));
  }

  triggerForm(summary) {
    const names = Object.keys(summary.params || {});
    const inputs = new Map();
    const result = h("p", { class: "trigger-result", role: "status", "aria-live": "polite" });
    const button = h("button", { type: "submit", class: "primary" }, "Trigger run");
    const form = h("form", { class: "trigger-form", "aria-label": "Trigger a run" },
      names.map((name) => {
        const id = `param-${name}`;
        const input = h("input", { id, name, type: "text", value: summary.params[name] });
        inputs.set(name, input);
        return h("div", { class: "param" }, h("label", { for: id }, name), input);
      }),
      h("div", {}, button),
      result);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const params = {};
      for (const [name, input] of inputs) params[name] = input.value;
      button.disabled = true;
      replace(result, "Triggering…");
      try {
        const answer = await this.client.request({ type: "trigger", dagId: this.dagId, params });
        replace(result, "Triggered ", h("a", { href: runHref(answer.runId) }, answer.runId));
        if (!this.runs.some((r) => r.runId === answer.runId)) {
          this.runs.push({ runId: answer.runId, status: "queued", params });
          this.grid?.setRunStatus(answer.runId, "queued");
        }
        this.selectRun(answer.runId, false);
      } catch (err) {
        replace(result, h("span", { class: "error-text", role: "alert" }, `Not triggered: ${err.message}`));
      } finally {
        button.disabled = false;
      }
    });
    return h("section", { class: "card", "aria-label": "Trigger" },
      h("h2", {}, "Trigger a run"),
      names.length ? null : h("p", { class: "muted" }, "This DAG declares no params."),
      form);
  }

  renderSelected(record, detail = null) {
    if (!record) {
      replace(this.selectedBox, h("h2", {}, "Selected run"),
        h("p", { class: "muted" }, "No runs yet: the graph shows no statuses."));
      return;
    }
    const params = record.params || {};
    const names = Object.keys(params);
    replace(this.selectedBox,
      h("h2", {}, "Selected run"),
      h("p", {}, h("a", { class: "mono sel-run-link", href: runHref(record.runId) }, record.runId)),
      h("dl", {},
        h("dt", {}, "Status"), h("dd", { class: "sel-run-status" }, pill(record.status)),
        detail?.trigger ? [h("dt", {}, "Trigger"), h("dd", {}, detail.trigger)] : null,
        record.queuedAt ? [h("dt", {}, "Queued"), h("dd", {}, dateTime(record.queuedAt))] : null,
        record.startedAt ? [h("dt", {}, "Started"), h("dd", {}, dateTime(record.startedAt))] : null,
        record.endedAt ? [h("dt", {}, "Ended"), h("dd", {}, dateTime(record.endedAt))] : null,
        detail && detail.duration !== null ? [h("dt", {}, "Duration"), h("dd", {}, duration(detail.duration))] : null,
        h("dt", {}, "Params"),
        h("dd", { class: "sel-run-params" }, names.length
          ? h("ul", { class: "problems" }, names.map((name) => h("li", {},
            h("code", {}, name), " = ", h("span", { class: "param-value" }, String(params[name])))))
          : h("span", { class: "muted" }, detail ? "none" : "…"))));
  }

  /** The DAG's lifecycle handlers, outside the graph (they have no edges): one chip each,
   * coloured by its status in the selected run. */
  drawHandlers() {
    this.handlerChips = new Map();
    this.handlerStatuses = new Map();
    if (!this.handlers.length) {
      replace(this.handlersBox);
      return;
    }
    replace(this.handlersBox,
      h("span", { class: "muted" }, "Handlers (run after the steps): "),
      this.handlers.map((handler) => {
        const chip = h("button", {
          type: "button", class: "handler-chip", dataset: { stepId: handler.stepId, status: "" },
          onclick: () => this.showStep(handler.stepId),
        });
        this.handlerChips.set(handler.stepId, chip);
        return chip;
      }));
    this.paintHandlers();
  }

  paintHandlers() {
    for (const [stepId, chip] of this.handlerChips || []) {
      const status = this.handlerStatuses.get(stepId) || null;
      chip.dataset.status = status || "";
      replace(chip, status ? `${statusSymbol(status)} ` : "", stepId);
      chip.title = `${stepId}: ${statusLabel(status)}`;
      chip.setAttribute("aria-label", `handler ${stepId}: ${statusLabel(status)}`);
    }
  }

  showStep(stepId) {
    const step = [...this.detail.steps, ...(this.handlers || [])].find((st) => st.stepId === stepId);
    if (!step) return;
    this.graph.select(stepId);
    const what = step.command !== null
      ? h("code", {}, Array.isArray(step.command) ? JSON.stringify(step.command) : step.command)
      : step.call !== null
        ? h("code", {}, step.call)
        : h("span", { class: "muted" }, "notification only");
    replace(this.stepBox,
      h("h2", {}, `Step ${stepId}`),
      step.description ? h("p", {}, step.description) : null,
      h("dl", { class: "facts" },
        fact(step.command !== null ? "Command" : step.call !== null ? "Call" : "Runs", what),
        step.handler ? fact("Handler", step.handler) : null,
        step.notify?.length ? fact("Notifies", step.notify.join(", ")) : null,
        fact("Depends on", step.dependsOn.length ? step.dependsOn.join(", ") : "–"),
        fact("Trigger rule", step.triggerRule),
        fact("Executor", step.executor),
        fact("Retries", `${step.retries} (delay ${step.retryDelay} s)`),
        fact("Timeout", step.timeout === null ? "none" : `${step.timeout} s`)),
      this.selected
        ? h("p", {}, h("a", { href: runHref(this.selected, stepId) }, `Open ${stepId} in the selected run →`))
        : null);
  }
}
