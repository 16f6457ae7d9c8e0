"""Fixtures for the transport-server tests: real processes on loopback ports.

The binaries are taken from $SHMRING_BIN_DIR (default: target/release); each test
starts its own producer (h264_replay over an ffmpeg-encoded file) and server, and
stops them itself.
"""
import asyncio
import os
import signal
import socket
import subprocess
import time
import urllib.request
import json
import zlib
import struct
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("SHMRING_BIN_DIR", ROOT / "target" / "release"))
SERVER = BIN_DIR / "transport-server"
REPLAY = BIN_DIR / "examples" / "h264_replay"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A child process that is killed (by pid) when the test ends."""

    def __init__(self, args, log, **kw):
        self.log = open(log, "ab")
        self.args = [str(a) for a in args]
        self.p = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT, **kw)

    def kill(self, sig=signal.SIGKILL):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=10)
        self.log.close()

    def alive(self):
        return self.p.poll() is None


@pytest.fixture(scope="session")
def h264_file(tmp_path_factory):
    """5 s of 320x240 testsrc at 30 fps, a keyframe every 30 frames (Annex B)."""
    out = tmp_path_factory.mktemp("video") / "testsrc.h264"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
         "-f", "lavfi", "-i", "testsrc=size=320x240:rate=30", "-t", "5",
         "-pix_fmt", "yuv420p", "-c:v", "libx264", "-profile:v", "baseline",
         "-tune", "zerolatency", "-g", "30", "-bsf:v", "h264_mp4toannexb", "-f", "h264", str(out)],
        check=True, timeout=120)
    return out


class Stack:
    """A producer and a transport-server on a private ring and port."""

    def __init__(self, tmp_path, h264_file):
        self.tmp = tmp_path
        self.h264 = h264_file
        self.ring = Path("/dev/shm") / f"shmring-ws-test-{os.getpid()}-{tmp_path.name}"
        self.port = free_port()
        self.procs = []
        self.producer = None
        self.server = None

    def start_producer(self, *extra, fps=30):
        self.producer = Proc([REPLAY, self.ring, self.h264, "--fps", fps, *extra], self.tmp / "producer.log")
        self.procs.append(self.producer)
        deadline = time.time() + 10
        while not self.ring.exists():
            assert time.time() < deadline, "producer did not create the ring"
            time.sleep(0.02)
        return self.producer

    def start_server(self, *extra, env=None):
        full_env = dict(os.environ, RUST_LOG="info")
        full_env.update(env or {})
        for k in ("SDR_NATS_URL", "SDR_SHM_PATH", "SDR_LISTEN_ADDR"):
            if k not in (env or {}):
                full_env.pop(k, None)
        self.server = Proc([SERVER, "--shm-path", self.ring, "--listen", f"127.0.0.1:{self.port}", *extra],
                           self.tmp / "server.log", env=full_env)
        self.procs.append(self.server)
        deadline = time.time() + 10
        while True:
            try:
                self.health()
                break
            except OSError:
                assert self.server.alive(), self.server_log()
                assert time.time() < deadline, "server did not answer /health"
                time.sleep(0.05)
        return self.server

    def url(self, path="/stream/ws"):
        return f"ws://127.0.0.1:{self.port}{path}"

    def http(self, path, token=None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}",
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.read().decode()

    def health(self):
        return json.loads(self.http("/health"))

    def metric(self, name, token=None):
        for line in self.http("/metrics", token).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        raise KeyError(name)

    def server_log(self):
        try:
            return (self.tmp / "server.log").read_text()[-4000:]
        except OSError:
            return ""

    def stop(self):
        for p in reversed(self.procs):
            p.kill()
        try:
            self.ring.unlink()
        except FileNotFoundError:
            pass


@pytest.fixture
def stack(tmp_path, h264_file):
    s = Stack(tmp_path, h264_file)
    yield s
    s.stop()


def parse_video(msg):
    """Parses a 0x01 message; checks its size and CRC; returns a dict."""
    assert isinstance(msg, (bytes, bytearray)) and len(msg) >= 33 and msg[0] == 1, "not a video message"
    frame_id, frame_seq, size, flags, codec, crc = struct.unpack_from("<QQIHHI", msg, 1)
    payload = bytes(msg[33:])
    assert size == len(payload), f"header size {size} != payload {len(payload)}"
    assert crc == 0 or zlib.crc32(payload) == crc, f"bad CRC on frame {frame_seq}"
    return {"id": frame_id, "seq": frame_seq, "key": bool(flags & 1), "codec": codec, "size": size}


def check_gated(frames):
    """The stream a decoder sees: first a keyframe, in order, and every gap resumes at a keyframe.
    Returns the number of gaps."""
    assert frames, "no frames"
    assert frames[0]["key"], "first frame is not a keyframe"
    gaps = 0
    for a, b in zip(frames, frames[1:]):
        assert b["seq"] > a["seq"], f"out of order: {a['seq']} then {b['seq']}"
        if b["seq"] != a["seq"] + 1:
            gaps += 1
            assert b["key"], f"gap {a['seq']}->{b['seq']} resumed at a delta frame"
    return gaps


def run(coro, timeout=120):
    return asyncio.run(asyncio.wait_for(coro, timeout))
