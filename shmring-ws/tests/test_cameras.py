"""Many cameras, one server (issue 22): several rings, each written by its own writer
process, served by one transport-server as cameras (`--shm-path` repeated, `--shm-dir`
watched), listed at /cameras and chosen with /stream/ws/<camera> or ?camera=<camera>.

The two test videos differ in size (320x240 and 160x120), so their SPS (the first NAL
unit of every keyframe access unit) tells which ring a frame came from."""
import asyncio
import base64
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from conftest import BIN_DIR, REPLAY, SERVER, Proc, check_gated, free_port, parse_video, run

SHMRING_CLI = BIN_DIR / "shmring"

# Generous deadlines: the machine may be loaded; each names what it waits for.
START_DEADLINE = 20
APPEAR_DEADLINE = 20
FRAMES_DEADLINE = 60


@pytest.fixture(scope="module")
def small_h264(tmp_path_factory):
    """5 s of 160x120 testsrc2 at 30 fps, a keyframe every 30 frames (Annex B)."""
    out = tmp_path_factory.mktemp("video-small") / "small.h264"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=30", "-t", "5",
         "-pix_fmt", "yuv420p", "-c:v", "libx264", "-profile:v", "baseline",
         "-tune", "zerolatency", "-g", "30", "-bsf:v", "h264_mp4toannexb", "-f", "h264", str(out)],
        check=True, timeout=120)
    return out


def first_sps(data):
    """The first SPS NAL unit (type 7) of an Annex B stream, without its start code."""
    i = 0
    while True:
        i = data.find(b"\x00\x00\x01", i)
        assert i >= 0, "no SPS in the stream"
        i += 3
        if data[i] & 0x1F == 7:
            end = data.find(b"\x00\x00\x01", i)
            sps = data[i:end if end >= 0 else len(data)]
            return sps.rstrip(b"\x00")


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def wait_for(pred, what, timeout):
    deadline = time.time() + timeout
    while True:
        value = pred()
        if value:
            return value
        assert time.time() < deadline, f"timed out after {timeout} s waiting for {what() if callable(what) else what}"
        time.sleep(0.05)


