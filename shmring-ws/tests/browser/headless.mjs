// Headless Chromium for the viewer tests: a throw-away profile, the flags every test
// needs (no GPU, no QUIC, no background traffic; no sandbox as root), and a launch with
// a protocol timeout. `ignoreCertificateErrors` for the HTTPS tests' own certificate.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import puppeteer from "puppeteer-core";

export function headlessChromium({ ignoreCertificateErrors = false } = {}) {
  const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
  const profile = mkdtempSync(join(tmpdir(), "shmring-chromium-"));
  const args = [
    "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    `--user-data-dir=${profile}`,
  ];
  if (process.getuid && process.getuid() === 0) args.push("--no-sandbox");
  if (ignoreCertificateErrors) args.push("--ignore-certificate-errors");
  return {
    launch: () => puppeteer.launch({ executablePath, args, headless: true, protocolTimeout: 60_000 }),
    cleanup: () => rmSync(profile, { recursive: true, force: true }),
  };
}
