// The sagaflow console: a client of the REST API at the same origin, nothing else.
// Every value from the API is put in the page as text (never as HTML), so data in a
// saga cannot run as code; the page's CSP forbids inline and foreign scripts too.

const TOKEN_KEY = "sagaflow.token";
const REFRESH_MS = 2000;
const STATUSES = ["running", "compensating", "completed", "compensated", "failed", "terminated"];
const main = document.getElementById("main");
let refreshTimer = null;

/** Builds an element: h("a", {href: "#"}, "text", child, …). */
function h(tag, attrs = {}, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

let traceUrl = "";
const configReady = fetch("/ui/config.json")
  .then((r) => r.json())
  .then((c) => { traceUrl = c.trace_url || ""; })
  .catch(() => {});

/** The saga's trace id, linked to the tracing UI when `api.trace_url` is set. */
function traceLink(id) {
  if (!id) return "—";
  if (!traceUrl) return id;
  return h("a", { href: traceUrl.replace("{trace_id}", id), target: "_blank", rel: "noopener noreferrer" }, id);
}

/** UUIDv7s share their leading time digits: the tail tells sagas apart at a glance. */
const shortId = (id) => `…${id.slice(-12)}`;
const badge = (status) => h("span", { class: `badge s-${status}` }, status);
const when = (t) => (t ? new Date(t).toLocaleString() : "—");
// Focusable, so a keyboard can scroll a long one.
const json = (v) => h("pre", { class: "mono", tabindex: 0 }, JSON.stringify(v, null, 2));

class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.errors = problem?.errors;
  }
}

/** Calls the API with the tab's token; a problem+json answer becomes an ApiError. */
async function api(method, path, body, contentType = "application/json") {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = contentType;
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : contentType === "application/json" ? JSON.stringify(body) : body,
  });
  const text = await res.text();
  const data = text && (res.headers.get("content-type") || "").includes("json") ? JSON.parse(text) : text;
  if (!res.ok) throw new ApiError(res.status, typeof data === "object" ? data : null);
  return data;
}

function show(...nodes) {
  main.replaceChildren(...nodes.flat().filter((n) => n !== ""));
}

function failure(err) {
  const hint = err.status === 401 || err.status === 403 ? " Enter a token with the needed scope above." : "";
  return h("p", { class: "error", role: "alert" }, `${err.message}.${hint}`);
}

/** Re-runs `load` every REFRESH_MS while `live()` holds; stops on navigation. */
function keepFresh(load, live = () => true) {
  clearInterval(refreshTimer);
  refreshTimer = setInterval(() => {
    if (live() && !document.hidden) load().catch(() => {});
  }, REFRESH_MS);
}

let stopLive = () => {};
// Bumped by each navigation: a view that finds it changed after an await has been left,
// and must not draw, poll or follow anything.
let navigation = 0;
const left = (mine) => mine !== navigation;

/** Shows whether the page is live (a stream is open) in the header's indicator. */
function setLive(state) {
  const el = document.getElementById("live");
  el.dataset.state = state;
  const text = { open: "live", closed: "reconnecting…", off: "polling" };
  el.textContent = text[state] || "";
}

/** Reads Server-Sent Events off a response body, calling onEvent(name, data) for each. */
async function readEvents(body, onEvent, onRetry) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value.replaceAll("\r\n", "\n");
    for (let cut = buf.indexOf("\n\n"); cut >= 0; cut = buf.indexOf("\n\n")) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        else if (line.startsWith("retry:")) onRetry(Number(line.slice(6)));
      }
      if (data.length) onEvent(name, data.join("\n"));
    }
  }
}

/**
 * Follows a Server-Sent Events stream of the API with the tab's token (EventSource
 * cannot send one): calls onEvent(name, data) per event and reconnects after the
 * server's `retry` (longer after failures) until the returned function is called. A
 * hidden tab lets its stream go (browsers allow six connections per host over HTTP/1.1)
 * and follows again when shown; a refusal (401, 403, 404) ends it, and the page
 * polls instead.
 */
