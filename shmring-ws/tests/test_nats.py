"""Issue 5, test 4: telemetry relay and command round trip against a real nats-server,
which is down when the transport server starts and is killed and restarted mid-test."""
import asyncio
import json
import struct
import time

import nats
from websockets.asyncio.client import connect

from conftest import Proc, free_port, run, parse_video


class NatsServer:
    def __init__(self, tmp, port):
        self.tmp, self.port, self.proc = tmp, port, None

    def start(self):
        self.proc = Proc(["nats-server", "-a", "127.0.0.1", "-p", self.port], self.tmp / "nats.log")
        deadline = time.time() + 10
        while True:
            try:
                import socket
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert time.time() < deadline, "nats-server did not start"
                time.sleep(0.05)

    def kill(self):
        if self.proc:
            self.proc.kill()
            self.proc = None

    @property
    def url(self):
        return f"nats://127.0.0.1:{self.port}"


async def recv_telemetry(ws, subject, timeout):
    """Waits for a 0x02 message with `subject`; returns its payload (None on timeout)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            msg = await asyncio.wait_for(ws.recv(), max(0.05, deadline - time.time()))
        except asyncio.TimeoutError:
            return None
        if msg[0] == 2:
            n = struct.unpack_from("<H", msg, 1)[0]
            if msg[3:3 + n].decode() == subject:
                return bytes(msg[3 + n:])
        elif msg[0] == 1:
            parse_video(msg)
    return None


async def round_trip(ws, nc, tag, timeout=2.0):
    """Telemetry NATS -> client and a command client -> NATS; True if both arrived."""
    got = asyncio.get_running_loop().create_future()

    async def on_cmd(m):
        if not got.done():
            got.set_result((m.subject, m.data))

    sub = await nc.subscribe("command.genesis.>", cb=on_cmd)
    await nc.flush()
    payload = json.dumps({"tag": tag}).encode()
    await nc.publish("telemetry.imu", payload)
    await nc.flush()
    telemetry = await recv_telemetry(ws, "telemetry.imu", timeout)
    cmd = json.dumps({"action": "set_speed", "cmd_seq": tag, "data": {"v": 1.5}}).encode()
    await ws.send(b"\x04" + cmd)
    try:
        subject, data = await asyncio.wait_for(got, timeout)
    except asyncio.TimeoutError:
        subject = data = None
    await sub.unsubscribe()
    ok = telemetry == payload and subject == "command.genesis.set_speed" and data == cmd
    return ok


async def until_round_trip(ws, nats_url, tag, within):
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            nc = await nats.connect(nats_url, connect_timeout=2, max_reconnect_attempts=0)
        except Exception:
            await asyncio.sleep(0.2)
            continue
        try:
            if await round_trip(ws, nc, tag):
                return True
        finally:
            await nc.close()
    return False


def test_telemetry_and_commands_survive_a_nats_restart(stack, tmp_path):
    nats_port = free_port()
    nats_url = f"nats://127.0.0.1:{nats_port}"
    ns = NatsServer(tmp_path, nats_port)
    stack.start_producer()
    # NATS is down when the server starts: it must serve video anyway.
    stack.start_server("--telemetry-subjects", "telemetry.>,status.*", "--telemetry-max-size", "1024",
                       env={"SDR_NATS_URL": nats_url})
    try:
        async def main():
            async with connect(stack.url(), max_size=None) as ws:
                for _ in range(10):
                    msg = await asyncio.wait_for(ws.recv(), 10)
                    assert msg[0] == 1
                assert stack.health()["nats"] != "connected"
                ns.start()
                assert await until_round_trip(ws, nats_url, 1, within=30), "no round trip after NATS came up"
                assert stack.health()["nats"] == "connected"

                nc = await nats.connect(nats_url)
                # Not in the allowlist, and over the size cap: neither is relayed.
                await nc.publish("secret.thing", b"{}")
                await nc.publish("telemetry.big", b"x" * 2000)
                await nc.publish("status.ok", b"{}")
                # A keyframe request from a viewer goes out on control.request_idr.
                idr = await nc.subscribe("control.request_idr")
                await nc.flush()
                await asyncio.sleep(0.6)  # past the 500 ms coalescing window
                await ws.send(b'\x04{"action":"request_idr","cmd_seq":2,"data":{}}')
                m = await idr.next_msg(timeout=5)
                assert json.loads(m.data)["source"] == "transport-server"
                seen = []
                deadline = time.time() + 2
                while time.time() < deadline:
                    try:
                        msg = await asyncio.wait_for(ws.recv(), 0.2)
                    except asyncio.TimeoutError:
                        continue
                    if msg[0] == 2:
                        n = struct.unpack_from("<H", msg, 1)[0]
                        seen.append(msg[3:3 + n].decode())
                assert "status.ok" in seen
                assert "secret.thing" not in seen and "telemetry.big" not in seen
                await nc.close()

                # Kill NATS mid-stream; video keeps flowing; after a restart both work again.
                ns.kill()
                for _ in range(30):
                    msg = await asyncio.wait_for(ws.recv(), 10)
                await ws.send(b'\x04{"action":"set_speed","cmd_seq":3,"data":{}}')  # NATS down: dropped/queued
                await asyncio.sleep(1)
                ns.start()
                assert await until_round_trip(ws, nats_url, 4, within=30), "no round trip after the NATS restart"
                assert stack.server.alive()

        run(main(), timeout=120)
        assert stack.metric('shmring_ws_dropped_total{reason="telemetry"}') >= 1
        assert stack.metric("shmring_ws_commands_published_total") >= 2
        log = stack.server_log()
        assert "NATS disconnected" in log and log.count("NATS connected") >= 2
    finally:
        ns.kill()
