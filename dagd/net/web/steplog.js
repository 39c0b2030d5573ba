// The Run page's log panel: one step's output, attempt by attempt (a button per attempt), its
// stdout and stderr each in its own pane, followed live while the attempt runs.
//
// Live output comes from the WebSocket's `follow_log` request, one per stream: the daemon sends
// `log_chunk` messages, each a piece of one attempt's stream from a byte `offset` to its
// `nextOffset`, then `log_end` once the attempt is over and everything is sent. A pane remembers
// the last `nextOffset`; after a reconnect it asks again from there, so nothing is shown twice or
// lost. A pane keeps at most `maxBytes` of text in the page (dropping its oldest chunks, with a
// note saying how much is not shown and how to read all of it); it keeps the newest line in view
// until the person scrolls up, and follows again once they scroll back to the bottom.

import { formatDuration } from "./runmodel.js";
import { h } from "./dom.js";
import { frameThrottle } from "./runvlist.js";

const encoder = new TextEncoder();
const STREAMS = [
  ["out", "stdout"],
  ["err", "stderr"],
];

/** One stream of one attempt: a bounded, auto-scrolling <pre>. */
export class LogPane {
  constructor(stream, label, maxBytes) {
    this.maxBytes = maxBytes;
    this.kept = []; // [{node, bytes}]
    this.keptBytes = 0;
    this.droppedBytes = 0;
    this.pending = []; // [[text, bytes]] waiting for the next frame
    this.pendingBytes = 0;
    this.stick = true;
    this.root = h("div", { class: "log-stream", "data-stream": stream });
    this.title = h("h3", {}, label);
    this.note = h("p", { class: "log-note" });
    this.text = h("pre", { class: "log-text", tabindex: "0", "aria-label": `${label} of this attempt` });
    this.status = h("p", { class: "log-state" });
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

  /** `bytes` of the log's start are not shown (the follow began near the end). */
  skip(bytes) {
    this.droppedBytes += bytes;
    this.frame.schedule();
  }

  /** Queue text for the next frame; `bytes`: how many log bytes it stands for. A hidden tab
   * runs no frames, so the queue keeps only its newest chunks of maxBytes (plus the one that
   * crosses it); what it drops counts as not shown. */
  append(data, bytes) {
    if (!data) return;
    this.pending.push([data, bytes]);
    this.pendingBytes += bytes;
    while (this.pending.length > 1 && this.pendingBytes - this.pending[0][1] >= this.maxBytes) {
      const [, old] = this.pending.shift();
      this.pendingBytes -= old;
      this.droppedBytes += old;
    }
    this.frame.schedule();
  }

  flush() {
    this.drawNote();
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
    this.pendingBytes = 0;
    this.text.append(frag);
    this.trim();
    this.drawNote();
    if (stick) this.text.scrollTop = this.text.scrollHeight;
  }

  drawNote() {
    if (this.droppedBytes > 0) {
      this.note.textContent =
        `Showing the last ${formatBytes(this.keptBytes)}; the earlier ${formatBytes(this.droppedBytes)} ` +
        "are not shown here (dagd logs RUN STEP prints all of it).";
    }
  }

  /** Drop the oldest text until at most maxBytes are kept: whole chunks first, then the start
   * of the oldest one, up to a line's end, so the pane begins with a whole line. */
  trim() {
    while (this.kept.length > 1 && this.keptBytes - this.kept[0].bytes >= this.maxBytes) {
      const old = this.kept.shift();
      old.node.remove();
      this.keptBytes -= old.bytes;
      this.droppedBytes += old.bytes;
    }
    const first = this.kept[0];
    if (!first || this.keptBytes <= this.maxBytes) return;
    const text = first.node.data;
    let cut = Math.min(text.length, this.keptBytes - this.maxBytes);
    const eol = text.indexOf("\n", cut);
    cut = eol < 0 ? text.length : eol + 1;
    const bytes = Math.min(first.bytes, encoder.encode(text.slice(0, cut)).length);
    first.node.deleteData(0, cut);
    first.bytes -= bytes;
    this.keptBytes -= bytes;
    this.droppedBytes += bytes;
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

/** Follows one (run, step, attempt, stream) over the connection (`follow_log`, docs/protocol.md
 * "Following a step's log"), resuming after reconnects from the byte it had reached. */
class LogFollow {
  constructor(conn, key, pane) {
    this.conn = conn;
    this.key = key;
    this.pane = pane;
    this.next = 0; // byte offset after the last chunk shown (the last nextOffset)
    this.started = false; // a follow_log was answered once (later ones resume at `next`)
    this.cutLine = false; // drop text up to the first newline (the tail began mid-line)
    this.following = false; // log_following came: chunks before it belong to an older follow
    this.done = false;
    this.active = true;
    this.offMessage = conn.on("message", (msg) => {
      if (this.active && this.following && this.matches(msg)) {
        if (msg.type === "log_chunk") this.chunk(msg);
        else if (msg.type === "log_end") this.end(msg);
      }
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
    this.following = false;
    this.pane.setState("following…");
    // The first time, only the last part the pane keeps (`tail`): a 100 MB log is not sent
    // whole to be dropped. After a reconnect, from the byte it had reached.
    const from = this.started ? { offset: this.next } : { tail: this.pane.maxBytes };
    this.conn
      .request({ type: "follow_log", ...this.key, ...from })
      .then((answer) => {
        if (!this.started && answer.offset > 0) {
          this.next = answer.offset;
          this.cutLine = true;
          this.pane.skip(answer.offset);
        }
        this.started = true;
        this.following = true;
      })
      .catch((err) => {
        if (this.active) this.pane.setState(`cannot read this log: ${err.code ?? "error"}: ${err.detail ?? err.message}`);
      });
  }

  chunk(msg) {
    if (msg.nextOffset <= this.next) return; // already shown
    if (msg.offset > this.next) {
      this.pane.append(`\n[… ${formatBytes(msg.offset - this.next)} not shown …]\n`, 0);
    }
    let text = msg.text;
    let bytes = msg.nextOffset - msg.offset;
    if (this.cutLine) {
      // The tail began inside a line: start the pane at the next whole one.
      const eol = text.indexOf("\n");
      const cut = eol < 0 ? text : text.slice(0, eol + 1);
      const cutBytes = Math.min(bytes, encoder.encode(cut).length);
      this.pane.skip(cutBytes);
      text = text.slice(cut.length);
      bytes -= cutBytes;
      this.cutLine = eol < 0;
    }
    this.pane.append(text, bytes);
    this.next = msg.nextOffset;
  }

  end(msg) {
    this.done = true;
    if (msg.reason === "complete") {
      this.pane.setState(msg.offset === 0 ? "(no output)" : "");
    } else if (msg.reason === "deleted") {
      this.pane.setState("The rest of this log is gone: history retention deleted the run.");
    } else {
      this.pane.setState(`The daemon cannot read this log: ${msg.message ?? msg.reason}`);
    }
  }

  stop() {
    if (!this.active) return;
    this.active = false;
    this.offMessage();
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
    this.panes = STREAMS.map(([stream, label]) => new LogPane(stream, label, this.maxBytes));
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