function follow(path, onEvent) {
  let stopped = false;
  let ctrl = null;
  const onVisibility = () => { if (document.hidden && ctrl) ctrl.abort(); };
  document.addEventListener("visibilitychange", onVisibility);
  const visible = () => new Promise((resolve) => {
    if (!document.hidden) return resolve();
    const shown = () => { if (!document.hidden) { document.removeEventListener("visibilitychange", shown); resolve(); } };
    document.addEventListener("visibilitychange", shown);
  });
  (async () => {
    let wait = 1000;
    let failures = 0;
    while (!stopped) {
      await visible();
      if (stopped) return;
      ctrl = new AbortController();
      try {
        const headers = { accept: "text/event-stream" };
        const token = sessionStorage.getItem(TOKEN_KEY);
        if (token) headers.authorization = `Bearer ${token}`;
        const res = await fetch(path, { headers, signal: ctrl.signal });
        if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) {
          setLive("off");
          return;
        }
        if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
        failures = 0;
        setLive("open");
        await readEvents(res.body, onEvent, (ms) => { wait = ms || wait; });
      } catch {
        if (stopped) return;
        if (!document.hidden) failures += 1;
      }
      if (stopped) return;
      setLive("closed");
      await new Promise((r) => setTimeout(r, Math.min(wait * 2 ** failures, 10000)));
    }
  })();
  return () => {
    stopped = true;
    document.removeEventListener("visibilitychange", onVisibility);
    if (ctrl) ctrl.abort();
    setLive("");
  };
}

/**
 * Runs `task` for the latest request only, never two at once and at most once per
 * `gapMs`: a burst of events (hundreds of sagas a second) costs one reload, not one each.
 */
function latestOnly(task, gapMs = 0) {
  let running = false;
  let next = null;
  return async function request(arg) {
    next = { arg };
    if (running) return;
    running = true;
    try {
      while (next) {
        const { arg: latest } = next;
        next = null;
        const started = Date.now();
        await task(latest).catch(() => {});
        const rest = gapMs - (Date.now() - started);
        if (rest > 0) await new Promise((r) => setTimeout(r, rest));
      }
    } finally {
      running = false;
    }
  };
}

