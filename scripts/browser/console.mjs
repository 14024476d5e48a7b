// End-to-end checks of the console (/ui) in a real browser: Debian's Chromium driven by
// playwright-core, axe-core for accessibility. tests/ui_browser.rs runs it against a
// `sagaflow dev` it started; by hand:
//
//   SAGAFLOW_URL=http://127.0.0.1:8123 SCREENSHOT_DIR=docs/ui node scripts/browser/console.mjs
//
// SAGAFLOW_BROWSER_SCENARIOS=c,d runs only some (scenarios that need another's saga start their own).
// One line per scenario; the first failure ends the run with exit status 1, its message,
// and a screenshot of the failing page in /tmp.

import { readFile, mkdir } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import { chromium } from "playwright-core";

const BASE = (process.env.SAGAFLOW_URL || "").replace(/\/$/, "");
const SHOT_DIR = process.env.SCREENSHOT_DIR || "";
if (!BASE || !SHOT_DIR) {
  console.error("set SAGAFLOW_URL (e.g. http://127.0.0.1:8123) and SCREENSHOT_DIR (e.g. docs/ui)");
  process.exit(2);
}
const ONLY = (process.env.SAGAFLOW_BROWSER_SCENARIOS || "").split(",").map((s) => s.trim()).filter(Boolean);

// Debian's build: Playwright's own browser downloads cannot be fetched here. Flags keep
// it from reaching for the network (updates, sync) and from needing a GPU or a sandbox
// (CI containers run as root).
const LAUNCH = {
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
};
const DESKTOP = { width: 1280, height: 900 };
const PHONE = { width: 390, height: 844 };
// A saga of console-check finishes in about a second; a compensation that is left
// unanswered times out after 3 s. Generous deadlines keep a slow CI machine green.
const SAGA_WAIT = 30_000;
const UI_WAIT = 10_000;

