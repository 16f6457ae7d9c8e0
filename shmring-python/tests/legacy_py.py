"""A pure-Python writer and reader of the legacy single-slot layout, written from its
description: the control block (sequence_number u64, write_index u64) at offset 0 and
one 32-byte header ``struct "<QQIHHII"`` (frame_id, frame_seq, size, flags, codec,
crc32, reserved) plus payload at offset 16; ``write_index = 32 + size``;
``sequence_number`` (frames written) is stored last, as the commit marker.

This is what Python producers do today without shmring (mmap + struct + zlib), so it
is the interop counterpart in the tests, and the "lean" column of the write benchmark
(whose baseline, ``SdrOsStyleWriter`` in ``benches/python_write.py``, adds the lock and
header object the SDR_OS writer uses per frame).
Run as a script it is a separate writer or reader process::

    python legacy_py.py write PATH --count N --size N   # waits for a stdin line per frame
    python legacy_py.py read PATH --count N            # prints one line per frame
"""

from __future__ import annotations

import argparse
import mmap
import os
import struct
import sys
import time
import zlib

HEADER = struct.Struct("<QQIHHII")
CONTROL = struct.Struct("<QQ")
HEADER_AT = 16
PAYLOAD_AT = HEADER_AT + HEADER.size
FLAG_KEYFRAME = 0x01
DEFAULT_LEN = 4 * 1024 * 1024


class LegacyWriter:
    """Writes frames over the single slot, as the SDR_OS Python writer does."""

    def __init__(self, path: str, length: int = DEFAULT_LEN, crc: bool = True) -> None:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, length)
            self._mm = mmap.mmap(fd, length)
        finally:
            os.close(fd)
        self._mm[0:16] = bytes(16)
        self._seq = 0
        self._crc = crc

    def write(self, payload: bytes, frame_id: int, keyframe: bool = False, codec: int = 1) -> int:
        if PAYLOAD_AT + len(payload) > len(self._mm):
            raise ValueError("payload larger than the slot")
        self._seq += 1
        crc = zlib.crc32(payload) if self._crc else 0
        flags = FLAG_KEYFRAME if keyframe else 0
        HEADER.pack_into(self._mm, HEADER_AT, frame_id, self._seq, len(payload), flags, codec, crc, 0)
        self._mm[PAYLOAD_AT : PAYLOAD_AT + len(payload)] = payload
        struct.pack_into("<Q", self._mm, 8, HEADER.size + len(payload))
        struct.pack_into("<Q", self._mm, 0, self._seq)
        return self._seq

    def close(self) -> None:
        self._mm.close()


class LegacyReader:
    """Reads the slot when sequence_number moved; rejects copies the writer changed."""

    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            self._mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        self._last = 0

    def try_read(self) -> tuple[tuple[int, int, int, int, int, int, int], bytes] | None:
        seq1 = struct.unpack_from("<Q", self._mm, 0)[0]
        if seq1 == self._last:
            return None
        header = HEADER.unpack_from(self._mm, HEADER_AT)
        size = header[2]
        payload = bytes(self._mm[PAYLOAD_AT : PAYLOAD_AT + size])
        if struct.unpack_from("<Q", self._mm, 0)[0] != seq1:
            return None
        if header[5] != zlib.crc32(payload):
            raise ValueError(f"frame {header[1]} failed its CRC check")
        self._last = seq1
        return header, payload

    def read(self, timeout: float) -> tuple[tuple[int, int, int, int, int, int, int], bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.try_read()
            if got is not None:
                return got
            time.sleep(0.0005)
        raise TimeoutError("no frame")

    def close(self) -> None:
        self._mm.close()


def payload(index: int, size: int) -> bytes:
    """The same test pattern as the Rust peer's (`ring_peer.rs`)."""
    return bytes((index * 31 + j * 7) % 251 for j in range(size))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["write", "read"])
    parser.add_argument("path")
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    if args.command == "write":
        writer = LegacyWriter(args.path)
        print("ready", flush=True)
        for index in range(1, args.count + 1):
            sys.stdin.readline()
            seq = writer.write(payload(index, args.size), 1000 + index, keyframe=index % 3 == 1)
            print(f"wrote {seq}", flush=True)
        writer.close()
    else:
        reader = LegacyReader(args.path)
        print("ready", flush=True)
        for _ in range(args.count):
            header, data = reader.read(timeout=10.0)
            frame_id, frame_seq, size, flags, codec, _crc, _reserved = header
            print(f"{frame_seq} {frame_id} {flags & FLAG_KEYFRAME} {codec} {data.hex()}", flush=True)
        reader.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
