"""The SIGBUS truncation guard in a Python process: a ring file truncated under its mapping
raises RingDamagedError instead of killing the interpreter, with Python's faulthandler
enabled before or after the ring was opened, and SHMRING_NO_SIGBUS_GUARD=1 turns the
guard off. Each case runs in its own interpreter (signal dispositions are per process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

# Opens a writer, enables faulthandler before or after (argv[2]), truncates the ring file
# and writes: the write touches pages the file no longer has.
SCRIPT = """
import faulthandler, os, sys
import shmring
path, when = sys.argv[1], sys.argv[2]
if when == "before":
    faulthandler.enable()
w = shmring.Writer(path, capacity=65536)
w.write(b"first", keyframe=True)
if when == "after":
    faulthandler.enable()
os.truncate(path, 100)
try:
    w.write(b"x" * 3000, keyframe=True)
    print("no error")
except shmring.RingDamagedError as e:
    print("damaged:", e)
print("alive")
"""


def _run(ring_path: Path, when: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(ring_path), when],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_faulthandler_enabled_after_a_ring_does_not_turn_a_truncation_into_a_crash(ring_path: Path) -> None:
    # faulthandler restores the guard's handler and re-raises without a fault address;
    # the guard used to pass that to the default action (killed by SIGBUS).
    proc = _run(ring_path, "after")
    assert proc.returncode == 0, f"status {proc.returncode}, stderr:\n{proc.stderr}"
    assert "damaged:" in proc.stdout and "truncated" in proc.stdout, proc.stdout
    assert "alive" in proc.stdout
    # faulthandler did see the fault first and said so.
    assert "Bus error" in proc.stderr, proc.stderr


def test_faulthandler_enabled_before_a_ring_is_chained(ring_path: Path) -> None:
    proc = _run(ring_path, "before")
    assert proc.returncode == 0, f"status {proc.returncode}, stderr:\n{proc.stderr}"
    assert "damaged:" in proc.stdout and "alive" in proc.stdout, proc.stdout
    assert "Bus error" not in proc.stderr, proc.stderr


def test_the_guard_can_be_turned_off(ring_path: Path) -> None:
    proc = _run(ring_path, "never", {"SHMRING_NO_SIGBUS_GUARD": "1"})
    assert proc.returncode == -signal.SIGBUS, f"status {proc.returncode}, stdout {proc.stdout!r}"
    assert "alive" not in proc.stdout