class Cameras:
    """Writers on rings in a private directory under /dev/shm and one server."""

    def __init__(self, tmp_path, rings=True):
        self.tmp = tmp_path
        self.dir = Path("/dev/shm") / f"shmring-cams-{os.getpid()}-{tmp_path.name}"
        if rings:
            self.dir.mkdir()
        self.port = free_port()
        self.writers = {}
        self.server = None

    def ring(self, name):
        return self.dir / name

    def start_writer(self, name, h264):
        p = Proc([REPLAY, self.ring(name), h264, "--fps", 30], self.tmp / f"writer-{name}.log")
        self.writers[name] = p
        wait_for(lambda: self.ring(name).exists(), f"writer {name} to create its ring", START_DEADLINE)
        return p

    def stop_writer(self, name):
        self.writers.pop(name).kill()

    def start_server(self, *args):
        env = dict(os.environ, RUST_LOG="info")
        for k in ("SDR_NATS_URL", "SDR_SHM_PATH", "SDR_LISTEN_ADDR", "SDR_DEFAULT_CAMERA", "SDR_DRIVE_CAMERAS"):
            env.pop(k, None)
        self.server = Proc([SERVER, "--listen", f"127.0.0.1:{self.port}", *args], self.tmp / "server.log", env=env)

        def up():
            try:
                return self.http("/health")
            except OSError:
                assert self.server.alive(), self.log()
                return None
        wait_for(up, "the server to answer /health", START_DEADLINE)

    def http(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
            return json.loads(r.read().decode())

    def cameras(self):
        return self.http("/cameras")

    def state(self, name):
        for c in self.cameras()["cameras"]:
            if c["name"] == name:
                return c["state"]
        return None

    def url(self, path="/stream/ws"):
        return f"ws://127.0.0.1:{self.port}{path}"

    def log(self):
        try:
            return (self.tmp / "server.log").read_text()[-4000:]
        except OSError:
            return ""

    def stop(self):
        if self.server:
            self.server.kill()
        for p in self.writers.values():
            p.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def cams(tmp_path):
    c = Cameras(tmp_path)
    yield c
    c.stop()


async def frames_of(url, n):
    """The first n video frames on `url`, parsed, and the SPS of the first keyframe."""
    frames, sps = [], None
    async with connect(url, max_size=None, open_timeout=10) as ws:
        while len(frames) < n:
            msg = await asyncio.wait_for(ws.recv(), FRAMES_DEADLINE)
            if msg[0] != 1:
                continue
            frame = parse_video(msg)
            if frame["key"] and sps is None:
                sps = first_sps(bytes(msg[33:]))
            frames.append(frame)
    return frames, sps


def test_two_rings_each_served_with_its_own_bytes(cams, h264_file, small_h264):
    """Two writers, two --shm-path: /cameras lists both (the first is the default);
    /stream/ws serves the first, /stream/ws/<camera> and ?camera=<camera> each its own
    ring's bytes, gated at a keyframe; an unknown camera is a 404 naming the cameras."""
    cams.start_writer("front", h264_file)
    cams.start_writer("wrist", small_h264)
    cams.start_server("--shm-path", cams.ring("front"), "--shm-path", cams.ring("wrist"))
    wait_for(lambda: cams.state("front") == "live" and cams.state("wrist") == "live",
             "both cameras live on /cameras", APPEAR_DEADLINE)
    doc = cams.cameras()
    assert doc["default"] == "front" and doc["drive"] == ["front"], doc
    assert [c["name"] for c in doc["cameras"]] == ["front", "wrist"], doc
    assert all(c["codec"] == "h264" for c in doc["cameras"]), doc

    async def main():
        return await asyncio.gather(
            frames_of(cams.url(), 45),
            frames_of(cams.url("/stream/ws/front"), 45),
            frames_of(cams.url("/stream/ws/wrist"), 45),
            frames_of(cams.url("/stream/ws?camera=wrist&burst=gop"), 45),
        )

    (default, front, wrist, wrist_q) = run(main())
    front_sps, wrist_sps = first_sps(h264_file.read_bytes()), first_sps(small_h264.read_bytes())
    assert front_sps != wrist_sps
    for frames, sps in (default, front):
        assert check_gated(frames) == 0 and sps == front_sps, "front's clients got another ring's stream"
    for frames, sps in (wrist, wrist_q):
        assert check_gated(frames) == 0 and sps == wrist_sps, "wrist's clients got another ring's stream"

    # Per-camera metrics, labelled by camera.
    wrist_read = metric(cams, 'shmring_ws_camera_frames_read_total{camera="wrist"}')
    front_read = metric(cams, 'shmring_ws_camera_frames_read_total{camera="front"}')
    assert wrist_read > 0 and front_read > 0
    assert metric(cams, 'shmring_ws_camera_up{camera="wrist"}') == 1

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{cams.port}/stream/ws/depth",
            headers={"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                     "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}), timeout=10)
    assert refused.value.code == 404
    body = refused.value.read().decode()
    assert "depth" in body and "front" in body and "wrist" in body, body


def test_cameras_lists_each_picture_size_from_its_keyframes(cams, h264_file, small_h264):
    """/cameras gives each camera's width and height from its keyframes' own bytes:
    H.264 at 320x240 and at 160x120 (coded 160x128, cropped), and HEVC from `shmring
    testsrc` at 202x122 (coded in 8-pixel blocks, less its conformance window)."""
    cams.start_writer("front", h264_file)
    cams.start_writer("wrist", small_h264)
    cams.writers["depth"] = Proc(
        [SHMRING_CLI, "testsrc", cams.ring("depth"), "--codec", "hevc", "--encoder", "libx265",
         "--size", "202x122", "--fps", "30"], cams.tmp / "writer-depth.log")
    wait_for(lambda: cams.ring("depth").exists(), "shmring testsrc to create the HEVC ring", START_DEADLINE)
    cams.start_server(*(a for name in ("front", "wrist", "depth") for a in ("--shm-path", cams.ring(name))))

    last = {}

    def sizes():
        listed = last["cameras"] = cams.cameras()["cameras"]
        if len(listed) == 3 and all(c["width"] is not None and c["height"] is not None for c in listed):
            return {c["name"]: (c["codec"], c["width"], c["height"]) for c in listed}
        return None
    got = wait_for(sizes, lambda: f"/cameras to give all three cameras a width and height (last: {last})",
                   FRAMES_DEADLINE)
    assert got == {"front": ("h264", 320, 240), "wrist": ("h264", 160, 120), "depth": ("hevc", 202, 122)}, got


