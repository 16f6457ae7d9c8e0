#!/usr/bin/env bash
# scripts/test: opt-in (runs only as `scripts/test genesis`, never in the default suite)
#
# examples/genesis-writer/genesis_writer.py with the real simulator: genesis-world on the CPU backend
# (Mesa's software EGL, no GPU), headless, 150 frames in real time (its default), while
# `shmring dump` records the ring into a Matroska file. Checks ffprobe's frame count and
# rate (the simulation's 30 fps from the frames' sim timestamps) and the PSNR of a
# decoded frame against the frame Genesis rendered (at least 35 dB).
#
# Installs into .venv-genesis (kept between runs): torch and genesis-world from PyPI.
# Only PyPI is reachable, so torch is the CUDA build (about 8.5 GB, ~25 min the first
# time). Prints the timings of each step.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
venv=$repo/.venv-genesis
frames=150
check_frame=100

t0=$(date +%s)
step() { printf -- '--- [%4ss] %s\n' "$(( $(date +%s) - t0 ))" "$*"; }

step "virtualenv $venv: torch, genesis-world, PyAV, shmring"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q torch genesis-world av numpy
"$venv/bin/pip" install -q ./shmring-python
"$venv/bin/python" -c "import shmring; assert shmring.VIDEO_FEATURE, 'shmring without VideoWriter'"
"$venv/bin/python" -c "import genesis, torch; print('genesis', genesis.__version__, 'torch', torch.__version__)"

step "the shmring CLI"
cargo build -q --release -p shmring-cli --bin shmring
cli=$repo/target/release/shmring

work=$(mktemp -d)
ring=/dev/shm/shmring-genesis-$$
trap 'rm -rf "$work"; rm -f "$ring"' EXIT

step "genesis_writer.py: build the scene, then $frames frames in real time; shmring dump records them"
export PYOPENGL_PLATFORM=${PYOPENGL_PLATFORM:-egl}
"$venv/bin/python" examples/genesis-writer/genesis_writer.py --path "$ring" --frames "$frames" --encoder libx264 \
  --save-frame "$check_frame" "$work/rendered.npy" > "$work/writer.log" 2>&1 &
writer=$!
# The example builds its scene before it opens the ring: start recording when it appears
# (the first keyframe is still the newest one then, so the recording starts at frame 0).
while [ ! -e "$ring" ]; do
  kill -0 "$writer" 2>/dev/null || { cat "$work/writer.log"; echo "genesis_writer.py ended before opening the ring" >&2; exit 1; }
  sleep 0.05
done
step "ring open: recording"
"$cli" dump "$ring" -o "$work/genesis.mkv" --timestamps "$work/times.txt" --idle-timeout 5
wait "$writer" || { cat "$work/writer.log"; exit 1; }
cat "$work/writer.log"

step "ffprobe and PSNR"
probe=$(ffprobe -v error -count_frames -show_entries stream=nb_read_frames,r_frame_rate,width,height -of json "$work/genesis.mkv")
echo "$probe"
"$venv/bin/python" - "$work" "$frames" "$check_frame" "$probe" <<'EOF'
import json, sys
import av
import numpy as np

work, frames, check, probe = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
stream = probe["streams"][0]
assert int(stream["nb_read_frames"]) == frames, f"{stream['nb_read_frames']} frames recorded, not {frames}"
assert stream["r_frame_rate"] == "30/1", f"recording plays at {stream['r_frame_rate']}, not the simulation's 30/1"
rendered = np.load(f"{work}/rendered.npy")
with av.open(f"{work}/genesis.mkv") as container:
    decoded = next(f for i, f in enumerate(container.decode(video=0)) if i == check).to_ndarray(format="rgb24")
assert decoded.shape == rendered.shape, (decoded.shape, rendered.shape)
mse = np.mean((decoded.astype(np.float64) - rendered.astype(np.float64)) ** 2)
psnr = 10 * np.log10(255.0**2 / max(mse, 1e-12))
print(f"frame {check}: PSNR {psnr:.1f} dB against the rendered frame")
assert psnr >= 35.0, f"PSNR {psnr:.1f} dB < 35 dB"
EOF
step "genesis_writer.py --camera-dir: two cameras of the real scene, one ring each"
cameras=$work/cameras
"$venv/bin/python" examples/genesis-writer/genesis_writer.py --camera-dir "$cameras" --frames 30 --fast \
  --encoder libx264 > "$work/cameras.log" 2>&1 || { cat "$work/cameras.log"; exit 1; }
"$cli" stat "$cameras"
for camera in front top; do
  frames_in=$("$cli" stat "$cameras/$camera" --json | "$venv/bin/python" -c "import json, sys; print(json.load(sys.stdin)['sequence_number'])")
  [ "$frames_in" = 30 ] || { echo "$camera: $frames_in frames, not 30" >&2; exit 1; }
done
step "genesis: OK"
