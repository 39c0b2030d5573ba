// One run as the Run page sees it: the `get_run` answer (docs/protocol.md, "One run"),
// kept current by the run's DAG events. Pure: no DOM, no connection; times are ms since the
// UNIX epoch (Date.parse of the wire's ISO text), durations ms.
//
// Attempts: `step_status` carries no attempt number, so an attempt is recognised by its
// start time: an event whose startTime is not one of the step's known attempts opens the next
// attempt (numbered after the highest known one), and an event with an endTime closes the
// attempt that started at its startTime. Applying an event twice, or an event older than the
// `get_run` answer it follows, therefore adds no attempt: the page subscribes before it asks
// for the run and may see a few events the answer already contains.

export const FINISHED_RUN = new Set(["success", "failed", "cancelled"]);
export const FINISHED_STEP = new Set(["success", "failed", "upstream_failed", "skipped", "cancelled"]);

/** ms since the epoch, or null for null/undefined/unreadable text. */
export function parseTime(text) {
  if (text === null || text === undefined) return null;
  const ms = Date.parse(text);
  return Number.isNaN(ms) ? null : ms;
}

function attemptOf(wire) {
  return {
    attempt: wire.attempt,
    status: wire.status,
    start: parseTime(wire.startTime),
    end: parseTime(wire.endTime),
    error: wire.error ?? null,
    worker: wire.worker ?? null,
  };
}

export class RunModel {
  /** @param answer the `run` answer of `get_run` (wire JSON). */
  constructor(answer) {
    const rec = answer.record;
    this.dagId = rec.dagId;
    this.runId = rec.runId;
    this.status = rec.status;
    this.params = rec.params || {};
    this.queuedAt = parseTime(rec.queuedAt);
    this.startedAt = parseTime(rec.startedAt);
    this.endedAt = parseTime(rec.endedAt);
    this.parentRunId = rec.parentRunId ?? answer.parentRunId ?? null;
    this.triggeredBy = rec.triggeredBy ?? null;
    this.trigger = answer.trigger ?? null;
    this.dagVersion = answer.dagVersion ?? null;
    this.progress = null;
    /** step ids in file order */
    this.order = [];
    /** stepId -> step */
    this.steps = new Map();
    for (const s of answer.steps) {
      this.order.push(s.stepId);
      this.steps.set(s.stepId, {
        stepId: s.stepId,
        index: this.order.length - 1,
        status: s.status,
        start: parseTime(s.startTime),
        end: parseTime(s.endTime),
        duration: s.duration ?? null,
        retryCount: s.retryCount ?? 0,
        error: s.error ?? null,
        attempt: s.attempt ?? 0,
        dependsOn: s.dependsOn || [],
        // A lifecycle handler ("on_failure" ...): outside the graph, it runs once every
        // ordinary step is final, after the handlers before it (docs/dags.md).
        handler: s.handler ?? null,
        attempts: (s.attempts || []).map(attemptOf),
      });
    }
    this.levels = stepLevels(this);
  }

  /** Take over the state of `fresh` (a RunModel of the same run, read later), keeping this
   * object, which the page's parts hold. */
  reset(fresh) {
    Object.assign(this, fresh);
  }

  /** A run's duration in ms: to its end, or to `now` while it runs; null before it started. */
  duration(now) {
    if (this.startedAt === null) return null;
    const end = this.endedAt ?? (FINISHED_RUN.has(this.status) ? this.startedAt : now);
    return Math.max(0, end - this.startedAt);
  }

  /** Counts by step status: {success: 3, running: 1, ...}. */
  counts() {
    const out = {};
    for (const s of this.steps.values()) out[s.status] = (out[s.status] || 0) + 1;
    return out;
  }

  /**
   * Apply one DAG event ({type, seq, data} or a snapshot event without seq).
   * @returns {null | {run?: true, step?: string, progress?: true}} what changed (null: another
   *   run's event, or nothing).
   */
  apply(event) {
    const d = event.data;
    if (!d || d.runId !== this.runId) return null;
    switch (event.type) {
      case "dag_run_status":
        return this.applyRunStatus(d);
      case "step_status":
        return this.applyStepStatus(d);
      case "dag_run_progress":
        this.progress = {
          total: d.totalSteps,
          completed: d.completedSteps,
          running: d.runningSteps,
          failed: d.failedSteps,
          pending: d.pendingSteps,
          percent: d.completionPercentage,
        };
        return { progress: true };
      case "error":
        if (d.stepId && this.steps.has(d.stepId)) {
          this.steps.get(d.stepId).error = d.error;
          return { step: d.stepId };
        }
        return null;
      default:
        return null;
    }
  }

  applyRunStatus(d) {
    const at = parseTime(d.timestamp);
    this.status = d.status;
    if (d.status === "queued") {
      // A retried run is queued again: it has not ended (list_runs shows endedAt null).
      this.endedAt = null;
    } else if (d.status === "running") {
      if (this.startedAt === null) this.startedAt = at;
      this.endedAt = null;
    } else if (FINISHED_RUN.has(d.status)) {
      this.endedAt = at;
    }
    return { run: true };
  }

