"""Interop with real separate processes: Python <-> Rust on the v1 and legacy layouts,
and shmring <-> the pure-Python legacy writer/reader that producers use today."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import shmring
from conftest import LEGACY_PY, Peer
from legacy_py import payload

COUNT = 12
SIZE = 3000  # not a multiple of 8: exercises the partial last word


def parse(line: str) -> tuple[int, int, bool, int, bytes]:
    seq, frame_id, keyframe, codec, data = line.split(" ")
    return int(seq), int(frame_id), keyframe == "1", int(codec), bytes.fromhex(data)


def expected(index: int) -> tuple[int, int, bool, int, bytes]:
    """What the peers write as frame `index` (1-based): see ring_peer.rs / legacy_py.py."""
    return index, 1000 + index, index % 3 == 1, 1, payload(index, SIZE)


def python_writes(writer: shmring.Writer, index: int) -> int:
    return writer.write(
        payload(index, SIZE), keyframe=index % 3 == 1, codec=shmring.Codec.H264, frame_id=1000 + index
    )


def check_frame(frame: shmring.Frame | None, index: int) -> None:
    assert frame is not None, f"frame {index} did not arrive"
    got = (frame.frame_seq, frame.frame_id, frame.keyframe, int(frame.codec), frame.payload)
    assert got == expected(index)


def test_python_writer_to_rust_reader_v1(ring_path: Path, peer_exe: Path, spawn: Callable[..., Peer]) -> None:
    with shmring.Writer(ring_path, capacity=1 << 20) as writer:
        reader = spawn(peer_exe, "read", ring_path, "--layout", "v1", "--start", "next", "--count", COUNT)
        reader.expect("ready")
        for index in range(1, COUNT + 1):
            assert python_writes(writer, index) == index
        lines = [reader.line() for _ in range(COUNT)]
    assert reader.wait() == 0, reader.stderr()
    assert [parse(line) for line in lines] == [expected(i) for i in range(1, COUNT + 1)]


def test_rust_writer_to_python_reader_v1(ring_path: Path, peer_exe: Path, spawn: Callable[..., Peer]) -> None:
    writer = spawn(peer_exe, "write", ring_path, "--layout", "v1", "--count", COUNT, "--size", SIZE)
    writer.expect("ready")
    with shmring.Reader(ring_path, start="next", layout="v1") as reader:
        writer.send()  # go: the whole burst fits in the ring, so nothing may be lost
        for index in range(1, COUNT + 1):
            check_frame(reader.read(timeout=10), index)
        writer.expect("done")
        stats = reader.stats
    assert (stats.delivered, stats.lost, stats.crc_errors) == (COUNT, 0, 0)
    assert writer.wait() == 0


def test_python_writer_to_rust_reader_legacy(ring_path: Path, peer_exe: Path, spawn: Callable[..., Peer]) -> None:
    with shmring.Writer(ring_path, layout="legacy") as writer:
        reader = spawn(peer_exe, "read", ring_path, "--layout", "legacy", "--start", "next", "--count", COUNT)
        reader.expect("ready")
        # One slot: write the next frame only after the reader printed the previous one.
        for index in range(1, COUNT + 1):
            python_writes(writer, index)
            assert parse(reader.line()) == expected(index)
    assert reader.wait() == 0, reader.stderr()


def test_rust_writer_to_python_reader_legacy(ring_path: Path, peer_exe: Path, spawn: Callable[..., Peer]) -> None:
    writer = spawn(peer_exe, "write", ring_path, "--layout", "legacy", "--count", COUNT, "--size", SIZE, "--step")
    writer.expect("ready")
    with shmring.Reader(ring_path, start="next") as reader:
        assert reader.layout == "legacy"
        for index in range(1, COUNT + 1):
            writer.send()
            writer.expect(f"wrote {index}")
            check_frame(reader.read(timeout=10), index)
    writer.expect("done")
    assert writer.wait() == 0


def test_pure_python_legacy_writer_to_shmring_reader(ring_path: Path, spawn: Callable[..., Peer]) -> None:
    ring_path.parent.mkdir(parents=True)
    writer = spawn(sys.executable, LEGACY_PY, "write", ring_path, "--count", COUNT, "--size", SIZE)
    writer.expect("ready")
    with shmring.Reader(ring_path, start="next") as reader:
        assert reader.layout == "legacy"
        assert reader.max_frame_size == 4 * 1024 * 1024 - 48
        for index in range(1, COUNT + 1):
            writer.send()
            writer.expect(f"wrote {index}")
            check_frame(reader.read(timeout=10), index)
        assert reader.stats.crc_errors == 0
    assert writer.wait() == 0


def test_shmring_legacy_writer_to_pure_python_reader(ring_path: Path, spawn: Callable[..., Peer]) -> None:
    with shmring.Writer(ring_path, layout="legacy") as writer:
        assert writer.layout == "legacy"
        reader = spawn(sys.executable, LEGACY_PY, "read", ring_path, "--count", COUNT)
        reader.expect("ready")
        for index in range(1, COUNT + 1):
            python_writes(writer, index)
            assert parse(reader.line()) == expected(index)
    assert reader.wait() == 0


def test_restarted_python_writer_continues_rust_readers_stream(
    ring_path: Path, peer_exe: Path, spawn: Callable[..., Peer]
) -> None:
    with shmring.Writer(ring_path, capacity=1 << 20) as writer:
        python_writes(writer, 1)
    reader = spawn(peer_exe, "read", ring_path, "--start", "next", "--count", 2)
    reader.expect("ready")
    # A restarted producer (same options) continues the ring: frame_seq carries on.
    with shmring.Writer(ring_path, capacity=1 << 20) as writer:
        assert python_writes(writer, 2) == 2
        assert python_writes(writer, 3) == 3
    assert [parse(reader.line())[0] for _ in range(2)] == [2, 3]
    assert reader.wait() == 0


@pytest.mark.parametrize("layout", ["v1", "legacy"])
def test_second_writer_is_refused_while_another_process_writes(
    ring_path: Path, peer_exe: Path, spawn: Callable[..., Peer], layout: str
) -> None:
    holder = spawn(peer_exe, "write", ring_path, "--layout", layout, "--count", 0, "--hold")
    holder.expect("ready")
    with pytest.raises(shmring.WriterExistsError, match="already has a writer") as caught:
        shmring.Writer(ring_path, layout=layout)  # type: ignore[arg-type]
    assert isinstance(caught.value, shmring.ShmringError)
    # v1 rings record the writer's pid in their trailer; for legacy files (no trailer,
    # and /proc/locks shows -1 for an OFD lock) the core finds the process whose
    # /proc/PID/fdinfo lists the lock.
    assert caught.value.pid == holder.proc.pid
    assert f"pid {holder.proc.pid}" in str(caught.value)
    holder.send()
    holder.expect("done")
    holder.close_stdin()
    assert holder.wait() == 0
    # Once the holder is gone, the ring is free for a new writer.
    with shmring.Writer(ring_path, layout=layout) as writer:  # type: ignore[arg-type]
        assert writer.write(b"x") >= 1
