"""Issue 13, item 10: every join is decodable on a `--source` server (frames from NATS).

A producer writes a ring, server A publishes it to a real 3-node NATS cluster, and a
fresh `--source` server is started while 20 clients join it at once, again and again: each
client's first frame must be a keyframe and every gap must resume at a keyframe, checked
from the bytes (the H.264 NAL unit types, not only the header's flag)."""
import asyncio
import os
import time

from websockets.asyncio.client import connect

from conftest import SERVER, Proc, check_gated, free_port, parse_video, run
from test_scaleout import NatsCluster

SUBJECT = "video.joins"
CLIENTS = 20
ROUNDS = 5


def nal_types(annexb):
    types, i = [], 0
    while True:
        i = annexb.find(b"\x00\x00\x01", i)
        if i < 0 or i + 3 >= len(annexb):
            return types
        types.append(annexb[i + 3] & 0x1F)
        i += 3


async def join(url, frames_wanted, deadline_s=20):
    """Connects as soon as the server accepts, and returns the first frames (with their
    NAL types)."""
    deadline = time.time() + deadline_s
    while True:
        try:
            ws = await connect(url, max_size=None, open_timeout=5)
            break
        except OSError:
            assert time.time() < deadline, "the server never accepted"
            await asyncio.sleep(0.01)
    frames = []
    async with ws:
        while len(frames) < frames_wanted:
            msg = await asyncio.wait_for(ws.recv(), 10)
            if msg[0] == 1:
                f = parse_video(msg)
                f["nals"] = nal_types(bytes(msg[33:]))
                frames.append(f)
    return frames


def decodable(frames):
    """check_gated, and by the bytes: each frame a decoder starts or resumes at has an IDR."""
    check_gated(frames)
    starts = [frames[0]] + [b for a, b in zip(frames, frames[1:]) if b["seq"] != a["seq"] + 1]
    for f in starts:
        assert 5 in f["nals"], f"frame {f['seq']} starts a decode but holds no IDR (NAL types {f['nals']})"


def test_twenty_clients_joining_a_fresh_source_server_all_start_at_a_keyframe(stack, tmp_path):
    cluster = NatsCluster(tmp_path)
    cluster.start()
    servers = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDR_")}
    try:
        stack.start_producer(fps=30)
        stack.start_server("--publish", f"{cluster.urls()}/{SUBJECT}", "--keyframe-replicas", "3")
        time.sleep(2)  # the keyframe store holds a keyframe
        for round_ in range(ROUNDS):
            # The clients connect as soon as the server listens: while it fetches the
            # stored keyframe and meets the live stream.
            port = free_port()
            server = Proc([SERVER, "--listen", f"127.0.0.1:{port}", "--source", f"{cluster.urls()}/{SUBJECT}"],
                          tmp_path / f"source-{round_}.log", env=env)
            servers.append(server)
            url = f"ws://127.0.0.1:{port}/stream/ws"

            async def main():
                return await asyncio.gather(*(join(url, 45) for _ in range(CLIENTS)))

            for frames in run(main(), timeout=90):
                decodable(frames)
            server.kill()
    finally:
        for s in servers:
            s.kill()
        cluster.stop()
