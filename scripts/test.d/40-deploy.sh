#!/usr/bin/env bash
# Deployment and release: the compose stack's configuration, a real-stack smoke test,
# the documentation site, and release packaging. Run from anywhere, after scripts/setup.
#
#   40-deploy.sh [compose] [smoke] [docs] [package]     (no argument: all four)
#
#   compose  docker-compose config for every profile; the service/profile/network/port
#            table (compose/tests/test_compose.py); caddy validate and fmt; promtool check
#            config; nats-server -t; the CI workflow parses and only calls project scripts
#   smoke    nats-server, transport-server --demo, Caddy, Prometheus on loopback ports
#            (compose/tests/test_smoke.py)
#   docs     mkdocs build --strict (broken links fail)
#   package  cargo publish --dry-run of shmring-core, shmring-nvenc, shmring-ws; maturin
#            build --release (wheel) and sdist; the sdist installed in a fresh virtualenv
#            runs the README's Python example (tests/test_readme.py)
set -euo pipefail
cd "$(dirname "$0")/../.."
py=.venv/bin/python
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(compose smoke docs package)
for p in "${parts[@]}"; do
  case "$p" in compose|smoke|docs|package) ;; *) echo "40-deploy.sh: unknown part '$p'" >&2; exit 2 ;; esac
done
want() { case " ${parts[*]} " in *" $1 "*) return 0 ;; esac; return 1; }
t0=$SECONDS
took() { echo "--- ($((SECONDS - t0)) s so far)"; }

if want compose; then
  echo "--- docker-compose config, per profile"
  for profile in dev sim train obs cuda rocm mlx; do
    docker-compose -f compose/docker-compose.yml --profile "$profile" config -q
    echo "profile $profile: ok"
  done
  echo "--- compose service table"
  $py -m pytest -q -p no:cacheprovider compose/tests/test_compose.py
  echo "--- caddy validate, caddy fmt"
  caddy validate --config compose/Caddyfile --adapter caddyfile 2>&1 | grep -x "Valid configuration"
  caddy fmt compose/Caddyfile | diff -u compose/Caddyfile - || { echo "compose/Caddyfile is not caddy-fmt formatted"; exit 1; }
  echo "--- promtool check config"
  promtool check config compose/prometheus.yml
  echo "--- nats-server -t"
  nats-server -c compose/nats.conf -t
  echo "--- CI workflow"
  $py - <<'PY'
import re, sys, yaml
from pathlib import Path
wf = yaml.safe_load(Path(".github/workflows/ci.yml").read_text())
jobs = wf["jobs"]
seed = {"validate-compose", "lint-and-unit", "rust-unit", "ros-jazzy-build", "docs-build",
        "cuda-smoke", "rocm-smoke", "mlx-smoke", "loom", "fuzz"}
missing = seed - set(jobs)
assert not missing, f"ci.yml lacks jobs {missing}"
for name, job in jobs.items():
    runs = [s["run"] for s in job["steps"] if "run" in s]
    # Every job's work is one of the project's scripts, so it runs the same locally.
    assert any(re.match(r"(\./)?scripts/", r) for r in runs), f"job {name} calls no project script: {runs}"
    hosted = job["runs-on"] == "ubuntu-latest"
    assert hosted == (name not in {"cuda-smoke", "rocm-smoke", "mlx-smoke"}), f"{name} runs on {job['runs-on']}"
import subprocess
# scripts/test lists its parts when given an unknown one (before it installs anything).
r = subprocess.run(["./scripts/test", "--list-parts"], capture_output=True, text=True)
m = re.search(r"\(parts: ([^)]*)\)", r.stderr)
assert r.returncode == 2 and m, f"scripts/test did not list its parts: {r.stderr}"
known = set(m.group(1).split())
for name, job in jobs.items():
    for r in (s["run"] for s in job["steps"] if "run" in s):
        m = re.match(r"\./scripts/test\s+(.*)", r)
        if m:
            bad = set(m.group(1).split()) - known
            assert not bad, f"job {name}: scripts/test has no part {bad}"
# Together the hosted jobs run every part of scripts/test.
used = set()
for job in jobs.values():
    for r in (s["run"] for s in job["steps"] if "run" in s):
        m = re.match(r"\./scripts/test\s+(.*)", r)
        if m:
            used |= set(m.group(1).split())
        m = re.match(r"scripts/test.d/40-deploy.sh\s+(.*)", r)
        if m:
            used |= {"deploy:" + p for p in m.group(1).split()}
