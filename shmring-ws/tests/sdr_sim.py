"""An emulated SDR_OS sim, as PEERS.md describes the real one (a separate process).

- Writes the legacy single-slot layout by hand, from Python, holding no lock: one frame at
  offset 16 (32-byte header + payload), then write_index = 32 + size, then
  sequence_number last. The file is opened with O_TRUNC and ftruncated to its size.
- Encodes with intra refresh (libx264 through PyAV): one IDR at start, then none unless
  asked. JPEG (codec 3) and HEVC (codec 2) on request.
- Subscribes to `command.genesis.>` and `telemetry.safety.video_gate`, nothing else; a
  `command.genesis.force_idr` makes the next frame an IDR.

Control lines on stdin: `pause`, `resume`, `codec h264|hevc|jpeg`, `badcrc N` (the next
N frames carry a wrong CRC), `idr`. Events on stdout, one JSON object a line, with `t`
(CLOCK_MONOTONIC seconds; `wall`: Unix time): `ready`, `idr` (a keyframe was written, `seq`), `nats`
(`subject`, `data`), `paused`, `resumed`, `codec`.

Usage: python sdr_sim.py SHM_PATH NATS_URL [--fps 30] [--size 320x240] [--shm-size BYTES]
"""
import argparse
import asyncio
import fractions
import json
import mmap
import os
import struct
import sys
import time
import zlib

import av
import nats
import numpy as np

CODECS = {"h264": 1, "hevc": 2, "jpeg": 3}
FLAG_KEYFRAME = 0x01


def emit(event, **kw):
    print(json.dumps({"t": time.monotonic(), "wall": time.time(), "event": event, **kw}), flush=True)


class LegacyRing:
    """The SDR_OS writer's single slot; no lock, sequence_number written last."""

    def __init__(self, path, size):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.ftruncate(fd, size)
        self.map = mmap.mmap(fd, size)
        os.close(fd)
        self.seq = 0

    def write(self, payload, keyframe, codec, bad_crc=False):
        self.seq += 1
        crc = zlib.crc32(payload) ^ (0xFFFFFFFF if bad_crc else 0)
        header = struct.pack("<QQIHHII", self.seq, self.seq, len(payload),
                             FLAG_KEYFRAME if keyframe else 0, codec, crc, 0)
        self.map[16:48] = header
        self.map[48:48 + len(payload)] = payload
        self.map[8:16] = struct.pack("<Q", 32 + len(payload))
        self.map[0:8] = struct.pack("<Q", self.seq)
        return self.seq


class Encoder:
    """One encoder per codec; H.264 and HEVC with one IDR at start, then only on request."""

    def __init__(self, codec, width, height, fps):
        self.codec = codec
        if codec == "jpeg":
            ctx = av.CodecContext.create("mjpeg", "w")
            ctx.pix_fmt = "yuvj420p"
        elif codec == "h264":
            ctx = av.CodecContext.create("libx264", "w")
            ctx.pix_fmt = "yuv420p"
            ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline",
                           "forced-idr": "1",
                           "x264-params": "keyint=infinite:intra-refresh=1:repeat-headers=1"}
        else:
            ctx = av.CodecContext.create("libx265", "w")
            ctx.pix_fmt = "yuv420p"
            ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "forced-idr": "1",
                           "x265-params": "keyint=100000:min-keyint=100000:scenecut=0:repeat-headers=1:log-level=error"}
        ctx.width, ctx.height = width, height
        ctx.time_base = fractions.Fraction(1, fps)
        ctx.framerate = fps
        ctx.open()
        self.ctx = ctx
        self.pts = 0

    def encode(self, rgb, force_idr):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=self.ctx.pix_fmt)
        frame.pts = self.pts
        self.pts += 1
        if force_idr:
            frame.pict_type = av.video.frame.PictureType.I
        return [(bytes(p), p.is_keyframe) for p in self.ctx.encode(frame)]


def picture(i, width, height):
    """A moving test picture: colour bars and a bright band."""
    img = np.zeros((height, width, 3), np.uint8)
    bars = np.array([[255, 255, 255], [255, 255, 0], [0, 255, 255], [0, 255, 0],
                     [255, 0, 255], [255, 0, 0], [0, 0, 255], [40, 40, 40]], np.uint8)
    img[:] = bars[(np.arange(width) * 8 // width)][None, :, :]
    y = (i * 4) % height
    img[y:y + 16, :, :] = 240
    return img


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("shm_path")
    ap.add_argument("nats_url")
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--shm-size", type=int, default=4 << 20)
    ap.add_argument("--codec", default="h264", choices=sorted(CODECS))
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    ring = LegacyRing(args.shm_path, args.shm_size)
    state = {"paused": False, "force_idr": False, "bad_crc": 0, "codec": args.codec}
    encoders = {}

    nc = await nats.connect(args.nats_url, max_reconnect_attempts=-1)

    async def on_message(msg):
        try:
            data = json.loads(msg.data)
        except ValueError:
            data = msg.data.decode(errors="replace")
        emit("nats", subject=msg.subject, data=data)
        if msg.subject == "command.genesis.force_idr":
            state["force_idr"] = True

    await nc.subscribe("command.genesis.>", cb=on_message)
    await nc.subscribe("telemetry.safety.video_gate", cb=on_message)
    await nc.flush()

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def control():
        while line := await reader.readline():
            words = line.decode().split()
            if not words:
                continue
            if words[0] == "pause":
                state["paused"] = True
                emit("paused")
            elif words[0] == "resume":
                state["paused"] = False
                emit("resumed")
            elif words[0] == "codec":
                state["codec"] = words[1]
                state["force_idr"] = True
                emit("codec", codec=words[1])
            elif words[0] == "badcrc":
                state["bad_crc"] = int(words[1])
            elif words[0] == "idr":
                state["force_idr"] = True

    control_task = asyncio.create_task(control())
    emit("ready")
    period = 1 / args.fps
    next_at = time.monotonic()
    i = 0
    while not control_task.done():
        next_at += period
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        if state["paused"]:
            continue
        codec = state["codec"]
        if codec not in encoders:
            encoders[codec] = Encoder(codec, width, height, args.fps)
        force = state["force_idr"]
        state["force_idr"] = False
        for payload, key in encoders[codec].encode(picture(i, width, height), force):
            bad = state["bad_crc"] > 0
            if bad:
                state["bad_crc"] -= 1
            seq = ring.write(payload, key, CODECS[codec], bad_crc=bad)
            if key and codec != "jpeg":
                emit("idr", seq=seq, codec=codec, bad_crc=bad)
            elif bad:
                emit("badcrc", seq=seq)
        i += 1
    await nc.drain()


if __name__ == "__main__":
    asyncio.run(main())
