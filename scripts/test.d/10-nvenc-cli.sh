#!/usr/bin/env bash
# shmring-nvenc (encoder, test pattern, validate-nvenc), the shmring CLI and the
# transport-server binary (flags, --demo). Real FFmpeg
# encoders; the NVENC tests skip, saying why, on machines without an NVIDIA GPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/step-timeout.sh

cargo fmt -p shmring-nvenc -p shmring-cli -p transport-server --check
cargo clippy -p shmring-nvenc -p shmring-cli -p transport-server --no-deps --all-targets -- -D warnings
cargo nextest run -p shmring-nvenc -p shmring-cli -p transport-server --no-fail-fast
# Say which hardware tests skipped and why (they pass trivially without a GPU).
cargo nextest run -p shmring-nvenc -E 'test(/nvenc/)' --success-output immediate 2>&1 | grep -E '^\s*(SKIP|NOTE) ' || true
step_timeout 900 "nvenc, cli and transport-server doc tests" cargo test -p shmring-nvenc -p shmring-cli -p transport-server --doc

# validate-nvenc as CI's cuda-smoke job runs it: valid JSON on stdout, exit 0/1/2.
set +e
cargo run -q -p shmring-nvenc --bin validate-nvenc > target/validate-nvenc.json
code=$?
set -e
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["exit_code"]==int(sys.argv[2]), r; print("validate-nvenc:", r["status"], "exit", sys.argv[2])' target/validate-nvenc.json "$code"
case "$code" in 0|1|2) ;; *) echo "validate-nvenc exited $code"; exit 1 ;; esac
