// The Run page's log panel: one step's output, attempt by attempt (a button per attempt), its
// stdout and stderr each in its own pane, followed live while the attempt runs.
//
// Live output comes from the WebSocket's `follow_log` request: the daemon sends `log_chunk`
// messages, each a piece of one attempt's stream from a byte `offset`, until the attempt is over
// and everything is sent (`final` and nothing left). A pane remembers the byte offset after the
// last chunk it showed; after a reconnect it asks again from there, so nothing is shown twice or
// lost. A pane keeps at most `maxBytes` of text in the page (dropping its oldest chunks, with a
// note saying how much is not shown and how to read all of it); it keeps the newest line in view
// until the person scrolls up, and follows again once they scroll back to the bottom.

import { formatDuration } from "./runmodel.js";
import { frameThrottle, h } from "./runvlist.js";

const STREAMS = [
  ["out", "stdout"],
  ["err", "stderr"],
];
const encoder = new TextEncoder();

/** One stream of one attempt: a bounded, auto-scrolling <pre>. */
class LogPane {
  constructor(label, maxBytes) {
    this.maxBytes = maxBytes;
    this.kept = []; // [{node, bytes}]
    this.keptBytes = 0;
    this.droppedBytes = 0;
    this.pending = [];
    this.stick = true;
    this.root = h("div", { class: "log-stream" });
    this.title = h("h3", {}, label);
    this.note = h("p", { class: "log-note" });
    this.text = h("pre", { class: "log-text", tabindex: "0", "aria-label": `${label} of this attempt` });
    this.status = h("p", { class: "log-note log-state" });
    this.root.append(this.title, this.note, this.text, this.status);
    this.text.addEventListener(
      "scroll",
      () => {
        const t = this.text;
        this.stick = t.scrollTop + t.clientHeight >= t.scrollHeight - 4;
      },
      { passive: true },
    );
    this.frame = frameThrottle(() => this.flush());
  }

  /** Queue text for the next frame; `bytes`: how many log bytes it stands for. */
  append(data, bytes) {
    if (!data) return;
    this.pending.push([data, bytes]);
    this.frame.schedule();
  }

  flush() {
    if (this.pending.length === 0) return;
    const stick = this.stick;
    const frag = document.createDocumentFragment();
    for (const [data, bytes] of this.pending) {
      const node = document.createTextNode(data);
      frag.append(node);
      this.kept.push({ node, bytes });
      this.keptBytes += bytes;
    }
    this.pending = [];
    this.text.append(frag);
    while (this.keptBytes > this.maxBytes && this.kept.length > 1) {
      const old = this.kept.shift();
      old.node.remove();
      this.keptBytes -= old.bytes;
      this.droppedBytes += old.bytes;
    }
    if (this.droppedBytes > 0) {
      this.note.textContent =
        `Showing the last ${formatBytes(this.keptBytes)}; the earlier ${formatBytes(this.droppedBytes)} ` +
        "are not shown here (dagd logs RUN STEP prints all of it).";
    }
    if (stick) this.text.scrollTop = this.text.scrollHeight;
  }

  setState(text) {
    this.status.textContent = text;
  }

  destroy() {
    this.frame.cancel();
  }
}

