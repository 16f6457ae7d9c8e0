"""Blocking reads: the GIL is released while waiting, a write wakes the reader, and
Ctrl-C (SIGINT) interrupts the wait (how fast is measured by benchmarks, not here)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import shmring


def test_other_threads_run_while_a_read_blocks(ring_path: Path) -> None:
    writer = shmring.Writer(ring_path)
    reader = shmring.Reader(ring_path, start="next")
    stamps: list[float] = []  # when the counter thread made progress
    stop = threading.Event()

    def count() -> None:
        ticks = 0
        while not stop.is_set():
            ticks += 1
            if ticks % 1000 == 0:
                stamps.append(time.monotonic())

    counter = threading.Thread(target=count)
    counter.start()
    time.sleep(0.05)  # let the counter get going
    started = time.monotonic()
    assert reader.read(timeout=0.6) is None
    ended = time.monotonic()
    stop.set()
    counter.join()
    assert ended - started >= 0.55
    # Progress stamped well inside the read's window can only happen if the read let
    # go of the GIL (with it held, the counter is frozen until the read returns).
    inside = [t for t in stamps if started + 0.1 <= t <= ended - 0.1]
    assert len(inside) > 10, f"the counter thread progressed {len(inside)} times during the read"
    writer.close()
    reader.close()


def test_a_write_from_another_thread_wakes_a_blocked_read(ring_path: Path) -> None:
    writer = shmring.Writer(ring_path)
    reader = shmring.Reader(ring_path, start="next")

    def write_later() -> None:
        time.sleep(0.2)
        writer.write(b"wake up")

    thread = threading.Thread(target=write_later)
    thread.start()
    started = time.monotonic()
    frame = reader.read(timeout=10)
    waited = time.monotonic() - started
    thread.join()
    assert frame is not None and frame.payload == b"wake up"
    assert 0.15 <= waited < 5.0
    writer.close()
    reader.close()


CHILD = textwrap.dedent(
    """
    import signal, sys, shmring
    # Started from a background job (CI runners, nohup), this process inherits SIGINT
    # ignored, and Python then installs no KeyboardInterrupt handler: set the disposition
    # this test is about.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    writer = shmring.Writer(sys.argv[1])
    reader = shmring.Reader(sys.argv[1], start="next")
    print("blocking", flush=True)
    try:
        reader.read()          # no timeout: only a signal ends this
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    """
)


def _wait_until_sleeping(pid: int, what: str, seconds: float = 30.0) -> None:
    """Waits until the process's only thread sleeps in the kernel (state S)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "S":
            return
        time.sleep(0.01)
    raise AssertionError(f"{what} within {seconds:.0f} s")


def test_ctrl_c_interrupts_a_blocking_read(ring_path: Path) -> None:
    ring_path.parent.mkdir(parents=True)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(ring_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "blocking", child.stderr.read() if child.stderr else ""
        # After "blocking" the child's next (and only) wait is the read.
        _wait_until_sleeping(child.pid, "the child did not block in read()")
        child.send_signal(signal.SIGINT)
        try:
            out, err = child.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError("the blocking read did not notice Ctrl-C within 30 s") from None
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err
    assert out.strip() == "interrupted", (out, err)


def test_close_from_another_thread_wakes_a_blocked_read(ring_path: Path) -> None:
    writer = shmring.Writer(ring_path)
    reader = shmring.Reader(ring_path, start="next")
    outcome: list[object] = []

    def read_forever() -> None:
        try:
            outcome.append(reader.read())
        except shmring.ClosedError as e:
            outcome.append(e)
        outcome.append(time.monotonic())

    thread = threading.Thread(target=read_forever)
    thread.start()
    time.sleep(0.2)
    # While one thread reads, others get a clear error instead of a second read...
    try:
        reader.read(timeout=0)
        raise AssertionError("a second concurrent read must be refused")
    except shmring.ShmringError as e:
        assert "in use by another thread" in str(e)
    # ...but can look at the stats, and close the reader.
    assert reader.stats.delivered == 0
    closed_at = time.monotonic()
    reader.close()
    assert reader.closed
    thread.join(timeout=5)
    assert not thread.is_alive()
    error, woke_at = outcome
    assert isinstance(error, shmring.ClosedError)
    assert isinstance(woke_at, float) and woke_at - closed_at < 0.5
    writer.close()


def test_iteration_ends_when_another_thread_closes_the_reader(ring_path: Path) -> None:
    writer = shmring.Writer(ring_path)
    reader = shmring.Reader(ring_path, start="next")
    got: list[bytes] = []

    def consume() -> None:
        for frame in reader:
            got.append(frame.payload)

    thread = threading.Thread(target=consume)
    thread.start()
    writer.write(b"one")
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    reader.close()
    thread.join(timeout=5)
    assert not thread.is_alive() and got == [b"one"]
    writer.close()


def test_threads_can_share_a_writer(ring_path: Path) -> None:
    per_thread, threads = 20, 4
    writer = shmring.Writer(ring_path, capacity=1 << 26)
    reader = shmring.Reader(ring_path, start="next")
    seqs: list[int] = []
    lock = threading.Lock()

    def produce(tag: int) -> None:
        frame = bytes([tag]) * (256 * 1024)  # large enough that write() releases the GIL
        for _ in range(per_thread):
            seq = writer.write(frame)
            with lock:
                seqs.append(seq)

    workers = [threading.Thread(target=produce, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(seqs) == list(range(1, per_thread * threads + 1))
    frames = list(iter(lambda: reader.read(timeout=0), None))
    assert [f.frame_seq for f in frames] == sorted(seqs)
    for f in frames:  # never a mix of two threads' payloads
        assert f.payload == f.payload[:1] * len(f.payload)
    writer.close()
    reader.close()