// Values unique to this run, so a search finds exactly this run's sagas in a reused database.
const RUN = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
const AXE = await readFile(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

const browser = await chromium.launch(LAUNCH);
const state = {}; // what one scenario leaves for another: saga ids and keys
let current = null; // the page a failure is photographed from

/** A page in a context of its own; uncaught errors and CSP refusals fail the scenario. */
async function open(options = {}) {
  // A fixed locale and zone: the screenshots show the same date format on every machine.
  const context = await browser.newContext({
    viewport: DESKTOP, locale: "en-GB", timezoneId: "UTC", reducedMotion: "reduce", ...options,
  });
  context.setDefaultTimeout(UI_WAIT);
  const page = await context.newPage();
  page.problems = [];
  page.on("pageerror", (err) => page.problems.push(`uncaught error in the page: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error" && /Content Security Policy/i.test(msg.text())) page.problems.push(`CSP: ${msg.text()}`);
  });
  current = page;
  return page;
}

async function close(page) {
  const problems = page.problems;
  await page.context().close();
  if (problems.length) throw new Error(problems.join("\n"));
}

/** Opens a console route (the part after `#`) and waits for its heading and images. */
async function visit(page, route) {
  // Routes are hashes of one document: the last route's heading stays until the new
  // route replaces it. Marked, it cannot be taken for the new one.
  await page.evaluate(() => document.querySelectorAll("#main h1").forEach((e) => e.setAttribute("data-left", "")));
  await page.goto(`${BASE}/ui/#${route}`);
  await page.locator("#main h1:not([data-left])").first().waitFor();
  await page.waitForFunction(() => [...document.images].every((i) => i.complete));
}

/** Runs `wait`, turning a Playwright timeout into `what` plus what the page shows instead. */
async function within(page, what, wait) {
  try {
    return await wait;
  } catch (err) {
    if (err?.name !== "TimeoutError") throw err;
    const status = await page.locator("section[data-status]").first().getAttribute("data-status", { timeout: 1000 }).catch(() => null);
    const error = await page.locator('#main [role="alert"]').first().textContent({ timeout: 1000 }).catch(() => null);
    throw new Error(`${what}: not within the deadline (${page.url()}; data-status now ${status ?? "absent"}` +
      `${error ? `; the page says: ${error.trim()}` : ""})`);
  }
}

const waitStatus = (page, status, timeout = SAGA_WAIT) =>
  within(page, `the saga page shows status \`${status}\``, page.locator(`section[data-status="${status}"]`).waitFor({ timeout }));

/** Starts a console-check saga through the API (fetch from the page, same origin); its id. */
async function startSaga(page, input, key) {
  if (!page.url().startsWith(BASE)) await page.goto(`${BASE}/ui/`);
  return page.evaluate(async ([input, key]) => {
    const res = await fetch("/v1/sagas/console-check", {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ input, key }),
    });
    const body = await res.json();
    if (!res.ok) throw new Error(`POST /v1/sagas/console-check answered ${res.status}: ${JSON.stringify(body)}`);
    return body.id;
  }, [input, key]);
}

/** Polls the API (not the page) until saga `id` has `status`: for scenarios that only need a saga in that state. */
async function apiStatus(page, id, status) {
  // One evaluate that polls in the page: waitForFunction does not await an async predicate
  // (it takes the returned promise for a truthy value).
  await page.evaluate(async ([id, status, ms]) => {
    const deadline = Date.now() + ms;
    let now;
    while (Date.now() < deadline) {
      now = (await (await fetch(`/v1/sagas/${id}`)).json()).status;
      if (now === status) return;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    throw new Error(`saga ${id} is \`${now}\`, not \`${status}\`, after ${ms / 1000} s`);
  }, [id, status, SAGA_WAIT]);
}

/** Scenario b's saga (declined at ship, compensated), or a new one like it when b did not run. */
async function declinedSaga(page) {
  if (!state.declined) {
    const id = await startSaga(page, { order: `ord-${RUN}-d2`, ship: "decline" }, `key-${RUN}-d2`);
    await apiStatus(page, id, "compensated");
    state.declined = id;
  }
  return state.declined;
}

/** Clicks an action button, gives a reason in the confirmation dialog and confirms. */
async function act(page, label, reason) {
  await page.getByRole("button", { name: label, exact: true }).click();
  await page.locator("#confirm-reason").fill(reason);
  await page.locator("#confirm-ok").click();
}

// ---- Scenarios ------------------------------------------------------------------------

const scenarios = [
  ["a", "start from the definition page and watch it complete live", async () => {
    const page = await open();
    const key = `key-${RUN}-a`;
    await visit(page, "/definitions/console-check");
    await within(page, "the definition page has a start form (#start-input)", page.locator("#start-input").waitFor());
    await page.locator("#start-input").fill(JSON.stringify({ order: `ord-${RUN}-a` }));
    await page.locator("#start-key").fill(key);
    await page.getByRole("button", { name: "Start", exact: true }).click();
    await within(page, "the start form leads to #/saga/<id>",
      page.waitForFunction(() => /^#\/saga\/[0-9a-f-]{36}$/.test(location.hash)));
    const id = (await page.evaluate(() => location.hash)).slice("#/saga/".length);
    // A reload would lose this; hash routing and live updates keep it.
    await page.evaluate(() => { window.__marker = 1; });
    // Which statuses the page showed, to tell whether it really watched the saga finish.
    await page.evaluate(() => {
      window.__seen = [];
      const note = () => {
        const s = document.querySelector("section[data-status]")?.dataset.status;
        if (s && window.__seen.at(-1) !== s) window.__seen.push(s);
      };
      note();
      new MutationObserver(note).observe(document.body, { subtree: true, childList: true, attributes: true });
    });
    await waitStatus(page, "completed");
    if ((await page.evaluate(() => window.__marker)) !== 1) throw new Error("the page reloaded while waiting for the saga");
    // The page polls only while its stream is down: an open stream means the update was pushed.
    const live = await page.locator("#live").getAttribute("data-state");
    if (live !== "open") throw new Error(`the page's live stream is \`${live}\`, not open`);
    // The demo participants answer after 300 ms (tests/ui_browser.rs), so the page opened on
    // a running saga, and only a pushed change can have shown it completed.
    const shown = await page.evaluate(() => window.__seen);
    if (shown[0] !== "running" || shown.at(-1) !== "completed") {
      throw new Error(`the page showed ${shown.join(" → ")}, not running → … → completed`);
    }
    state.started = { id, key };
    const seen = await page.evaluate(() => window.__seen.join(" → "));
    await close(page);
    return `saga ${id}: ${seen}`;
  }],

  ["b", "a declined step is compensated in reverse, live", async () => {
    const page = await open();
    const id = await startSaga(page, { order: `ord-${RUN}-b`, ship: "decline" }, `key-${RUN}-b`);
    await visit(page, `/saga/${id}`);
    await page.evaluate(() => { window.__marker = 1; });
    await waitStatus(page, "compensated");
    if ((await page.evaluate(() => window.__marker)) !== 1) throw new Error("the page reloaded while waiting for the saga");
    // The Events table lists the timeline oldest first (as GET /v1/sagas/{id}/timeline
    // pages it), so the saga's first event heads it and the last compensation comes last.
    const rows = await page.locator("tr[data-kind]").evaluateAll((trs) =>
      trs.map((tr) => ({ kind: tr.dataset.kind, step: tr.dataset.step, phase: tr.dataset.phase })));
    if (rows[0]?.kind !== "started") throw new Error(`the Events table does not start with \`started\`: ${JSON.stringify(rows[0])}`);
    const undone = rows.filter((r) => r.kind === "compensation_sent").map((r) => `${r.step}/${r.phase}`);
    if (undone.join(" ") !== "charge/compensation reserve/compensation") {
      throw new Error(`compensation_sent rows are ${JSON.stringify(undone)}, expected charge then reserve`);
    }
    state.declined = id;
    await close(page);
    return `saga ${id}: ${undone.join(", ")}`;
  }],

  ["c", "terminate a saga stuck on an unanswered step", async () => {
    const page = await open();
    const id = await startSaga(page, { order: `ord-${RUN}-c`, ship: "silence" }, `key-${RUN}-c`);
    await visit(page, `/saga/${id}`);
    // ship waits for its answer for 10 minutes: once its command is out, the saga is stuck.
    await within(page, "the ship command appears in the Events table",
      page.locator('tr[data-kind="command_sent"][data-step="ship"]').waitFor({ timeout: SAGA_WAIT }));
    await waitStatus(page, "running", UI_WAIT);
    await act(page, "Terminate", `browser test ${RUN}: ship never answers`);
    await waitStatus(page, "terminated");
    await close(page);
    return `saga ${id}`;
  }],

  ["d", "retry a saga whose compensation failed", async () => {
    const page = await open();
    // ship declines; the refund's first attempt goes unanswered and times out after 3 s
    // with no retry left, so the saga fails; its second attempt (after Retry) succeeds.
    const input = { order: `ord-${RUN}-d`, ship: "decline", undo_charge: "silence,success" };
    const id = await startSaga(page, input, `key-${RUN}-d`);
    await visit(page, `/saga/${id}`);
    await waitStatus(page, "failed");
    await act(page, "Retry", `browser test ${RUN}: the refund service is back`);
    await waitStatus(page, "compensated");
    await close(page);
    return `saga ${id}`;
  }],

  ["e", "find a saga by its business key", async () => {
    const page = await open();
    if (!state.started) {
      const key = `key-${RUN}-e`;
      state.started = { id: await startSaga(page, { order: `ord-${RUN}-e` }, key), key };
    }
    const { id, key } = state.started;
    await visit(page, "/sagas");
    await page.locator('input[name="key"]').fill(key);
    await page.getByRole("button", { name: "Search", exact: true }).click();
    // Until the filtered list replaces the full one, other rows may still show.
    await within(page, `exactly one row, saga ${id}, for key ${key}`, page.waitForFunction(([id, key]) => {
      const rows = document.querySelectorAll("#main tbody tr");
      return location.hash.includes(`key=${encodeURIComponent(key)}`) && rows.length === 1 &&
        rows[0].matches(`tr[data-saga-id="${id}"]`);
    }, [id, key]));
    await close(page);
    return `key ${key}`;
  }],

  ["f", "the saga's diagram marks each step's state", async () => {
    const page = await open();
    const id = await declinedSaga(page);
    await visit(page, `/saga/${id}`);
    const heading = page.getByRole("heading", { name: "Diagram", exact: true });
    await within(page, "a heading `Diagram`", heading.waitFor());
    await within(page, "img.diagram loads", page.waitForFunction(() => {
      const img = document.querySelector("img.diagram");
      return img && img.complete && img.naturalWidth > 0;
    }));
    const follows = await page.evaluate(() => {
      const h = [...document.querySelectorAll("h1, h2, h3")].find((e) => e.textContent.trim() === "Diagram");
      const img = document.querySelector("img.diagram");
      return Boolean(h.compareDocumentPosition(img) & Node.DOCUMENT_POSITION_FOLLOWING);
    });
    if (!follows) throw new Error("img.diagram is not after the Diagram heading");
    const states = await page.evaluate(async (id) => {
      const res = await fetch(`/v1/sagas/${id}/graph`, { headers: { accept: "image/svg+xml" } });
      const type = res.headers.get("content-type") || "";
      const text = await res.text();
      if (!res.ok || !type.startsWith("image/svg+xml")) return { error: `${res.status} ${type}: ${text.slice(0, 200)}` };
      const svg = new DOMParser().parseFromString(text, "image/svg+xml");
      const state = (step, phase) =>
        svg.querySelector(`g.node[data-step="${step}"][data-phase="${phase}"]`)?.getAttribute("data-state") ?? "missing";
      return { reserve: state("reserve", "compensation"), ship: state("ship", "command") };
    }, id);
    if (states.error) throw new Error(`GET /v1/sagas/${id}/graph as SVG: ${states.error}`);
    if (states.reserve !== "compensated" || states.ship !== "failed") {
      throw new Error(`the SVG marks reserve's compensation \`${states.reserve}\` (want compensated) and ship's command \`${states.ship}\` (want failed)`);
    }
    await close(page);
    return `saga ${id}`;
  }],

  ["g", "no serious or critical axe-core violation, light and dark", async () => {
    const setup = await open();
    const id = await declinedSaga(setup);
    await close(setup);
    const pages = [
      ["sagas", "/sagas", "#main tbody tr"],
      ["saga", `/saga/${id}`, "#main section h1"],
      ["definitions", "/definitions", "#main tbody tr"],
      ["definition", "/definitions/console-check", "#main h1"],
      ["dead letters", "/dead-letters", "#main h1"],
    ];
    const found = [];
    for (const colorScheme of ["light", "dark"]) {
      // The console's CSP (script-src 'self') refuses the inline <script> that carries
      // axe; only these contexts bypass it, the other scenarios run under the policy.
      const page = await open({ colorScheme, bypassCSP: true });
      for (const [name, route, ready] of pages) {
        await visit(page, route);
        await within(page, `the ${name} page renders`, page.locator(ready).first().waitFor());
        await page.addScriptTag({ content: AXE });
        const violations = await page.evaluate(async () =>
          (await window.axe.run(document, { resultTypes: ["violations"] })).violations
            .filter((v) => v.impact === "serious" || v.impact === "critical")
            .map((v) => ({ id: v.id, impact: v.impact, targets: v.nodes.map((n) => n.target.join(" ")) })));
        for (const v of violations) {
          found.push(`${colorScheme} ${name}: ${v.id} (${v.impact}) at ${v.targets.slice(0, 5).join(", ")}` +
            `${v.targets.length > 5 ? ` and ${v.targets.length - 5} more` : ""}`);
        }
      }
      await close(page);
    }
    if (found.length) throw new Error(`axe-core violations:\n  ${found.join("\n  ")}`);
    return `${pages.length} pages × 2 colour schemes`;
  }],

  ["h", "screenshots of the main pages", async () => {
    await mkdir(SHOT_DIR, { recursive: true });
    const shot = (name) => path.join(SHOT_DIR, name);
    let page = await open();
    const id = await declinedSaga(page);
    await visit(page, "/sagas");
    await page.locator("#main tbody tr").first().waitFor();
    await page.screenshot({ path: shot("sagas.png") });
    await visit(page, `/saga/${id}`);
    await page.screenshot({ path: shot("saga.png"), fullPage: true });
    await visit(page, "/definitions/console-check");
    await page.screenshot({ path: shot("definition.png") });
    await close(page);

    page = await open({ viewport: PHONE });
    await visit(page, "/sagas");
    await page.locator("#main tbody tr").first().waitFor();
    await page.screenshot({ path: shot("phone.png") });
    await close(page);

    page = await open({ colorScheme: "dark" });
    await visit(page, `/saga/${id}`);
    await page.screenshot({ path: shot("dark.png") });
    await close(page);
    return `sagas.png saga.png definition.png phone.png dark.png in ${SHOT_DIR}`;
  }],
];

// ---- Run ----------------------------------------------------------------------------------

let code = 0;
for (const [letter, title, run] of scenarios) {
  if (ONLY.length && !ONLY.includes(letter)) continue;
  const t0 = Date.now();
  try {
    const note = await run();
    console.log(`ok   ${letter}. ${title} (${((Date.now() - t0) / 1000).toFixed(1)} s): ${note}`);
  } catch (err) {
    console.log(`FAIL ${letter}. ${title} (${((Date.now() - t0) / 1000).toFixed(1)} s): ${err.message}`);
    const file = `/tmp/sagaflow-console-${letter}.png`;
    if (current && !current.isClosed()) {
      await current.screenshot({ path: file, fullPage: true }).then(
        () => console.log(`     the page at the failure: ${file} (${current.url()})`),
        () => {},
      );
    }
    code = 1;
    break;
  }
}
await browser.close();
process.exit(code);
