// The Run page's timeline: one row per step (file order), one bar per attempt from its start
// to its end (a running attempt's bar reaches "now" and grows while it runs), coloured by how
// the attempt ended, with the attempt number, times and error in the bar's tooltip. The rows of
// the run's critical path (runmodel.criticalPath) are highlighted and named above the chart.
// Rows are windowed (runvlist.js): only those in view are drawn, so the cost of a redraw does not
// grow with the number of steps.

import { criticalPath, formatDuration, formatTime, FINISHED_RUN } from "./runmodel.js";
import { h, s as svg } from "./dom.js";
import { StepRows } from "./runvlist.js";

const ROW = 22; // px per step row
const LABEL = 180; // px for the step names on the left
const AXIS = 24; // px of the time axis
const MIN_BAR = 2; // px, so a 1 ms attempt is still visible

// Tick steps in ms; the first that leaves >= 80 px between ticks is used.
const TICKS = [
  10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 10e3, 15e3, 30e3, 60e3, 120e3, 300e3, 600e3, 900e3,
  1800e3, 3600e3, 7200e3, 14400e3, 21600e3, 43200e3, 86400e3,
];

function tickLabel(ms) {
  if (ms === 0) return "0";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60e3) return `${ms / 1000} s`;
  if (ms < 3600e3) return `${+(ms / 60e3).toFixed(2)} min`;
  return `${+(ms / 3600e3).toFixed(2)} h`;
}

export class Gantt extends StepRows {
  /**
   * @param container element the chart is built in (emptied)
   * @param model, options: as StepRows (runvlist.js)
   */
  constructor(container, model, options = {}) {
    super(model, options);
    this.critical = new Set();
    this.criticalList = [];
    this.criticalStale = true;
    this.root = h("section", { class: "gantt", "aria-label": "timeline of attempts" });
    this.summary = h("p", { class: "gantt-critical" });
    this.axis = svg("svg", { class: "gantt-axis", height: AXIS });
    this.body = h("div", { class: "gantt-body" });
    this.spacer = h("div", { class: "gantt-spacer" });
    this.rows = svg("svg", { class: "gantt-rows" });
    this.spacer.append(this.rows);
    this.body.append(this.spacer);
    this.root.append(this.summary, this.axis, this.body);
    container.replaceChildren(this.root);
    this.watch(this.body);
    this.rows.addEventListener("click", (ev) => {
      const row = ev.target.closest("[data-step-id]");
      if (row) this.onSelect(row.getAttribute("data-step-id"));
    });
    this.frame.schedule();
  }

  /** Redraw at the next frame (cheap to call once per event). */
  update() {
    this.criticalStale = true;
    this.frame.schedule();
  }

  /** [t0, t1] in ms: the run's start (or its first attempt's) to its end, or now. */
  domain(now) {
    const m = this.model;
    let t0 = m.startedAt ?? m.queuedAt ?? now;
    let t1 = m.endedAt ?? (FINISHED_RUN.has(m.status) ? t0 : now);
    for (const s of m.steps.values()) {
      for (const a of s.attempts) {
        if (a.start !== null && a.start < t0) t0 = a.start;
        const e = a.end ?? (a.status === "running" ? now : a.start);
        if (e !== null && e > t1) t1 = e;
      }
    }
    return [t0, Math.max(t1, t0 + 10)];
  }