/** The SVG diagram (of a saga, coloured by step state, or of a definition) as an image. */
async function diagram(path, alt) {
  const headers = { accept: "image/svg+xml" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(path, { headers }).catch(() => null);
  if (!res || !res.ok || !(res.headers.get("content-type") || "").startsWith("image/svg+xml")) {
    return h("p", { class: "muted" }, "The diagram is not available.");
  }
  // An <img> shows the SVG as a picture: nothing in it can run or reach the page.
  const url = URL.createObjectURL(await res.blob());
  const img = h("img", { class: "diagram", src: url, alt });
  img.addEventListener("load", () => setTimeout(() => URL.revokeObjectURL(url), 0), { once: true });
  return h("div", { class: "scroll diagram-box" }, img);
}

// ---- Sagas ------------------------------------------------------------------

const FILTERS = ["definition", "status", "key", "key_prefix", "step", "failure"];

async function sagasView(params) {
  const mine = navigation;
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter sagas" });
  const defs = await api("GET", "/v1/definitions").catch(() => []);
  if (left(mine)) return;
  const field = (name, input) => h("label", {}, name.replace("_", " "), input);
  const value = (name) => params.get(name) || "";
  form.append(
    field("definition", h("select", { name: "definition" }, h("option", { value: "" }, "any"),
      defs.map((d) => h("option", { value: d.name, selected: d.name === value("definition") }, d.name)))),
    field("status", h("select", { name: "status" }, h("option", { value: "" }, "any"),
      STATUSES.map((s) => h("option", { value: s, selected: s === value("status") }, s)))),
    ...["key", "key_prefix", "step", "failure"].map((n) => field(n, h("input", { name: n, value: value(n), size: 12 }))),
    h("button", { type: "submit" }, "Search"),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const n of FILTERS) if (form.elements[n].value) q.set(n, form.elements[n].value);
    location.hash = `#/sagas?${q}`;
  });
  const counts = h("ul", { class: "counts", "aria-label": "Sagas by status" });
  const body = h("tbody");
  const table = h("div", { class: "scroll" }, h("table", {},
    h("thead", {}, h("tr", {}, ["status", "saga", "definition", "key", "created", "updated"].map((c) => h("th", { scope: "col" }, c)))),
    body));
  const status = h("p", { class: "muted", "aria-live": "polite" });
  show(h("h1", {}, "Sagas"), form, bulkForm(params), counts, table, status);
  const load = async () => {
    const q = new URLSearchParams();
    for (const n of FILTERS) if (value(n)) q.set(n, value(n));
    q.set("with_counts", "true");
    q.set("limit", "100");
    const page = await api("GET", `/v1/sagas?${q}`);
    counts.replaceChildren(...Object.entries(page.counts?.counts || {}).map(([s, n]) => h("li", {}, badge(s), ` ${n}`)));
    body.replaceChildren(...page.items.map((s) => h("tr", { "data-saga-id": s.id },
      h("td", {}, badge(s.status)),
      h("td", { class: "mono" }, h("a", { href: `#/saga/${s.id}`, title: s.id }, shortId(s.id))),
      h("td", {}, s.definition), h("td", { class: "mono" }, s.key || "—"),
      h("td", {}, when(s.created_at)), h("td", {}, when(s.updated_at)))));
    status.textContent = page.items.length ? `Updated ${new Date().toLocaleTimeString()}` : "No saga matches.";
  };
  await load();
  if (left(mine)) return;
  // Any saga change reloads the list (at most one load at a time, the latest wins);
  // polling covers the time the stream is down.
  const reload = latestOnly(load, 1000);
  stopLive = follow("/v1/streams/sagas", () => reload());
  keepFresh(load, () => document.getElementById("live").dataset.state !== "open");
}

// ---- One saga -----------------------------------------------------------------

/** Bars per step and phase: each attempt from its send to its answer (or now). */
function gantt(detail, timeline) {
  const start = new Date(detail.created_at).getTime();
  const open = detail.status === "running" || detail.status === "compensating";
  const end = open ? Date.now() : new Date(detail.updated_at).getTime();
  const span = Math.max(end - start, 1);
  const rows = new Map();
  const attempts = new Map();
  const last = new Map(); // the latest answered attempt per row
  for (const e of timeline) {
    if (!e.step) continue;
    const key = `${e.step} · ${e.phase || "command"}`;
    if (!rows.has(key)) rows.set(key, []);
    const id = `${key}#${e.attempt}`;
    const t = new Date(e.at).getTime();
    if (e.kind === "command_sent" || e.kind === "compensation_sent") {
      const bar = { from: t, to: null, cls: e.phase === "compensation" ? "b-comp" : "b-run", attempt: e.attempt };
      attempts.set(id, bar);
      rows.get(key).push(bar);
    } else if ((e.kind === "step_failed" || e.kind === "retry_scheduled") && last.get(key)?.cls === "b-ok") {
      // The answer just received was a failure: the step failed or is retried.
      last.get(key).cls = "b-bad";
    } else if (attempts.has(id) && attempts.get(id).to === null) {
      const bar = attempts.get(id);
      if (e.kind === "reply_received" || e.kind === "late_reply") {
        bar.to = t;
        if (bar.cls !== "b-comp") bar.cls = "b-ok";
        last.set(key, bar);
      } else if (e.kind === "timed_out") {
        bar.to = t;
        bar.cls = "b-timeout";
      }
    }
  }
  const pct = (t) => `${(((t - start) / span) * 100).toFixed(2)}%`;
  const box = h("div", { class: "gantt", role: "img", "aria-label": "Timeline of attempts per step" });
  for (const [label, bars] of rows) {
    const track = h("div", { class: "gantt-track" });
    for (const b of bars) {
      const to = b.to ?? end;
      const bar = h("div", { class: `gantt-bar ${b.cls}`, title: `${label} attempt ${b.attempt}: ${to - b.from} ms` });
      bar.style.left = pct(b.from);
      bar.style.width = `max(3px, ${(((to - b.from) / span) * 100).toFixed(2)}%)`;
      track.append(bar);
    }
    box.append(h("div", { class: "gantt-row" }, h("span", { class: "gantt-label" }, label), track));
  }
  const legend = h("p", { class: "legend" },
    [["succeeded", "--ok"], ["failed", "--bad"], ["timed out", "--warn"], ["in flight", "--run"], ["compensation", "--comp"]]
      .map(([name, color]) => { const s = h("span", {}, name); s.style.setProperty("--c", `var(${color})`); return s; }));
  return [box, legend];
}

