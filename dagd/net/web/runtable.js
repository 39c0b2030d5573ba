// The Run page's step table: one row per step (file order) with its status, latest start,
// duration, retries and error text, windowed like the Gantt chart (runvlist.js) so 2,000 steps
// cost what 40 do. A status filter narrows the rows (e.g. to the failed ones). Error text comes
// from steps and is only ever set as text content.

import { formatDuration, formatTime } from "./runmodel.js";
import { h } from "./dom.js";
import { StepRows } from "./runvlist.js";

const ROW = 26; // px, fixed: the error column shows one line, its whole text in the tooltip
const COLUMNS = ["Step", "Status", "Started", "Duration", "Retries", "Error"];

export class StepTable extends StepRows {
  /**
   * @param container element the table is built in (emptied)
   * @param model, options: as StepRows (runvlist.js)
   */
  constructor(container, model, options = {}) {
    super(model, options);
    this.filter = "";
    this.rowsIds = null; // the filtered ids, recomputed when statuses change
    this.root = h("section", { class: "step-table", "aria-label": "steps" });
    const bar = h("div", { class: "step-table-tools" });
    this.filterSelect = h("select", { "aria-label": "show steps with status" });
    for (const [value, label] of [
      ["", "all steps"],
      ["failed", "failed"],
      ["running", "running"],
      ["retrying", "retrying"],
      ["pending", "pending"],
      ["success", "succeeded"],
      ["upstream_failed", "upstream failed"],
      ["cancelled", "cancelled"],
      ["skipped", "skipped"],
    ]) {
      this.filterSelect.append(h("option", { value }, label));
    }
    this.filterSelect.addEventListener("change", () => {
      this.filter = this.filterSelect.value;
      this.rowsIds = null;
      this.view.toTop();
      this.frame.schedule();
    });
    this.countNote = h("span", { class: "step-table-count" });
    bar.append(this.filterSelect, this.countNote);
    const head = h("div", { class: "st-row st-head", role: "row" });
    for (const c of COLUMNS) head.append(h("span", { role: "columnheader" }, c));
    this.body = h("div", { class: "step-table-body" });
    this.spacer = h("div", { class: "st-spacer" });
    this.window = h("div", { class: "st-window", role: "rowgroup" });
    this.spacer.append(this.window);
    this.body.append(this.spacer);
    const table = h("div", { class: "st-table", role: "table", "aria-label": "steps of this run" });
    table.append(head, this.body);
    this.root.append(bar, table);
    container.replaceChildren(this.root);
    this.watch(this.body);
    this.window.addEventListener("click", (ev) => {
      const row = ev.target.closest("[data-step-id]");
      if (row) this.onSelect(row.getAttribute("data-step-id"));
    });
    // Rows are focusable: Enter or Space chooses one, arrows move between them.
    this.window.addEventListener("keydown", (ev) => {
      const row = ev.target.closest("[data-step-id]");
      if (!row) return;
      if (ev.key === "Enter" || ev.key === " ") {
        ev.preventDefault();
        this.onSelect(row.getAttribute("data-step-id"));
      } else if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
        ev.preventDefault();
        const next = ev.key === "ArrowDown" ? row.nextElementSibling : row.previousElementSibling;
        next?.focus();
      }
    });
    this.frame.schedule();
  }

  /** Redraw at the next frame; `statusChanged`: a step's status moved (the filter may differ). */
  update(statusChanged = true) {
    if (statusChanged && this.filter) this.rowsIds = null;
    this.frame.schedule();
  }

  ids() {
    if (!this.filter) return this.model.order;
    if (this.rowsIds === null) {
      this.rowsIds = this.model.order.filter((id) => this.model.steps.get(id).status === this.filter);
    }
    return this.rowsIds;
  }

  draw() {
    const ids = this.ids();
    const total = this.model.order.length;
    this.countNote.textContent = this.filter ? `${ids.length} of ${total} steps` : `${total} steps`;
    this.spacer.style.height = `${ids.length * ROW}px`;
    const [first, last] = this.view.range(ROW, ids.length);
    this.window.style.top = `${first * ROW}px`;
    const now = this.now();
    // Rows are built again on every redraw: keep the keyboard focus on the same step.
    const active = document.activeElement;
    const focused = this.window.contains(active) ? active.getAttribute("data-step-id") : null;
    const rows = [];
    for (let i = first; i < last; i++) {
      const s = this.model.steps.get(ids[i]);
      const row = h("div", {
        class: this.selected === s.stepId ? "st-row selected" : "st-row",
        role: "row",
        "data-step-id": s.stepId,
        "data-status": s.status,
        tabindex: "0",
      });
      const running = s.status === "running" && s.start !== null && s.end === null;
      const took = running ? formatDuration(now - s.start) : formatDuration(s.duration);
      row.append(
        h("span", { role: "cell", class: "st-step" }, s.stepId),
        h("span", { role: "cell", class: "st-status" }, s.status.replace("_", " ")),
        h("span", { role: "cell", class: "st-start" }, formatTime(s.start)),
        h("span", { role: "cell", class: "st-duration" }, took),
        h("span", { role: "cell", class: "st-retries" }, String(s.retryCount)),
        h("span", { role: "cell", class: "st-error", title: s.error ?? null }, s.error ?? ""),
      );
      rows.push(row);
    }
    this.window.replaceChildren(...rows);
    if (focused !== null) rows.find((r) => r.getAttribute("data-step-id") === focused)?.focus({ preventScroll: true });
  }
}
