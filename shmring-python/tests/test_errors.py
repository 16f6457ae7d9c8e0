"""Bad input gets a clear exception and never crashes the interpreter."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import shmring

ERROR_CLASSES = [
    shmring.RingIOError,
    shmring.RingNotFoundError,
    shmring.WriterExistsError,
    shmring.LayoutError,
    shmring.RingDamagedError,
    shmring.FrameTooLargeError,
    shmring.CorruptFrameError,
    shmring.CrcMismatchError,
    shmring.ClosedError,
    shmring.EncoderError,
    shmring.FeatureNotBuiltError,
]


def test_every_error_is_a_shmring_error() -> None:
    for cls in ERROR_CLASSES:
        assert issubclass(cls, shmring.ShmringError), cls
        assert cls.__module__ == "shmring" and cls.__doc__
    assert len(set(ERROR_CLASSES)) == len(ERROR_CLASSES)


@pytest.mark.parametrize(
    "data, error",
    [
        ("a str", TypeError),
        (12345, TypeError),
        (None, TypeError),
        ([1, 2, 3], TypeError),
        # Not C-contiguous: numpy says ValueError, memoryview BufferError.
        (np.arange(20, dtype=np.uint8)[::2], ValueError),
        (np.asfortranarray(np.zeros((3, 4), dtype=np.uint8)), ValueError),
        (memoryview(bytes(20))[::2], BufferError),
    ],
    ids=["str", "int", "none", "list", "strided", "fortran", "strided-memoryview"],
)
def test_write_rejects_what_is_not_a_contiguous_buffer(ring_path: Path, data: object, error: type) -> None:
    with shmring.Writer(ring_path) as writer:
        with pytest.raises(error):
            writer.write(data)  # type: ignore[arg-type]
        assert writer.next_frame_seq == 1  # nothing was written


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"keyframe": "yes"}, TypeError),
        ({"codec": -1}, OverflowError),
        ({"codec": 70000}, OverflowError),
        ({"codec": "h264"}, TypeError),
        ({"frame_id": -5}, OverflowError),
        ({"frame_id": 1.5}, TypeError),
    ],
)
def test_write_rejects_bad_metadata(ring_path: Path, kwargs: dict[str, object], error: type) -> None:
    with shmring.Writer(ring_path) as writer:
        with pytest.raises(error):
            writer.write(b"x", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("layout", ["v1", "legacy"])
def test_frame_above_max_size(ring_path: Path, layout: str) -> None:
    with shmring.Writer(ring_path, layout=layout, capacity=1 << 12) as writer:  # type: ignore[arg-type]
        limit = writer.max_frame_size
        writer.write(bytes(limit))
        with pytest.raises(shmring.FrameTooLargeError, match=f"larger than the ring's max frame size of {limit}"):
            writer.write(bytes(limit + 1))
        assert writer.next_frame_seq == 2


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"capacity": 1000}, shmring.LayoutError, "not a power of two"),
        ({"capacity": 1 << 16, "max_frame_size": 1 << 16}, shmring.LayoutError, "max frame size"),
        ({"layout": "circular"}, ValueError, "layout must be"),
        ({"layout": "legacy", "max_frame_size": 10}, ValueError, "applies to layout=\"v1\" only"),
        ({"layout": "legacy", "capacity": 8}, shmring.LayoutError, "shorter than"),
        ({"mode": 0o17777}, ValueError, "not a file mode"),
        ({"capacity": -1}, OverflowError, None),
    ],
)
def test_writer_rejects_bad_options(
    ring_path: Path, kwargs: dict[str, object], error: type, message: str | None
) -> None:
    with pytest.raises(error, match=message):
        shmring.Writer(ring_path, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"start": "oldest"}, "start must be"),
        ({"layout": "v2"}, "layout must be"),
        ({"wake": "spin"}, "wake must be"),
        ({"cadence_window": 0.0}, "cadence_window must be more than 0"),
        ({"cadence_window": 1.0}, "cadence_window must be more than 0 and at most"),
        ({"wake": "sleep", "cadence_window": 0.0002}, "cadence_window applies to wake=\"cadence\" only"),
    ],
)
def test_reader_rejects_bad_options(ring_path: Path, kwargs: dict[str, object], message: str) -> None:
    shmring.Writer(ring_path).close()
    with pytest.raises(ValueError, match=message):
        shmring.Reader(ring_path, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [-1.0, float("nan")])
def test_read_rejects_bad_timeouts(ring_path: Path, timeout: float) -> None:
    shmring.Writer(ring_path).close()
    with shmring.Reader(ring_path) as reader:
        with pytest.raises(ValueError, match="timeout must be"):
            reader.read(timeout=timeout)
        with pytest.raises(TypeError):
            reader.read(timeout="soon")  # type: ignore[arg-type]


def test_paths_of_the_wrong_type() -> None:
    with pytest.raises(TypeError):
        shmring.Writer(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        shmring.Reader(None)  # type: ignore[arg-type]


def test_closed_writer(ring_path: Path) -> None:
    writer = shmring.Writer(ring_path)
    writer.close()
    writer.close()  # twice is fine
    assert writer.closed and "closed" in repr(writer)
    uses: list[Callable[[], object]] = [
        lambda: writer.write(b"x"),
        writer.heartbeat,
        lambda: writer.max_frame_size,
        lambda: writer.next_frame_seq,
        lambda: writer.layout,
        lambda: writer.__enter__(),
    ]
    for use in uses:
        with pytest.raises(shmring.ClosedError, match="Writer of .* is closed"):
            use()
    # The lock was released: another writer can take the ring over.
    shmring.Writer(ring_path).close()


def test_closed_reader(ring_path: Path) -> None:
    writer = shmring.Writer(ring_path)
    reader = shmring.Reader(ring_path)
    with reader:
        pass
    assert reader.closed
    uses: list[Callable[[], object]] = [
        lambda: reader.read(timeout=0),
        reader.read_latest,
        lambda: reader.stats,
        lambda: reader.max_frame_size,
    ]
    for use in uses:
        with pytest.raises(shmring.ClosedError, match="Reader of .* is closed"):
            use()
    writer.write(b"after close")
    assert list(reader) == []  # iteration over a closed reader just ends
    writer.close()


def test_missing_ring(tmp_path: Path) -> None:
    with pytest.raises(shmring.RingNotFoundError, match="no ring at"):
        shmring.Reader(tmp_path / "nothing-here")


def test_directory_is_not_a_ring(tmp_path: Path) -> None:
    with pytest.raises(shmring.RingIOError):
        shmring.Writer(tmp_path)
    with pytest.raises(shmring.RingIOError):
        shmring.Reader(tmp_path)


def test_file_too_short_to_be_a_ring(tmp_path: Path) -> None:
    path = tmp_path / "short"
    path.write_bytes(b"hello")
    with pytest.raises(shmring.LayoutError, match="shorter than"):
        shmring.Reader(path)


def test_text_file_is_not_a_v1_ring(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are not frames\n" * 1000)
    with pytest.raises(shmring.LayoutError, match="no shmring v1 descriptor"):
        shmring.Reader(path, layout="v1")


def test_garbage_read_as_legacy_raises_cleanly(tmp_path: Path) -> None:
    # Without a v1 descriptor, "auto" falls back to the legacy layout; garbage then
    # yields clean errors or nothing, never a crash or an out-of-bounds read.
    path = tmp_path / "garbage"
    garbage = bytearray(os.urandom(64 * 1024))
    # write_index and the slot's size consistent and inside the file, so the file passes
    # for a legacy ring at open (random ones are refused there with LayoutError) and the
    # reads meet the garbage: random frame_id, frame_seq, flags, codec and CRC.
    garbage[8:16] = (32 + 1000).to_bytes(8, "little")
    garbage[16 + 16 : 16 + 20] = (1000).to_bytes(4, "little")
    path.write_bytes(garbage)
    with shmring.Reader(path) as reader:
        assert reader.layout == "legacy"
        for _ in range(3):
            try:
                frame = reader.read(timeout=0)
            except (shmring.CorruptFrameError, shmring.CrcMismatchError):
                continue
            assert frame is None or len(frame.payload) <= reader.max_frame_size


def test_damaged_record_raises_and_reader_moves_on(ring_path: Path) -> None:
    with shmring.Writer(ring_path, capacity=1 << 16) as writer:
        reader = shmring.Reader(ring_path, start="next", resync_at_keyframe=False)
        writer.write(b"A" * 100, keyframe=True)
        # Flip payload bytes of the first record in the file (offset 16 + 32 header).
        with open(ring_path, "r+b") as f:
            f.seek(16 + 32)
            f.write(b"Z" * 10)
        with pytest.raises(shmring.CrcMismatchError, match="failed its CRC check"):
            reader.read(timeout=1)
        assert (reader.stats.crc_errors, reader.stats.lost) == (1, 1)
        writer.write(b"B" * 100, keyframe=True)
        frame = reader.read(timeout=1)
        assert frame is not None and frame.payload == b"B" * 100
        # Now an impossible size in the next record's header.
        writer.write(b"C" * 100, keyframe=True)
        third = 16 + 2 * (32 + 128)
        with open(ring_path, "r+b") as f:
            f.seek(third + 16)
            f.write(struct.pack("<I", 0x7FFFFFF0))
        with pytest.raises(shmring.CorruptFrameError, match="damaged record"):
            reader.read(timeout=1)
        assert reader.stats.corrupt == 1
        writer.write(b"D", keyframe=True)
        frame = reader.read(timeout=1)
        assert frame is not None and frame.payload == b"D"
        reader.close()


def test_iteration_skips_damaged_frames(ring_path: Path) -> None:
    with shmring.Writer(ring_path, capacity=1 << 16) as writer:
        reader = shmring.Reader(ring_path, start="next", resync_at_keyframe=False)
        writer.write(b"A" * 100, keyframe=True)
        with open(ring_path, "r+b") as f:
            f.seek(16 + 32)
            f.write(b"Z")
        writer.write(b"B" * 100, keyframe=True)
        frame = next(reader)
        assert frame.payload == b"B" * 100 and reader.stats.crc_errors == 1
        reader.close()


def test_video_writer_without_the_feature_names_it() -> None:
    if shmring.VIDEO_FEATURE:
        pytest.skip("this build has the video feature")
    with pytest.raises(shmring.FeatureNotBuiltError) as caught:
        shmring.VideoWriter("/nonexistent/ring", 64, 48, 30.0)
    message = str(caught.value)
    assert "needs FFmpeg" in message
    assert "sudo apt-get install pkg-config clang libclang-dev libavcodec-dev" in message
    assert "pip install --force-reinstall ./shmring-python" in message