function actionsFor(detail, reload) {
  const act = (name, path, label, needsReason) => h("button", {
    type: "button", class: name === "terminate" ? "danger" : undefined,
    onclick: async () => {
      const reason = await confirmAction(`${label} saga ${detail.id}?`, needsReason);
      if (reason === null) return;
      try {
        await api("POST", path, { reason });
        await reload();
      } catch (err) {
        main.prepend(failure(err));
      }
    },
  }, label);
  const open = detail.status === "running" || detail.status === "compensating" || detail.status === "failed";
  if (!open) return h("p", { class: "muted" }, "Finished: no action applies.");
  return h("div", { class: "actions" },
    act("abort", `/v1/sagas/${detail.id}/abort`, "Abort", false),
    act("retry", `/v1/sagas/${detail.id}/retry`, "Retry", false),
    act("terminate", `/v1/sagas/${detail.id}/terminate`, "Terminate", true));
}

/**
 * Asks for confirmation and a reason; resolves to the reason (or, with `withPayload`,
 * to {reason, payload}), or null if cancelled.
 */
function confirmAction(text, reasonRequired, withPayload = false) {
  const dialog = document.getElementById("confirm");
  const reason = document.getElementById("confirm-reason");
  const payload = document.getElementById("confirm-payload");
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-payload-box").hidden = !withPayload;
  reason.value = "";
  payload.value = "{}";
  reason.required = reasonRequired;
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      if (dialog.returnValue !== "ok") return resolve(null);
      if (!withPayload) return resolve(reason.value);
      try {
        resolve({ reason: reason.value, payload: JSON.parse(payload.value || "{}") });
      } catch {
        main.prepend(h("p", { class: "error", role: "alert" }, "The reply data is not valid JSON; nothing was sent."));
        resolve(null);
      }
    }, { once: true });
  });
}

/** Complete or fail a step (or its compensation) by hand: resolve-step. */
function resolveButtons(detail, step, reload) {
  if (!["running", "compensating", "failed"].includes(detail.status)) return "";
  const comp = ["running", "waiting_retry", "failed", "timed_out"].includes(step.compensation);
  const forward = ["running", "waiting_retry", "failed", "timed_out"].includes(step.status);
  if (!comp && !forward) return "";
  const attempt = comp ? step.compensation_attempt : step.attempt;
  const what = comp ? `the compensation of ${step.name}` : step.name;
  const resolve = (outcome) => h("button", {
    type: "button",
    onclick: async () => {
      const label = outcome === "succeeded" ? "Complete" : "Fail";
      const answer = await confirmAction(`${label} ${what} (attempt ${attempt}) by hand?`, true, outcome === "succeeded");
      if (answer === null) return;
      const body = typeof answer === "string" ? { reason: answer } : answer;
      try {
        await api("POST", `/v1/sagas/${detail.id}/steps/${encodeURIComponent(step.name)}/resolve`,
          { ...body, outcome, attempt: attempt || undefined, compensation: comp });
        await reload();
      } catch (err) {
        main.prepend(failure(err));
      }
    },
  }, outcome === "succeeded" ? "Complete" : "Fail");
  return h("span", { class: "actions" }, resolve("succeeded"), resolve("failed"));
}

