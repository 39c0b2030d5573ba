// Lays a DAG out left to right, off the page's main thread (a classic Web Worker, so it can
// load the vendored dagre with importScripts).
//
// Message in:  {id, nodes: [{id, width, height, level}], edges: [[source, target]],
//               engine: "dagre" | "layered"}
// Message out: {id, width, height, nodes: {stepId: {x, y}} (centres),
//               edges: [[[x, y], ...] per input edge], engine, ms}
//               or {id, error}
//
// "dagre" is @dagrejs/dagre (vendor/dagre.min.js): few crossings, but its cost grows fast
// (measured with dagre 3.1.3 under Node 20 on this project's 2-core machine: 100 steps
// 0.1-0.3 s, 300 steps 0.2-0.8 s, 1,000 steps 0.9-1.6 s, a 10x100 layered DAG 15-30 s).
// "layered" is a linear-time layout for large DAGs: one column per graph level (the daemon's
// `level` of each step), steps ordered in their column by the mean position of their
// upstreams (one barycentre pass), columns aligned at the top, edges as curves between the
// columns.

/* global dagre, importScripts */

let dagreLoaded = false;

function loadDagre() {
  if (!dagreLoaded) {
    importScripts("vendor/dagre.min.js");
    dagreLoaded = true;
  }
}

const NODE_SEP = 10;   // px between nodes of one column
const RANK_SEP = 48;   // px between columns
const MARGIN = 16;

function withDagre(nodes, edges) {
  loadDagre();
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: "LR", nodesep: NODE_SEP, ranksep: RANK_SEP, marginx: MARGIN, marginy: MARGIN });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of nodes) g.setNode(n.id, { width: n.width, height: n.height });
  // dagre's initial order places the last inserted edge's target first: edges inserted in
  // reverse keep the steps of a column in file order, top to bottom.
  for (let i = edges.length - 1; i >= 0; i--) g.setEdge(edges[i][0], edges[i][1]);
  dagre.layout(g);
  const out = {};
  for (const n of nodes) {
    const p = g.node(n.id);
    out[n.id] = { x: p.x, y: p.y };
  }
  const lines = edges.map(([source, target]) => {
    const e = g.edge(source, target);
    return e && e.points ? e.points.map((p) => [p.x, p.y]) : [];
  });
  const graph = g.graph();
  return { width: graph.width, height: graph.height, nodes: out, edges: lines };
}

function layered(nodes, edges) {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const ups = new Map(nodes.map((n) => [n.id, []]));
  for (const [source, target] of edges) {
    if (ups.has(target) && byId.has(source)) ups.get(target).push(source);
  }
  const columns = [];
  for (const n of nodes) {
    const level = Math.max(0, n.level | 0);
    while (columns.length <= level) columns.push([]);
    columns[level].push(n);
  }
  const order = new Map();  // id -> index in its column
  for (const column of columns) {
    // Barycentre of the upstreams' places; stable for ties (file order).
    const keyed = column.map((n, i) => {
      const parents = ups.get(n.id);
      let key = i;
      if (parents.length) {
        let sum = 0;
        for (const p of parents) sum += order.get(p) ?? 0;
        key = sum / parents.length;
      }
      return { n, key, i };
    });
    keyed.sort((a, b) => a.key - b.key || a.i - b.i);
    keyed.forEach(({ n }, i) => order.set(n.id, i));
    column.splice(0, column.length, ...keyed.map((k) => k.n));
  }
  const heights = columns.map((c) => c.reduce((sum, n) => sum + n.height + NODE_SEP, -NODE_SEP));
  const tallest = Math.max(0, ...heights);
  const out = {};
  let x = MARGIN;
  columns.forEach((column, level) => {
    const width = Math.max(0, ...column.map((n) => n.width));
    // Columns start at the top: a fan-out's root stays in view above its thousand leaves.
    let y = MARGIN;
    for (const n of column) {
      out[n.id] = { x: x + width / 2, y: y + n.height / 2 };
      y += n.height + NODE_SEP;
    }
    x += width + RANK_SEP;
  });
  const lines = edges.map(([source, target]) => {
    const a = out[source];
    const b = out[target];
    if (!a || !b) return [];
    const x1 = a.x + byId.get(source).width / 2;
    const x2 = b.x - byId.get(target).width / 2;
    return [[x1, a.y], [x2, b.y]];
  });
  return { width: x - RANK_SEP + MARGIN, height: tallest + 2 * MARGIN, nodes: out, edges: lines };
}

self.onmessage = (message) => {
  const { id, nodes, edges, engine } = message.data;
  const started = performance.now();
  try {
    const result = engine === "dagre" ? withDagre(nodes, edges) : layered(nodes, edges);
    self.postMessage({ id, engine, ms: performance.now() - started, ...result });
  } catch (err) {
    self.postMessage({ id, error: String(err && err.message ? err.message : err) });
  }
};
