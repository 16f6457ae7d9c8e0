// Runs one browser client in headless Chromium (over CDP, puppeteer-core) against a
// transport-server for some seconds and prints what it saw as one JSON line.
//   node clients.mjs sdr    BASE_URL SECONDS [drive]   the SDR_OS-like client (sdr_client.js)
//   node clients.mjs viewer BASE_URL SECONDS           the server's own viewer page
// Prints "START <Date.now()>" when the client starts connecting, then "RESULT <json>".
// With SHMRING_UNTIL set (a JavaScript condition on the stats object `s`, e.g.
// "s.decoded > 30"), it then waits, up to 60 s more, for the condition to hold, so a
// loaded machine that decodes slowly is waited for rather than judged by the clock.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { headlessChromium } from "./headless.mjs";

const [kind, base, seconds, option] = process.argv.slice(2);
if (!["sdr", "viewer"].includes(kind) || !base || !seconds) {
  console.error("usage: node clients.mjs sdr|viewer BASE_URL SECONDS [drive]");
  process.exit(2);
}
const here = dirname(fileURLToPath(import.meta.url));
const chrome = headlessChromium();
let browser;
const until = process.env.SHMRING_UNTIL;
const timer = setTimeout(
  () => { console.error("FAIL: timed out"); process.exit(1); },
  (until ? 120_000 : 60_000) + 1000 * Number(seconds),
);
try {
  browser = await chrome.launch();
  const page = await browser.newPage();
  page.on("console", (m) => console.log("page:", m.text()));
  if (kind === "sdr") {
    // A page of the server's origin (a secure context for WebCodecs) that runs the client.
    await page.goto(base + "/health", { waitUntil: "load", timeout: 30_000 });
    await page.addScriptTag({ content: readFileSync(join(here, "sdr_client.js"), "utf8") });
    const ws = base.replace(/^http/, "ws") + "/stream/ws";
    console.log("START " + Date.now());
    await page.evaluate((u, d) => window.sdrClient.start(u, d), ws, option === "drive");
  } else {
    console.log("START " + Date.now());
    await page.goto(base + "/", { waitUntil: "load", timeout: 30_000 });
  }
  await new Promise((r) => setTimeout(r, 1000 * Number(seconds)));
  const stats = kind === "sdr" ? "window.sdrStats" : "window.viewerStats";
  if (until) {
    await page
      .waitForFunction(`(() => { const s = ${stats}; return !!s && (${until}); })()`, { timeout: 60_000, polling: 200 })
      .catch(() => console.log(`page: still not (${until}) after 60 s more`));
  }
  const result = await page.evaluate((k) => (k === "sdr" ? window.sdrStats : window.viewerStats), kind);
  console.log("RESULT " + JSON.stringify(result));
} catch (e) {
  console.error("FAIL:", e.message);
  process.exitCode = 1;
} finally {
  clearTimeout(timer);
  if (browser) await browser.close().catch(() => {});
  chrome.cleanup();
}
