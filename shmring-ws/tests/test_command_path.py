"""The command path from socket to NATS (issue 18): safety commands have their own lane,
nothing stale leaves the server, and the gate is closed until the video is proven fresh.
Real nats-server, the emulated SDR_OS sim (a separate process), the real server; every
verdict is on what was published on NATS."""
import asyncio
import json
import os
import signal
import time

from websockets.asyncio.client import connect

from test_drop_in import NatsLog, command, sdr, wait_for  # noqa: F401 (sdr: the fixture)

HOLD_S = 1.0  # the gate's default HOLD


def run_named(coro, timeout, name):
    """Runs `coro`; fails naming `name` if it takes longer than `timeout` seconds."""
    async def bounded():
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                return await coro
        except TimeoutError:
            # Only this deadline is the whole test's time-out; an inner wait that timed
            # out keeps its own traceback.
            if deadline.expired():
                raise AssertionError(f"{name}: not finished within {timeout} s") from None
            raise
    return asyncio.run(bounded())


async def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.05)


async def drain(ws):
    """Reads (and drops) what the server sends, so the client keeps up."""
    try:
        async for _ in ws:
            pass
    except Exception:
        pass


def motion(who, seq):
    body = {"action": "set_cmd_vel", "cmd_seq": seq, "data": {"linear_x": 0.5, "linear_y": 0, "angular_z": 0,
                                                              "who": who, "sent": time.monotonic()}}
    return b"\x04" + json.dumps(body).encode()


def test_estops_pass_an_even_flood_of_clients_each_under_its_limit(sdr):
    """Defect 2: 30 control clients, each under the per-client limit (150 commands/s,
    4,500/s together against the global budget of 500/s), flood evenly; another control
    client sends three estops 50 ms apart. All three reach NATS (before the fix, the
    spent budget refused one to three of them)."""
    sdr.start()
    wait_for(lambda: sdr.health()["frames_read"] > 10, what="frames")

    async def main():
        log = NatsLog()
        await log.start(sdr.nats.url, "command.genesis.estop", "command.genesis.set_cmd_vel")
        stop = asyncio.Event()

        period = 1 / 150
        t0 = time.monotonic() + 1.0

        async def flooder(k):
            """150 commands a second, each client at its own phase: together an even
            stream, not bursts with gaps in which the budget refills."""
            async with connect(sdr.url(), max_size=None, max_queue=4) as ws:
                # Not reading the video: the test's own event loop stays free to keep
                # the stream even (the server skips a client that does not read).
                seq = 0
                next_at = t0 + k * period / 30
                while not stop.is_set():
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    seq += 1
                    await ws.send(motion(f"flood{k}", seq))
                    # Behind schedule: go on from now (no burst to catch up).
                    next_at = max(next_at + period, time.monotonic())

        flood = [asyncio.create_task(flooder(k)) for k in range(30)]
        async with connect(sdr.url(), max_size=None) as op:
            reader = asyncio.create_task(drain(op))
            budget_refused = 'shmring_ws_commands_refused_total{reason="budget"}'
            # The flood has spent the budget's one-second burst and is being refused.
            await wait_until(lambda: sdr_metric(sdr, budget_refused) > 200, 30, "the flood to spend the budget")
            refused_before = sdr_metric(sdr, budget_refused)
            for i in range(3):
                await op.send(command("estop", {"who": "operator", "n": i}))
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            refused = sdr_metric(sdr, budget_refused) - refused_before
            stop.set()
            await asyncio.gather(*flood)

            def estops():
                return sorted(m["data"]["data"]["n"] for m in log.of(
                    "command.genesis.estop", lambda d: isinstance(d, dict) and d.get("data", {}).get("who") == "operator"))
            try:
                await wait_until(lambda: estops() == [0, 1, 2], 10, "the three estops on NATS")
            finally:
                print(f"flood: {refused} commands refused by the budget while the estops were sent; "
                      f"estops published: {estops()}")
            reader.cancel()
        await log.nc.drain()
        return refused

    refused = run_named(main(), 90, "test_estops_pass_an_even_flood_of_clients_each_under_its_limit")
    assert refused > 100, "the flood did not spend the global budget: the test proved nothing"