/** Abort, retry or terminate every saga the list's filters match, after a dry run. */
function bulkForm(params) {
  const action = h("select", { "aria-label": "Bulk action" },
    ["abort", "retry", "terminate"].map((a) => h("option", { value: a }, a)));
  const out = h("p", { "aria-live": "polite" });
  const filter = {};
  for (const n of FILTERS) if (params.get(n)) filter[n] = params.get(n);
  const run = h("button", {
    type: "button",
    onclick: async () => {
      try {
        const dry = await api("POST", `/v1/bulk/${action.value}`, { filter, dry_run: true, reason: "" });
        const n = `${dry.matched}${dry.matched_capped ? "+" : ""}`;
        const reason = await confirmAction(`${action.value} ${n} saga(s) matching these filters (at most 100 in this call)?`, action.value === "terminate");
        if (reason === null) return;
        const r = await api("POST", `/v1/bulk/${action.value}`, { filter, reason, limit: 100 });
        out.textContent = `${r.applied} applied, ${r.unchanged} unchanged, ${r.refused} refused` + (r.more ? "; more match: run again" : "");
      } catch (err) {
        out.replaceChildren(failure(err));
      }
    },
  }, "Act on all matching…");
  return h("details", {}, h("summary", {}, "Bulk action"), h("div", { class: "actions" }, action, run), out);
}

async function sagaView(id) {
  const mine = navigation;
  await configReady;
  const section = h("section", { "aria-live": "polite" });
  const picture = h("div");
  show(h("p", {}, h("a", { href: "#/sagas" }, "← all sagas")), section);
  let last = null;
  let render = null;
  /** Renders the saga (`given`: as a stream event carried it; else read it). */
  const load = async (given) => {
    const [detail, page] = await Promise.all([
      given ? Promise.resolve(given) : api("GET", `/v1/sagas/${id}`),
      api("GET", `/v1/sagas/${id}/timeline?limit=1000`),
    ]);
    // An answer older than what is shown (a read overtaken by a pushed change) is dropped.
    if (left(mine) || (last && detail.revision < last.revision)) return last;
    last = detail;
    section.dataset.status = detail.status;
    section.replaceChildren(...sagaParts(detail, page.items, picture, () => render()));
    const graph = await diagram(`/v1/sagas/${id}/graph`, `Diagram of ${detail.definition}, each step coloured by its state in this saga`);
    picture.replaceChildren(graph);
    return detail;
  };
  // Every render after the first goes through one queue: never two at once, latest wins.
  render = latestOnly(load, 250);
  await load();
  if (left(mine)) return;
  stopLive = follow(`/v1/streams/sagas/${id}`, (name, data) => {
    if (name === "saga") render(JSON.parse(data));
    if (name === "gone") {
      stopLive();
      section.prepend(h("p", { class: "muted", role: "status" }, "This saga has been deleted (retention)."));
    }
  });
  // Polling only while the stream is down and the saga can still change by itself.
  keepFresh(() => render(), () => document.getElementById("live").dataset.state !== "open" &&
    (last.status === "running" || last.status === "compensating"));
}

