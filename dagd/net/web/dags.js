// The DAGs page (#/): every DAG the daemon has loaded, with its description, schedule and
// time zone, next run, tags, whether it is paused, its last runs as coloured squares (most
// recent last) and how many runs are active; then every broken DAG file with its problems
// (file, step, field), so a file that does not load is shown, not hidden.
//
// Data: `list_dags` (summaries and broken files), and `list_runs` of every DAG at once (the
// newest 1,000 runs; a DAG short of its last ten there is asked for them on its own).
// Live: `dag_run_status` events move the squares and the active count, `dag_status` events
// the paused flag and file errors; an `error` event without a run (a DAG file could not be
// loaded), a run of a DAG not listed yet, or a scheduled run being queued (its next run
// moved on) reloads the list, at most once a second; and it is read again every 30 s (a DAG
// file that was added and loads fine is no event).

import { debounce, eventKey, frameBatcher, h, inBatches, replace } from "./dom.js";
import { dateTime, relative } from "./format.js";
import { dagHref, runHref } from "./routes.js";
import { ACTIVE_RUN, statusLabel } from "./status.js";

const LAST_RUNS = 10;
const RECENT_ALL = 1000;  // list_runs' largest limit
const REFRESH_MS = 30000;

export function mount(root, ctx) {
  const page = new DagsPage(root, ctx);
  page.load();
  return page;
}

class DagsPage {
  constructor(root, ctx) {
    this.root = root;
    this.client = ctx.client;
    this.dags = new Map();        // dagId -> summary (the wire's list_dags entry)
    this.runs = new Map();        // dagId -> [{runId, status}], oldest first
    this.brokenFiles = [];
    this.rows = new Map();        // dagId -> {squares, active, paused, error}
    this.loaded = false;
    this.destroyed = false;
    this.reload = debounce(() => this.load(), 1000);
    // Bounded while the tab is hidden: the newest event per run and status, else a new load.
    this.batch = frameBatcher((events) => this.apply(events), { key: eventKey, onOverflow: () => this.load() });
    this.offs = [
      this.client.on("event", (event) => this.batch.push(event)),
      this.client.on("resync", () => this.load()),
    ];
    // A DAG file added to the folder (and loading fine) is no event: look again now and then,
    // which also moves next runs and "in 5 min" along.
    this.refresh = setInterval(() => {
      if (document.visibilityState === "visible") this.load();
    }, REFRESH_MS);
    replace(root, h("p", { class: "muted loading" }, "Loading DAGs…"));
  }

  destroy() {
    this.destroyed = true;
    this.offs.forEach((off) => off());
    this.batch.cancel();
    this.reload.cancel();
    clearInterval(this.refresh);
  }

  async load() {
    let answer;
    try {
      answer = await this.client.request({ type: "list_dags" });
    } catch (err) {
      if (!this.destroyed) this.showError(err);
      return;
    }
    if (this.destroyed) return;
    const dags = answer.dags || [];
    this.brokenFiles = answer.brokenFiles || [];
    // One request for the newest runs of every DAG; only when that page was full, one more
    // per DAG that got fewer than LAST_RUNS from it (its older runs may lie beyond).
    const byDag = new Map(dags.map((dag) => [dag.dagId, []]));
    let recent = [];
    try {
      recent = (await this.client.request({ type: "list_runs", limit: RECENT_ALL })).runs;
    } catch {
      // shown as "no runs yet"; the next event or reload fills it in
    }
    for (const run of recent) {
      const list = byDag.get(run.dagId);
      if (list && list.length < LAST_RUNS) list.push(run);
    }
    if (recent.length >= RECENT_ALL) {
      const short = dags.filter((dag) => byDag.get(dag.dagId).length < LAST_RUNS);
      const lists = await inBatches(short.map((dag) => () => this.client.request(
        { type: "list_runs", dagId: dag.dagId, limit: LAST_RUNS },
      )));
      short.forEach((dag, i) => {
        if (!(lists[i] instanceof Error)) byDag.set(dag.dagId, lists[i].runs);
      });
    }
    if (this.destroyed) return;
    this.dags = new Map(dags.map((dag) => [dag.dagId, dag]));
    this.runs = new Map();
    for (const dag of dags) {
      const list = byDag.get(dag.dagId);  // newest first
      this.runs.set(dag.dagId, list.map((r) => ({ runId: r.runId, status: r.status })).reverse());
    }
    this.loaded = true;
    this.render();
  }

  showError(err) {
    replace(this.root, h("p", { class: "error-text", role: "alert" },
      `Could not load the DAGs: ${err.message}`));
  }

  // ------------------------------------------------------------------ live events

