// The viewer page opened where WebCodecs does not exist (http:// from another machine is
// not a secure context): it must say why it cannot decode, and what to do.
// Usage: node insecure.test.mjs http://robot:PORT/   (robot is mapped to 127.0.0.1)
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import puppeteer from "puppeteer-core";

const url = process.argv[2];
const chromium = process.env.CHROMIUM || "/usr/bin/chromium";
const host = new URL(url).hostname;
const profile = mkdtempSync(join(tmpdir(), "shmring-chromium-"));
const args = [
  "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  `--host-resolver-rules=MAP ${host} 127.0.0.1`, `--user-data-dir=${profile}`,
];
if (process.getuid && process.getuid() === 0) args.push("--no-sandbox");
let browser;
try {
  browser = await puppeteer.launch({ executablePath: chromium, args, headless: true, protocolTimeout: 60_000 });
  const page = await browser.newPage();
  await page.goto(url, { waitUntil: "load", timeout: 30_000 });
  const secure = await page.evaluate(() => window.isSecureContext);
  if (secure) throw new Error(`${url} is a secure context here: the test proves nothing`);
  await page.waitForFunction(() => /secure context/i.test(document.body.innerText) && /https/i.test(document.body.innerText), {
    timeout: 20_000, polling: 200,
  });
  console.log("PASS: the page says it needs a secure context (HTTPS)");
} catch (e) {
  console.error("FAIL:", e.message);
  process.exitCode = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