def sdr_metric(stack, name):
    import urllib.request
    with urllib.request.urlopen(stack.base() + "/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
    raise AssertionError(f"metric {name} not found")


def test_a_nats_stall_releases_no_backlog_of_stale_motion(sdr):
    """Defect 3: nats-server stopped (SIGSTOP) for about five seconds; the video stops
    2.5 s into that; an operator sends motion at 30 Hz throughout. After SIGCONT, at most
    one motion command per action is released from before the stall (the one in flight,
    accepted on fresh video), none follows the gate's zero velocity, and none accepted
    on stale video is ever published (before the fix, hundreds were released)."""
    sdr.start()
    wait_for(lambda: sdr.health()["frames_read"] > 10, what="frames")
    nats_proc = sdr.nats.proc.p

    async def main():
        log = NatsLog()
        await log.start(sdr.nats.url, "command.genesis.>", "telemetry.safety.video_gate")
        stop = asyncio.Event()
        async with connect(sdr.url(), max_size=None) as ws:
            reader = asyncio.create_task(drain(ws))

            async def driver():
                seq = 0
                while not stop.is_set():
                    seq += 1
                    await ws.send(motion("op", seq))
                    await asyncio.sleep(1 / 30)

            drive = asyncio.create_task(driver())
            await wait_until(lambda: len(log.of("command.genesis.set_cmd_vel")) > 10, 20, "motion on NATS")
            t_stop = time.monotonic()
            nats_proc.send_signal(signal.SIGSTOP)
            try:
                await asyncio.sleep(2.5)
                sdr.sim.send("pause")
                t_pause = sdr.sim.wait_event("paused")["t"]
                await asyncio.sleep(2.5)
            finally:
                nats_proc.send_signal(signal.SIGCONT)
            t_cont = time.monotonic()
            # Whatever the server handed to NATS before, and its zero velocity, arrives now.
            await wait_until(lambda: log.of("command.genesis.set_cmd_vel", lambda d: d.get("_safety") == "hold"),
                             20, "the gate's zero velocity on NATS")
            # A safety command sent now goes out ahead of any motion still waiting; wait
            # for it and a moment more, so anything released late is seen.
            await ws.send(command("estop", {"who": "op", "marker": True}))
            await wait_until(lambda: log.of("command.genesis.estop", lambda d: d.get("data", {}).get("marker")),
                             20, "the marker estop on NATS")
            await asyncio.sleep(2 * HOLD_S)
            stop.set()
            await drive
            reader.cancel()
        await log.nc.drain()
        return log, t_stop, t_pause, t_cont

    log, t_stop, t_pause, t_cont = run_named(main(), 120, "test_a_nats_stall_releases_no_backlog_of_stale_motion")
    ordered = log.msgs  # NATS keeps one publisher's order
    mine = [(i, m) for i, m in enumerate(ordered) if m["subject"] == "command.genesis.set_cmd_vel"
            and isinstance(m["data"], dict) and m["data"].get("data", {}).get("who") == "op"]
    hold_at = next(i for i, m in enumerate(ordered) if m["subject"] == "command.genesis.set_cmd_vel"
                   and m["data"].get("_safety") == "hold")
    released = [m for _, m in mine if m["t"] > t_cont - 0.05]
    late = [m for _, m in mine if m["t"] > t_pause + 2.0]
    print(f"stall: {len(mine)} motion commands published, {len(released)} released after the stall, "
          f"{len(late)} arrived more than 2 s after the video stopped")
    assert len(released) <= 1, f"{len(released)} stale motion commands released after the stall"
    assert not [i for i, _ in mine if i > hold_at], "motion published after the gate's zero velocity"
    # Every motion published was accepted while the video was fresh (it stopped at t_pause).
    stale = [m for _, m in mine if m["data"]["data"]["sent"] > t_pause + HOLD_S + 0.5]
    assert not stale, f"{len(stale)} motion commands accepted on stale video were published"


def test_a_server_started_on_a_dead_writers_ring_holds_motion_until_a_live_writer(sdr):
    """Defect 4: the writer wrote frames and died; a server started on its ring forwards
    no motion (and publishes the hold) while only the dead writer's frames are there;
    once a live writer writes, motion passes (before the fix, about a second of motion
    went out on the dead writer's picture)."""
    sdr.start(start_server=False)
    sdr.sim.wait_event("idr")
    wait_for(lambda: sdr.shm_path.exists() and sdr.shm_path.stat().st_size > 0, what="the ring")
    time.sleep(0.5)
    sdr.sim.stop()
    sdr.start_server()

    async def main():
        log = NatsLog()
        await log.start(sdr.nats.url, "command.genesis.>")
        async with connect(sdr.url(), max_size=None) as ws:
            reader = asyncio.create_task(drain(ws))
            seq = 0
            t_end = time.monotonic() + 2.5
            while time.monotonic() < t_end:
                seq += 1
                await ws.send(motion("op", seq))
                await asyncio.sleep(1 / 30)
            await wait_until(lambda: log.of("command.genesis.set_cmd_vel", lambda d: d.get("_safety") == "hold"),
                             10, "the hold on NATS")
            dead = list(log.of("command.genesis.set_cmd_vel", lambda d: d.get("data", {}).get("who") == "op"))
            # A live writer on the same ring: motion passes again.
            from test_drop_in import Sim
            sdr.sim = Sim(sdr.tmp, sdr.shm_path, sdr.nats.url)
            passed = asyncio.Event()

            async def drive():
                n = seq
                while not passed.is_set():
                    n += 1
                    await ws.send(motion("op", n))
                    await asyncio.sleep(1 / 30)

            driver = asyncio.create_task(drive())
            try:
                await wait_until(lambda: log.of("command.genesis.set_cmd_vel",
                                                lambda d: d.get("data", {}).get("who") == "op"),
                                 20, "motion on NATS once a live writer writes")
            finally:
                passed.set()
                await driver
            reader.cancel()
        await log.nc.drain()
        return dead

    dead = run_named(main(), 90, "test_a_server_started_on_a_dead_writers_ring_holds_motion_until_a_live_writer")
    assert not dead, f"{len(dead)} motion commands went out on a dead writer's picture"


def test_a_source_server_holds_motion_while_it_has_only_a_stored_keyframe(stack, tmp_path, request):
    """Defect 4 on the scale-out path: a `--source` server starts from the keyframe that
    JetStream kept for a stream whose producer has since stopped. That keyframe shows a
    picture but proves nothing about its age: motion is held, the hold is published, and
    no motion reaches NATS (before the fix the stored keyframe counted as fresh video)."""
    from conftest import SERVER, Proc, free_port
    nats_port = free_port()
    nats_url = f"nats://127.0.0.1:{nats_port}"
    nats_proc = Proc(["nats-server", "-a", "127.0.0.1", "-p", str(nats_port), "-js", "-sd", str(tmp_path / "js")],
                     tmp_path / "nats.log")
    request.addfinalizer(nats_proc.kill)
    subject = f"{nats_url}/video.stored"
    stack.start_producer(fps=30)
    stack.start_server("--publish", subject)
    wait_for(lambda: stack.metric("shmring_ws_nats_keyframes_stored_total") >= 1, what="a stored keyframe")
    stack.stop()  # the producer and the publishing server are gone; the keyframe stays in JetStream

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDR_")}
    source = Proc([SERVER, "--listen", f"127.0.0.1:{port}", "--source", subject, "--nats-url", nats_url],
                  tmp_path / "source.log", env=env)

    async def main():
        log = NatsLog()
        await log.start(nats_url, "command.genesis.set_cmd_vel")
        deadline = time.monotonic() + 20
        while True:
            try:
                # ?burst=gop: the stored keyframe from the GOP cache, whether it came before
                # or after this client joined (else a client that joins after it waits
                # for the next keyframe, and no producer is left to make one).
                ws = await connect(f"ws://127.0.0.1:{port}/stream/ws?burst=gop", max_size=None, open_timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline, "the source server never accepted"
                await asyncio.sleep(0.05)
        async with ws:
            while True:  # the stored keyframe: the client has a picture
                msg = await asyncio.wait_for(ws.recv(), 20)
                if msg[0] == 1:
                    break
            reader = asyncio.create_task(drain(ws))
            for seq in range(1, 61):
                await ws.send(motion("op", seq))
                await asyncio.sleep(1 / 30)
            await wait_until(lambda: log.of("command.genesis.set_cmd_vel", lambda d: d.get("_safety") == "hold"),
                             10, "the hold on NATS")
            reader.cancel()
        await log.nc.drain()
        return list(log.of("command.genesis.set_cmd_vel", lambda d: d.get("data", {}).get("who") == "op"))

    try:
        published = run_named(main(), 90, "test_a_source_server_holds_motion_while_it_has_only_a_stored_keyframe")
    finally:
        source.kill()
    assert not published, f"{len(published)} motion commands went out on a stored keyframe of unknown age"
