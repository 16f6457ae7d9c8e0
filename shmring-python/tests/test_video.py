"""VideoWriter (builds with the `video` feature): frames in, H.264 access units in the
ring, and clear errors for frames it cannot encode."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import shmring

pytestmark = pytest.mark.skipif(
    not shmring.VIDEO_FEATURE,
    reason="shmring built without the `video` feature (test_errors.py checks the error it raises)",
)

W, H = 64, 48


class DLPackOnly:
    """Exposes an array through DLPack only (as torch CPU tensors and JAX arrays do)."""

    def __init__(self, array: npt.NDArray[Any]) -> None:
        self.array = array

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any:
        return self.array.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self) -> tuple[int, int]:
        return (1, 0)  # kDLCPU


class ArrayInterfaceOnly:
    """Exposes an array through numpy's __array_interface__ only."""

    def __init__(self, array: npt.NDArray[Any]) -> None:
        self.array = array  # keeps the memory alive
        self.__array_interface__ = array.__array_interface__


class OnDevice:
    """A tensor in device memory (DLPack device type `device`, e.g. 2 = CUDA)."""

    def __init__(self, device: int) -> None:
        self.device = device

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a device tensor must be refused before it is exported")

    def __dlpack_device__(self) -> tuple[int, int]:
        return (self.device, 0)


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
        # Without timestamps each frame is stamped one nominal period (1/30 s) later.
        assert [f.frame_id for f in frames] == [i * 33_333_333 for i in range(5, 10)]


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
        (np.zeros((H, W), dtype=np.uint8), r"write: frame must be a \(height, width, 3\) RGB.*not shape \[48, 64\]"),
        (np.zeros((H, W, 2), dtype=np.uint8), r"write: frame must be a \(48, 64, 3\) RGB"),
        (np.zeros((W, H, 3), dtype=np.uint8), r"not shape \[64, 48, 3\]; resize it"),
        (np.zeros((H + 2, W, 3), dtype=np.uint8), r"open the VideoWriter with width=64, height=50"),
        (np.zeros((H, W, 3), dtype=np.float32), r"write: frame must hold uint8 pixels.*astype\(numpy.uint8\)"),
        (DLPackOnly(np.zeros((H, W, 3), dtype=np.float32)), r"write: frame must hold uint8 pixels"),
        (ArrayInterfaceOnly(np.zeros((H, W, 3), dtype=np.float32)), r"write: frame must hold uint8 pixels"),
        (np.zeros((2, H, W, 3), dtype=np.uint8), r"write: takes one frame, got a batch of 2"),
        (OnDevice(2), r"write: the frame \(OnDevice\) is on cuda:0.*frame.cpu\(\)"),
        (OnDevice(10), r"is on rocm:0"),
    ],
    ids=["2d", "2-channels", "transposed", "wrong-size", "float32", "dlpack-float32",
         "array-interface-float32", "batch-of-2", "cuda", "rocm"],
)
def test_frames_it_cannot_encode(ring_path: Path, bad: object, message: str) -> None:
    with shmring.VideoWriter(ring_path, W, H, 30, encoder="libx264") as video:
        with pytest.raises(ValueError, match=message):
            video.write(bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="write: frame must be a uint8 .* not str"):
            video.write("not an image")  # type: ignore[arg-type]
        video.write(frame(0))
        with pytest.raises(ValueError, match="keep one format"):
            video.write(frame(1, channels=4))
        assert video.write(frame(1)) == 2  # a refused frame leaves the stream as it was


def test_timestamps_become_frame_ids(ring_path: Path) -> None:
    """A sim rendering at 15 fps of sim time, stamped, into a writer opened at a
    nominal 30 fps: frame_id carries the sim time; frames without a stamp continue
    one nominal period after the previous one; time never runs backwards."""
    stamps = [1_000_000_000 + i * 66_666_667 for i in range(4)]
    with shmring.VideoWriter(ring_path, W, H, 30, encoder="libx264") as video:
        for i, t in enumerate(stamps):
            video.write(frame(i), timestamp_ns=t)
        video.write(frame(4))
        with pytest.raises(ValueError, match="write: timestamp_ns=5 is not after"):
            video.write(frame(5), timestamp_ns=5)
        with pytest.raises(ValueError, match="write: timestamp_ns=-1 is negative"):
            video.write(frame(5), timestamp_ns=-1)
    with shmring.Reader(ring_path) as reader:
        ids = [f.frame_id for f in iter(lambda: reader.read(timeout=0), None)]
    assert ids == [*stamps, stamps[-1] + 33_333_333]


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


