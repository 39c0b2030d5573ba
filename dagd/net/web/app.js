// The dashboard's shell: the token, the connection banner, the header and the hash router.
//
// The token: `dagd dashboard` opens http://HOST:PORT/#token=<token>. The page moves it into
// sessionStorage (this tab only, gone when the tab closes) and takes it out of the address
// bar with history.replaceState, so it is not left in the history or a bookmark. It never goes
// into a query string or a cookie. Without a token the page asks for one. A #token= link opened
// in a tab already showing the dashboard is taken the same way, and the page connects again
// with the new token.
//
// Routes (routes.js makes the links): each page is an ES module loaded on first use that
// exports `mount(root, ctx)` and returns `{destroy(), update?(query)}`:
//   ctx = {client, params, query, role, navigate(hash)}
//   client: the DagdClient (ws.js); params: the route's ids (dagId, runId); query: the
//   route's URLSearchParams (e.g. step=<stepId>); role: "read" | "operate".
// When only the query of the current route changes, `update(query)` is called if the page
// has it, else the page is mounted again.

import { DagdClient, endpointUrl } from "./ws.js";
import { h, replace } from "./dom.js";
import { dagsHref, parseHash } from "./routes.js";

const TOKEN_KEY = "dagd.token";

const ROUTES = [
  { pattern: /^\/$/, keys: [], load: () => import("./dags.js"), title: "DAGs" },
  { pattern: /^\/dags\/([^/]+)$/, keys: ["dagId"], load: () => import("./dag.js"), title: "DAG" },
  { pattern: /^\/runs\/([^/]+)$/, keys: ["runId"], load: () => import("./run.js"), title: "Run" },
];

/** Take a token handed over in the fragment (#token=...) into sessionStorage and clear it
 * from the address bar. Returns the token to use, or null. */
