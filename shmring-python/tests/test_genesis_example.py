"""examples/genesis-writer/genesis_writer.py end to end on its test-pattern path: a separate process
encodes through VideoWriter into a ring, and the frames are read back here."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import shmring
from conftest import REPO

EXAMPLE = REPO / "examples" / "genesis-writer" / "genesis_writer.py"
FRAMES = 30


@pytest.mark.skipif(
    not shmring.VIDEO_FEATURE,
    reason="shmring built without the `video` feature: VideoWriter raises FeatureNotBuiltError "
    "(tested in test_errors.py)",
)
def test_test_pattern_streams_decodable_h264(ring_path: Path) -> None:
    ring_path.parent.mkdir(parents=True)
    run = subprocess.run(
        [sys.executable, EXAMPLE, "--test-pattern", "--path", ring_path, "--frames", str(FRAMES),
         "--width", "160", "--height", "120", "--encoder", "libx264", "--fast"],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert f"wrote {FRAMES} frames" in run.stdout

    with shmring.Reader(ring_path) as reader:  # starts at the newest keyframe
        frames = list(iter(lambda: reader.read(timeout=0), None))
    assert len(frames) == FRAMES
    assert frames[0].keyframe and frames[0].codec is shmring.Codec.H264
    assert [f.frame_seq for f in frames] == list(range(1, FRAMES + 1))
    for frame in frames:
        assert frame.payload[:4] == b"\x00\x00\x00\x01" or frame.payload[:3] == b"\x00\x00\x01"

    av = pytest.importorskip("av")
    codec = av.CodecContext.create("h264", "r")
    decoded = []
    for payload in [f.payload for f in frames] + [None]:  # None flushes the parser
        for packet in codec.parse(payload):
            decoded.extend(codec.decode(packet))
    decoded.extend(codec.decode(None))
    assert len(decoded) == FRAMES
    assert (decoded[0].width, decoded[0].height) == (160, 120)


@pytest.mark.skipif(not shmring.VIDEO_FEATURE, reason="shmring built without the `video` feature")
def test_two_cameras_stream_into_their_own_rings(tmp_path: Path) -> None:
    """`--camera-dir DIR`: two cameras, DIR/front and DIR/top (a server's --shm-dir),
    each ring with every frame of its own camera, stamped with the same times."""
    cameras = tmp_path / "cameras"
    run = subprocess.run(
        [sys.executable, EXAMPLE, "--test-pattern", "--camera-dir", cameras, "--frames", str(FRAMES),
         "--width", "160", "--height", "120", "--encoder", "libx264", "--fast"],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert f"wrote {FRAMES} frames" in run.stdout
    assert sorted(p.name for p in cameras.iterdir()) == ["front", "top"]
    streams = {}
    for name in ("front", "top"):
        with shmring.Reader(cameras / name) as reader:
            frames = list(iter(lambda: reader.read(timeout=0), None))
        assert [f.frame_seq for f in frames] == list(range(1, FRAMES + 1)), name
        assert frames[0].keyframe and frames[0].codec is shmring.Codec.H264, name
        streams[name] = frames
    assert [f.frame_id for f in streams["front"]] == [f.frame_id for f in streams["top"]]

    av = pytest.importorskip("av")
    pictures = {}
    for name, frames in streams.items():
        codec = av.CodecContext.create("h264", "r")
        packets = [p for f in frames[:1] + [None] for p in codec.parse(f.payload if f else None)]
        first = [d for p in packets for d in codec.decode(p)] + list(codec.decode(None))
        pictures[name] = first[0].to_ndarray(format="rgb24").astype(int)
    # The second camera shows the first one's picture in inverted colours.
    assert abs((pictures["front"] + pictures["top"]).mean() - 255) < 10
    assert abs(pictures["front"] - pictures["top"]).mean() > 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.skipif(not shmring.VIDEO_FEATURE, reason="shmring built without the `video` feature")
@pytest.mark.skipif(shutil.which("nats-server") is None, reason="nats-server is not installed (scripts/setup)")
def test_real_time_sim_timestamps_and_keyframe_requests(ring_path: Path, tmp_path: Path) -> None:
    """The example as a user runs it (real time, the default): every frame carries its
    simulation time as frame_id, and a keyframe request on NATS (`control.request_idr`,
    as the transport server sends it) makes the next frame a keyframe."""
    nats_py = pytest.importorskip("nats")
    ring_path.parent.mkdir(parents=True)
    port = free_port()
    server = subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    example = None
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nats-server did not start"
                time.sleep(0.05)
        frames = 60  # two seconds of simulated time, shown in two seconds
        example = subprocess.Popen(
            [sys.executable, EXAMPLE, "--test-pattern", "--path", ring_path, "--frames", str(frames),
             "--width", "160", "--height", "120", "--encoder", "libx264", "--nats-url", f"nats://127.0.0.1:{port}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        while not ring_path.exists():
            assert example.poll() is None, example.communicate()
            time.sleep(0.01)

        async def follow() -> list[shmring.Frame]:
            client = await nats_py.connect(f"nats://127.0.0.1:{port}")
            seen: list[shmring.Frame] = []
            with shmring.Reader(ring_path, start="latest") as reader:
                while not seen or seen[-1].frame_seq < frames:
                    frame = await asyncio.to_thread(reader.read, 5.0)
                    assert frame is not None, "the example stopped writing"
                    seen.append(frame)
                    # Ask (again) until a keyframe outside the GOP's own (1, 31) arrives.
                    if frame.frame_seq >= 5 and not any(f.keyframe and f.frame_seq not in (1, 31) for f in seen):
                        await client.publish("control.request_idr", b"{}")
            await client.close()
            return seen

        seen = asyncio.run(follow())
        assert example.wait(timeout=30) == 0, example.communicate()
    finally:
        if example is not None and example.poll() is None:
            example.kill()
        server.kill()
        server.wait()
    requested = [f.frame_seq for f in seen if f.keyframe and f.frame_seq not in (1, 31)]
    assert requested, "no keyframe answered the requests"
    for f in seen:  # frame i shows simulated time i / 30 s
        assert f.frame_id == round((f.frame_seq - 1) / 30 * 1e9), f
