// A DAG drawn as an SVG graph, left to right by dependency, each node coloured by a status.
//
//   const graph = createGraph(container, {steps, edges}, {onSelect(stepId)});
//   await graph.ready;                 // laid out and drawn
//   graph.setStatuses({extract: "success", load: "running"});  // recolour, batched per frame
//   graph.setStatus("load", "failed");
//   graph.clearStatuses();             // every node back to "no status"
//   graph.select("load");              // outline one node (null: none)
//   graph.destroy();
//
// `steps` are get_dag's steps ({stepId, level, description?}), `edges` its edges
// ({source, target}). The layout runs once, in a Web Worker (layout-worker.js): dagre up to
// DAGRE_MAX_STEPS steps, a linear-time layered layout beyond (dagre takes seconds there).
// Status changes only recolour nodes (a data-status attribute and its text), never lay out
// again. Above WINDOW_MIN_STEPS steps only the nodes and edges in (and near) the box's view
// are in the document, drawn again as it scrolls or zooms; statusOf() knows every step. Each node is focusable and says its step and status as text (title, aria-label and
// a symbol), not only by colour. Clicking a node (or Enter on it) calls onSelect(stepId).

import { frameBatcher, h, replace, s } from "./dom.js";
import { statusLabel, statusSymbol } from "./status.js";

export const DAGRE_MAX_STEPS = 250;
/** Above this many steps only the part of the graph in view is drawn. */
export const WINDOW_MIN_STEPS = 300;
const NODE_HEIGHT = 30;
const CHAR_WIDTH = 7;         // px per character of a 12 px label (approximate)
const MAX_LABEL = 28;         // characters shown; the full id is in the title
const NODE_PAD = 44;          // bar, padding and the status mark

let worker = null;
let jobs = 0;
const waiting = new Map();

function layoutWorker() {
  if (worker === null) {
    worker = new Worker(new URL("./layout-worker.js", import.meta.url));
    worker.onmessage = (message) => {
      const job = waiting.get(message.data.id);
      if (!job) return;
      waiting.delete(message.data.id);
      if (message.data.error) job.reject(new Error(message.data.error));
      else job.resolve(message.data);
    };
    // A worker that fails (its script not loaded, an uncaught error, an answer that cannot
    // be read) answers none of the layouts waiting: they fail, and the next graph starts a
    // new worker.
    const fail = (why) => {
      worker?.terminate();
      worker = null;
      const jobsWaiting = [...waiting.values()];
      waiting.clear();
      for (const job of jobsWaiting) job.reject(new Error(why));
    };
    worker.onerror = (ev) => {
      ev.preventDefault();
      fail(ev.message || "the layout worker failed");
    };
    worker.onmessageerror = () => fail("an answer of the layout worker could not be read");
  }
  return worker;
}

function layout(nodes, edges, engine) {
  return new Promise((resolve, reject) => {
    const id = ++jobs;
    waiting.set(id, { resolve, reject });
    layoutWorker().postMessage({ id, nodes, edges, engine });
  });
}

function label(stepId) {
  return stepId.length > MAX_LABEL ? `${stepId.slice(0, MAX_LABEL - 1)}…` : stepId;
}

function pathOf(points, curved) {
  if (points.length < 2) return "";
  const f = (n) => Math.round(n * 10) / 10;
  if (curved && points.length === 2) {
    const [[x1, y1], [x2, y2]] = points;
    const mid = (x1 + x2) / 2;
    return `M${f(x1)},${f(y1)}C${f(mid)},${f(y1)} ${f(mid)},${f(y2)} ${f(x2)},${f(y2)}`;
  }
  let d = `M${f(points[0][0])},${f(points[0][1])}`;
  if (points.length === 2) return `${d}L${f(points[1][0])},${f(points[1][1])}`;
  // Through the midpoints with the bend points as controls: smooth, and exact at the ends.
  for (let i = 1; i < points.length - 1; i++) {
    const [cx, cy] = points[i];
    const [nx, ny] = points[i + 1];
    const end = i === points.length - 2 ? [nx, ny] : [(cx + nx) / 2, (cy + ny) / 2];
    d += `Q${f(cx)},${f(cy)} ${f(end[0])},${f(end[1])}`;
  }
  return d;
}

export function createGraph(container, { steps, edges }, { onSelect = null } = {}) {
  return new GraphView(container, steps, edges, onSelect);
}

/** The same as createGraph (the Run page's name for it). */
export const drawGraph = createGraph;

