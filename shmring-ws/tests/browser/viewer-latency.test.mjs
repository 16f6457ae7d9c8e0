// Issue 21: the viewer measures commit -> decoded and commit -> painted when the writer
// stamps frame_id with CLOCK_REALTIME ns. Opens the page in headless Chromium, waits
// until a full window of such frames was decoded after the join burst, and prints
// window.viewerStats as JSON on a line starting with "STATS ". The Python side judges
// the figures against the server's /metrics. Usage: node viewer-latency.test.mjs URL
import { headlessChromium } from "./headless.mjs";

const url = process.argv[2];
if (!url) {
  console.error("usage: node viewer-latency.test.mjs URL");
  process.exit(2);
}
const chrome = headlessChromium();

let browser;
const timer = setTimeout(() => {
  console.error("FAIL: viewer-latency.test.mjs timed out waiting for 300 decoded frames with commit times");
  process.exit(1);
}, 120_000);
try {
  browser = await chrome.launch();
  const page = await browser.newPage();
  page.on("console", (m) => console.log("page:", m.text()));
  await page.goto(url, { waitUntil: "load", timeout: 30_000 });
  // 300 pictures: the join burst (old frames, at most one GOP) has left the 120-frame
  // window by then.
  await page.waitForFunction(
    () => window.viewerStats && window.viewerStats.decoded > 300 && window.viewerStats.commitToPaintedMs !== null,
    { timeout: 100_000, polling: 200 },
  );
  const stats = await page.evaluate(() => window.viewerStats);
  const bar = await page.evaluate(() => ({
    hidden: document.getElementById("glass").hidden,
    decoded: document.getElementById("c2d").textContent,
  }));
  console.log("STATS " + JSON.stringify({ ...stats, bar }));
  console.log("PASS: commit-time figures collected");
} catch (e) {
  console.error("FAIL:", e.message);
  process.exitCode = 1;
} finally {
  clearTimeout(timer);
  if (browser) await browser.close().catch(() => {});
  chrome.cleanup();
}
