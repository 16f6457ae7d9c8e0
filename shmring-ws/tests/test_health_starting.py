"""/health while a simulator is re-run on an existing ring (Genesis: the new writer opens
the ring, then builds its scene for tens of seconds before its first frame). The ring
still holds the previous run's frames; /health must say `starting`, not `stale`, until
the new writer's first frame, and `ok` after it. It used to say `stale`. Real processes:
the h264_replay producer (twice) and transport-server."""
import time

from conftest import REPLAY, Proc


def wait_for(pred, timeout=30, what="condition"):
    deadline = time.time() + timeout
    while not pred():
        assert time.time() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)


def test_health_says_starting_while_a_reopened_ring_waits_for_its_first_frame(stack, tmp_path):
    first = stack.start_producer("--frames", "60")
    stack.start_server()
    wait_for(lambda: not first.alive(), what="the first run (60 frames) to end")
    assert stack.health()["frames_read"] > 0, "the server read the first run's frames"
    wait_for(lambda: stack.health()["status"] == "writer_down", what="writer_down after the first run")

    # The re-run: opens the same ring (a new writer epoch) and waits for `go`.
    go = tmp_path / "go"
    second = Proc([REPLAY, stack.ring, stack.h264, "--fps", 30, "--wait-for", go], tmp_path / "second.log")
    stack.procs.append(second)
    wait_for(lambda: (tmp_path / "second.log").read_text().startswith("ready"), what="the re-run to open the ring")

    seen = []

    def starting():
        h = stack.health()
        seen.append(h["status"])
        return h["status"] == "starting"

    # `ok` is allowed while the first run's newest frame is still fresh; `stale` never.
    try:
        wait_for(starting, timeout=60, what="/health 'starting' for the reopened ring")
    except AssertionError as e:
        raise AssertionError(f"{e} (statuses seen: {sorted(set(seen))})") from None
    assert "stale" not in seen, seen
    assert stack.health()["writer_alive"] is True

    go.touch()
    read_before = stack.health()["frames_read"]
    wait_for(lambda: stack.health()["status"] == "ok" and stack.health()["frames_read"] > read_before,
             what="ok once the re-run writes")
