// The dashboard's addresses (hash routes), made in one place so links agree:
//   #/                       every DAG (dags.js)
//   #/dags/<dagId>           one DAG: graph, params, trigger form, grid (dag.js)
//   #/runs/<runId>           one run (run.js)
//   #/runs/<runId>?step=<stepId>   one run with a step selected
// Ids are URI-encoded (run ids hold ":" and "+").

export function dagsHref() {
  return "#/";
}

export function dagHref(dagId) {
  return `#/dags/${encodeURIComponent(dagId)}`;
}

export function runHref(runId, stepId = null) {
  const base = `#/runs/${encodeURIComponent(runId)}`;
  return stepId === null || stepId === undefined
    ? base
    : `${base}?step=${encodeURIComponent(stepId)}`;
}

/** "#/runs/abc?step=x" -> {path: "/runs/abc", query: URLSearchParams("step=x")}. */
export function parseHash(hash) {
  const text = hash.replace(/^#/, "") || "/";
  const at = text.indexOf("?");
  const path = at < 0 ? text : text.slice(0, at);
  const query = new URLSearchParams(at < 0 ? "" : text.slice(at + 1));
  return { path: path.startsWith("/") ? path : `/${path}`, query };
}