function takeToken() {
  const hash = window.location.hash;
  if (hash.startsWith("#token=")) {
    // A malformed %-sequence is no token: the page asks for one instead of stopping here.
    const token = decodeOrNull(hash.slice("#token=".length)) || "";
    history.replaceState(null, "", `${window.location.pathname}#/`);
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

/** decodeURIComponent, or null for text with a malformed %-sequence (URIError). */
function decodeOrNull(text) {
  try {
    return decodeURIComponent(text);
  } catch (err) {
    if (err instanceof URIError) return null;
    throw err;
  }
}

// ------------------------------------------------------------------------- banner

function bannerText(state, now = Date.now()) {
  switch (state.phase) {
    case "connecting":
      return ["connecting", "Connecting to dagd…"];
    case "replaying":
      return ["replaying", "Connected; catching up on missed events…"];
    case "live":
      return ["live", "Live"];
    case "disconnected": {
      const secs = Math.max(0, Math.ceil((state.retryAt - now) / 1000));
      return ["disconnected", `Disconnected: ${state.message}. Reconnecting in ${secs} s…`];
    }
    case "auth_failed":
      return ["auth_failed", "The daemon refused the token."];
    default:
      return ["closed", "Not connected."];
  }
}

class Banner {
  constructor(el, roleEl) {
    this.el = el;
    this.roleEl = roleEl;
    this.text = h("span", { class: "banner-text" });
    this.retry = h("button", {
      type: "button", class: "banner-retry", hidden: true,
      onclick: () => client?.reconnectNow(),
    }, "Reconnect now");
    replace(el, this.text, this.retry);
    this.state = null;
    this.timer = setInterval(() => this.state?.phase === "disconnected" && this.render(), 500);
  }

  set(state) {
    this.state = state;
    this.render();
  }

  render() {
    const [phase, text] = bannerText(this.state);
    this.el.dataset.phase = phase;
    this.text.textContent = text;
    this.retry.hidden = phase !== "disconnected";
    const role = this.state.role;
    this.roleEl.textContent = role === "read" ? "read-only" : role === "operate" ? "operator" : "";
    this.roleEl.title = role === "read"
      ? "This token may look but not trigger, cancel or retry."
      : role === "operate" ? "This token may trigger, cancel and retry runs." : "";
  }
}

// ------------------------------------------------------------------------- token form

function askForToken(main, message) {
  if (!formListener) {
    formListener = () => takeTokenLink();
    window.addEventListener("hashchange", formListener);
  }
  const input = h("input", {
    id: "token-input", type: "password", name: "token", autocomplete: "off",
    required: true, "aria-describedby": "token-help",
  });
  const form = h("form", { class: "token-form card" },
    h("h1", {}, "Connect to dagd"),
    message ? h("p", { class: "form-error", role: "alert" }, message) : null,
    h("label", { for: "token-input" }, "Token"),
    input,
    h("p", { id: "token-help", class: "muted" },
      "Run ", h("code", {}, "dagd dashboard"),
      " on the daemon's machine: it opens this page with the token. Or paste a token " +
      "(the daemon's state folder has it in the file ", h("code", {}, "token"), ")."),
    h("button", { type: "submit", class: "primary" }, "Connect"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const token = input.value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    start(token);
  });
  replace(main, form);
  input.focus();
}

// ------------------------------------------------------------------------- router

class Router {
  constructor(main, client) {
    this.main = main;
    this.client = client;
    this.current = null;  // {route, key, page}
    this.generation = 0;
    this.destroyed = false;
    this.onHashChange = () => {
      if (!takeTokenLink()) this.show();
    };
    window.addEventListener("hashchange", this.onHashChange);
  }

  /** Stop following the address and close the current page (the client is done: a page
   * mounted later would talk to a closed connection and keep its timers for good). */
  destroy() {
    this.destroyed = true;
    this.generation++;  // a page still loading is not mounted
    window.removeEventListener("hashchange", this.onHashChange);
    this.destroyCurrent();
  }

  async show() {
    if (this.destroyed) return;
    const { path, query } = parseHash(window.location.hash);
    const generation = ++this.generation;
    let route = null;
    let match = null;
    for (const candidate of ROUTES) {
      match = candidate.pattern.exec(path);
      if (match) {
        route = candidate;
        break;
      }
    }
    const key = path;
    if (this.current && this.current.key === key && this.current.page?.update) {
      this.current.page.update(query);
      return;
    }
    this.destroyCurrent();
    const params = {};
    route?.keys.forEach((name, i) => {
      params[name] = decodeOrNull(match[i + 1]);
    });
    if (!route || Object.values(params).includes(null)) {
      replace(this.main, h("section", { class: "card" },
        h("h1", {}, "Not found"),
        h("p", {}, "No page at ", h("code", {}, path), ". ", h("a", { href: dagsHref() }, "All DAGs"))));
      return;
    }
    let module;
    try {
      module = await route.load();
    } catch (err) {
      if (generation !== this.generation) return;
      replace(this.main, h("section", { class: "card" },
        h("h1", {}, `${route.title} page unavailable`),
        h("p", {}, `This page could not be loaded: ${err.message}`)));
      return;
    }
    if (generation !== this.generation) return;
    const root = h("div", { class: "page" });
    replace(this.main, root);
    document.title = `dagd · ${params.dagId || params.runId || route.title}`;
    const ctx = {
      client: this.client,
      params,
      query,
      role: this.client.role,
      navigate: (hash) => {
        window.location.hash = hash;
      },
    };
    const page = module.mount(root, ctx) || {};
    this.current = { route, key, page };
  }

  destroyCurrent() {
    if (this.current?.page?.destroy) {
      try {
        this.current.page.destroy();
      } catch (err) {
        console.error("dagd: a page failed to close", err);
      }
    }
    this.current = null;
  }
}

// ------------------------------------------------------------------------- boot

/** A #token= link opened in a tab already showing the dashboard (a hashchange): take the
 * token and connect again with it. True if the address was such a link (handled here). */
function takeTokenLink() {
  if (!window.location.hash.startsWith("#token=")) return false;
  const previous = sessionStorage.getItem(TOKEN_KEY);
  const token = takeToken();
  if (!token || (token === previous && client && router)) {
    router?.show();  // the same token (or none): just the page the address now names
    return true;
  }
  router?.destroy();
  router = null;
  client?.close();
  start(token);
  return true;
}

// While the token form is shown there is no router: this listener takes a token link then.
let formListener = null;

function stopFormListener() {
  if (formListener) window.removeEventListener("hashchange", formListener);
  formListener = null;
}

let client = null;
let router = null;
let banner = null;

function start(token) {
  stopFormListener();
  const main = document.getElementById("main");
  banner ??= new Banner(document.getElementById("banner"), document.getElementById("role"));
  client = new DagdClient({ url: endpointUrl(), token });
  client.on("state", (state) => {
    banner.set(state);
    if (state.phase === "auth_failed") {
      sessionStorage.removeItem(TOKEN_KEY);
      router?.destroy();
      router = null;
      askForToken(main, "The daemon refused that token. Check it and try again.");
    }
  });
  // Pages need the role before they draw controls: mount once the first auth is through.
  const off = client.on("connected", () => {
    off();
    router = new Router(main, client);
    router.show();
  });
  replace(main, h("p", { class: "muted loading" }, "Connecting…"));
  client.start();
  window.dagdClient = client;  // for the browser console and the dashboard tests
}

function boot() {
  const token = takeToken();
  if (token) start(token);
  else askForToken(document.getElementById("main"), "");
}

boot();