/** The saga's header, actions, timeline, diagram (`picture`), steps, input, output and events. */
function sagaParts(detail, events, picture, reload) {
  return [
    h("h1", {}, `${detail.definition} `, badge(detail.status)),
    h("dl", { class: "meta" },
      h("dt", {}, "id"), h("dd", { class: "mono" }, detail.id),
      h("dt", {}, "key"), h("dd", { class: "mono" }, detail.key || "—"),
      h("dt", {}, "version"), h("dd", { class: "mono" }, detail.version.slice(0, 12)),
      h("dt", {}, "trace"), h("dd", { class: "mono" }, traceLink(detail.trace_id)),
      h("dt", {}, "started"), h("dd", {}, when(detail.created_at)),
      h("dt", {}, "updated"), h("dd", {}, when(detail.updated_at)),
      detail.failure && [h("dt", {}, "failure"), h("dd", { class: "error" }, `${detail.failure.phase} ${detail.failure.step || ""}: ${detail.failure.reason}`)]),
    actionsFor(detail, reload),
    h("h2", {}, "Timeline"), ...gantt(detail, events),
    h("h2", {}, "Diagram"), picture,
    h("h2", {}, "Steps"),
    h("div", { class: "scroll" }, h("table", {},
      h("thead", {}, h("tr", {}, ["step", "status", "attempt", "compensation", "error", "by hand"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, detail.steps.map((s) => h("tr", { "data-step": s.name },
        h("td", {}, s.name), h("td", {}, badge(s.status)), h("td", {}, s.attempt),
        h("td", {}, badge(s.compensation)), h("td", {}, s.error || s.compensation_error || ""),
        h("td", {}, resolveButtons(detail, s, reload))))))),
    h("h2", {}, "Input"), json(detail.input),
    h("h2", {}, "Output"), json(detail.output),
    h("h2", {}, "Events"),
    h("div", { class: "scroll" }, h("table", {},
      h("thead", {}, h("tr", {}, ["at", "kind", "step", "phase", "attempt", "detail"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, events.map((e) => h("tr", { "data-kind": e.kind, "data-step": e.step || "", "data-phase": e.phase || "" },
        h("td", {}, when(e.at)), h("td", {}, e.kind), h("td", {}, e.step || ""), h("td", {}, e.phase || ""),
        h("td", {}, e.attempt ?? ""), h("td", { class: "mono" }, JSON.stringify(e.detail))))))),
  ];
}

// ---- Definitions and dead letters ---------------------------------------------------

async function definitionsView() {
  const mine = navigation;
  const defs = await api("GET", "/v1/definitions");
  if (left(mine)) return;
  const input = h("textarea", { class: "yaml", id: "yaml", "aria-label": "Definition YAML to validate", spellcheck: "false" });
  const out = h("div", { "aria-live": "polite" });
  const validate = h("button", {
    type: "button",
    onclick: async () => {
      try {
        const report = await api("POST", "/v1/definitions/validate", input.value, "application/yaml");
        const all = [...report.errors, ...report.warnings];
        out.replaceChildren(h("p", { class: report.valid ? "s-completed" : "error" }, report.valid ? "Valid." : "Invalid:"),
          h("ul", {}, all.map((d) => h("li", {}, `line ${d.line}, column ${d.column}: ${d.severity}: ${d.message}`, d.help ? ` (${d.help})` : ""))));
      } catch (err) {
        out.replaceChildren(failure(err));
      }
    },
  }, "Validate");
  show(
    h("h1", {}, "Definitions"),
    h("div", { class: "scroll" }, h("table", {},
      h("thead", {}, h("tr", {}, ["name", "steps", "pivot", "version"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, defs.map((d) => h("tr", {},
        h("td", {}, h("a", { href: `#/definitions/${encodeURIComponent(d.name)}` }, d.name)),
        h("td", {}, d.steps.join(" → ")), h("td", {}, d.pivot || "—"), h("td", { class: "mono" }, d.version.slice(0, 12))))))),
    h("h2", {}, "Validate a definition"), input, h("div", { class: "actions" }, validate), out,
  );
}

async function definitionView(name) {
  const mine = navigation;
  const d = await api("GET", `/v1/definitions/${encodeURIComponent(name)}`);
  const version = d.current?.version;
  const source = version ? await api("GET", `/v1/definitions/${encodeURIComponent(name)}/versions/${version}`) : null;
  const picture = version
    ? await diagram(`/v1/definitions/${encodeURIComponent(name)}/graph`, `Diagram of ${name}: its steps in order and the compensations that undo them`)
    : h("p", { class: "muted" }, "removed");
  if (left(mine)) return;
  show(
    h("p", {}, h("a", { href: "#/definitions" }, "← all definitions")),
    h("h1", {}, d.name),
    d.current?.description ? h("p", {}, d.current.description) : "",
    version ? startForm(name, d.input_schema) : "",
    h("h2", {}, "Diagram"), picture,
    h("h2", {}, "Versions in use"),
    h("ul", {}, d.versions_in_use.map((v) => h("li", { class: "mono" }, `${v.version.slice(0, 12)}: ${v.unfinished_sagas} unfinished${v.current ? " (current)" : ""}`))),
    h("h2", {}, "Source"), source ? h("pre", { class: "mono", tabindex: 0, "aria-label": "YAML source" }, source.source) : h("p", { class: "muted" }, "removed"),
  );
}

/** Starts a saga of `name` with the JSON typed in (the schema's first example to begin with). */
function startForm(name, schema) {
  const example = schema?.examples?.[0] ?? {};
  const input = h("textarea", { id: "start-input", class: "mono", rows: 4, spellcheck: "false" }, JSON.stringify(example, null, 2));
  const key = h("input", { id: "start-key", size: 24, autocomplete: "off" });
  const out = h("div", { "aria-live": "polite" });
  const form = h("form", { class: "start", "aria-label": "Start a saga" },
    h("label", { for: "start-input" }, "Input (JSON)"), input,
    h("label", { for: "start-key" }, "Business key (optional: a second start with it returns the same saga)"), key,
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Start")), out);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    let body;
    try {
      body = { input: JSON.parse(input.value || "{}") };
    } catch {
      out.replaceChildren(h("p", { class: "error", role: "alert" }, "The input is not valid JSON."));
      return;
    }
    if (key.value.trim()) body.key = key.value.trim();
    // One start per click: a double click must not start two sagas without a key.
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const started = await api("POST", `/v1/sagas/${encodeURIComponent(name)}`, body);
      location.hash = `#/saga/${started.id}`;
    } catch (err) {
      button.disabled = false;
      out.replaceChildren(failure(err), err.errors ? h("ul", {}, err.errors.map((f) => h("li", {}, `${f.path || "(input)"}: ${f.message}`))) : "");
    }
  });
  return [h("h2", {}, "Start a saga"), form];
}

async function deadLettersView() {
  const mine = navigation;
  const page = await api("GET", "/v1/dead-letters?status=open&limit=100");
  if (left(mine)) return;
  show(
    h("h1", {}, "Dead letters"),
    page.items.length === 0 ? h("p", { class: "muted" }, "None open.") :
      h("div", { class: "scroll" }, h("table", {},
        h("thead", {}, h("tr", {}, ["at", "kind", "reason", "topic", "saga"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, page.items.map((l) => h("tr", {},
          h("td", {}, when(l.at)), h("td", {}, l.kind), h("td", {}, l.reason),
          h("td", { class: "mono" }, `${l.source_topic}/${l.source_partition}@${l.source_offset}`),
          h("td", { class: "mono" }, l.saga_id ? h("a", { href: `#/saga/${l.saga_id}` }, l.saga_id) : "—")))))),
  );
}

// ---- Routing --------------------------------------------------------------------

async function route() {
  navigation += 1;
  clearInterval(refreshTimer);
  stopLive();
  stopLive = () => {};
  const [path, query] = (location.hash.slice(1) || "/sagas").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  try {
    if (parts[0] === "saga" && parts[1]) await sagaView(parts[1]);
    else if (parts[0] === "definitions" && parts[1]) await definitionView(decodeURIComponent(parts[1]));
    else if (parts[0] === "definitions") await definitionsView();
    else if (parts[0] === "dead-letters") await deadLettersView();
    else await sagasView(params);
  } catch (err) {
    show(failure(err));
  }
  main.focus({ preventScroll: true });
}

document.getElementById("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const value = document.getElementById("token").value.trim();
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
  document.getElementById("token").value = "";
  route();
});
window.addEventListener("hashchange", route);
route();
