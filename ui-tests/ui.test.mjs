// troupe's web UI in a real browser: playwright-core driving Debian's Chromium (headless)
// against a real `troupe serve` running real ansible-playbook on local hosts.
//
// Started by crates/troupe/tests/e2e/ui.rs, which gives, in the environment:
//   TROUPE_URL         the server's base URL
//   TROUPE_TOKEN       an admin token
//   TROUPE_PROJECT     the project's id (playbooks site.yml and slow.yml, see ui.rs)
//   TROUPE_INVENTORY   the id of inventory "local3" (h1..h3, ansible_connection=local)
//   SCREENSHOT_DIR     where screenshots go
//   CHROMIUM           the browser (default /usr/bin/chromium)
//
// The scenarios run in order and share one browser page, as a user would: the run launched in
// one is relaunched in a later one.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set (run through crates/troupe/tests/e2e/ui.rs)`);
  return v;
};
const BASE = env("TROUPE_URL");
const TOKEN = env("TROUPE_TOKEN");
const PROJECT = env("TROUPE_PROJECT");
const INVENTORY = env("TROUPE_INVENTORY");
const SHOTS = env("SCREENSHOT_DIR");
const FINAL = ["successful", "failed", "canceled", "timeout", "error"];
const WAIT = 90_000;

let browser;
let page;
const problems = [];
let launchedRun;

async function shot(name) {
  const file = path.join(SHOTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`screenshot: ${file}`);
}

// The run page's status badge text.
const runStatus = () => page.locator(".run .page-head .status").textContent();

async function waitStatus(statuses) {
  await page.waitForFunction(
    (want) => want.includes(document.querySelector(".run .page-head .status")?.textContent),
    statuses,
    { timeout: WAIT },
  );
  return runStatus();
}

// The state of the grid cell of `host` for the task named `task` ("" when it has none).
function cell(host, task) {
  return page.locator(`table.grid tr[data-host="${host}"] td[data-task="${task}"]`);
}

// The id of the run page the browser lands on, once the URL is no longer `from`.
async function runIdFromUrl(from) {
  await page.waitForFunction((old) => /#\/runs\/\d+$/.test(location.href) && location.href !== old, from, {
    timeout: WAIT,
  });
  return Number(/#\/runs\/(\d+)$/.exec(page.url())[1]);
}

