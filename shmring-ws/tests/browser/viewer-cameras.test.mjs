// Issue 22: the viewer with several cameras, in headless Chromium. The server serves a
// directory of rings (`--shm-dir DIR`, default camera `front`) that `shmring testsrc`
// writes: front 320x240, wrist 160x120. Each camera's pictures have their own size, so
// a decoder that ever drew another camera's frame is seen in its counters
// (viewerStats.cameras[name].sizes). Steps: the default camera as before; the picker
// switches to wrist (a new decoder: only 160x120 pictures); the grid shows both at once,
// each with its own decoder; a camera added to DIR while the grid is open (depth,
// 240x180, written by a process this script starts) gets a tile, and loses it when its
// ring is removed. Prints "RESULT {json}" and "PASS: ...".
// Usage: node viewer-cameras.test.mjs URL SHMRING_CLI DIR
import { spawn } from "node:child_process";
import { rmSync, existsSync } from "node:fs";
import { join } from "node:path";
import { headlessChromium } from "./headless.mjs";

const [url, cli, dir] = process.argv.slice(2);
if (!url || !cli || !dir) {
  console.error("usage: node viewer-cameras.test.mjs URL SHMRING_CLI DIR");
  process.exit(2);
}
const chrome = headlessChromium();

let browser, depth;
const timer = setTimeout(() => {
  console.error("FAIL: viewer-cameras.test.mjs timed out (240 s) as a whole");
  if (depth) depth.kill("SIGKILL");
  process.exit(1);
}, 240_000);

// Waits for `fn(arg)` to be true in the page, naming `what` if it never is.
async function waitIn(page, what, fn, arg) {
  try {
    await page.waitForFunction(fn, { timeout: 60_000, polling: 200 }, arg);
  } catch (e) {
    const stats = await page.evaluate(() => ({ selected: window.viewerStats, cameras: window.viewerStats.cameras }));
    throw new Error(`waited 60 s for ${what}: ${e.message}; stats ${JSON.stringify(stats)}`);
  }
}

// The sizes a camera's decoder drew: exactly its own.
function onlySize(name, stats, size) {
  const sizes = Object.keys(stats.sizes);
  if (sizes.length !== 1 || sizes[0] !== size) {
    throw new Error(`${name} drew pictures of sizes ${JSON.stringify(stats.sizes)}, not only ${size}`);
  }
  if (stats.errors !== 0) throw new Error(`${name}: ${stats.errors} decoder errors`);
}

const decodedMoreThan = ([name, n]) => {
  const c = window.viewerStats.cameras[name];
  return c !== undefined && c.decoded > n;
};

try {
  browser = await chrome.launch();
  const page = await browser.newPage();
  page.on("console", (m) => console.log("page:", m.text()));
  await page.goto(url, { waitUntil: "load", timeout: 30_000 });
  const result = {};

  // 1. The default camera at /stream/ws, as before; the picker offers both cameras.
  await waitIn(page, "the picker with front and wrist",
    () => !document.getElementById("cameras").hidden && document.getElementById("camera").options.length === 2);
  await waitIn(page, "30 pictures of the default camera", () => window.viewerStats.decoded > 30);
  result.default = await page.evaluate(() => ({ stats: window.viewerStats, picked: document.getElementById("camera").value }));
  if (result.default.picked !== "front") throw new Error(`the picker shows ${result.default.picked}, not the default front`);
  onlySize("the default camera", result.default.stats, "320x240");

  // 2. Switch to wrist: a new connection and decoder, never a front picture.
  await page.select("#camera", "wrist");
  await waitIn(page, "30 pictures of wrist after the switch",
    () => window.viewerStats.camera === "wrist" && window.viewerStats.decoded > 30);
  result.switched = await page.evaluate(() => ({
    stats: window.viewerStats, canvas: [document.getElementById("video").width, document.getElementById("video").height],
  }));
  onlySize("wrist after the switch", result.switched.stats, "160x120");
  if (result.switched.canvas.join("x") !== "160x120") throw new Error(`canvas ${result.switched.canvas} after the switch`);

  // 3. The grid: both cameras at once, each with its own socket and decoder.
  await page.click("#gridmode");
  await waitIn(page, "30 pictures of each camera in the grid",
    () => ["front", "wrist"].every((n) => (window.viewerStats.cameras[n] || { decoded: 0 }).decoded > 30));
  result.grid = await page.evaluate(() => ({
    cameras: window.viewerStats.cameras,
    selected: window.viewerStats.camera,
    tiles: [...document.querySelectorAll("#grid figure")].map((f) => {
      const c = f.querySelector("canvas");
      return { camera: f.dataset.camera, size: c.width + "x" + c.height };
    }),
  }));
  onlySize("front in the grid", result.grid.cameras.front, "320x240");
  onlySize("wrist in the grid", result.grid.cameras.wrist, "160x120");
  const tiles = JSON.stringify(result.grid.tiles);
  if (tiles !== JSON.stringify([{ camera: "front", size: "320x240" }, { camera: "wrist", size: "160x120" }])) {
    throw new Error(`grid tiles ${tiles}`);
  }
  if (result.grid.selected !== "wrist") throw new Error(`viewerStats is ${result.grid.selected}'s, not the picked wrist's`);

  // 4. A camera added while the grid is open gets a tile; removed, it loses it.
  depth = spawn(cli, ["testsrc", "--cameras", "depth", "--dir", dir, "--size", "240x180", "--encoder", "libx264"],
    { stdio: "ignore" });
  await waitIn(page, "30 pictures of depth, added while the grid was open", decodedMoreThan, ["depth", 30]);
  result.added = await page.evaluate(() => window.viewerStats.cameras.depth);
  onlySize("depth", result.added, "240x180");
  depth.kill("SIGKILL");
  await new Promise((resolve) => depth.once("exit", resolve));
  rmSync(join(dir, "depth"), { force: true });
  if (existsSync(join(dir, "depth"))) throw new Error("could not remove depth's ring");
  await waitIn(page, "depth's tile to go after its ring was removed",
    () => !window.viewerStats.cameras.depth && !document.querySelector('#grid figure[data-camera="depth"]'));
  result.after = await page.evaluate(() => ({
    tiles: [...document.querySelectorAll("#grid figure")].map((f) => f.dataset.camera),
    front: window.viewerStats.cameras.front.decoded,
  }));
  if (result.after.tiles.join(",") !== "front,wrist") throw new Error(`tiles after the removal: ${result.after.tiles}`);
  console.log("RESULT " + JSON.stringify(result));
  console.log(`PASS: default, switch and grid each decoded their own camera (front ${result.grid.cameras.front.decoded}, ` +
    `wrist ${result.grid.cameras.wrist.decoded}, depth ${result.added.decoded} pictures)`);
} catch (e) {
  console.error("FAIL:", e.message);
  process.exitCode = 1;
} finally {
  clearTimeout(timer);
  if (depth && depth.exitCode === null && depth.signalCode === null) depth.kill("SIGKILL");
  if (browser) await browser.close().catch(() => {});
  chrome.cleanup();
}
