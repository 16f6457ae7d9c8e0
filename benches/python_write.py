"""Write cost from Python: ``shmring.Writer.write`` against the same writes from Rust
(``ring_peer bench``, shmring-core directly) and against a pure-Python writer of the
legacy layout that does, per frame, what the SDR_OS Python writer (the baseline users
have today) does. CRC on everywhere except the last column (shmring with CRC off, for
context).

    python benches/python_write.py [--repeat 3]

Needs the package installed (``pip install ./shmring-python``) and cargo (it builds the
Rust peer, or takes ``$SHMRING_RING_PEER``). Prints two Markdown tables, wall time and
the writing thread's CPU time (which leaves out time spent waiting for a CPU, so it
stays comparable when other work loads the machine): the median per write over the
repeats, with the fastest and slowest repeat in brackets.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import shmring

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "shmring-python" / "tests"))
from legacy_py import LegacyWriter  # noqa: E402

CAPACITY = 64 << 20  # v1 frame region: max frame 32 MiB, so 1 MiB frames fit 64 to a lap
LEGACY_LEN = 4 << 20  # the SDR_OS writer's default file length
SIZES = {"1 KiB": (1024, 200_000), "1 MiB": (1 << 20, 2_000)}  # bytes, writes per run


HEADER_FORMAT = "<QQIHHII"  # frame_id, frame_seq, size, flags, codec, crc32, reserved


@dataclass(frozen=True, slots=True)
class LegacyHeader:
    """The 32-byte record header, as an object packed per frame (as SDR_OS does)."""

    frame_id: int
    frame_seq: int
    size: int
    flags: int
    codec: int
    crc32: int
    reserved: int = 0

    def pack(self) -> bytes:
        return struct.pack(
            HEADER_FORMAT, self.frame_id, self.frame_seq, self.size, self.flags, self.codec, self.crc32, self.reserved
        )


class SdrOsStyleWriter:
    """The baseline: the per-frame work of the SDR_OS Python writer of the legacy
    layout, and nothing more. Each write takes a ``threading.Lock``, computes
    ``zlib.crc32`` of the payload, builds a header object and packs it into ``bytes``,
    stores the header and then the payload into the mapping at offset 16 (one copy of
    the payload, no flush), then ``write_index`` and, last, ``sequence_number``.
    """

    def __init__(self, path: Path, length: int) -> None:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, length)
            self._mm = mmap.mmap(fd, length)
        finally:
            os.close(fd)
        self._mm[0:16] = bytes(16)
        self._lock = threading.Lock()
        self._frame_seq = 0
        self._sequence = 0

    def write(self, payload: bytes, frame_id: int, flags: int = 0, codec: int = 1) -> bool:
        total = 32 + len(payload)
        if total > len(self._mm) - 16:
            return False
        with self._lock:
            self._frame_seq += 1
            crc = zlib.crc32(payload) & 0xFFFFFFFF
            header = LegacyHeader(frame_id, self._frame_seq, len(payload), flags, codec, crc)
            self._mm[16:48] = header.pack()
            self._mm[48 : 16 + total] = payload
            struct.pack_into("<Q", self._mm, 8, total)
            self._sequence += 1
            struct.pack_into("<Q", self._mm, 0, self._sequence)
        return True

    def close(self) -> None:
        self._mm.close()


def peer_exe() -> Path:
    env = os.environ.get("SHMRING_RING_PEER")
    if env:
        return Path(env)
    cmd = ["cargo", "build", "-q", "-p", "shmring-python", "--release", "--example", "ring_peer",
           "--message-format=json"]
    out = subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "ring_peer":
            return Path(msg["executable"])
    raise RuntimeError("cargo did not report the ring_peer executable")


Sample = tuple[float, float]  # (wall ns, thread CPU ns) per write


def time_writes(write: Callable[[bytes], object], data: bytes, count: int) -> Sample:
    """Wall and thread CPU ns per write over `count` writes, after a warm-up of a tenth
    as many."""
    for _ in range(count // 10):
        write(data)
    cpu_started = time.thread_time_ns()
    started = time.perf_counter_ns()
    for _ in range(count):
        write(data)
    wall = (time.perf_counter_ns() - started) / count
    return wall, (time.thread_time_ns() - cpu_started) / count


def bench_shmring(path: Path, data: bytes, count: int, layout: str, crc: bool = True) -> Sample:
    capacity = CAPACITY if layout == "v1" else LEGACY_LEN
    with shmring.Writer(path, capacity=capacity, layout=layout, crc=crc) as writer:  # type: ignore[arg-type]
        return time_writes(writer.write, data, count)


def bench_baseline(path: Path, data: bytes, count: int) -> Sample:
    writer = SdrOsStyleWriter(path, LEGACY_LEN)
    try:
        return time_writes(lambda d: writer.write(d, 0), data, count)
    finally:
        writer.close()


def bench_lean(path: Path, data: bytes, count: int) -> Sample:
    """The tests' pure-Python legacy writer: the same bytes as the baseline with less
    Python around them (precompiled ``Struct.pack_into``, no lock, no header object)."""
    writer = LegacyWriter(str(path), LEGACY_LEN)
    try:
        return time_writes(lambda d: writer.write(d, 0), data, count)
    finally:
        writer.close()


def bench_rust(exe: Path, path: Path, size: int, count: int) -> Sample:
    out = subprocess.run(
        [str(exe), "bench", str(path), "--layout", "v1", "--capacity", str(CAPACITY),
         "--size", str(size), "--count", str(count), "--crc", "on"],
        check=True, capture_output=True, text=True,
    ).stdout
    result = json.loads(out)
    return float(result["ns_per_write"]), float(result["cpu_ns_per_write"])


def fmt(samples: list[float]) -> str:
    median = statistics.median(samples)
    unit, scale = ("µs", 1e3) if median >= 1e3 else ("ns", 1.0)
    return f"{median / scale:.2f} {unit} [{min(samples) / scale:.2f}–{max(samples) / scale:.2f}]"


COLUMNS = ("rust", "python", "python-legacy", "baseline", "lean", "python-nocrc")


def table(results: dict[str, dict[str, list[Sample]]], which: int) -> None:
    """Prints one Markdown table: `which` 0 = wall time, 1 = thread CPU time."""
    print("| payload | Rust `RingWriter::write` (v1) | Python `Writer.write` (v1) | Python / Rust "
          "| Python `Writer.write` (legacy) | SDR_OS-style pure Python (legacy) "
          "| baseline / `Writer.write` (v1) | baseline / `Writer.write` (legacy) "
          "| lean pure Python (legacy) | Python `Writer.write` (v1, CRC off) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, rows in results.items():
        cells = {k: [sample[which] for sample in rows[k]] for k in COLUMNS}
        rust, py, legacy, base = (statistics.median(cells[k]) for k in COLUMNS[:4])
        print(f"| {label} | {fmt(cells['rust'])} | {fmt(cells['python'])} | {py / rust:.2f}x "
              f"| {fmt(cells['python-legacy'])} | {fmt(cells['baseline'])} | {base / py:.1f}x | {base / legacy:.1f}x "
              f"| {fmt(cells['lean'])} | {fmt(cells['python-nocrc'])} |")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    exe = peer_exe()
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    workdir = Path(tempfile.mkdtemp(prefix="shmring-bench-", dir=base))
    results: dict[str, dict[str, list[Sample]]] = {}
    load_before = os.getloadavg()
    try:
        for label, (size, count) in SIZES.items():
            data = os.urandom(size)
            rows = results.setdefault(label, {})
            for run in range(args.repeat):
                path = workdir / f"ring-{size}-{run}"
                rows.setdefault("rust", []).append(bench_rust(exe, path.with_suffix(".rs"), size, count))
                rows.setdefault("python", []).append(bench_shmring(path.with_suffix(".v1"), data, count, "v1"))
                rows.setdefault("python-legacy", []).append(
                    bench_shmring(path.with_suffix(".legacy"), data, count, "legacy")
                )
                rows.setdefault("baseline", []).append(bench_baseline(path.with_suffix(".sdr"), data, count))
                rows.setdefault("lean", []).append(bench_lean(path.with_suffix(".lean"), data, count))
                rows.setdefault("python-nocrc", []).append(
                    bench_shmring(path.with_suffix(".nocrc"), data, count, "v1", crc=False)
                )
    finally:
        shutil.rmtree(workdir)
    load_after = os.getloadavg()

    print(f"{args.repeat} runs each; median per write [fastest–slowest run]; "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after\n")
    print("Wall time:\n")
    table(results, 0)
    print("\nThread CPU time:\n")
    table(results, 1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
