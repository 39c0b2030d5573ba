// The dashboard's client of dagd's WebSocket protocol (docs/protocol.md), following the same
// rules as dagd/client.py:
// - connect to ws(s)://<this page's host>/api/v1/ws, send `auth`, then `subscribe` to every
//   DAG ("*") with `since` = the last seq processed (the `auth_success` seq on the first
//   connection), so replayed and live events arrive in seq order with nothing repeated;
// - events are de-duplicated by seq (a seq not above the last one is dropped);
// - on `replay_unavailable` or `replay_ahead` the copy cannot be completed event by event: ask
//   for a `snapshot` and tell the pages to reload what they show (the `resync` event);
// - reconnect after about 1 s, doubling up to 30 s, with full jitter; reset once a connection
//   got as far as `subscribed`; never retry after `auth_failed`;
// - no message for 2.5 heartbeat intervals (30 s by default) counts as a dead connection.
//
// API (the pages' only way to the daemon):
//   const client = new DagdClient({url, token});
//   client.on("state", (state) => ...)     // {phase, message, retryAt, role, seq}; phase is
//                                          // "connecting" | "replaying" | "live" |
//                                          // "disconnected" | "auth_failed" | "closed"
//   client.on("event", (event) => ...)     // a DAG event as on the wire: {type, seq, data}
//   client.on("resync", ({events, seq}) => ...)  // events were lost: reload your queries;
//                                          // `events` is the daemon's snapshot (no seq)
//   client.on("connected", ({reconnect, seq}) => ...)   // after each auth + subscribe
//   client.on("message", (message) => ...) // any other message without a requestId
//                                          // (e.g. log_chunk of a followed log)
//   const answer = await client.request({type: "list_dags"});   // rejects with DagdError
//   client.role  // "read" | "operate" | null before the first auth_success
//   client.start(); client.close();
//   client.reconnectNow()                  // while disconnected: skip the wait
// `on` returns a function that removes the listener.

export const ENDPOINT_PATH = "/api/v1/ws";

const BACKOFF_BASE_S = 1;
const BACKOFF_CAP_S = 30;
const HEARTBEAT_INTERVAL_S = 30;  // the daemon's default heartbeat_interval
const SILENCE_LIMIT_MS = 2.5 * HEARTBEAT_INTERVAL_S * 1000;
const REQUEST_TIMEOUT_MS = 15000;
// A ping of our own this often: its pong proves the link alive whatever heartbeat_interval
// the daemon is configured with (the silence limit above assumes the default).
const PING_EVERY_MS = 25000;
// Requests sent per second at most: half the daemon's default rate limit (100 messages a
// second), leaving room for pings and log follows.
const MAX_REQUESTS_PER_S = 50;

/** An error answer of the daemon (`code` from docs/protocol.md's table), or
 * `connection_error` when the request could not be answered. */
export class DagdError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.code = code;
    this.detail = message;
  }
}