def fanout_threads(pid):
    """How many fan-out threads (named shmring-fanout-N) process `pid` runs."""
    names = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except OSError:
            pass  # the thread ended meanwhile
    return sum(1 for n in names if n.startswith("shmring-fanout"))


def test_every_camera_shares_the_servers_fan_out_threads(cams, h264_file, small_h264):
    """Three cameras, --fanout-threads 2: the server runs two fan-out threads, not two per
    camera, and every camera's clients get their frames through them."""
    for name, video in (("front", h264_file), ("wrist", small_h264), ("depth", small_h264)):
        cams.start_writer(name, video)
    cams.start_server("--fanout-threads", "2",
                      *(a for name in ("front", "wrist", "depth") for a in ("--shm-path", cams.ring(name))))
    wait_for(lambda: all(cams.state(n) == "live" for n in ("front", "wrist", "depth")),
             "the three cameras live", APPEAR_DEADLINE)

    async def main():
        # Five clients per camera: more than the reader thread writes itself.
        return await asyncio.gather(*(frames_of(cams.url(f"/stream/ws/{name}"), 40)
                                      for name in ("front", "wrist", "depth") for _ in range(5)))

    for frames, _ in run(main()):
        assert check_gated(frames) == 0 and all(b["seq"] == a["seq"] + 1 for a, b in zip(frames, frames[1:]))
    assert fanout_threads(cams.server.p.pid) == 2


def test_a_ring_added_at_runtime_appears_and_is_served(cams, h264_file, small_h264):
    """--shm-dir: the ring there at start is the default camera; a ring created while
    the server runs is listed and served (its own bytes) without a restart."""
    cams.start_writer("a-front", h264_file)
    cams.start_server("--shm-dir", cams.dir)
    wait_for(lambda: cams.state("a-front") == "live", "a-front live", APPEAR_DEADLINE)
    assert cams.cameras()["default"] == "a-front"
    assert cams.state("b-side") is None
    cams.start_writer("b-side", small_h264)
    wait_for(lambda: cams.state("b-side") == "live", "the new ring b-side listed live", APPEAR_DEADLINE)
    frames, sps = run(frames_of(cams.url("/stream/ws/b-side"), 30))
    assert check_gated(frames) == 0 and sps == first_sps(small_h264.read_bytes())
    assert "camera b-side: serving ring" in cams.log()


def test_a_removed_ring_closes_its_clients_and_the_other_keeps_streaming(cams, h264_file, small_h264):
    """A camera whose writer dies and whose ring is removed: its clients get a 1001
    close naming it, /cameras and /health say it is gone, the log says so; the other
    camera's client keeps getting frames and the server keeps running."""
    cams.start_writer("left", h264_file)
    cams.start_writer("right", small_h264)
    cams.start_server("--shm-dir", cams.dir)
    wait_for(lambda: cams.state("left") == "live" and cams.state("right") == "live",
             "both cameras live", APPEAR_DEADLINE)

    async def main():
        async with connect(cams.url("/stream/ws/left"), max_size=None) as left, \
                connect(cams.url("/stream/ws/right"), max_size=None) as right:
            for ws in (left, right):
                while (await asyncio.wait_for(ws.recv(), FRAMES_DEADLINE))[0] != 1:
                    pass
            cams.stop_writer("right")
            cams.ring("right").unlink()
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(right.recv(), FRAMES_DEADLINE)
            # The left camera goes on: 60 more frames, in order, after the right one went.
            frames = []
            while len(frames) < 60:
                msg = await asyncio.wait_for(left.recv(), FRAMES_DEADLINE)
                if msg[0] == 1:
                    frames.append(parse_video(msg))
            return closed.value, frames

    closed, frames = run(main())
    assert closed.rcvd is not None and closed.rcvd.code == 1001, closed
    assert "right" in closed.rcvd.reason, closed.rcvd.reason
    assert all(b["seq"] == a["seq"] + 1 for a, b in zip(frames, frames[1:])), "the left camera lost frames"
    assert cams.state("right") == "gone" and cams.state("left") == "live"
    health = cams.http("/health")
    assert {"name": "right", "state": "gone"} in health["cameras"], health
    assert "camera right: its ring went away" in cams.log()
    assert cams.server.alive()

    # The ring comes back: served again.
    cams.start_writer("right", small_h264)
    wait_for(lambda: cams.state("right") == "live", "the returned ring live again", APPEAR_DEADLINE)
    frames, sps = run(frames_of(cams.url("/stream/ws/right"), 30))
    assert check_gated(frames) == 0 and sps == first_sps(small_h264.read_bytes())