function formatBytes(n) {
  if (n < 1024) return `${n} bytes`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(n < 10240 ? 1 : 0)} KiB`;
  return `${(n / 1048576).toFixed(1)} MiB`;
}

/** Follows one (run, step, attempt, stream) over the connection, resuming after reconnects. */
class LogFollow {
  constructor(conn, key, pane) {
    this.conn = conn;
    this.key = key;
    this.pane = pane;
    this.next = 0; // byte offset after the last chunk shown
    this.done = false;
    this.active = true;
    this.offChunk = conn.on("message", (msg) => {
      if (msg.type === "log_chunk") this.chunk(msg);
    });
    this.offReconnect = conn.on("connected", ({ reconnect }) => {
      if (reconnect && this.active && !this.done) this.start();
    });
    this.start();
  }

  matches(msg) {
    const k = this.key;
    return msg.runId === k.runId && msg.stepId === k.stepId && msg.attempt === k.attempt && msg.stream === k.stream;
  }

  start() {
    this.pane.setState("following…");
    this.conn
      .request({ type: "follow_log", ...this.key, offset: this.next })
      .catch((err) => {
        if (this.active) this.pane.setState(`cannot read this log: ${err.code ?? "error"}: ${err.detail ?? err.message}`);
      });
  }

  chunk(msg) {
    if (!this.active || !this.matches(msg)) return;
    const data = msg.data ?? "";
    const bytes = msg.nextOffset !== undefined ? msg.nextOffset - msg.offset : encoder.encode(data).length;
    const end = msg.offset + bytes;
    if (end <= this.next && bytes > 0) return; // already shown (a replayed piece after a reconnect)
    if (msg.offset > this.next) {
      this.pane.append(`\n[… ${formatBytes(msg.offset - this.next)} not shown …]\n`, 0);
    }
    this.pane.append(data, bytes);
    this.next = Math.max(this.next, end);
    if (msg.final && this.next >= (msg.size ?? this.next)) {
      this.done = true;
      this.pane.setState(this.next === 0 ? "(no output)" : "");
    } else {
      this.pane.setState("following…");
    }
  }

  stop() {
    if (!this.active) return;
    this.active = false;
    this.offChunk();
    this.offReconnect();
    if (!this.done) this.conn.request({ type: "unfollow_log", ...this.key }).catch(() => {});
  }
}

export class StepLog {
  /**
   * @param container element the panel is built in (emptied; hidden until a step is chosen)
   * @param conn the dashboard's connection (ws.js)
   * @param runId the run whose steps are shown
   * @param options.maxBytes most log bytes per pane kept in the page (default 256 KiB)
   */
  constructor(container, conn, runId, { maxBytes = 256 * 1024 } = {}) {
    this.conn = conn;
    this.runId = runId;
    this.maxBytes = maxBytes;
    this.step = null;
    this.attempt = null;
    this.follows = [];
    this.panes = [];
    this.root = h("section", { class: "step-log", "aria-label": "step log", hidden: true });
    this.heading = h("h2");
    this.attempts = h("div", { class: "log-attempts", role: "tablist", "aria-label": "attempts" });
    this.error = h("p", { class: "log-error" });
    this.streams = h("div", { class: "log-streams" });
    this.root.append(this.heading, this.attempts, this.error, this.streams);
    container.replaceChildren(this.root);
    this.attempts.addEventListener("click", (ev) => {
      const b = ev.target.closest("button[data-attempt]");
      if (b) this.choose(Number(b.getAttribute("data-attempt")), true);
    });
  }

  /** Show `step` (a RunModel step; null hides the panel), its latest attempt unless the person
   * picked another attempt of the same step. */
  show(step) {
    if (step === null) {
      this.stopFollowing();
      this.step = null;
      this.root.hidden = true;
      return;
    }
    const same = this.step !== null && this.step.stepId === step.stepId;
    this.step = step;
    this.root.hidden = false;
    this.heading.replaceChildren(document.createTextNode("Log of "), h("code", {}, step.stepId));
    this.drawAttempts();
    if (!same) {
      this.picked = false;
      this.choose(latest(step), false);
    } else if (!this.picked && latest(step) !== this.attempt) {
      // A new attempt started while the latest one was shown: move on to it.
      this.choose(latest(step), false);
    } else {
      this.drawError();
    }
  }

  drawAttempts() {
    const buttons = [];
    for (const a of this.step.attempts) {
      const took = a.end !== null && a.start !== null ? `, ${formatDuration(a.end - a.start)}` : "";
      buttons.push(
        h(
          "button",
          {
            type: "button",
            role: "tab",
            "data-attempt": a.attempt,
            "data-status": a.status,
            "aria-selected": a.attempt === this.attempt ? "true" : "false",
          },
          `attempt ${a.attempt} (${a.status.replace("_", " ")}${took})`,
        ),
      );
    }
    if (buttons.length === 0) buttons.push(h("span", { class: "log-note" }, "This step has not started."));
    this.attempts.replaceChildren(...buttons);
  }

  drawError() {
    const a = this.step?.attempts.find((x) => x.attempt === this.attempt);
    this.error.textContent = (a ? a.error : this.step?.error) ?? "";
  }

  choose(attempt, byPerson) {
    if (byPerson) this.picked = true;
    if (attempt === this.attempt && this.follows.length) {
      this.drawAttempts();
      this.drawError();
      return;
    }
    this.stopFollowing();
    this.attempt = attempt;
    this.drawAttempts();
    this.drawError();
    if (attempt === null) {
      this.streams.replaceChildren();
      return;
    }
    this.panes = STREAMS.map(([, label]) => new LogPane(label, this.maxBytes));
    this.streams.replaceChildren(...this.panes.map((p) => p.root));
    this.follows = STREAMS.map(
      ([stream], i) =>
        new LogFollow(this.conn, { runId: this.runId, stepId: this.step.stepId, attempt, stream }, this.panes[i]),
    );
  }

  stopFollowing() {
    for (const f of this.follows) f.stop();
    for (const p of this.panes) p.destroy();
    this.follows = [];
    this.panes = [];
    this.attempt = null;
  }

  destroy() {
    this.stopFollowing();
  }
}

function latest(step) {
  let best = null;
  for (const a of step.attempts) if (best === null || a.attempt > best) best = a.attempt;
  return best;
}
