"""Issue 5, test 3: headless Chromium decodes the viewer page's video (driven over CDP by
puppeteer-core; see browser/viewer.test.mjs). Issue 22: the viewer's camera picker and
grid against a server of several cameras (browser/viewer-cameras.test.mjs)."""
import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

from conftest import BIN_DIR, SERVER, Proc, free_port

BROWSER_DIR = Path(__file__).resolve().parent / "browser"
# The shmring CLI (`cargo build --release -p shmring-cli`): several test cameras.
SHMRING_CLI = BIN_DIR / "shmring"


def test_chromium_decodes_the_viewer_stream(stack):
    stack.start_producer()
    stack.start_server()
    r = subprocess.run(["node", str(BROWSER_DIR / "viewer.test.mjs"), f"http://127.0.0.1:{stack.port}/"],
                       capture_output=True, text=True, timeout=150)
    print(r.stdout[-3000:], r.stderr[-3000:])
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "PASS:" in r.stdout


def histogram_p50_floor(stack, name):
    """The lower bound, in ms, of the bucket that holds the median of a /metrics histogram."""
    buckets = []
    for line in stack.http("/metrics").splitlines():
        if line.startswith(name + "_bucket{le=\""):
            le = line.split("le=\"")[1].split("\"")[0]
            buckets.append((float("inf") if le == "+Inf" else float(le) * 1000, float(line.split()[-1])))
    total = buckets[-1][1]
    assert total > 0, f"{name} is empty"
    floor = 0.0
    for bound, count in buckets:
        if count >= total / 2:
            return floor
        floor = bound
    return floor


def test_viewer_shows_commit_to_decoded_and_painted(stack):
    # frame_id = CLOCK_REALTIME ns at commit: a clock the browser shares.
    stack.start_producer("--realtime")
    stack.start_server()
    r = subprocess.run(["node", str(BROWSER_DIR / "viewer-latency.test.mjs"), f"http://127.0.0.1:{stack.port}/"],
                       capture_output=True, text=True, timeout=150)
    print(r.stdout[-3000:], r.stderr[-3000:])
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    line = next(l for l in r.stdout.splitlines() if l.startswith("STATS "))
    stats = json.loads(line[len("STATS "):])
    decoded, painted = stats["commitToDecodedMs"], stats["commitToPaintedMs"]
    assert decoded["count"] == 120 and painted["count"] >= 100, stats
    assert 0 < decoded["p50"] <= decoded["max"] and 0 < painted["p50"] <= painted["max"], stats
    # A picture is painted after it is decoded: the painted window lags by at most a frame.
    assert painted["max"] >= decoded["p50"], stats
    # Against the server: no frame is decoded before the server sent it, and a wrong
    # clock conversion would be off by seconds or more, not a plausible local latency.
    server_floor = histogram_p50_floor(stack, "shmring_ws_read_to_send_seconds")
    assert server_floor <= decoded["p50"] < 1000, (server_floor, stats)
    assert not stats["bar"]["hidden"] and stats["bar"]["decoded"] != "-", stats["bar"]


def test_viewer_shows_no_commit_figures_for_monotonic_frame_ids(stack):
    # The default replay stamps CLOCK_MONOTONIC, which a browser cannot read: no figures
    # rather than wrong ones.
    stack.start_producer()
    stack.start_server()
    r = subprocess.run(["node", str(BROWSER_DIR / "viewer.test.mjs"), f"http://127.0.0.1:{stack.port}/"],
                       capture_output=True, text=True, timeout=150)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    stats = json.loads(next(l for l in r.stdout.splitlines() if l.startswith("{")))["stats"]
    assert stats["commitToDecodedMs"] is None and stats["commitToPaintedMs"] is None, stats


def wait_for(pred, what, timeout=60):
    """Waits for `pred()` to be true, failing with `what` after `timeout` seconds."""
    deadline = time.time() + timeout
    while not pred():
        assert time.time() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)


def get_json(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return json.loads(r.read())
    except OSError:
        return None


def test_viewer_picks_and_grids_cameras_each_with_its_own_decoder(tmp_path):
    """One server, a directory of two cameras of different sizes: the viewer's default
    camera, a switch with the picker and the grid each decode only their own camera's
    pictures; a camera added while the grid is open gets a tile, removed it goes."""
    cameras = tmp_path / "cameras"
    procs = []
    try:
        procs.append(Proc([SHMRING_CLI, "testsrc", "--cameras", "front,wrist", "--dir", cameras,
                           "--size", "320x240,160x120", "--fps", "30", "--encoder", "libx264"],
                          tmp_path / "testsrc.log"))
        wait_for(lambda: (cameras / "front").exists() and (cameras / "wrist").exists(), "testsrc's two rings")
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("SDR_NATS_URL", "SDR_SHM_PATH", "SDR_LISTEN_ADDR")}
        server = Proc([SERVER, "--shm-dir", cameras, "--default-camera", "front",
                       "--listen", f"127.0.0.1:{port}"], tmp_path / "server.log", env=env)
        procs.append(server)

        def both_live():
            assert server.alive(), "transport-server --shm-dir exited: " + (tmp_path / "server.log").read_text()[-2000:]
            listing = get_json(port, "/cameras")
            return listing is not None and [(c["name"], c["state"]) for c in listing["cameras"]] == [
                ("front", "live"), ("wrist", "live")]
        wait_for(both_live, "GET /cameras to list front and wrist live")
        r = subprocess.run(["node", str(BROWSER_DIR / "viewer-cameras.test.mjs"), f"http://127.0.0.1:{port}/",
                            str(SHMRING_CLI), str(cameras)], capture_output=True, text=True, timeout=270)
        print(r.stdout[-4000:], r.stderr[-3000:])
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:] + (tmp_path / "server.log").read_text()[-2000:]
        assert "PASS:" in r.stdout
    finally:
        for p in reversed(procs):
            p.kill()
