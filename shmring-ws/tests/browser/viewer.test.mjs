// Issue 5, test 3: headless Chromium opens transport-server's viewer page, which decodes
// real H.264 from the ring with WebCodecs. Asserts more than 30 decoded frames and a
// canvas that is not blank. Usage: node viewer.test.mjs http://127.0.0.1:PORT/
import { headlessChromium } from "./headless.mjs";

const url = process.argv[2];
if (!url) {
  console.error("usage: node viewer.test.mjs URL");
  process.exit(2);
}

// HTTPS tests use a certificate made for the test, which no CA signed.
const chrome = headlessChromium({ ignoreCertificateErrors: url.startsWith("https:") });

let browser;
const timer = setTimeout(() => {
  console.error("FAIL: browser test timed out");
  process.exit(1);
}, 90_000);
try {
  browser = await chrome.launch();
  const page = await browser.newPage();
  page.on("console", (m) => console.log("page:", m.text()));
  await page.goto(url, { waitUntil: "load", timeout: 30_000 });
  const supported = await page.evaluate(() => "VideoDecoder" in window);
  if (!supported) throw new Error("this Chromium has no WebCodecs VideoDecoder");
  await page.waitForFunction(() => window.viewerStats && window.viewerStats.decoded > 30, {
    timeout: 45_000, polling: 200,
  });
  const result = await page.evaluate(() => {
    const c = document.getElementById("video");
    const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let min = 255, max = 0, colored = 0;
    for (let i = 0; i < data.length; i += 4 * 97) {
      const v = (data[i] + data[i + 1] + data[i + 2]) / 3;
      min = Math.min(min, v);
      max = Math.max(max, v);
      if (Math.abs(data[i] - data[i + 1]) > 40 || Math.abs(data[i + 1] - data[i + 2]) > 40) colored++;
    }
    return { stats: window.viewerStats, width: c.width, height: c.height, min, max, colored };
  });
  console.log(JSON.stringify(result));
  if (!(result.stats.decoded > 30)) throw new Error(`only ${result.stats.decoded} frames decoded`);
  if (result.max - result.min < 50 || result.colored === 0) throw new Error("the canvas is blank");
  if (result.stats.errors !== 0) throw new Error(`${result.stats.errors} decoder errors`);
  console.log(`PASS: ${result.stats.decoded} frames decoded (${result.stats.codec}), canvas ${result.width}x${result.height} not blank`);
} catch (e) {
  console.error("FAIL:", e.message);
  process.exitCode = 1;
} finally {
  clearTimeout(timer);
  if (browser) await browser.close().catch(() => {});
  chrome.cleanup();
}
