"""examples/genesis-writer/genesis_writer.py end to end on its test-pattern path: a separate process
encodes through VideoWriter into a ring, and the frames are read back here."""

from __future__ import annotations

import subprocess
import sys
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
         "--width", "160", "--height", "120", "--encoder", "libx264"],
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
