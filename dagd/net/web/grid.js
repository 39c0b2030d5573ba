// Recent runs by steps (Airflow's grid view): one column per run, oldest left, newest right;
// one row per step in file order; a coloured cell per step run. A cell links to that run with
// the step selected (#/runs/<runId>?step=<stepId>); a column's head selects the run
// (onSelectRun) and says its status.
//
//   const grid = createGrid(container, stepIds, {onSelectRun(runId), maxRows: 200});
//   grid.setRuns([{runId, status, steps: {stepId: status}}])   // oldest first
//   grid.setRunStatus(runId, status)           // a new run id adds a column at the right
//   grid.setStepStatus(runId, stepId, status)  // batched: cells change once per frame
//   grid.selectRun(runId)
//   grid.destroy()
//
// Only `maxRows` step rows are drawn at first (a 1,000-step DAG would otherwise make tens of
// thousands of cells); a button draws the rest.

import { frameBatcher, h, replace } from "./dom.js";
import { runHref } from "./routes.js";
import { statusLabel } from "./status.js";

export function createGrid(container, stepIds, options = {}) {
  return new Grid(container, stepIds, options);
}

class Grid {
  constructor(container, stepIds, { onSelectRun = null, maxRows = 200, maxRuns = 25 } = {}) {
    this.container = container;
    this.stepIds = stepIds;
    this.onSelectRun = onSelectRun;
    this.maxRuns = maxRuns;
    this.rowsShown = Math.min(stepIds.length, maxRows);
    this.runs = [];             // [{runId, status, steps: Map}]
    this.selected = null;
    this.cells = new Map();     // runId -> Map(stepId -> cell element)
    this.heads = new Map();     // runId -> th
    this.headRow = null;
    this.rows = new Map();      // stepId -> tr (the rows drawn)
    this.batch = frameBatcher((updates) => this.flush(updates), {
      key: ({ runId, stepId }) => `${runId}\u0000${stepId}`,
      onOverflow: () => this.render(),
    });
    this.render();
  }

  setRuns(runs) {
    this.runs = runs.slice(-this.maxRuns).map((r) => ({
      runId: r.runId, status: r.status, steps: new Map(Object.entries(r.steps || {})),
    }));
    this.render();
  }

  run(runId) {
    return this.runs.find((r) => r.runId === runId);
  }

  setRunStatus(runId, status) {
    const run = this.run(runId);
    if (run) {
      run.status = status;
      this.batch.push({ runId, stepId: null });
      return;
    }
    const added = { runId, status, steps: new Map() };
    this.runs.push(added);
    if (this.runs.length === 1 || !this.headRow) {
      this.render();
      return;
    }
    // A new column at the right, the oldest dropped beyond maxRuns: cell by cell, not the
    // whole table again (a run of a large DAG starting must not cost a long frame).
    if (this.runs.length > this.maxRuns) {
      const old = this.runs.shift();
      this.heads.get(old.runId)?.remove();
      this.heads.delete(old.runId);
      for (const cell of this.cells.get(old.runId)?.values() || []) cell.parentNode.remove();
      this.cells.delete(old.runId);
    }
    this.headRow.append(this.makeHead(added));
    const cells = new Map();
    this.cells.set(runId, cells);
    for (const [stepId, tr] of this.rows) {
      const cell = this.makeCell(added, stepId);
      cells.set(stepId, cell);
      tr.append(h("td", {}, cell));
    }
  }

  makeHead(run) {
    const th = h("th", { class: "run-head", scope: "col", dataset: { runId: run.runId } },
      h("button", { type: "button", onclick: () => this.onSelectRun?.(run.runId) }));
    this.paintHead(th, run);
    th.classList.toggle("selected", run.runId === this.selected);
    this.heads.set(run.runId, th);
    return th;
  }

  makeCell(run, stepId) {
    const cell = h("a", { class: "cell", href: runHref(run.runId, stepId) });
    this.paintCell(cell, run, stepId);
    return cell;
  }

  setStepStatus(runId, stepId, status) {
    const run = this.run(runId);
    if (!run) return;
    run.steps.set(stepId, status);
    this.batch.push({ runId, stepId });
  }

  selectRun(runId) {
    this.selected = runId;
    for (const [id, th] of this.heads) th.classList.toggle("selected", id === runId);
  }

  flush(updates) {
    for (const { runId, stepId } of updates) {
      const run = this.run(runId);
      if (!run) continue;
      if (stepId === null) {
        const th = this.heads.get(runId);
        if (th) this.paintHead(th, run);
        continue;
      }
      const cell = this.cells.get(runId)?.get(stepId);
      if (cell) this.paintCell(cell, run, stepId);
    }
  }

  paintHead(th, run) {
    const button = th.firstChild;
    button.dataset.status = run.status;
    const text = `${run.runId}: ${statusLabel(run.status)}`;
    button.title = text;
    button.setAttribute("aria-label", `select run ${text}`);
  }

  paintCell(cell, run, stepId) {
    const status = run.steps.get(stepId) || "";
    cell.dataset.status = status;
    const text = `${stepId} in ${run.runId}: ${status ? statusLabel(status) : "not run"}`;
    cell.title = text;
    cell.setAttribute("aria-label", text);
  }

  render() {
    this.cells = new Map(this.runs.map((r) => [r.runId, new Map()]));
    this.heads = new Map();
    if (!this.runs.length) {
      this.headRow = null;
      replace(this.container, h("p", { class: "empty" }, "No runs yet."));
      return;
    }
    const headRow = h("tr", {}, h("th", { class: "step", scope: "col" }, "Step \\ run"));
    this.headRow = headRow;
    for (const run of this.runs) headRow.append(this.makeHead(run));
    const body = h("tbody");
    this.rows = new Map();
    for (const stepId of this.stepIds.slice(0, this.rowsShown)) {
      const tr = h("tr", { dataset: { stepId } }, h("th", { class: "step", scope: "row", title: stepId }, stepId));
      for (const run of this.runs) {
        const cell = this.makeCell(run, stepId);
        this.cells.get(run.runId).set(stepId, cell);
        tr.append(h("td", {}, cell));
      }
      this.rows.set(stepId, tr);
      body.append(tr);
    }
    const rest = this.stepIds.length - this.rowsShown;
    replace(this.container,
      h("table", { class: "grid", "aria-label": "Recent runs by step" }, h("thead", {}, headRow), body),
      rest > 0
        ? h("button", {
          type: "button", class: "grid-more",
          onclick: () => {
            this.rowsShown = this.stepIds.length;
            this.render();
          },
        }, `Show all ${this.stepIds.length} steps (${rest} more)`)
        : null);
  }

  destroy() {
    this.batch.cancel();
  }
}
