#!/usr/bin/env python3
"""Prints each ring measurement of `cargo bench --bench ring_throughput` as a ratio to
the memcpy of the same size measured in the same run (criterion's mean estimates)."""
import json
import pathlib
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
print(f"{'frame':>8} {'memcpy':>10} {'write':>10} {'w+r':>10} {'w+r crc':>10} {'write/memcpy':>13} {'w+r/memcpy':>11} {'crc/memcpy':>11}")
for size in (64, 4096, 65536, 1048576):
    def mean(name):
        est = root / f"frame_{size}" / name / str(size) / "new" / "estimates.json"
        return json.loads(est.read_text())["mean"]["point_estimate"]
    try:
        m, w, wr, crc = mean("memcpy"), mean("write"), mean("write_read"), mean("write_read_crc")
    except FileNotFoundError as e:
        sys.exit(f"missing criterion results: {e.filename}")
    fmt = lambda ns: f"{ns/1000:.2f} us" if ns >= 1000 else f"{ns:.0f} ns"
    print(f"{size:>8} {fmt(m):>10} {fmt(w):>10} {fmt(wr):>10} {fmt(crc):>10} {w/m:>13.2f} {wr/m:>11.2f} {crc/m:>11.2f}")
