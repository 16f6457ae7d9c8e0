"""Issue 5, test 3: headless Chromium decodes the viewer page's video (driven over CDP by
puppeteer-core; see browser/viewer.test.mjs)."""
import json
import subprocess
from pathlib import Path

BROWSER_DIR = Path(__file__).resolve().parent / "browser"


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
