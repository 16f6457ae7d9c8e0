"""VideoWriter (builds with the `video` feature): frames in, H.264 access units in the
ring, and clear errors for frames it cannot encode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

import shmring

pytestmark = pytest.mark.skipif(
    not shmring.VIDEO_FEATURE,
    reason="shmring built without the `video` feature (test_errors.py checks the error it raises)",
)

W, H = 64, 48


def frame(i: int, channels: int = 3) -> npt.NDArray[np.uint8]:
    image = np.zeros((H, W, channels), dtype=np.uint8)
    image[:, (i * 3) % W] = 255
    return image


def test_rgb_and_rgba_frames_become_access_units(ring_path: Path) -> None:
    for channels in (3, 4):
        path = ring_path.with_name(f"ring{channels}")
        with shmring.VideoWriter(path, W, H, 30, encoder="libx264", gop=5) as video:
            seqs = [video.write(frame(i, channels)) for i in range(10)]
        assert seqs == list(range(1, 11))  # low latency: one access unit per frame
        with shmring.Reader(path, start="latest_keyframe") as reader:
            frames = list(iter(lambda: reader.read(timeout=0), None))
        # The newest keyframe is frame 11 - gop... with gop 5: keyframes at 1, 6.
        assert [f.frame_seq for f in frames] == [6, 7, 8, 9, 10]
        assert frames[0].keyframe and not any(f.keyframe for f in frames[1:])
        assert all(f.codec is shmring.Codec.H264 for f in frames)
        assert [f.frame_id for f in frames] == [5, 6, 7, 8, 9]  # the raw frames' indices


def test_request_keyframe(ring_path: Path) -> None:
    with shmring.VideoWriter(ring_path, W, H, 30, encoder="libx264", gop=100) as video:
        reader = shmring.Reader(ring_path, start="next")
        video.write(frame(0))
        video.write(frame(1))
        video.request_keyframe()
        video.write(frame(2))
        got = [f.keyframe for f in iter(lambda: reader.read(timeout=0), None)]
        reader.close()
    assert got == [True, False, True]


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((H, W), dtype=np.uint8), "must be a"),
        (np.zeros((H, W, 2), dtype=np.uint8), "must be a"),
        (np.zeros((W, H, 3), dtype=np.uint8), "must be a"),
        (np.zeros((H, W, 3), dtype=np.float32), "uint8"),
    ],
    ids=["2d", "2-channels", "transposed", "float32"],
)
def test_frames_it_cannot_encode(ring_path: Path, bad: object, message: str) -> None:
    with shmring.VideoWriter(ring_path, W, H, 30, encoder="libx264") as video:
        with pytest.raises(ValueError, match=message):
            video.write(bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            video.write("not an image")  # type: ignore[arg-type]
        video.write(frame(0))
        with pytest.raises(ValueError, match="keep one format"):
            video.write(frame(1, channels=4))


def test_bad_settings_and_closed(ring_path: Path) -> None:
    with pytest.raises(ValueError, match="codec must be"):
        shmring.VideoWriter(ring_path, W, H, 30, codec="vp9")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fps must be"):
        shmring.VideoWriter(ring_path, W, H, 29.97)
    with pytest.raises(shmring.EncoderError, match="no encoder named"):
        shmring.VideoWriter(ring_path, W, H, 30, encoder="nonexistent_enc")
    with pytest.raises(shmring.EncoderError, match="even"):
        shmring.VideoWriter(ring_path, 65, 48, 30, encoder="libx264")
    video = shmring.VideoWriter(ring_path, W, H, 30, encoder="libx264")
    video.close()
    video.close()
    assert video.closed
    with pytest.raises(shmring.ClosedError):
        video.write(frame(0))
