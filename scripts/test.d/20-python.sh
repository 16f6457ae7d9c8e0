#!/usr/bin/env bash
# shmring-python: `pip install ./shmring-python` into .venv, which must turn the `video`
# feature (VideoWriter) on by itself since FFmpeg's development files are installed
# (scripts/setup); checks the stubs against the compiled module (mypy stubtest) and the
# tests' use of them (mypy), runs pytest (interop peers, the shmring CLI and the
# example are separate processes); then builds without FFmpeg (SHMRING_VIDEO=0) in a
# fresh virtualenv, checks it is abi3 and runs pytest there too (VideoWriter must raise
# FeatureNotBuiltError); then scripts/wheel-check: the auditwheel-repaired wheel encodes
# with the system's FFmpeg hidden. Run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
py=.venv/bin/python

echo "--- pip install ./shmring-python (FFmpeg is installed: VideoWriter must be built in)"
$py -m pip install -q ./shmring-python
$py -c "import shmring; assert shmring.VIDEO_FEATURE, 'pip install ./shmring-python left VideoWriter out although FFmpeg is installed'"

echo "--- mypy stubtest"
$py -m mypy.stubtest shmring

echo "--- mypy (tests, example, benchmark, build backend)"
$py -m mypy --strict --no-incremental shmring-python/tests examples/genesis-writer/genesis_writer.py benches/python_write.py \
  shmring-python/build_backend/shmring_build.py

echo "--- Rust interop peer"
cargo build -q -p shmring-python --release --example ring_peer
export SHMRING_RING_PEER="$PWD/target/release/examples/ring_peer"
echo "--- the shmring CLI (dump of VideoWriter's timestamps)"
cargo build -q -p shmring-cli --bin shmring
export SHMRING_CLI="$PWD/target/debug/shmring"

echo "--- pytest"
$py -m pytest shmring-python/tests -q

echo "--- fresh virtualenv: SHMRING_VIDEO=0 pip install ./shmring-python && python -c 'import shmring'"
fresh=$(mktemp -d)
trap 'rm -rf "$fresh"' EXIT
python3 -m venv "$fresh/venv"
SHMRING_VIDEO=0 "$fresh/venv/bin/pip" install -q ./shmring-python
(cd "$fresh" && "$fresh/venv/bin/python" -c "import shmring; print('import shmring OK', shmring.__version__)")
# The default build is the stable-ABI one (one cp311-abi3 wheel for CPython 3.11 and
# later): check the extension is tagged abi3 and uses only the 3.11 limited API.
so=$(cd "$fresh" && "$fresh/venv/bin/python" -c "import shmring._shmring as m; print(m.__file__)")
case "$so" in
  *.abi3.so) echo "abi3 extension: $(basename "$so")" ;;
  *) echo "expected an abi3 extension, got $so" >&2; exit 1 ;;
esac
.venv/bin/abi3audit --assume-minimum-abi3 3.11 --strict --summary "$so"
"$fresh/venv/bin/pip" install -q pytest pytest-timeout numpy
"$fresh/venv/bin/python" -m pytest shmring-python/tests -q

echo "--- the wheel users install carries its FFmpeg (scripts/wheel-check)"
scripts/wheel-check

# Other interpreters (Genesis supports CPython 3.10 to 3.12), when asked for, e.g.
# SHMRING_EXTRA_PYTHONS="python3.10 python3.12": each gets its own venv and the pytest run
# (3.10 gets a version-specific build, see shmring-python/build_backend/shmring_build.py).
for extra in ${SHMRING_EXTRA_PYTHONS:-}; do
  echo "--- $extra: pip install ./shmring-python && pytest"
  "$extra" -m venv "$fresh/venv-$(basename "$extra")"
  venv_py="$fresh/venv-$(basename "$extra")/bin/python"
  "$venv_py" -m pip install -q pytest pytest-timeout numpy ./shmring-python
  "$venv_py" -m pytest shmring-python/tests -q
done