def decode_rgb(reader: shmring.Reader) -> list[npt.NDArray[np.uint8]]:
    """Every access unit left in `reader`, decoded by FFmpeg (PyAV) to RGB."""
    av = pytest.importorskip("av")
    with reader:
        payloads = [f.payload for f in iter(lambda: reader.read(timeout=0), None)]
    decoder = av.CodecContext.create("h264", "r")
    pictures = []
    for payload in [*payloads, None]:  # None flushes the parser
        for packet in decoder.parse(payload):
            pictures.extend(decoder.decode(packet))
    pictures.extend(decoder.decode(None))
    return [p.to_ndarray(format="rgb24") for p in pictures]


def test_input_matrix_round_trips_byte_exact(ring_path: Path) -> None:
    """Every way a simulator hands over a frame, encoded losslessly (libx264rgb, qp 0)
    and decoded by FFmpeg: the decoded pixels are the frame's, byte for byte."""
    rng = np.random.default_rng(15)
    images = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(8)]
    wide = rng.integers(0, 256, (H, W + 16, 3), dtype=np.uint8)
    bottom_up = np.ascontiguousarray(images[6][::-1])[::-1]  # a flipped view of a copy
    inputs: list[tuple[str, object, npt.NDArray[np.uint8]]] = [
        ("contiguous", images[0], images[0]),
        ("negative row stride", images[1][::-1], images[1][::-1]),
        ("batch of 1", images[2][None], images[2]),
        ("__dlpack__", DLPackOnly(images[3]), images[3]),
        ("__array_interface__ (flipped)", ArrayInterfaceOnly(images[4][::-1]), images[4][::-1]),
        ("padded rows (crop)", wide[:, 8 : 8 + W], wide[:, 8 : 8 + W]),
        ("mirrored columns", images[5][:, ::-1], images[5][:, ::-1]),
        ("read-only flipped view", bottom_up, images[6]),
        ("memoryview", memoryview(images[7]), images[7]),  # type: ignore[arg-type]  # numpy: Buffer on 3.12+
    ]
    bottom_up.flags.writeable = False
    with shmring.VideoWriter(ring_path, W, H, 30, encoder="libx264rgb", options={"qp": "0"}) as video:
        reader = shmring.Reader(ring_path, start="next")
        for _, given, _ in inputs:
            video.write(given)  # type: ignore[arg-type]
    decoded = decode_rgb(reader)
    assert len(decoded) == len(inputs)
    for (name, _, want), got in zip(inputs, decoded):
        assert np.array_equal(got, want), f"{name}: decoded pixels differ"


def test_rgba_round_trips_byte_exact(ring_path: Path) -> None:
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, (H, W, 4), dtype=np.uint8) for _ in range(2)]
    with shmring.VideoWriter(ring_path, W, H, 30, encoder="libx264rgb", options={"qp": "0"}) as video:
        reader = shmring.Reader(ring_path, start="next")
        video.write(images[0][::-1])
        video.write(DLPackOnly(images[1][None]))
    decoded = decode_rgb(reader)
    assert np.array_equal(decoded[0], images[0][::-1, :, :3])
    assert np.array_equal(decoded[1], images[1][:, :, :3])


def test_ffmpeg_log_goes_to_logging(ring_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="shmring.ffmpeg")
    with shmring.VideoWriter(ring_path, W, H, 30, encoder="libx264") as video:
        video.write(frame(0))
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "shmring.ffmpeg"]
    # libx264 announces its profile at open and prints its statistics when closed.
    assert any(level == logging.INFO and "[libx264 @" in m and "profile" in m for level, m in lines), lines
    assert any(level == logging.INFO and "kb/s" in m for level, m in lines), lines


QUIET_SCRIPT = """
import logging, sys
import numpy as np
import shmring
if sys.argv[2] == "debug":
    logging.basicConfig(level=logging.DEBUG, format="%(name)s %(levelname)s %(message)s")
with shmring.VideoWriter(sys.argv[1], 64, 48, 30) as video:  # auto: NVENC is probed first
    video.write(np.zeros((48, 64, 3), dtype=np.uint8))
print("done")
"""