async function apiCall(method, p, body) {
  const res = await fetch(`${BASE}/api/v1${p}`, {
    method,
    headers: { Authorization: `Bearer ${TOKEN}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

before(async () => {
  fs.mkdirSync(SHOTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    // Root in CI containers cannot use Chromium's sandbox.
    args: ["--no-sandbox"],
  });
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    // Answers the tests provoke (a refused token, an invalid inventory) are logged by Chromium
    // as failed loads; anything else logged as an error is a bug.
    if (m.type() === "error" && !/^Failed to load resource/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
});

after(async () => {
  await browser?.close();
});

test("log in with a token (a wrong one is refused), log out", async () => {
  await page.goto(BASE);
  await page.fill("#token", "not-a-token");
  await page.click("button[type=submit]");
  const refused = await page.locator("#login-error").textContent();
  assert.match(refused, /refused/);
  await shot("01-login-refused");

  await page.fill("#token", TOKEN);
  await page.click("button[type=submit]");
  await page.locator("h1", { hasText: "Runs" }).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem("troupe.token")), TOKEN);

  await page.click("text=Log out");
  await page.locator("#token").waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem("troupe.token")), null);

  await page.fill("#token", TOKEN);
  await page.click("button[type=submit]");
  await page.locator("h1", { hasText: "Runs" }).waitFor();
  await shot("02-runs");
});

test("launch a run and watch the host grid fill live", async () => {
  await page.click("nav >> text=Launch");
  await page.selectOption("#l-project", PROJECT);
  await page.locator("#l-playbook option", { hasText: "site.yml" }).waitFor({ state: "attached" });
  await page.selectOption("#l-playbook", "site.yml");
  await page.selectOption("#l-inventory", INVENTORY);

  // Extra vars are checked as they are typed: a YAML error names its line.
  await page.fill("#l-vars", "greeting: hi\nbad: [unclosed\n");
  const varsError = await page.locator("#l-vars-error").textContent();
  assert.match(varsError, /^Line \d+/);
  assert.equal(await page.locator("button[type=submit]").isDisabled(), true);
  await shot("03-launch-vars-error");
  await page.fill("#l-vars", "greeting: bonjour\n");
  assert.equal(await page.locator("#l-vars-error").count(), 0);

  const from = page.url();
  await page.click("button[type=submit]");
  launchedRun = await runIdFromUrl(from);

  // The first task's cells fill while the run is still going (the second task sleeps).
  await cell("h1", "greet").and(page.locator('[data-state="ok"]')).waitFor({ timeout: WAIT });
  const whileFilling = await runStatus();
  const okCells = await page.locator('table.grid td[data-task="greet"][data-state="ok"]').count();
  assert.ok(["queued", "running"].includes(whileFilling), `the run was already ${whileFilling}`);
  assert.ok(okCells >= 1);
  await shot("04-run-live");

  assert.equal(await waitStatus(FINAL), "failed");
  const expect = {
    h1: { greet: "ok", "wait a little": "changed", "break h2": "skipped", "only h1": "ok" },
    h2: { greet: "ok", "wait a little": "changed", "break h2": "failed", "only h1": "" },
    h3: { greet: "ok", "wait a little": "changed", "break h2": "skipped", "only h1": "skipped" },
  };
  // The last events may arrive with the final status or just after it: each cell is waited for.
  for (const [host, tasks] of Object.entries(expect)) {
    for (const [task, state] of Object.entries(tasks)) {
      if (state) {
        await cell(host, task)
          .and(page.locator(`[data-state="${state}"]`))
          .waitFor({ timeout: WAIT })
          .catch(() => {});
      }
      assert.equal(await cell(host, task).getAttribute("data-state"), state, `${host} × ${task}`);
    }
  }
  // Stdout, rendered from ansible's coloured output: the text without the escapes.
  const stdout = await page.locator(".stdout").textContent();
  assert.match(stdout, /bonjour from h1/);
  assert.match(stdout, /PLAY RECAP/);
  assert.doesNotMatch(stdout, /\u001b\[/);
  assert.ok((await page.locator(".stdout span[class^='ansi-']").count()) > 0, "no coloured output");
  // The failure with its message, and the timeline with one row per task.
  assert.match(await page.locator(".failures").textContent(), /h2[\s\S]*h2 is broken on purpose/);
  assert.equal(await page.locator("ol.timeline li").count(), 4);
  await shot("05-run-failed");
});

test("cancel a run from the UI", async () => {
  const run = await apiCall("POST", "/runs", { project: Number(PROJECT), playbook: "slow.yml", inventory: Number(INVENTORY) });
  await page.goto(`${BASE}/#/runs/${run.id}`);
  await cell("h1", "started").and(page.locator('[data-state="ok"]')).waitFor({ timeout: WAIT });
  await page.getByRole("button", { name: "Cancel", exact: true }).click();
  assert.equal(await waitStatus(FINAL), "canceled");
  // Graceful: the task in flight finished, the next one never started, the recap printed.
  assert.equal(await cell("h1", "never reached").count(), 0);
  assert.match(await page.locator(".stdout").textContent(), /PLAY RECAP/);
  assert.match(await page.locator("dl.facts").textContent(), /canceled by request \(graceful/);
  await shot("06-run-canceled");
});

test("relaunch the failed hosts of a run", async () => {
  await page.goto(`${BASE}/#/runs/${launchedRun}`);
  const from = page.url();
  await page.click("text=Relaunch failed hosts");
  const relaunched = await runIdFromUrl(from);
  assert.notEqual(relaunched, launchedRun);
  await page.locator("dl.facts dd.limit").waitFor();
  assert.equal(await page.locator("dl.facts dd.limit").textContent(), "h2");
  assert.match(await page.locator("dl.facts").textContent(), new RegExp(`#${launchedRun}`));
  assert.equal(await waitStatus(FINAL), "failed");
  const hosts = await page.locator("table.grid tbody tr").evaluateAll((rows) => rows.map((r) => r.dataset.host));
  assert.deepEqual(hosts, ["h2"]);
  await shot("07-relaunched-failed-hosts");
});

test("edit an inventory: the error is shown inline, naming the line", async () => {
  await page.click("nav >> text=Inventories");
  await page.click("table >> text=local3");
  await page.locator("#i-hosts").waitFor();
  const revision = Number(/Revision (\d+)/.exec(await page.locator("main").textContent())[1]);
  const good = await page.inputValue("#i-hosts");
  await page.fill("#i-hosts", "[web]\nh1 ansible_connection=local\n[broken\n");
  await page.getByRole("button", { name: "Save", exact: true }).click();
  const error = page.locator("#i-hosts-error");
  await error.waitFor();
  assert.match(await error.textContent(), /line 3/);
  assert.equal(await page.getAttribute("#i-hosts", "aria-invalid"), "true");
  await shot("08-inventory-error");

  await page.fill("#i-hosts", good);
  await page.getByRole("button", { name: "Save", exact: true }).click();
  await page.locator("p.ok", { hasText: `Saved (revision ${revision + 1},` }).waitFor();
  assert.equal(await page.locator("#i-hosts-error").count(), 0);
});

test("themes, the phone layout, keyboard and the rest of the pages render", async () => {
  await page.click("text=Theme: auto");
  await page.click("text=Theme: light");
  await page.locator("text=Theme: dark").waitFor();
  await page.waitForFunction(() => document.documentElement.dataset.theme === "dark");
  await page.goto(`${BASE}/#/runs/${launchedRun}`);
  await page.reload();
  await page.locator("table.grid").waitFor();
  await shot("09-run-dark");

  // The skip link is the first thing the keyboard reaches, and moves focus to the content.
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.textContent), "Skip to content");
  await page.keyboard.press("Enter");
  assert.equal(await page.evaluate(() => document.activeElement.id), "main");

  // Every section of the navigation opens on its page without an error.
  const sections = await page.locator("#nav a").evaluateAll((links) => links.map((a) => [a.hash, a.textContent]));
  assert.ok(sections.length >= 10);
  for (const [hash, heading] of sections) {
    await page.goto(`${BASE}/${hash}`);
    await page.locator("main h1", { hasText: heading === "Launch" ? "Launch a run" : heading }).waitFor();
    assert.equal(await page.locator("main .error").count(), 0, `${hash} shows an error`);
  }

  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${BASE}/#/runs/${launchedRun}`);
  await page.locator("table.grid").waitFor();
  assert.equal(await page.locator("#nav").isVisible(), false);
  await page.click("text=Menu");
  assert.equal(await page.locator("#nav").isVisible(), true);
  await shot("10-phone-menu");
  await page.click("#nav >> text=Runs");
  await page.locator("main h1", { hasText: "Runs" }).waitFor();
  await shot("11-phone-runs");
  await page.setViewportSize({ width: 1280, height: 900 });

  assert.deepEqual(problems, []);
});