def test_a_dead_writer_is_said_once_in_the_log_and_so_is_its_return(cams, h264_file, small_h264):
    """A writer killed with its ring left in place: /cameras says the camera is gone and
    the log says once, naming the camera and its ring, that the writer died and what to
    do; a new writer on that ring is said too, and the camera is live again."""
    cams.start_writer("front", h264_file)
    cams.start_writer("wrist", small_h264)
    cams.start_server("--shm-path", cams.ring("front"), "--shm-path", cams.ring("wrist"))
    wait_for(lambda: cams.state("front") == "live" and cams.state("wrist") == "live",
             "both cameras live", APPEAR_DEADLINE)

    def full_log():
        return (cams.tmp / "server.log").read_text()
    cams.stop_writer("wrist")  # SIGKILL: no clean-up, the ring file stays
    assert cams.ring("wrist").exists()
    died = f"camera wrist: the writer of ring {cams.ring('wrist')} died"
    wait_for(lambda: died in full_log(), "the log to say that wrist's writer died", APPEAR_DEADLINE)
    assert "restart it" in full_log()
    assert cams.state("wrist") == "gone" and cams.state("front") == "live"

    cams.start_writer("wrist", small_h264)
    wait_for(lambda: f"camera wrist: a writer writes ring {cams.ring('wrist')} again" in full_log(),
             "the log to say that a writer writes wrist's ring again", APPEAR_DEADLINE)
    wait_for(lambda: cams.state("wrist") == "live", "wrist live again", APPEAR_DEADLINE)
    log = full_log()
    assert log.count(died) == 1, "said once, not at every look at the rings"
    assert "camera front: the writer" not in log


def test_one_ring_is_one_camera_named_after_its_file(cams, h264_file):
    """One --shm-path (today's deployment): /cameras lists that ring as the one, default
    camera; /stream/ws and /stream/ws/<name> serve it; /health has no camera list."""
    cams.start_writer("frames", h264_file)
    cams.start_server("--shm-path", cams.ring("frames"))
    wait_for(lambda: cams.state("frames") == "live", "the one camera live", APPEAR_DEADLINE)
    doc = cams.cameras()
    assert doc["default"] == "frames" and doc["drive"] == ["frames"], doc
    assert [c["name"] for c in doc["cameras"]] == ["frames"], doc
    assert "cameras" not in cams.http("/health")

    async def main():
        return await asyncio.gather(frames_of(cams.url(), 30), frames_of(cams.url("/stream/ws/frames"), 30))

    sps = first_sps(h264_file.read_bytes())
    for frames, got in run(main()):
        assert check_gated(frames) == 0 and got == sps


