"""The Python API in one process: buffers in, frames out, options, accounting."""

from __future__ import annotations

import stat
import threading
import time
from pathlib import Path
from typing import Literal, cast

import numpy as np
import pytest

import shmring


def open_pair(path: Path, **writer_options: object) -> tuple[shmring.Writer, shmring.Reader]:
    writer = shmring.Writer(path, **writer_options)  # type: ignore[arg-type]
    return writer, shmring.Reader(path, start="next")


@pytest.mark.parametrize(
    "data",
    [
        b"bytes payload",
        bytearray(b"bytearray payload"),
        memoryview(b"0123456789abcdef")[3:11],
        np.arange(1000, dtype=np.uint8),
        np.arange(24, dtype=np.float32).reshape(4, 6),
        np.zeros((0,), dtype=np.uint8),
    ],
    ids=["bytes", "bytearray", "memoryview-slice", "numpy-uint8", "numpy-float32-2d", "empty"],
)
def test_write_takes_any_contiguous_buffer(ring_path: Path, data: object) -> None:
    writer, reader = open_pair(ring_path, capacity=1 << 16)
    with writer, reader:
        writer.write(data)  # type: ignore[arg-type]
        frame = reader.read(timeout=5)
        assert frame is not None
        assert frame.payload == memoryview(data).tobytes()  # type: ignore[arg-type]
        assert len(frame) == len(frame.payload)
        assert bytes(frame) == frame.payload


def test_payload_is_a_bytes_object_numpy_reads_without_copy(ring_path: Path) -> None:
    image = np.random.default_rng(1).integers(0, 255, size=(48, 64, 3), dtype=np.uint8)
    writer, reader = open_pair(ring_path, capacity=1 << 16)
    with writer, reader:
        writer.write(image, keyframe=True)
        frame = reader.read(timeout=5)
        assert frame is not None
        payload = frame.payload
        assert type(payload) is bytes
        assert frame.payload is payload  # the same object every time, never a fresh copy
        view = np.frombuffer(payload, dtype=np.uint8)
        assert cast(object, view.base) is payload  # numpy borrows the bytes object's memory
        assert not view.flags.owndata
        assert np.array_equal(view.reshape(image.shape), image)


def test_large_frames_cross_the_detached_copy_path(ring_path: Path) -> None:
    # 1 MiB is above the size where copies release the GIL, in both directions.
    data = np.random.default_rng(2).integers(0, 255, size=1 << 20, dtype=np.uint8)
    writer, reader = open_pair(ring_path, capacity=1 << 23)
    with writer, reader:
        for i in range(3):
            data[0] = i
            writer.write(data)
        for i in range(3):
            frame = reader.read(timeout=5)
            assert frame is not None
            assert frame.payload[0] == i and frame.payload[1:] == data[1:].tobytes()


def test_frame_fields_round_trip(ring_path: Path) -> None:
    writer, reader = open_pair(ring_path)
    with writer, reader:
        assert writer.write(b"a", keyframe=True, codec=shmring.Codec.HEVC, frame_id=777) == 1
        assert writer.write(b"b", codec=4242) == 2
        assert writer.write(b"c") == 3
        first, second, third = (reader.read(timeout=5) for _ in range(3))
        assert first is not None and second is not None and third is not None
        assert (first.frame_seq, first.frame_id, first.keyframe) == (1, 777, True)
        assert first.codec is shmring.Codec.HEVC
        assert first.crc32 != 0 and first.lost_before == 0
        # Codec numbers without a member come back as plain ints.
        assert second.codec == 4242 and not isinstance(second.codec, shmring.Codec)
        assert not second.keyframe
        # frame_id defaults to the frame's own frame_seq; the codec to H.264.
        assert (third.frame_id, third.codec) == (3, shmring.Codec.H264)


def test_crc_off_stores_zero(ring_path: Path) -> None:
    writer, reader = open_pair(ring_path, crc=False)
    with writer, reader:
        writer.write(b"no checksum")
        frame = reader.read(timeout=5)
        assert frame is not None and frame.crc32 == 0 and frame.payload == b"no checksum"


def test_writer_properties_and_mode(ring_path: Path) -> None:
    with shmring.Writer(ring_path, capacity=1 << 16, max_frame_size=1000, mode=0o640) as writer:
        assert writer.path == ring_path
        assert (writer.layout, writer.capacity, writer.max_frame_size) == ("v1", 1 << 16, 1000)
        assert writer.next_frame_seq == 1
        writer.write(b"x")
        assert writer.next_frame_seq == 2
        assert stat.S_IMODE(ring_path.stat().st_mode) == 0o640
        assert "next_frame_seq=2" in repr(writer)
    with shmring.Writer(ring_path.with_name("legacy"), layout="legacy", capacity=4096) as legacy:
        assert (legacy.layout, legacy.capacity, legacy.max_frame_size) == ("legacy", 4096, 4096 - 48)


def test_read_timeout_returns_none_after_the_timeout(ring_path: Path) -> None:
    writer, reader = open_pair(ring_path)
    with writer, reader:
        assert reader.read(timeout=0) is None
        started = time.monotonic()
        assert reader.read(timeout=0.2) is None
        waited = time.monotonic() - started
        assert 0.19 <= waited < 2.0