class GraphView {
  constructor(container, steps, edges, onSelect) {
    this.container = container;
    this.onSelect = onSelect;
    this.nodes = new Map();     // stepId -> the drawn node {g, title, mark, status}
    this.statuses = new Map();  // stepId -> status, drawn or not (also before the layout)
    this.selected = null;
    this.scale = 1;
    this.destroyed = false;
    this.batch = frameBatcher((updates) => this.recolour(updates), {
      onOverflow: () => this.recolour([...this.nodes.keys()]),
    });
    this.box = h("div", { class: "graph-box", tabindex: "-1" });
    this.tools = h("div", { class: "graph-tools" },
      h("button", { type: "button", title: "Zoom out", "aria-label": "Zoom out", onclick: () => this.zoom(1 / 1.25) }, "−"),
      h("button", { type: "button", title: "Zoom in", "aria-label": "Zoom in", onclick: () => this.zoom(1.25) }, "+"),
      h("button", { type: "button", title: "Fit to width", onclick: () => this.fit() }, "Fit"),
      h("span", { class: "muted graph-info" }, `${steps.length} steps · laying out…`));
    replace(container, this.tools, this.box);
    const nodes = steps.map((step) => ({
      id: step.stepId,
      width: Math.min(MAX_LABEL, step.stepId.length) * CHAR_WIDTH + NODE_PAD,
      height: NODE_HEIGHT,
      level: step.level || 0,
    }));
    this.edgeList = edges.map((e) => [e.source, e.target]);
    this.engine = steps.length <= DAGRE_MAX_STEPS ? "dagre" : "layered";
    const started = performance.now();
    this.ready = layout(nodes, this.edgeList, this.engine).then((result) => {
      if (this.destroyed) return;
      this.draw(nodes, result);
      this.tools.querySelector(".graph-info").textContent =
        `${steps.length} steps · ${result.engine} layout ${Math.round(result.ms)} ms, ` +
        `drawn in ${Math.round(performance.now() - started)} ms` +
        (this.windowed ? " · only the part in view is drawn" : "");
    }, (err) => {
      if (this.destroyed) return;
      this.tools.querySelector(".graph-info").textContent = `${steps.length} steps`;
      replace(this.box, h("p", { class: "error-text graph-error", role: "alert" },
        `The graph could not be laid out: ${err.message}`));
    });
  }