  draw() {
    const m = this.model;
    const now = this.now();
    if (this.criticalStale) {
      this.criticalStale = false;
      this.criticalList = criticalPath(m, now);
      this.critical = new Set(this.criticalList);
      this.drawSummary(now);
    }
    const width = Math.max(LABEL + 100, this.view.width);
    const span = width - LABEL - 8;
    const [t0, t1] = this.domain(now);
    const scale = span / (t1 - t0);
    const x = (t) => LABEL + (t - t0) * scale;

    this.drawAxis(width, t0, t1, x);

    const count = m.order.length;
    this.spacer.style.height = `${count * ROW}px`;
    const [first, last] = this.view.range(ROW, count);
    this.rows.style.top = `${first * ROW}px`;
    this.rows.setAttribute("width", width);
    this.rows.setAttribute("height", (last - first) * ROW);
    const running = !FINISHED_RUN.has(m.status);
    const out = [];
    for (let i = first; i < last; i++) {
      const step = m.steps.get(m.order[i]);
      const cls = ["gantt-row"];
      if (this.critical.has(step.stepId)) cls.push("critical");
      if (this.selected === step.stepId) cls.push("selected");
      const g = svg("g", {
        class: cls.join(" "),
        "data-step-id": step.stepId,
        "data-status": step.status,
        transform: `translate(0,${(i - first) * ROW})`,
      });
      g.append(
        svg("rect", { class: "row-bg", x: 0, y: 0, width, height: ROW }),
        svg("text", { class: "row-label", x: 6, y: ROW / 2 + 4 }, step.stepId),
      );
      for (const a of step.attempts) {
        if (a.start === null) continue;
        const end = a.end ?? (a.status === "running" && running ? now : a.start);
        const bx = x(a.start);
        const bw = Math.max(MIN_BAR, x(end) - bx);
        const bar = svg("rect", {
          class: "bar",
          "data-status": a.status,
          "data-attempt": a.attempt,
          x: bx.toFixed(1),
          y: 4,
          width: bw.toFixed(1),
          height: ROW - 8,
          rx: 2,
        });
        const took = a.end === null ? "running" : formatDuration(a.end - a.start);
        const lines = [`${step.stepId}: attempt ${a.attempt}, ${a.status}`, `${formatTime(a.start)} (${took})`];
        if (a.worker) lines.push(`on ${a.worker}`);
        if (a.error) lines.push(a.error);
        bar.append(svg("title", {}, lines.join("\n")));
        g.append(bar);
      }
      out.push(g);
    }
    if (running && m.startedAt !== null) {
      const nx = x(now);
      out.push(svg("line", { class: "gantt-now", x1: nx, x2: nx, y1: 0, y2: (last - first) * ROW }));
    }
    this.rows.replaceChildren(...out);
  }

  drawAxis(width, t0, t1, x) {
    this.axis.setAttribute("width", width);
    const span = t1 - t0;
    const px = width - LABEL - 8;
    const step = TICKS.find((t) => (t / span) * px >= 80) ?? TICKS[TICKS.length - 1];
    const ticks = [];
    for (let t = 0; t <= span; t += step) {
      const tx = x(t0 + t);
      ticks.push(svg("line", { class: "tick", x1: tx, x2: tx, y1: AXIS - 6, y2: AXIS }));
      // A label needs about 50 px: none that the right edge would cut.
      if (tx < width - 50) ticks.push(svg("text", { class: "tick-label", x: tx + 2, y: AXIS - 9 }, tickLabel(t)));
    }
    ticks.push(svg("text", { class: "axis-origin", x: 6, y: AXIS - 9 }, "since start"));
    this.axis.replaceChildren(...ticks);
  }

  drawSummary(now) {
    const path = this.criticalList;
    if (path.length === 0) {
      this.summary.textContent = "No step has started yet.";
      return;
    }
    const first = this.model.steps.get(path[0]).attempts.find((a) => a.start !== null);
    const lastStep = this.model.steps.get(path[path.length - 1]);
    let end = null;
    for (const a of lastStep.attempts) {
      const e = a.end ?? (a.status === "running" ? now : a.start);
      if (e !== null && (end === null || e > end)) end = e;
    }
    const took = first && end !== null ? ` (${formatDuration(end - first.start)})` : "";
    this.summary.replaceChildren(
      h("strong", {}, "Critical path"),
      document.createTextNode(`${took}: `),
      h("span", { class: "critical-steps" }, path.join(" → ")),
    );
  }
}
