#!/usr/bin/env bash
# shmring-ws / transport-server: unit tests, then end-to-end tests with real processes
# on loopback: a producer writing a ring, transport-server, WebSocket clients (Python),
# a real nats-server, and headless Chromium decoding the viewer page's video.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/step-timeout.sh

cargo build --release -p shmring-ws --examples
cargo build --release -p transport-server
# The shmring CLI writes several test cameras for the viewer's multi-camera test.
cargo build --release -p shmring-cli --bin shmring
step_timeout 900 "shmring-ws unit tests" cargo test --release -p shmring-ws --lib

# puppeteer-core for the headless Chromium test (Chromium itself comes from apt).
(cd shmring-ws/tests/browser && npm ci --no-audit --no-fund --loglevel=error)

export SHMRING_BIN_DIR="$PWD/target/release"
.venv/bin/python -m pytest -q -p no:cacheprovider shmring-ws/tests