def test_quiet_by_default_loud_on_demand(ring_path: Path) -> None:
    """An application that does not configure logging sees nothing from FFmpeg (no
    NVENC probe failure, no x264 banner); one that asks for debug sees it all, the
    expected NVENC probe failure demoted to DEBUG."""
    ring_path.parent.mkdir(parents=True)
    quiet = subprocess.run([sys.executable, "-c", QUIET_SCRIPT, ring_path, "default"],
                           capture_output=True, text=True, timeout=60)
    assert quiet.returncode == 0 and quiet.stdout == "done\n", quiet.stderr
    assert quiet.stderr == ""
    loud = subprocess.run([sys.executable, "-c", QUIET_SCRIPT, ring_path, "debug"],
                          capture_output=True, text=True, timeout=60)
    assert loud.returncode == 0, loud.stderr
    assert "shmring.ffmpeg INFO [libx264 @" in loud.stderr
    if "h264_nvenc" in loud.stderr:  # FFmpeg builds with NVENC, on a machine without a GPU
        assert all(" DEBUG probing h264_nvenc: " in line for line in loud.stderr.splitlines() if "nvenc" in line.lower())


GLOBAL_LOG_SCRIPT = """
import ctypes, logging, sys
import numpy as np
import shmring
if sys.argv[2] == "debug":
    logging.basicConfig(level=logging.DEBUG, format="%(name)s %(levelname)s %(message)s")
with shmring.VideoWriter(sys.argv[1], 64, 48, 30, encoder="libx264") as video:
    video.write(np.zeros((48, 64, 3), dtype=np.uint8))
# The libavutil this process loaded (the system's, or the wheel's copy).
avutil = next(p for p in open("/proc/self/maps").read().split() if "libavutil" in p)
print(ctypes.CDLL(avutil).av_log_get_level())
"""


def test_ffmpeg_global_log_level_is_left_alone(ring_path: Path) -> None:
    """FFmpeg's log level is process-wide (PyAV or OpenCV in the same process share it
    when they share the library): a VideoWriter leaves it at FFmpeg's default (32, INFO)
    whether or not the application logs, and with a DEBUG handler the lines still arrive.
    It used to be set to TRACE (56) with FFmpeg's callback replaced."""
    ring_path.parent.mkdir(parents=True)
    for mode in ("default", "debug"):
        proc = subprocess.run([sys.executable, "-c", GLOBAL_LOG_SCRIPT, ring_path, mode],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "32", f"{mode}: FFmpeg's level is now {proc.stdout.strip()}"
        if mode == "debug":
            assert "shmring.ffmpeg INFO [libx264 @" in proc.stderr, proc.stderr
        else:
            assert proc.stderr == "", proc.stderr


def test_sim_time_reaches_the_recording(ring_path: Path, shmring_cli: Path) -> None:
    """Frames rendered at 15 fps of simulated time, written with their sim timestamps to
    a VideoWriter opened at a nominal 30 fps, recorded with `shmring dump`: the
    recording plays at 15 fps (ffprobe), and the timestamps file has the sim times."""
    steps = 20
    with shmring.VideoWriter(ring_path, W, H, 30, encoder="libx264", gop=100) as video:
        for i in range(steps):
            video.write(frame(i), timestamp_ns=2_000_000_000 + i * 66_666_667)
    mkv, times = ring_path.with_name("sim.mkv"), ring_path.with_name("times.txt")
    subprocess.run([shmring_cli, "dump", ring_path, "-o", mkv, "--timestamps", times, "--idle-timeout", "0.3"],
                   check=True, capture_output=True, timeout=60)
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
                            "stream=r_frame_rate,nb_read_frames", "-of", "json", mkv],
                           check=True, capture_output=True, text=True).stdout
    stream = json.loads(probe)["streams"][0]
    assert (stream["nb_read_frames"], stream["r_frame_rate"]) == (str(steps), "15/1")
    lines = times.read_text().splitlines()
    assert lines[0] == "# timestamp format v2" and len(lines) == steps + 1
    assert [round(float(t)) for t in lines[1:]] == [round(i * 66.666667) for i in range(steps)]