/** The WebSocket URL of the daemon that served this page. */
export function endpointUrl(location = window.location) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${ENDPOINT_PATH}`;
}

export class DagdClient {
  constructor({ url = endpointUrl(), token, WebSocketClass = WebSocket } = {}) {
    this.url = url;
    this.token = token;
    this.WebSocketClass = WebSocketClass;
    this.role = null;
    this.lastSeq = null;          // the last seq processed; null before the first auth
    this.failures = 0;            // consecutive failed connections (the backoff's exponent)
    this.connections = 0;
    this.state = { phase: "connecting", message: "", retryAt: null, role: null, seq: null };
    this.listeners = new Map();
    this.pending = new Map();     // requestId -> {resolve, reject, timer}
    this.waitingForOpen = [];     // requests made while not connected: [{send, reject}]
    this.ids = 0;
    this.ws = null;
    this.ready = false;           // authenticated and subscribed
    this.held = null;             // events held until replay_complete
    this.snapshot = null;         // snapshot events being collected
    this.retryTimer = null;
    this.silenceTimer = null;     // the interval that checks lastMessageAt
    this.lastMessageAt = 0;
    this.pingTimer = null;
    this.sentAt = [];             // when the requests of the last second went out (ms)
    this.paceQueue = [];          // requests waiting for the rate to allow them
    this.paceTimer = null;
    this.closed = false;
  }

  on(name, fn) {
    if (!this.listeners.has(name)) this.listeners.set(name, new Set());
    this.listeners.get(name).add(fn);
    return () => this.listeners.get(name)?.delete(fn);
  }

  emit(name, value) {
    for (const fn of [...(this.listeners.get(name) || [])]) {
      try {
        fn(value);
      } catch (err) {
        console.error(`dagd: a ${name} listener failed`, err);
      }
    }
  }

  setState(phase, extra = {}) {
    this.state = { phase, message: "", retryAt: null, role: this.role, seq: this.lastSeq, ...extra };
    this.emit("state", this.state);
  }

  start() {
    this.closed = false;
    this.connect();
  }

  /** While disconnected: try again now instead of waiting out the backoff. */
  reconnectNow() {
    if (this.closed || this.state.phase !== "disconnected") return;
    clearTimeout(this.retryTimer);
    this.connect();
  }

  close() {
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.stopWatching();
    clearInterval(this.pingTimer);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    this.failAll("the dashboard closed the connection");
    this.setState("closed");
  }

  /** Send a request and resolve with its answer (matched by requestId); reject with a
   * DagdError carrying the daemon's error code, or `connection_error` when no connection
   * came up within 15 s or it dropped before the answer. */
  request(message, { timeout = REQUEST_TIMEOUT_MS } = {}) {
    return new Promise((resolve, reject) => {
      const requestId = `d${++this.ids}`;
      const send = () => this.pace(() => {
        if (!this.ready || !this.ws) {
          reject(new DagdError("connection_error", "the connection to the daemon dropped"));
          return;
        }
        const timer = setTimeout(() => {
          this.pending.delete(requestId);
          reject(new DagdError("connection_error", "no answer from the daemon in time"));
        }, timeout);
        this.pending.set(requestId, { resolve, reject, timer });
        this.ws.send(JSON.stringify({ ...message, requestId }));
      });
      if (this.ready) {
        send();
        return;
      }
      const entry = { send, reject };
      entry.timer = setTimeout(() => {
        this.waitingForOpen = this.waitingForOpen.filter((e) => e !== entry);
        reject(new DagdError("connection_error", "cannot reach the daemon"));
      }, timeout);
      this.waitingForOpen.push(entry);
    });
  }

  /** Run `send` now, or as soon as fewer than MAX_REQUESTS_PER_S requests went out in the
   * last second: the daemon closes a client that sends over server.rate_limit (100) messages
   * a second, and a page asking about 200 DAGs at once must not get its connection closed. */
  pace(send) {
    const now = performance.now();
    while (this.sentAt.length && now - this.sentAt[0] >= 1000) this.sentAt.shift();
    if (this.sentAt.length < MAX_REQUESTS_PER_S && !this.paceQueue.length) {
      this.sentAt.push(now);
      send();
      return;
    }
    this.paceQueue.push(send);
    this.schedulePace(now);
  }

  schedulePace(now) {
    if (this.paceTimer !== null) return;
    const wait = this.sentAt.length ? 1000 - (now - this.sentAt[0]) + 1 : 0;
    this.paceTimer = setTimeout(() => {
      this.paceTimer = null;
      const later = performance.now();
      while (this.sentAt.length && later - this.sentAt[0] >= 1000) this.sentAt.shift();
      while (this.paceQueue.length && this.sentAt.length < MAX_REQUESTS_PER_S) {
        this.sentAt.push(later);
        this.paceQueue.shift()();
      }
      if (this.paceQueue.length) this.schedulePace(later);
    }, Math.max(0, wait));
  }

  // ------------------------------------------------------------------ connection

  connect() {
    if (this.closed) return;
    this.ready = false;
    this.held = null;
    this.snapshot = null;
    this.setState("connecting");
    let ws;
    try {
      ws = new this.WebSocketClass(this.url);
    } catch (err) {
      this.lost(`cannot open ${this.url}: ${err.message}`);
      return;
    }
    this.ws = ws;
    let authenticated = false;
    ws.addEventListener("open", () => {
      ws.send(JSON.stringify({ type: "auth", token: this.token }));
      this.watchSilence();
    });
    ws.addEventListener("message", (msg) => {
      if (ws !== this.ws) return;
      this.watchSilence();
      let message;
      try {
        message = JSON.parse(msg.data);
      } catch {
        return;  // the daemon only sends JSON: nothing sensible to do with anything else
      }
      if (!authenticated) {
        if (message.type === "auth_success") {
          authenticated = true;
          this.welcome(message);
        } else if (message.type === "error" && message.code === "auth_failed") {
          this.authFailed();
        }
        return;
      }
      this.receive(message);
    });
    ws.addEventListener("close", (ev) => {
      if (ws !== this.ws) return;
      const why = ev.code === 1006 || !ev.code
        ? "the connection to the daemon was lost"
        : `the daemon closed the connection (${ev.code}${ev.reason ? `: ${ev.reason}` : ""})`;
      this.lost(why);
    });
  }

  welcome(message) {
    this.role = message.role;
    const first = this.lastSeq === null;
    if (first) this.lastSeq = message.seq;
    // subscribe + since: the missed events, then the live ones, in order, none repeated.
    this.held = [];
    this.setState("replaying");
    this.ws.send(JSON.stringify({ type: "subscribe", dagIds: ["*"], since: this.lastSeq }));
  }

  authFailed() {
    this.closed = true;
    this.stopWatching();
    clearInterval(this.pingTimer);
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000);
    this.failAll("the daemon refused the token");
    this.setState("auth_failed", { message: "the daemon refused the token" });
  }

  lost(why) {
    this.stopWatching();
    clearInterval(this.pingTimer);
    const ws = this.ws;
    this.ws = null;
    this.ready = false;
    if (ws && ws.readyState <= 1) ws.close();
    this.failAll(why);
    if (this.closed) return;
    const ceiling = Math.min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** Math.min(this.failures, 16));
    const delay = Math.random() * ceiling * 1000;  // full jitter
    this.failures += 1;
    this.setState("disconnected", { message: why, retryAt: Date.now() + delay });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  startPinging(ws) {
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      if (ws === this.ws && ws.readyState === 1) ws.send(JSON.stringify({ type: "ping" }));
      else clearInterval(this.pingTimer);
    }, PING_EVERY_MS);
  }

  /** Note that the daemon was heard from; one interval per connection checks the silence
   * (not a timer per message: a 2,000-step run's burst is thousands of messages). */
  watchSilence() {
    this.lastMessageAt = Date.now();
    if (this.silenceTimer !== null) return;
    this.silenceTimer = setInterval(() => {
      if (Date.now() - this.lastMessageAt > SILENCE_LIMIT_MS) {
        this.lost(`no message from the daemon for ${SILENCE_LIMIT_MS / 1000} s`);
      }
    }, 1000);
  }

  stopWatching() {
    clearInterval(this.silenceTimer);
    this.silenceTimer = null;
  }

  failAll(why) {
    for (const [id, entry] of this.pending) {
      clearTimeout(entry.timer);
      entry.reject(new DagdError("connection_error", why));
      this.pending.delete(id);
    }
  }

  // -------------------------------------------------------------------- messages

  receive(message) {
    const type = message.type;
    if (message.requestId !== undefined && this.pending.has(message.requestId)) {
      const entry = this.pending.get(message.requestId);
      this.pending.delete(message.requestId);
      clearTimeout(entry.timer);
      if (type === "error") entry.reject(new DagdError(message.code, message.message));
      else entry.resolve(message);
      return;
    }
    if ("data" in message && typeof message.type === "string") {
      this.dagEvent(message);
    } else if (type === "subscribed") {
      if (!this.ready) this.becameReady();
    } else if (type === "replay_complete") {
      this.releaseHeld();
    } else if (type === "error" && (message.code === "replay_unavailable" || message.code === "replay_ahead")) {
      // The copy cannot be completed event by event (retention deleted events, or our seq
      // is from another event log): take the daemon's snapshot instead.
      if (message.code === "replay_ahead") this.lastSeq = 0;
      this.releaseHeld();
      this.snapshot = [];
      this.ws.send(JSON.stringify({ type: "snapshot" }));
    } else if (type === "snapshot_complete") {
      const events = this.snapshot || [];
      this.snapshot = null;
      this.lastSeq = Math.max(this.lastSeq || 0, message.seq);
      this.emit("resync", { events, seq: this.lastSeq });
      this.setState("live");
    } else if (type !== "heartbeat" && type !== "pong") {
      // Messages of other features (log_chunk of a followed log, ...): pages listen with
      // client.on("message", fn).
      this.emit("message", message);
    }
  }

  becameReady() {
    this.ready = true;
    this.startPinging(this.ws);
    this.failures = 0;
    const reconnect = this.connections > 0;
    this.connections += 1;
    this.emit("connected", { reconnect, seq: this.lastSeq });
    const waiting = this.waitingForOpen;
    this.waitingForOpen = [];
    for (const entry of waiting) {
      clearTimeout(entry.timer);
      entry.send();
    }
  }

  dagEvent(event) {
    if (event.seq === undefined || event.seq === null) {
      if (this.snapshot) this.snapshot.push(event);
      return;
    }
    if (this.held) {
      this.held.push(event);
      return;
    }
    this.deliver(event);
  }

  releaseHeld() {
    const held = this.held || [];
    this.held = null;
    held.sort((a, b) => a.seq - b.seq);
    for (const event of held) this.deliver(event);
    if (!this.snapshot) this.setState("live");
  }

  deliver(event) {
    if (event.seq <= (this.lastSeq || 0)) return;  // already processed (a replay overlap)
    this.lastSeq = event.seq;
    this.emit("event", event);
  }
}