  applyStepStatus(d) {
    const step = this.steps.get(d.stepId);
    if (!step) return null;
    const start = parseTime(d.startTime);
    const end = parseTime(d.endTime);
    step.status = d.status;
    step.start = start;
    step.end = end;
    step.duration = d.duration ?? null;
    step.retryCount = d.retryCount ?? 0;
    step.error = d.error ?? null;
    if (start !== null) {
      let att = step.attempts.find((a) => a.start === start);
      if (!att) {
        const last = step.attempts.reduce((m, a) => Math.max(m, a.attempt), step.attempt);
        att = { attempt: last + 1, status: "running", start, end: null, error: null, worker: null };
        step.attempts.push(att);
        step.attempt = att.attempt;
      }
      if (end !== null || d.status !== "running") {
        att.status = d.status;
        att.end = end;
        att.error = d.error ?? null;
        if (d.worker) att.worker = d.worker;
      } else {
        att.status = "running";
        att.end = null;
      }
    }
    return { step: d.stepId };
  }
}

/** stepId -> graph level (0 without upstreams, else 1 + the deepest upstream), as get_dag's
 * `level`, computed from the run's own definition in topological order (Kahn), without
 * recursion, so a 10,000-step chain is no deeper than a single step. */
export function stepLevels(model) {
  const level = new Map();
  const waiting = new Map();
  const downstream = new Map();
  const ready = [];
  for (const id of model.order) {
    const ups = model.steps.get(id).dependsOn.filter((u) => model.steps.has(u));
    waiting.set(id, ups.length);
    level.set(id, 0);
    for (const u of ups) {
      if (!downstream.has(u)) downstream.set(u, []);
      downstream.get(u).push(id);
    }
    if (ups.length === 0) ready.push(id);
  }
  for (let i = 0; i < ready.length; i++) {
    const id = ready[i];
    for (const down of downstream.get(id) || []) {
      level.set(down, Math.max(level.get(down), level.get(id) + 1));
      const left = waiting.get(down) - 1;
      waiting.set(down, left);
      if (left === 0) ready.push(down);
    }
  }
  return level;
}

/** The run's definition in get_dag's shape (steps with stepId/dependsOn/level, edges), for
 * drawing the graph of the definition this run actually ran. */
export function graphOf(model) {
  const steps = [];
  const edges = [];
  for (const id of model.order) {
    const s = model.steps.get(id);
    if (s.handler) continue; // handlers are outside the graph (the timeline and table show them)
    steps.push({ stepId: id, description: "", dependsOn: s.dependsOn, level: model.levels.get(id) ?? 0 });
    for (const up of s.dependsOn) edges.push({ source: up, target: id });
  }
  return { steps, edges };
}

/** When a step finished, for the critical path: the end of its last attempt, `now` while it
 * runs, null if it never ran. */
function finishOf(step, now) {
  let f = null;
  for (const a of step.attempts) {
    const e = a.end ?? (a.status === "running" ? now : a.start);
    if (e !== null && (f === null || e > f)) f = e;
  }
  return f;
}

/**
 * The critical path: the chain of steps that determined when the run ended (or, while it runs,
 * where it is now). Starting from the step that finished last, repeatedly take the upstream
 * that finished last, until a step whose upstreams never ran. O(steps + edges).
 * @returns {string[]} step ids, first to last; empty when no step ran.
 */
export function criticalPath(model, now) {
  const finish = new Map();
  for (const id of model.order) finish.set(id, finishOf(model.steps.get(id), now));
  // Later finish first; on a tie (times are ms: fast steps end in the same one), the deeper
  // step, which cannot have ended before its upstreams.
  const later = (a, b) => {
    const fa = finish.get(a);
    const fb = finish.get(b);
    if (fa !== fb) return fa > fb;
    const la = model.levels.get(a) ?? 0;
    const lb = model.levels.get(b) ?? 0;
    return la !== lb ? la > lb : model.steps.get(a).index > model.steps.get(b).index;
  };
  let tail = null;
  for (const id of model.order) {
    if (finish.get(id) !== null && (tail === null || later(id, tail))) tail = id;
  }
  const path = [];
  const seen = new Set();
  while (tail !== null && !seen.has(tail)) {
    seen.add(tail);
    path.push(tail);
    let next = null;
    for (const up of upstreamsOf(model, tail)) {
      const f = finish.get(up);
      if (f !== null && f !== undefined && (next === null || later(up, next))) next = up;
    }
    tail = next;
  }
  return path.reverse();
}

/** What a step waited for: its upstreams; for a lifecycle handler, every ordinary step and
 * the handlers before it. */
function upstreamsOf(model, stepId) {
  const step = model.steps.get(stepId);
  if (!step.handler) return step.dependsOn;
  return model.order.slice(0, step.index);
}

/** "1.2 s", "3 min 4 s", "2 h 5 min" for ms; "" for null. */
export function formatDuration(ms) {
  if (ms === null || ms === undefined) return "";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.floor(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** Local date and time with seconds for ms since the epoch; "" for null. */
export function formatTime(ms) {
  if (ms === null || ms === undefined) return "";
  const d = new Date(ms);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`
  );
}