def test_start_positions(ring_path: Path) -> None:
    with shmring.Writer(ring_path) as writer:
        for i in range(1, 7):
            writer.write(bytes([i]), keyframe=i in (1, 4))
        latest_keyframe = shmring.Reader(ring_path)
        latest = shmring.Reader(ring_path, start="latest")
        following = shmring.Reader(ring_path, start="next")
        writer.write(b"\x07")
        got = {
            name: [f.frame_seq for f in iter(lambda r=r: r.read(timeout=0), None)]  # type: ignore[misc]
            for name, r in [("kf", latest_keyframe), ("latest", latest), ("next", following)]
        }
    assert got == {"kf": [4, 5, 6, 7], "latest": [6, 7], "next": [7]}


def test_iteration_yields_frames_in_order(ring_path: Path) -> None:
    writer, reader = open_pair(ring_path)
    with writer, reader:
        for i in range(5):
            writer.write(str(i).encode())
        seen = []
        for frame in reader:
            seen.append(frame.payload)
            if len(seen) == 5:
                break
        assert seen == [b"0", b"1", b"2", b"3", b"4"]


def test_lapped_reader_counts_what_it_lost(ring_path: Path) -> None:
    # A 4 KiB ring holds about ten 300-byte frames; write 100 before reading any.
    writer, reader = open_pair(ring_path, capacity=4096)
    with writer, reader:
        written = 100
        for i in range(1, written + 1):
            writer.write(bytes(300), keyframe=i % 10 == 1)
        frames = list(iter(lambda: reader.read(timeout=0), None))
        stats = reader.stats
    assert frames, "the newest frames must still be readable"
    assert stats.lapped >= 1 and stats.lost > 0
    assert stats.delivered == len(frames)
    assert stats.delivered + stats.lost == written
    assert frames[0].keyframe and frames[0].lost_before == stats.lost
    seqs = [f.frame_seq for f in frames]
    assert seqs == list(range(seqs[0], written + 1))
    assert "lapped=" in repr(stats)


def test_read_latest_skips_to_the_newest(ring_path: Path) -> None:
    writer, reader = open_pair(ring_path)
    with writer, reader:
        for i in range(1, 6):
            writer.write(bytes([i]))
        frame = reader.read_latest()
        assert frame is not None and frame.frame_seq == 5 and frame.payload == b"\x05"
        assert reader.read_latest() is None
        assert reader.stats.lost == 4


def test_restarted_writer_continues_frame_seq(ring_path: Path) -> None:
    with shmring.Writer(ring_path) as writer:
        writer.write(b"one")
        writer.write(b"two")
    reader = shmring.Reader(ring_path, start="next")
    with shmring.Writer(ring_path) as writer:
        assert writer.write(b"three") == 3
    frame = reader.read(timeout=5)
    assert frame is not None and (frame.frame_seq, frame.payload) == (3, b"three")
    reader.close()


@pytest.mark.parametrize("layout", ["v1", "legacy"])
@pytest.mark.parametrize("wake", [{}, {"wake": "sleep"}, {"wake": "cadence", "cadence_window": 0.0001}])
def test_every_wake_policy_delivers_a_paced_stream(
    ring_path: Path, layout: Literal["v1", "legacy"], wake: dict[str, object]
) -> None:
    # A writer at a steady 200 fps (a cadence the reader locks onto), then a pause and a
    # burst (which it must not lose in a window).
    frames = 60
    with shmring.Writer(ring_path, layout=layout, capacity=1 << 16) as writer:
        reader = shmring.Reader(ring_path, start="next", **wake)  # type: ignore[arg-type]

        def write() -> None:
            for i in range(frames):
                writer.write(str(i).encode(), keyframe=True)
                time.sleep(0.005 if i < frames - 10 else (0.2 if i == frames - 10 else 0.0))

        thread = threading.Thread(target=write)
        thread.start()
        seen: list[tuple[int, int]] = []
        while not seen or seen[-1][0] < frames:
            frame = reader.read(timeout=30)
            assert frame is not None, f"no frame within 30 s after {seen[-1:]} ({wake}, {layout})"
            seen.append((frame.frame_seq, frame.lost_before))
        thread.join(timeout=30)
        assert [seq for seq, _ in seen] == sorted({seq for seq, _ in seen}), "in order, no duplicates"
        # Every frame is delivered or counted as lost (a legacy slot holds only the newest).
        assert len(seen) + sum(lost for _, lost in seen) == frames - seen[0][0] + 1
        reader.close()


def test_legacy_layout_in_process(ring_path: Path) -> None:
    with shmring.Writer(ring_path, layout="legacy", capacity=1 << 16) as writer:
        reader = shmring.Reader(ring_path, start="next")
        assert reader.layout == "legacy"
        writer.write(b"first", keyframe=True)
        first = reader.read(timeout=5)
        writer.write(b"second")
        second = reader.read(timeout=5)
        assert first is not None and second is not None
        assert [(f.frame_seq, f.payload) for f in (first, second)] == [(1, b"first"), (2, b"second")]
        reader.close()


def test_layout_is_v1_and_its_former_name_ring_is_accepted(ring_path: Path) -> None:
    # The layout is "v1" everywhere (Rust, the shmring CLI, Python); "ring" was Python's
    # name for it and is still accepted when given.
    with shmring.Writer(ring_path, layout="ring", capacity=1 << 16) as writer:
        assert writer.layout == "v1"
        with shmring.Reader(ring_path, layout="ring") as reader:
            assert reader.layout == "v1"
    with pytest.raises(ValueError, match='layout must be "v1" or "legacy"'):
        shmring.Writer(ring_path, layout="ringg")  # type: ignore[arg-type]
