"""Fixtures: ring paths, and separate writer/reader processes (the Rust `ring_peer`
example and the pure-Python legacy peer) driven over their stdin/stdout."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent.parent
LEGACY_PY = TESTS / "legacy_py.py"


@pytest.fixture
def ring_path(tmp_path: Path) -> Path:
    """A path for a ring file that does not exist yet."""
    return tmp_path / "rings" / "ring"


def _build_peer() -> Path:
    cmd = [
        "cargo", "build", "-q", "-p", "shmring-python", "--release",
        "--example", "ring_peer", "--message-format=json",
    ]
    out = subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        message = json.loads(line)
        if message.get("reason") == "compiler-artifact" and message["target"]["name"] == "ring_peer":
            return Path(message["executable"])
    raise RuntimeError("cargo did not report the ring_peer executable")


def _build_cli() -> Path:
    cmd = ["cargo", "build", "-q", "-p", "shmring-cli", "--bin", "shmring", "--message-format=json"]
    out = subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        message = json.loads(line)
        if message.get("reason") == "compiler-artifact" and message["target"]["name"] == "shmring":
            return Path(message["executable"])
    raise RuntimeError("cargo did not report the shmring executable")


@pytest.fixture(scope="session")
def shmring_cli() -> Path:
    """The `shmring` command-line tool: `$SHMRING_CLI` if set, else built here."""
    env = os.environ.get("SHMRING_CLI")
    return Path(env) if env else _build_cli()


@pytest.fixture(scope="session")
def peer_exe() -> Path:
    """The Rust peer: `$SHMRING_RING_PEER` if set (scripts/test.d/20-python.sh sets it),
    else built here with cargo."""
    env = os.environ.get("SHMRING_RING_PEER")
    return Path(env) if env else _build_peer()


class Peer:
    """A child process that speaks in lines: send() writes one to its stdin, line()
    waits (with a timeout) for the next line of its stdout."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def line(self, timeout: float = 20.0) -> str:
        try:
            got = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"peer {self.proc.args!r} said nothing for {timeout} s") from None
        if got is None:
            raise AssertionError(f"peer {self.proc.args!r} exited: {self.stderr()}")
        return got

    def expect(self, want: str) -> None:
        got = self.line()
        assert got == want, f"peer said {got!r}, expected {want!r}; stderr: {self.stderr()}"

    def send(self, text: str = "") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def wait(self, timeout: float = 20.0) -> int:
        return self.proc.wait(timeout=timeout)

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "(still running)"
        return self.proc.stderr.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def spawn() -> Iterator[Callable[..., Peer]]:
    """Starts peers and kills any still running at the end of the test."""
    peers: list[Peer] = []

    def start(*argv: str | Path) -> Peer:
        peer = Peer([str(a) for a in argv])
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        peer.kill()


@pytest.fixture
def python_exe() -> str:
    return sys.executable