# Opt-in parts (scripts/test runs them only when named: the real-Genesis run and its
# 8.5 GB install) are not in CI by design.
opt_in = {re.sub(r"^\d+-", "", p.stem) for p in Path("scripts/test.d").glob("*.sh")
          if any(line.startswith("# scripts/test: opt-in") for line in p.read_text().splitlines())}
need = (known - {"deploy"} - opt_in) | {"deploy:compose", "deploy:smoke", "deploy:docs", "deploy:package"}
assert used >= need, f"no CI job runs {sorted(need - used)}"
print(f"ci.yml: {len(jobs)} jobs, every part of scripts/test covered")
PY
  took
fi

if want smoke; then
  echo "--- real-stack smoke test"
  cargo build -q --release -p transport-server
  SHMRING_BIN_DIR="$PWD/target/release" $py -m pytest -q -p no:cacheprovider compose/tests/test_smoke.py
  took
fi

if want docs; then
  echo "--- mkdocs build --strict"
  .venv/bin/mkdocs build --strict --quiet --site-dir site
  test -s site/index.html -a -s site/protocol/index.html -a -s site/operations/index.html
  took
fi

if want package; then
  echo "--- cargo publish --dry-run (shmring-core, shmring-nvenc, shmring-ws)"
  # One invocation: cargo packages the three together, so the unpublished path
  # dependencies resolve against each other (a local overlay registry) while the
  # crates.io index supplies everything else.
  log=target/publish-dry-run.log
  if ! cargo publish --dry-run --allow-dirty -p shmring-core -p shmring-nvenc -p shmring-ws >"$log" 2>&1; then
    cat "$log"
    echo "cargo publish --dry-run failed (full log above)"
    exit 1
  fi
  grep -E "^ +(Packaged|Verifying|Uploading)" "$log"
  for c in shmring-core shmring-nvenc shmring-ws; do
    grep -qE "^ +Verifying $c v" "$log" || { echo "cargo did not verify $c:"; cat "$log"; exit 1; }
  done
  # The metadata crates.io shows (cargo only warns about some of it).
  cargo metadata -q --format-version 1 --no-deps | $py -c '
import json, sys
pkgs = {p["name"]: p for p in json.load(sys.stdin)["packages"]}
for name in ("shmring-core", "shmring-nvenc", "shmring-ws"):
    p = pkgs[name]
    missing = [k for k in ("description", "license", "repository", "readme", "keywords", "categories",
                           "rust_version") if not p.get(k)]
    assert not missing, f"{name}: Cargo.toml lacks {missing}"
print("crate metadata complete")'
  took

  echo "--- maturin build --release, maturin sdist (shmring-python)"
  rm -rf target/deploy-wheels
  .venv/bin/maturin build --release -q --manifest-path shmring-python/Cargo.toml --interpreter "$py" \
    --out target/deploy-wheels
  .venv/bin/maturin sdist --manifest-path shmring-python/Cargo.toml --out target/deploy-wheels
  wheel=$(ls target/deploy-wheels/shmring-*.whl)
  sdist=$(ls target/deploy-wheels/shmring-*.tar.gz)
  $py - "$wheel" "$sdist" <<'PY'
import sys, tarfile, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
for want in ("shmring/__init__.py", "shmring/py.typed", "shmring/_shmring.pyi"):
    assert want in names, f"wheel lacks {want}: {names}"
assert any(n.startswith("shmring/_shmring") and n.endswith(".so") for n in names), names
members = tarfile.open(sys.argv[2]).getnames()
assert any(m.endswith("/pyproject.toml") for m in members), members
assert any("shmring-core/src/" in m for m in members), "sdist lacks the shmring-core sources it builds from"
print("wheel:", sys.argv[1].rsplit("/", 1)[-1], "| sdist:", sys.argv[2].rsplit("/", 1)[-1], f"({len(members)} files)")
PY
  took

  echo "--- the sdist in a fresh virtualenv: pip install, README example"
  fresh=$(mktemp -d)
  trap 'rm -rf "$fresh"' EXIT
  python3 -m venv "$fresh/venv"
  # Cargo's cache of registry crates is reused; the build itself starts from the sdist.
  CARGO_TARGET_DIR="$PWD/target/sdist-build" "$fresh/venv/bin/pip" install -q "$sdist" pytest pytest-timeout
  (cd "$fresh" && "$fresh/venv/bin/python" -c "import shmring, sys; assert shmring.__file__.startswith(sys.prefix), shmring.__file__; print('installed from sdist:', shmring.__version__)")
  "$fresh/venv/bin/python" -m pytest -q -p no:cacheprovider tests/test_readme.py
  took
fi