  apply(events) {
    if (!this.loaded) return;
    const touched = new Set();
    for (const { type, data } of events) {
      if (type === "dag_run_status") {
        if (!this.dags.has(data.dagId)) {
          this.reload.call();
          continue;
        }
        const list = this.runs.get(data.dagId) || [];
        const known = list.find((r) => r.runId === data.runId);
        if (known) known.status = data.status;
        else {
          list.push({ runId: data.runId, status: data.status });
          if (list.length > LAST_RUNS) list.splice(0, list.length - LAST_RUNS);
        }
        this.runs.set(data.dagId, list);
        touched.add(data.dagId);
        if (data.status === "queued" && data.runId.startsWith("scheduled__")) this.reload.call();
      } else if (type === "dag_status") {
        const dag = this.dags.get(data.dagId);
        if (!dag) {
          this.reload.call();
          continue;
        }
        dag.paused = data.paused;
        dag.fileError = data.fileError;
        touched.add(data.dagId);
        this.reload.call();  // nextRun changes with paused; broken files with fileError
      } else if (type === "error" && data.runId === null) {
        this.reload.call();  // a DAG file could not be loaded
      }
    }
    for (const dagId of touched) this.updateRow(dagId);
  }

  // ------------------------------------------------------------------ drawing

  render() {
    const dags = [...this.dags.values()];
    const table = dags.length
      ? h("table", { class: "list dags" },
        h("thead", {}, h("tr", {},
          h("th", {}, "DAG"), h("th", {}, "Schedule"), h("th", {}, "Next run"),
          h("th", {}, "Tags"), h("th", {}, "Last runs"), h("th", {}, "Active"))),
        h("tbody", {}, dags.map((dag) => this.row(dag))))
      : h("p", { class: "empty" }, "The daemon has no DAGs loaded.");
    replace(this.root,
      h("h1", {}, "DAGs"),
      h("section", { class: "card", "aria-label": "DAGs" }, table),
      this.brokenSection());
  }

  row(dag) {
    const squares = h("span", { class: "squares" });
    const active = h("span", { class: "active-count" });
    const paused = h("span", { class: "paused-cell" });
    const error = h("div", { class: "dag-file-error" });
    this.rows.set(dag.dagId, { squares, active, paused, error, dag });
    const tr = h("tr", { dataset: { dagId: dag.dagId } },
      h("td", {},
        h("a", { class: "dag-id", href: dagHref(dag.dagId) }, dag.dagId), " ", paused,
        dag.description ? h("div", { class: "muted description" }, dag.description) : null,
        error),
      h("td", {}, dag.schedule
        ? [h("code", {}, dag.schedule), h("div", { class: "muted" }, dag.timezone)]
        : h("span", { class: "muted" }, "manual only")),
      h("td", { class: "next-run", title: dag.nextRun ? `${dag.nextRun} (UTC); shown in your time zone` : null }, dag.nextRun
        ? [dateTime(dag.nextRun), h("div", { class: "muted" }, relative(dag.nextRun))]
        : h("span", { class: "muted" }, dag.paused ? "paused" : "–")),
      h("td", {}, (dag.tags || []).map((tag) => h("span", { class: "tag" }, tag))),
      h("td", {}, squares),
      h("td", {}, active));
    this.updateRow(dag.dagId);
    return tr;
  }

  updateRow(dagId) {
    const row = this.rows.get(dagId);
    const dag = this.dags.get(dagId);
    if (!row || !dag) return;
    const runs = this.runs.get(dagId) || [];
    replace(row.squares, runs.length
      ? runs.map((run) => h("a", {
        class: "square",
        href: runHref(run.runId),
        dataset: { status: run.status, runId: run.runId },
        title: `${run.runId}: ${statusLabel(run.status)}`,
        "aria-label": `run ${run.runId}: ${statusLabel(run.status)}`,
      }))
      : h("span", { class: "muted" }, "no runs yet"));
    const count = runs.filter((r) => ACTIVE_RUN.has(r.status)).length;
    row.active.textContent = count ? `${count} active` : "–";
    replace(row.paused, dag.paused ? h("span", { class: "badge paused" }, "paused") : null);
    replace(row.error, dag.fileError
      ? [h("span", { class: "badge broken" }, "file broken: running the last good version"),
        h("pre", { class: "file-error" }, dag.fileError)]
      : null);
  }

  brokenSection() {
    // Files with no loaded version at all; a loaded DAG's broken file shows under its row.
    const files = this.brokenFiles.filter((f) => !f.dagId || !this.dags.has(f.dagId));
    if (!files.length) return null;
    return h("section", { class: "card broken-files", "aria-label": "Broken DAG files" },
      h("h2", {}, `Broken DAG files (${files.length})`),
      h("p", { class: "muted" }, "These files did not load; no version of them runs."),
      h("ul", { class: "problems" }, files.map((file) => h("li", { dataset: { file: file.file } },
        h("code", {}, file.file),
        h("ul", { class: "problems" }, file.problems.map((p) => h("li", {},
          p.step !== null ? h("span", { class: "problem-where" }, `step '${p.step}' `) : null,
          p.field !== null ? h("span", { class: "problem-where" }, `field '${p.field}' `) : null,
          p.message)))))));
  }
}
