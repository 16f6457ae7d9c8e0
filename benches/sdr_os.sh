#!/usr/bin/env bash
# SDR_OS's transport server, side by side with ours in `ws_fanout`.
#
#   benches/sdr_os.sh build [DIR]
#       Clones SDR_OS's public repository into DIR (default: $SDR_OS_DIR, else
#       ${TMPDIR:-/tmp}/sdr_os), checks out the commit measured in docs/benchmarks.md
#       and builds its `services/transport-server` in release, in its own Cargo project.
#       Needs git, network access (GitHub and crates.io) and a Rust toolchain >= 1.75.
#
#   benches/sdr_os.sh --shm-path RING --listen ADDR
#       Starts that server on RING and ADDR. This is the form `ws_fanout` uses: it starts
#       every `--extra-server` with our server's two flags, and SDR_OS's server reads its
#       settings from the environment instead, so this maps one to the other and
#       `exec`s it (same process id, so its CPU is measured):
#
#   cargo bench -p shmring-benches --bench ws_fanout -- --servers shmring \
#       --extra-server "SDR_OS=$PWD/benches/sdr_os.sh" --layout legacy
#
# Every other setting stays at SDR_OS's own default (CRC checked, keyframe gating off,
# 64-frame broadcast channel), except NATS: SDR_NATS_URL defaults here to a local
# address; with no nats-server there the server logs a warning and serves video without
# NATS, as our server does in the benchmark. Set SDR_OS_BIN to use a binary built
# elsewhere. SDR_OS only reads the legacy single-slot layout (`--layout legacy`).
set -euo pipefail

REPO_URL=https://github.com/Gbrothers1/SDR_OS.git
# The commit measured in docs/benchmarks.md (run 13).
COMMIT=a23f0a5eb517e58acd6333bfaf1e354cc3fdc970

dir=${SDR_OS_DIR:-${TMPDIR:-/tmp}/sdr_os}

build() {
    dir=${1:-$dir}
    if [ ! -d "$dir/.git" ]; then
        git clone --filter=blob:none --no-checkout "$REPO_URL" "$dir"
    fi
    git -C "$dir" fetch --quiet origin "$COMMIT" 2>/dev/null || true
    git -C "$dir" -c advice.detachedHead=false checkout --quiet "$COMMIT" -- services/transport-server
    (cd "$dir/services/transport-server" && cargo build --release --locked)
    echo "built $dir/services/transport-server/target/release/transport-server (SDR_OS $COMMIT)"
}

serve() {
    local ring="" listen=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --shm-path) ring=${2:?--shm-path needs a ring path}; shift 2 ;;
            --listen) listen=${2:?--listen needs an address}; shift 2 ;;
            # ws_fanout adds it with SHMRING_WS_STAGE_TIMES=1; SDR_OS has no stage times.
            --frame-id-commit-time) shift ;;
            *) echo "sdr_os.sh: unknown argument '$1' (expected --shm-path RING --listen ADDR, or build [DIR])" >&2; exit 2 ;;
        esac
    done
    if [ -z "$ring" ] || [ -z "$listen" ]; then
        echo "sdr_os.sh: give both --shm-path RING and --listen ADDR" >&2
        exit 2
    fi
    local bin=${SDR_OS_BIN:-$dir/services/transport-server/target/release/transport-server}
    if [ ! -x "$bin" ]; then
        echo "sdr_os.sh: no SDR_OS transport server at $bin; run 'benches/sdr_os.sh build' or set SDR_OS_BIN" >&2
        exit 1
    fi
    SDR_SHM_PATH=$ring SDR_LISTEN_ADDR=$listen SDR_NATS_URL=${SDR_NATS_URL:-nats://127.0.0.1:4222} exec "$bin"
}

case "${1:-}" in
    build) shift; build "$@" ;;
    --shm-path|--listen) serve "$@" ;;
    *) echo "usage: sdr_os.sh build [DIR] | sdr_os.sh --shm-path RING --listen ADDR" >&2; exit 2 ;;
esac
