"""Write cost from Python: ``shmring.Writer.write`` against the same writes from Rust
(``ring_peer bench``, shmring-core directly) and against the pure-Python mmap + struct +
zlib writer of the legacy layout that producers use today. CRC on everywhere except the
last column (shmring with CRC off, for context).

    python benches/python_write.py [--repeat 3]

Needs the package installed (``pip install ./shmring-python``) and cargo (it builds the
Rust peer, or takes ``$SHMRING_RING_PEER``). Prints a Markdown table: the median time
per write over the repeats, with the fastest and slowest repeat in brackets.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import shmring

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "shmring-python" / "tests"))
from legacy_py import LegacyWriter  # noqa: E402

CAPACITY = 64 << 20  # v1 frame region: max frame 32 MiB, so 1 MiB frames fit 64 to a lap
LEGACY_LEN = 4 << 20  # the SDR_OS writer's default file length
SIZES = {"1 KiB": (1024, 200_000), "1 MiB": (1 << 20, 2_000)}  # bytes, writes per run


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


def time_writes(write: Callable[[bytes], object], data: bytes, count: int) -> float:
    """ns per write over `count` writes, after a warm-up of a tenth as many."""
    for _ in range(count // 10):
        write(data)
    started = time.perf_counter_ns()
    for _ in range(count):
        write(data)
    return (time.perf_counter_ns() - started) / count


def bench_shmring(path: Path, data: bytes, count: int, layout: str, crc: bool = True) -> float:
    capacity = CAPACITY if layout == "ring" else LEGACY_LEN
    with shmring.Writer(path, capacity=capacity, layout=layout, crc=crc) as writer:  # type: ignore[arg-type]
        return time_writes(writer.write, data, count)


def bench_pure_python(path: Path, data: bytes, count: int) -> float:
    writer = LegacyWriter(str(path), LEGACY_LEN)
    try:
        return time_writes(lambda d: writer.write(d, 0), data, count)
    finally:
        writer.close()


def bench_rust(exe: Path, path: Path, size: int, count: int) -> float:
    out = subprocess.run(
        [str(exe), "bench", str(path), "--layout", "ring", "--capacity", str(CAPACITY),
         "--size", str(size), "--count", str(count), "--crc", "on"],
        check=True, capture_output=True, text=True,
    ).stdout
    return float(json.loads(out)["ns_per_write"])


def fmt(samples: list[float]) -> str:
    median = statistics.median(samples)
    unit, scale = ("µs", 1e3) if median >= 1e3 else ("ns", 1.0)
    return f"{median / scale:.2f} {unit} [{min(samples) / scale:.2f}–{max(samples) / scale:.2f}]"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    exe = peer_exe()
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    workdir = Path(tempfile.mkdtemp(prefix="shmring-bench-", dir=base))
    results: dict[str, dict[str, list[float]]] = {}
    try:
        for label, (size, count) in SIZES.items():
            data = os.urandom(size)
            rows = results.setdefault(label, {})
            for run in range(args.repeat):
                path = workdir / f"ring-{size}-{run}"
                rows.setdefault("rust", []).append(bench_rust(exe, path.with_suffix(".rs"), size, count))
                rows.setdefault("python", []).append(bench_shmring(path.with_suffix(".v1"), data, count, "ring"))
                rows.setdefault("python-legacy", []).append(
                    bench_shmring(path.with_suffix(".legacy"), data, count, "legacy")
                )
                rows.setdefault("pure", []).append(bench_pure_python(path.with_suffix(".pure"), data, count))
                rows.setdefault("python-nocrc", []).append(
                    bench_shmring(path.with_suffix(".nocrc"), data, count, "ring", crc=False)
                )
    finally:
        shutil.rmtree(workdir)

    print(f"{args.repeat} runs each; median per write [fastest–slowest run]\n")
    print("| payload | Rust `RingWriter::write` (v1) | Python `Writer.write` (v1) | Python / Rust "
          "| Python `Writer.write` (legacy) | pure Python mmap+struct (legacy) | pure Python / `Writer.write` (v1) "
          "| Python `Writer.write` (v1, CRC off) |")
    print("|---|---|---|---|---|---|---|---|")
    for label, rows in results.items():
        rust, py, legacy, pure = (statistics.median(rows[k]) for k in ("rust", "python", "python-legacy", "pure"))
        print(f"| {label} | {fmt(rows['rust'])} | {fmt(rows['python'])} | {py / rust:.2f}x "
              f"| {fmt(rows['python-legacy'])} | {fmt(rows['pure'])} | {pure / py:.1f}x "
              f"| {fmt(rows['python-nocrc'])} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
