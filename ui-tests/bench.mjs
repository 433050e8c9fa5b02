// The `ui` benchmark's browser side (run by crates/troupe-bench/src/scenarios/ui.rs): opens a
// finished run's page in headless Chromium and prints, as one JSON line, milliseconds from the
// navigation's start to the run page's first paint and to the frame that shows the last event,
// the longest task that blocked the page meanwhile, and the reference: the same SSE stream read
// to its end by node alone (no parsing, no DOM).
//
// Environment: TROUPE_URL, TROUPE_TOKEN, RUN_ID, EVENTS (the run's event count), CHROMIUM.
import { chromium } from "playwright-core";

const { TROUPE_URL: base, TROUPE_TOKEN: token, RUN_ID: run, EVENTS: events } = process.env;
if (!base || !token || !run || !events) throw new Error("TROUPE_URL, TROUPE_TOKEN, RUN_ID and EVENTS are needed");

async function streamMs() {
  const start = performance.now();
  const res = await fetch(`${base}/api/v1/runs/${run}/events/sse?after=0`, {
    headers: { Authorization: `Bearer ${token}`, Accept: "text/event-stream" },
  });
  if (!res.ok) throw new Error(`stream: ${res.status}`);
  const reader = res.body.getReader();
  for (;;) {
    const { done } = await reader.read();
    if (done) break;
  }
  return performance.now() - start;
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await context.addInitScript(
    ({ token, want }) => {
      sessionStorage.setItem("troupe.token", token);
      const ui = (window.__ui = { first: 0, last: 0, longest: 0 });
      new PerformanceObserver((list) => {
        for (const e of list.getEntries()) ui.longest = Math.max(ui.longest, e.duration);
      }).observe({ type: "longtask", buffered: true });
      // A frame after the DOM change is the frame that paints it.
      const afterPaint = (key) => requestAnimationFrame(() => requestAnimationFrame(() => (ui[key] = performance.now())));
      let sawHead = false;
      let sawLast = false;
      new MutationObserver(() => {
        if (!sawHead && document.querySelector(".run .page-head")) {
          sawHead = true;
          afterPaint("first");
        }
        const count = document.querySelector(".run .page-head .muted")?.textContent || "";
        if (!sawLast && count.startsWith(`${want} events`)) {
          sawLast = true;
          afterPaint("last");
        }
      }).observe(document, { subtree: true, childList: true, characterData: true });
    },
    { token, want: events },
  );
  const page = await context.newPage();
  await page.goto(`${base}/#/runs/${run}`);
  await page.waitForFunction(() => window.__ui.last > 0, null, { timeout: 300_000 });
  const ui = await page.evaluate(() => window.__ui);
  const reference = await streamMs();
  console.log(
    JSON.stringify({
      first_paint_ms: ui.first,
      last_event_ms: ui.last,
      longest_task_ms: ui.longest,
      stream_ms: reference,
    }),
  );
} finally {
  await browser.close();
}