  draw(nodes, result) {
    const curved = result.engine === "layered";
    const width = Math.ceil(result.width);
    const height = Math.ceil(result.height);
    this.size = { width, height };
    // Every node and edge with its place (top-left corner, size) and bounding box.
    this.placed = [];
    for (const n of nodes) {
      const p = result.nodes[n.id];
      if (!p) continue;
      this.placed.push({
        id: n.id, width: n.width, height: n.height,
        x: Math.round(p.x - n.width / 2), y: Math.round(p.y - n.height / 2),
      });
    }
    this.edgeShapes = [];
    result.edges.forEach((points) => {
      const d = pathOf(points, curved);
      if (!d) return;
      const xs = points.map((pt) => pt[0]);
      const ys = points.map((pt) => pt[1]);
      this.edgeShapes.push({
        d, x0: Math.min(...xs), y0: Math.min(...ys), x1: Math.max(...xs), y1: Math.max(...ys),
      });
    });
    const svg = s("svg", {
      class: "graph", viewBox: `0 0 ${width} ${height}`, width, height,
      role: "group", "aria-label": `DAG graph, ${this.placed.length} steps`,
    });
    const defs = s("defs", {}, s("marker", {
      id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7,
      orient: "auto-start-reverse",
    }, s("path", { class: "arrow", d: "M0,0L10,5L0,10z" })));
    this.edgeLayer = s("g", { class: "edges" });
    this.nodeLayer = s("g", { class: "nodes" });
    this.drawnEdges = new Map();  // index in edgeShapes -> path element
    svg.append(defs, this.edgeLayer, this.nodeLayer);
    svg.addEventListener("click", (ev) => this.clicked(ev));
    svg.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" || ev.key === " ") {
        ev.preventDefault();
        this.clicked(ev);
      }
    });
    this.svg = svg;
    replace(this.box, svg);
    // A large DAG is drawn only where the box shows it (and a margin around), again as it
    // scrolls or zooms: the browser's style, layout and paint of an SVG grow with its element
    // count, and a 2,000-step graph drawn whole costs frames of a second under load.
    this.windowed = this.placed.length > WINDOW_MIN_STEPS;
    if (this.windowed) {
      this.scrollFrame = null;
      this.onScroll = () => {
        if (this.scrollFrame === null) {
          this.scrollFrame = requestAnimationFrame(() => {
            this.scrollFrame = null;
            this.drawVisible();
          });
        }
      };
      this.box.addEventListener("scroll", this.onScroll, { passive: true });
      window.addEventListener("resize", this.onScroll);
    }
    this.drawVisible();
    if (this.selected) this.select(this.selected);
  }

  /** The part of the graph to draw, in graph coordinates: all of it, or the box's view and a
   * margin of one view around it. */
  visibleRect() {
    if (!this.windowed) return null;
    const w = Math.max(this.box.clientWidth, 400) / this.scale;
    const hgt = Math.max(this.box.clientHeight, 300) / this.scale;
    const x = this.box.scrollLeft / this.scale;
    const y = this.box.scrollTop / this.scale;
    return { x0: x - w, y0: y - hgt, x1: x + 2 * w, y1: y + 2 * hgt };
  }

  drawVisible() {
    if (this.destroyed || !this.placed) return;
    const view = this.visibleRect();
    const inView = (x0, y0, x1, y1) =>
      view === null || (x1 >= view.x0 && x0 <= view.x1 && y1 >= view.y0 && y0 <= view.y1);
    const keepNodes = new Set();
    for (const n of this.placed) {
      if (!inView(n.x, n.y, n.x + n.width, n.y + n.height)) continue;
      keepNodes.add(n.id);
      if (!this.nodes.has(n.id)) this.nodeLayer.append(this.makeNode(n));
    }
    for (const [id, node] of this.nodes) {
      if (!keepNodes.has(id)) {
        node.g.remove();
        this.nodes.delete(id);
      }
    }
    this.edgeShapes.forEach((e, i) => {
      const visible = inView(e.x0, e.y0, e.x1, e.y1);
      const drawn = this.drawnEdges.get(i);
      if (visible && !drawn) {
        const path = s("path", { class: "edge", d: e.d, "marker-end": "url(#arrow)" });
        this.edgeLayer.append(path);
        this.drawnEdges.set(i, path);
      } else if (!visible && drawn) {
        drawn.remove();
        this.drawnEdges.delete(i);
      }
    });
  }

  makeNode(n) {
    const status = this.statuses.get(n.id) || null;
    const title = s("title", {}, `${n.id}: ${statusLabel(status)}`);
    const mark = s("text", { class: "mark", x: n.width - 16, y: n.height / 2 }, status ? statusSymbol(status) : "");
    const g = s("g", {
      class: "node", tabindex: "0", role: "button",
      transform: `translate(${n.x},${n.y})`,
      "data-step-id": n.id,
      "data-status": status || "",
      "aria-label": `step ${n.id}: ${statusLabel(status)}`,
    },
    title,
    s("rect", { width: n.width, height: n.height, rx: 6 }),
    s("rect", { class: "bar", width: 6, height: n.height, rx: 2 }),
    s("text", { x: 14, y: n.height / 2 }, label(n.id)),
    mark);
    if (n.id === this.selected) g.classList.add("selected");
    this.nodes.set(n.id, { g, title, mark, status });
    return g;
  }

  clicked(ev) {
    const g = ev.target.closest?.(".node");
    if (!g || !this.onSelect) return;
    this.onSelect(g.getAttribute("data-step-id"));
  }

  /** Queue a node's new status; drawn nodes are recoloured once per animation frame. */
  setStatus(stepId, status) {
    this.statuses.set(stepId, status);
    if (this.nodes.has(stepId)) this.batch.push(stepId);
  }

  setStatuses(map) {
    for (const [stepId, status] of Object.entries(map)) this.setStatus(stepId, status);
  }

  clearStatuses() {
    for (const stepId of this.nodes.keys()) this.batch.push(stepId);
    this.statuses.clear();
  }

  recolour(stepIds) {
    for (const stepId of new Set(stepIds)) {
      const node = this.nodes.get(stepId);
      if (!node) continue;
      const status = this.statuses.get(stepId) || null;
      if (node.status === status) continue;
      node.status = status;
      node.g.setAttribute("data-status", status || "");
      node.g.setAttribute("aria-label", `step ${stepId}: ${statusLabel(status)}`);
      node.title.textContent = `${stepId}: ${statusLabel(status)}`;
      node.mark.textContent = status ? statusSymbol(status) : "";
    }
  }

  /** The status a step has in the graph now (null: none), drawn or not. */
  statusOf(stepId) {
    return this.statuses.get(stepId) ?? null;
  }

  select(stepId) {
    if (this.selected && this.nodes.has(this.selected)) {
      this.nodes.get(this.selected).g.classList.remove("selected");
    }
    this.selected = stepId;
    const node = stepId ? this.nodes.get(stepId) : null;
    if (node) node.g.classList.add("selected");
  }

  zoom(factor) {
    this.scale = Math.min(4, Math.max(0.05, this.scale * factor));
    this.applyScale();
  }

  fit() {
    if (!this.size) return;
    this.scale = Math.min(1, (this.box.clientWidth - 4) / this.size.width);
    this.applyScale();
  }

  applyScale() {
    if (!this.svg) return;
    this.svg.setAttribute("width", Math.round(this.size.width * this.scale));
    this.svg.setAttribute("height", Math.round(this.size.height * this.scale));
    if (this.windowed) this.drawVisible();
  }

  destroy() {
    this.destroyed = true;
    this.batch.cancel();
    if (this.onScroll) {
      this.box.removeEventListener("scroll", this.onScroll);
      window.removeEventListener("resize", this.onScroll);
      if (this.scrollFrame !== null) cancelAnimationFrame(this.scrollFrame);
    }
  }
}
