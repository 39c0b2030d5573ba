// Small DOM helpers shared by every page: building elements without HTML strings (so text
// from the daemon is never parsed as markup), and batching work to one animation frame.

/**
 * h("a", {href: "#/", class: "x", title: "..."}, "text", child, [more children])
 * Attributes are set with setAttribute (`class` included); `on*` keys are listeners
 * (`onclick: fn`), `dataset` an object of data-* values. null/false children are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

export const SVG_NS = "http://www.w3.org/2000/svg";

/** The same for SVG elements. */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** Replace all children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/**
 * Collects items and hands them to `flush(items)` once per animation frame, so a burst of
 * events (a 2,000-step fan-out finishing) costs one DOM update, not one per event.
 *
 * A hidden tab runs no animation frames, so the queue is bounded: `key(item)` names what an
 * item is about (a step of a run, say); a newer item with the same key replaces the older one
 * and moves to the end, so the newest item of each key is handed over, in the order of the
 * newest. If more than `limit` keys wait anyway, the queue is dropped and `onOverflow()` is
 * called at the next frame instead of `flush` (a page loads its state again); without
 * `onOverflow` the items beyond `limit` are dropped oldest first.
 * Returns {push(item), cancel(), size}.
 */
export function frameBatcher(flush, { key = (item) => item, limit = 10000, onOverflow = null } = {}) {
  let items = new Map();
  let overflowed = false;
  let frame = null;
  const run = () => {
    frame = null;
    const batch = [...items.values()];
    items = new Map();
    if (overflowed) {
      overflowed = false;
      onOverflow();
    } else {
      flush(batch);
    }
  };
  return {
    push(item) {
      const k = key(item);
      items.delete(k);
      items.set(k, item);
      if (items.size > limit) {
        if (onOverflow) {
          items = new Map();
          overflowed = true;
        } else {
          items.delete(items.keys().next().value);
        }
      }
      if (frame === null) frame = requestAnimationFrame(run);
    },
    cancel() {
      if (frame !== null) cancelAnimationFrame(frame);
      frame = null;
      items = new Map();
      overflowed = false;
    },
    get size() {
      return items.size;
    },
  };
}

/** The key of a daemon event for frameBatcher: its type, DAG, run, step and status, so the
 * queue holds at most one event per status of each step (or run) while a tab is hidden. */
export function eventKey({ type, data }) {
  const d = data || {};
  return `${type}\u0000${d.dagId}\u0000${d.runId}\u0000${d.stepId}\u0000${d.status}`;
}

/** Calls `fn` once, `ms` after the last of a burst of calls. Returns {call(), cancel()}. */
export function debounce(fn, ms) {
  let timer = null;
  return {
    call() {
      clearTimeout(timer);
      timer = setTimeout(() => {
        timer = null;
        fn();
      }, ms);
    },
    cancel() {
      clearTimeout(timer);
    },
  };
}

/** Runs `tasks` (functions returning promises) with at most `limit` in flight; resolves
 * with their results in order (a rejected task's slot holds its Error). Keeps the dashboard
 * well below the daemon's message rate limit (100 per second). */
export async function inBatches(tasks, limit = 4) {
  const results = new Array(tasks.length);
  let next = 0;
  async function worker() {
    while (next < tasks.length) {
      const i = next++;
      try {
        results[i] = await tasks[i]();
      } catch (err) {
        results[i] = err instanceof Error ? err : new Error(String(err));
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
  return results;
}