def test_bad_camera_names_are_refused_in_words(cams, h264_file):
    """A --default-camera that is none of the rings, or not a camera name, stops the
    server at start with a message saying why; a ring file whose name cannot be a
    camera's is skipped with a log line."""
    for args, says in (
        (["--shm-path", cams.ring("a"), "--shm-path", cams.ring("b"), "--default-camera", "c"],
         "--default-camera c is none of the rings: a, b"),
        (["--shm-dir", cams.dir, "--default-camera", "a b"], "cannot name a camera"),
    ):
        out = subprocess.run([SERVER, "--listen", f"127.0.0.1:{free_port()}", *args],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode != 0 and says in out.stderr, out.stderr
    cams.start_writer("ok", h264_file)
    cams.start_writer("not ok", h264_file)
    cams.start_server("--shm-dir", cams.dir)
    wait_for(lambda: cams.state("ok") == "live", "the valid camera live", APPEAR_DEADLINE)
    assert [c["name"] for c in cams.cameras()["cameras"]] == ["ok"]
    wait_for(lambda: "skipping" in cams.log() and "not ok" in cams.log(), "the skip in the log", APPEAR_DEADLINE)


# --- The driving camera(s) and the video safety gate ----------------------------------


def motion(seq):
    body = {"action": "set_cmd_vel", "cmd_seq": seq,
            "data": {"linear_x": 0.5, "linear_y": 0, "angular_z": 0, "who": "op"}}
    return b"\x04" + json.dumps(body).encode()


def metric(cams, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{cams.port}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
    raise AssertionError(f"metric {name} not found")


GATED = "shmring_ws_commands_gated_total"


def gate_stack(cams, tmp_path, h264_file, small_h264, drive):
    """nats-server, writers front and wrist, a server driving by `drive`."""
    from test_nats import NatsServer
    nats = NatsServer(tmp_path, free_port())
    nats.start()
    cams.writers["nats-server"] = nats.proc
    cams.start_writer("front", h264_file)
    cams.start_writer("wrist", small_h264)
    cams.start_server("--shm-path", cams.ring("front"), "--shm-path", cams.ring("wrist"),
                      "--nats-url", nats.url, "--drive-camera", drive)
    wait_for(lambda: cams.state("front") == "live" and cams.state("wrist") == "live",
             "both cameras live", APPEAR_DEADLINE)
    assert cams.cameras()["drive"] == [drive]
    return nats


async def drive_until(cams, nats_url, stalled, verdict, what):
    """Watches the front camera and sends motion at 30 Hz: first until motion reaches
    NATS, then `stalled()` (a camera stalls), then until `verdict(log, marks)` is true."""
    from test_drop_in import NatsLog
    log = NatsLog()
    await log.start(nats_url, "command.genesis.set_cmd_vel")

    def ops():
        return log.of("command.genesis.set_cmd_vel", lambda d: isinstance(d, dict)
                      and d.get("data", {}).get("who") == "op")

    def holds():
        return log.of("command.genesis.set_cmd_vel", lambda d: isinstance(d, dict) and d.get("_safety") == "hold")

    async with connect(cams.url("/stream/ws/front"), max_size=None) as ws:
        async def drain():
            try:
                async for _ in ws:
                    pass
            except ConnectionClosed:
                pass
        reader = asyncio.create_task(drain())
        seq, marks, phase = 0, {}, "fresh"
        deadline = time.monotonic() + FRAMES_DEADLINE
        while True:
            assert time.monotonic() < deadline, f"timed out in phase {phase!r} waiting for {what}"
            seq += 1
            await ws.send(motion(seq))
            await asyncio.sleep(1 / 30)
            if phase == "fresh" and ops():
                stalled()
                marks = {"ops": len(ops()), "gated": metric(cams, GATED)}
                phase, deadline = "stalled", time.monotonic() + FRAMES_DEADLINE
            elif phase == "stalled" and verdict(ops, holds, marks):
                break
        reader.cancel()
    await log.nc.drain()
    return ops(), holds(), marks


def test_motion_is_held_when_the_driving_camera_stalls_though_another_is_live(cams, tmp_path, h264_file,
                                                                             small_h264):
    """--drive-camera wrist: the operator watches front (live) and drives; the wrist
    writer dies: the gate publishes the hold and gates the motion that follows, although
    the picture the client watches is fresh."""
    nats = gate_stack(cams, tmp_path, h264_file, small_h264, "wrist")

    def verdict(ops, holds, marks):
        return holds() and metric(cams, GATED) >= marks["gated"] + 30

    ops, holds, marks = run(drive_until(cams, nats.url, lambda: cams.stop_writer("wrist"), verdict,
                                        "the hold and 30 gated commands"), timeout=3 * FRAMES_DEADLINE)
    assert holds, "no hold published"
    assert cams.state("front") == "live", "the watched camera stayed live"


def test_motion_is_not_held_when_a_camera_not_driven_by_stalls(cams, tmp_path, h264_file, small_h264):
    """--drive-camera front: the wrist writer dies; motion keeps reaching NATS (60
    commands after the wrist camera is down), no hold is published."""
    nats = gate_stack(cams, tmp_path, h264_file, small_h264, "front")

    def verdict(ops, holds, marks):
        return cams.state("wrist") == "gone" and len(ops()) >= marks["ops"] + 60

    ops, holds, marks = run(drive_until(cams, nats.url, lambda: cams.stop_writer("wrist"), verdict,
                                        "60 motion commands after the wrist camera stalled"),
                            timeout=3 * FRAMES_DEADLINE)
    assert not holds, f"motion was held: {holds}"
    assert metric(cams, GATED) == marks["gated"], "commands were gated"


# --- NATS: every camera on its own subject, its own keyframe store and requests -------


def test_publish_puts_every_camera_on_its_own_subject_with_its_own_keyframe_store(cams, tmp_path, h264_file,
                                                                                 small_h264):
    """Server A reads front and wrist and publishes (`--publish .../video.front`): the
    default camera on video.front, wrist on video.wrist, each keyframe kept in its own
    JetStream stream. Servers B and C serve video.wrist and video.front from NATS
    (`--source`): each gets its own camera's bytes. A client of wrist on A waits for a
    keyframe: the request goes out on control.request_idr.wrist, naming the camera.
    Server D serves both streams (`--source` twice) as two cameras."""
    import nats as nats_py
    store = tmp_path / "js"
    store.mkdir()
    port = free_port()
    broker = Proc(["nats-server", "-a", "127.0.0.1", "-p", port, "-js", "-sd", store], tmp_path / "nats.log")
    cams.writers["nats-server"] = broker
    url = f"nats://127.0.0.1:{port}"
    cams.start_writer("front", h264_file)
    cams.start_writer("wrist", small_h264)
    wait_for(lambda: listening(port), "nats-server to listen", START_DEADLINE)
    cams.start_server("--shm-path", cams.ring("front"), "--shm-path", cams.ring("wrist"),
                      "--publish", f"{url}/video.front", "--nats-url", url)
    wait_for(lambda: cams.state("front") == "live" and cams.state("wrist") == "live", "both cameras live",
             APPEAR_DEADLINE)

    async def stored_keyframes():
        nc = await nats_py.connect(url)
        js = nc.jetstream()
        found = {}
        deadline = time.monotonic() + APPEAR_DEADLINE
        while len(found) < 2:
            assert time.monotonic() < deadline, f"keyframe stores: only {sorted(found)} within {APPEAR_DEADLINE} s"
            for name in ("SHMRING_KEY_video_front", "SHMRING_KEY_video_wrist"):
                try:
                    info = await js.stream_info(name)
                    if info.state.messages > 0:
                        found[name] = info.config.subjects
                except Exception:
                    pass
            await asyncio.sleep(0.2)
        await nc.close()
        return found

    stores = run(stored_keyframes())
    assert stores["SHMRING_KEY_video_wrist"] == ["video.wrist.key.*"], stores

    others = []
    for name, subject in (("b", "video.wrist"), ("c", "video.front")):
        (tmp_path / name).mkdir()
        other = Cameras(tmp_path / name, rings=False)
        other.start_server("--source", f"{url}/{subject}")
        cams.writers[f"server-{name}"] = other.server
        others.append(other)

    async def via_nats():
        return await asyncio.gather(frames_of(others[0].url(), 30), frames_of(others[1].url(), 30))

    # From NATS a client may start at the stored keyframe, then resume at the next live
    # one (a gap, at a keyframe): check_gated checks exactly that.
    (wrist, wrist_sps), (front, front_sps) = run(via_nats())
    check_gated(wrist)
    check_gated(front)
    assert wrist_sps == first_sps(small_h264.read_bytes()), "B got another camera"
    assert front_sps == first_sps(h264_file.read_bytes()), "C got another camera"

    async def keyframe_request():
        from test_drop_in import NatsLog
        log = NatsLog()
        await log.start(url, "control.request_idr.>", "command.genesis.force_idr.>")
        deadline = time.monotonic() + FRAMES_DEADLINE
        while not (log.of("control.request_idr.wrist") and log.of("command.genesis.force_idr.wrist")):
            assert time.monotonic() < deadline, "no keyframe request for camera wrist on NATS"
            # A client without ?burst=gop waits for the next keyframe: one is requested.
            async with connect(cams.url("/stream/ws/wrist"), max_size=None) as ws:
                await asyncio.wait_for(ws.recv(), FRAMES_DEADLINE)
            await asyncio.sleep(0.3)
        await log.nc.drain()
        return log.of("control.request_idr.wrist")[0]["data"]

    request = run(keyframe_request())
    assert request["camera"] == "wrist", request

    # One server serving both streams from NATS (--source twice): two cameras.
    (tmp_path / "d").mkdir()
    both = Cameras(tmp_path / "d", rings=False)
    both.start_server("--source", f"{url}/video.front", "--source", f"{url}/video.wrist")
    cams.writers["server-d"] = both.server
    wait_for(lambda: both.state("front") == "live" and both.state("wrist") == "live",
             "both NATS streams live as cameras", APPEAR_DEADLINE)
    assert both.cameras()["default"] == "front"

    async def from_both():
        return await asyncio.gather(frames_of(both.url(), 30), frames_of(both.url("/stream/ws/wrist"), 30))

    (front, front_sps), (wrist, wrist_sps) = run(from_both())
    check_gated(front)
    check_gated(wrist)
    assert front_sps == first_sps(h264_file.read_bytes()) and wrist_sps == first_sps(small_h264.read_bytes())


# --- Foxglove: a camera per connection URL ---------------------------------------------


def test_the_official_foxglove_client_gets_each_camera_on_its_url(cams, h264_file, small_h264):
    """The official @foxglove/ws-protocol client on /stream/ws/front and
    /stream/ws/wrist at once: each connection's /video channel carries its camera,
    decoding (with the advertised schema) to h264 whose first message is a keyframe
    with that camera's SPS."""
    from test_foxglove import message_class, nal_types
    cams.start_writer("front", h264_file)
    cams.start_writer("wrist", small_h264)
    cams.start_server("--shm-path", cams.ring("front"), "--shm-path", cams.ring("wrist"))
    wait_for(lambda: cams.state("front") == "live" and cams.state("wrist") == "live", "both cameras live",
             APPEAR_DEADLINE)
    script = Path(__file__).resolve().parent / "browser" / "foxglove-cameras.mjs"
    out = subprocess.run(["node", str(script), "20", cams.url("/stream/ws/front"), cams.url("/stream/ws/wrist")],
                         capture_output=True, text=True, timeout=120, cwd=script.parent)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    got = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(got) == 2, out.stdout
    for watched, h264 in zip(got, (h264_file, small_h264)):
        channel = watched["channel"]
        assert channel["schemaName"] == "foxglove.CompressedVideo", channel
        Video = message_class(channel["schema"], "foxglove.CompressedVideo")
        frames = [Video.FromString(base64.b64decode(m)) for m in watched["messages"]]
        assert all(f.format == "h264" for f in frames)
        first = frames[0].data
        assert {5, 7, 8} <= set(nal_types(first)), f"{watched['url']}: the first message is not an IDR"
        assert first_sps(first) == first_sps(h264.read_bytes()), f"{watched['url']}: another camera's stream"


# --- Foxglove: every camera a channel on one connection --------------------------------

CHANNELS_SCRIPT = Path(__file__).resolve().parent / "browser" / "foxglove-camera-channels.mjs"


def camera_channels(url, n, *cameras):
    """The official client on one connection subscribed to /camera/<camera> for each of
    `cameras`: per camera, its advertised channel and first n messages, decoded."""
    from test_foxglove import message_class
    out = subprocess.run(["node", str(CHANNELS_SCRIPT), "subscribe", str(n), url, *cameras],
                         capture_output=True, text=True, timeout=120, cwd=CHANNELS_SCRIPT.parent)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    got = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [g["camera"] for g in got] == list(cameras), out.stdout[-2000:]
    decoded = {}
    for watched in got:
        channel = watched["channel"]
        assert channel["topic"] == f"/camera/{watched['camera']}", channel
        assert channel["encoding"] == "protobuf", channel
        assert channel["schemaName"] == "foxglove.CompressedVideo", channel
        Video = message_class(channel["schema"], "foxglove.CompressedVideo")
        decoded[watched["camera"]] = [Video.FromString(base64.b64decode(m)) for m in watched["messages"]]
    return decoded


def assert_camera_stream(frames, h264, camera):
    """Every message is h264 of `camera`'s stream: the first an IDR, every SPS `h264`'s."""
    from test_foxglove import nal_types
    assert all(f.format == "h264" for f in frames), camera
    assert {5, 7, 8} <= set(nal_types(frames[0].data)), f"{camera}: the first message is not an IDR"
    want = first_sps(h264.read_bytes())
    keyframes = [f.data for f in frames if 7 in nal_types(f.data)]
    assert keyframes and all(first_sps(k) == want for k in keyframes), f"{camera}: another camera's stream"


def test_one_foxglove_connection_gets_both_cameras_on_their_channels(cams, h264_file, small_h264):
    """Two cameras, one connection of the official client: it subscribes to
    /camera/front and /camera/wrist, and each subscription delivers that camera's own
    h264, starting at its keyframe. The /video channel still serves the default camera
    on that connection."""
    cams.start_writer("front", h264_file)
    cams.start_writer("wrist", small_h264)
    cams.start_server("--shm-path", cams.ring("front"), "--shm-path", cams.ring("wrist"))
    wait_for(lambda: cams.state("front") == "live" and cams.state("wrist") == "live", "both cameras live",
             APPEAR_DEADLINE)
    got = camera_channels(cams.url(), 40, "front", "wrist")
    assert_camera_stream(got["front"], h264_file, "front")
    assert_camera_stream(got["wrist"], small_h264, "wrist")


def test_a_camera_channel_carries_no_frame_of_another_camera(cams, h264_file, small_h264):
    """Subscribed to /camera/wrist only, on a connection whose URL names front: every
    message comes under that subscription and is wrist's (70 messages: past wrist's
    next keyframe, while front streams too)."""
    cams.start_writer("front", h264_file)
    cams.start_writer("wrist", small_h264)
    cams.start_server("--shm-path", cams.ring("front"), "--shm-path", cams.ring("wrist"))
    wait_for(lambda: cams.state("front") == "live" and cams.state("wrist") == "live", "both cameras live",
             APPEAR_DEADLINE)
    got = camera_channels(cams.url("/stream/ws/front"), 70, "wrist")
    assert list(got) == ["wrist"]
    assert_camera_stream(got["wrist"], small_h264, "wrist")


class Watcher:
    """The official client's `watch` mode: camera channel (un)advertisements, as read."""

    def __init__(self, url, log):
        import queue
        import threading
        self.lines = queue.Queue()
        self.proc = subprocess.Popen(["node", str(CHANNELS_SCRIPT), "watch", url], stdout=subprocess.PIPE,
                                     stderr=open(log, "w"), text=True, cwd=CHANNELS_SCRIPT.parent)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.lines.put(json.loads(line))

    def next_event(self, what):
        import queue
        try:
            return self.lines.get(timeout=APPEAR_DEADLINE)
        except queue.Empty:
            raise AssertionError(f"timed out after {APPEAR_DEADLINE} s waiting for {what}") from None

    def stop(self):
        self.proc.kill()
        self.proc.wait(timeout=10)


def test_camera_channels_are_advertised_and_unadvertised_live(cams, h264_file, small_h264):
    """--shm-dir: an open connection of the official client is told about a ring that
    appears (advertise /camera/b-side) and one that goes (unadvertise /camera/b-side),
    without reconnecting; the new camera's channel serves its own stream."""
    cams.start_writer("a-front", h264_file)
    cams.start_server("--shm-dir", cams.dir)
    wait_for(lambda: cams.state("a-front") == "live", "a-front live", APPEAR_DEADLINE)
    watcher = Watcher(cams.url(), cams.tmp / "watch.log")
    try:
        first = watcher.next_event("the advertisement of /camera/a-front")
        assert first["event"] == "advertise", first
        assert [c["topic"] for c in first["channels"]] == ["/camera/a-front"], first
        cams.start_writer("b-side", small_h264)
        added = watcher.next_event("the advertisement of /camera/b-side")
        assert added["event"] == "advertise" and [c["topic"] for c in added["channels"]] == ["/camera/b-side"]
        assert added["channels"][0]["schemaName"] == "foxglove.CompressedVideo", added
        wait_for(lambda: cams.state("b-side") == "live", "b-side live", APPEAR_DEADLINE)
        got = camera_channels(cams.url(), 20, "b-side")
        assert_camera_stream(got["b-side"], small_h264, "b-side")
        cams.stop_writer("b-side")
        cams.ring("b-side").unlink()
        gone = watcher.next_event("the unadvertisement of /camera/b-side")
        assert gone == {"event": "unadvertise", "topics": ["/camera/b-side"]}, gone
        assert watcher.proc.poll() is None, "the watching connection ended"
    finally:
        watcher.stop()
