"""Issue 7: scale-out through NATS, with real processes on loopback.

A producer writes a ring; transport-server A reads it and publishes every frame to NATS
(`--publish`); transport-servers B and C serve the stream from NATS (`--source`), C
joining late (it starts from the keyframe JetStream keeps). NATS is a 3-node cluster with
JetStream (per-node store dirs) and max_payload 2 KB, so keyframes (~5 KB) travel in
chunks. A and B are given only the first node's URL (they learn the others from it).
Mid-stream that node is killed: WebSocket clients
on B and C must still get the stream in order, starting at a keyframe, every frame
intact (size, CRC), with the losses bounded and counted on /metrics.
"""
import asyncio
import json
import os
import re
import signal
import socket
import time
import urllib.request

import nats
from websockets.asyncio.client import connect

from conftest import SERVER, Proc, check_gated, free_port, parse_video, run

SUBJECT = "video.scaleout"
FPS = 30
# Most frames a subscribing server may lose when a NATS node dies: async-nats notices
# and reconnects within a second or two; 5 s of video is a generous bound.
MAX_LOST = 5 * FPS


def distinct_ports(n):
    """n free loopback ports, all different (held open together while chosen)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class NatsCluster:
    """Three nats-server nodes with routes and JetStream, each with its own store dir."""

    def __init__(self, tmp):
        self.tmp = tmp
        ports = distinct_ports(9)
        self.nodes = [{"name": f"n{i}", "port": ports[3 * i], "route": ports[3 * i + 1],
                       "http": ports[3 * i + 2], "proc": None} for i in range(3)]

    def urls(self):
        return ",".join(f"nats://127.0.0.1:{n['port']}" for n in self.nodes)

    def start(self):
        routes = ", ".join(f"nats-route://127.0.0.1:{n['route']}" for n in self.nodes)
        for n in self.nodes:
            store = self.tmp / f"js-{n['name']}"
            store.mkdir()
            conf = self.tmp / f"{n['name']}.conf"
            conf.write_text(f"""
server_name: {n['name']}
listen: 127.0.0.1:{n['port']}
http: 127.0.0.1:{n['http']}
max_payload: 2048
jetstream {{ store_dir: "{store}" }}
cluster {{
  name: shmring-test
  listen: 127.0.0.1:{n['route']}
  routes: [{routes}]
}}
""")
            n["proc"] = Proc(["nats-server", "-c", conf], self.tmp / f"{n['name']}.log")
        deadline = time.time() + 30
        for n in self.nodes:
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{n['http']}/healthz", timeout=2) as r:
                        if json.loads(r.read()).get("status") == "ok":
                            break
                except OSError:
                    pass
                assert n["proc"].alive(), (self.tmp / f"{n['name']}.log").read_text()[-2000:]
                assert time.time() < deadline, f"JetStream cluster not ready: {n['name']}"
                time.sleep(0.2)

    def node_of(self, client_name):
        """The node a client with this connection name is connected to."""
        for n in self.nodes:
            if n["proc"] is None:
                continue
            with urllib.request.urlopen(f"http://127.0.0.1:{n['http']}/connz", timeout=2) as r:
                conns = json.loads(r.read()).get("connections") or []
            if any(c.get("name") == client_name for c in conns):
                return n
        return None

    def connections(self, node, client_name):
        with urllib.request.urlopen(f"http://127.0.0.1:{node['http']}/connz", timeout=2) as r:
            conns = json.loads(r.read()).get("connections") or []
        return sum(1 for c in conns if c.get("name") == client_name)

    def kill(self, node):
        node["proc"].kill(signal.SIGKILL)
        node["proc"] = None

    def stop(self):
        for n in self.nodes:
            if n["proc"]:
                n["proc"].kill()


class Server:
    """A transport-server on its own port (a NATS-sourced one needs no ring)."""

    def __init__(self, tmp, name, *args):
        self.port = free_port()
        self.log = tmp / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SDR_")}
        env["RUST_LOG"] = "info"
        self.proc = Proc([SERVER, "--listen", f"127.0.0.1:{self.port}", *args], self.log, env=env)
        deadline = time.time() + 10
        while True:
            try:
                self.http("/health")
                return
            except OSError:
                assert self.proc.alive(), self.log.read_text()[-3000:]
                assert time.time() < deadline, f"{name} did not answer /health"
                time.sleep(0.05)

    def url(self):
        return f"ws://127.0.0.1:{self.port}/stream/ws"

    def http(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
            return r.read().decode()

    def metric(self, name):
        for line in self.http("/metrics").splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        raise KeyError(name)

    def text(self):
        return self.log.read_text()


async def collect(url, stop, out, first_at=None):
    """Appends (frame, receive time) for every video frame until `stop` is set."""
    async with connect(url, max_size=None, open_timeout=10) as ws:
        while not stop.is_set():
            try:
                msg = await asyncio.wait_for(ws.recv(), 0.2)
            except asyncio.TimeoutError:
                continue
            if msg[0] == 1:
                out.append((parse_video(msg), time.time()))
                if first_at is not None and len(out) == 1:
                    first_at.append(time.time())
            elif msg[0] == 4:
                raise AssertionError("server sent a command message")


def missing(frames):
    return sum(b["seq"] - a["seq"] - 1 for a, b in zip(frames, frames[1:]))


def test_three_servers_through_a_nats_cluster_survive_a_node_kill(stack, tmp_path):
    cluster = NatsCluster(tmp_path)
    cluster.start()
    servers = []
    try:
        stack.start_producer(fps=FPS)
        # A and B know only the first node (they learn the others from it); C knows all.
        seed = cluster.urls().split(",")[0]
        stack.start_server("--publish", f"{seed}/{SUBJECT}", "--keyframe-replicas", "3")
        source = f"{cluster.urls()}/{SUBJECT}"
        b = Server(tmp_path, "server-b", "--source", f"{seed}/{SUBJECT}")
        servers.append(b)

        async def main():
            stop = asyncio.Event()
            direct, via_b, via_c, c_first = [], [], [], []
            tasks = [asyncio.create_task(collect(stack.url(), stop, direct)),
                     asyncio.create_task(collect(b.url(), stop, via_b))]
            await asyncio.sleep(3)
            # Keyframe requests flow upstream: a viewer on B asks, A hears it over NATS.
            async with connect(b.url(), max_size=None) as ws:
                await ws.send(b'\x04{"action":"request_idr","cmd_seq":1,"data":{}}')
                await asyncio.sleep(0.5)
            # Malformed messages on the stream's subject are dropped and counted.
            nc = await nats.connect(cluster.urls().split(",")[0])
            await nc.publish(SUBJECT, b"short")
            await nc.publish(SUBJECT, b"x" * 100, headers={"Shmring-Chunk": "nonsense"})
            await nc.flush()
            await nc.close()
            # C joins late: its first client gets a picture at once.
            c = Server(tmp_path, "server-c", "--source", source)
            servers.append(c)
            connect_at = time.time()
            # The instant picture from the stored keyframe is for clients that ask for the burst.
            tasks.append(asyncio.create_task(collect(c.url() + "?burst=gop", stop, via_c, c_first)))
            await asyncio.sleep(3)
            # Kill the node the publisher and B are connected to, mid-stream.
            node = cluster.node_of(f"transport-server publish {SUBJECT}")
            assert node is cluster.nodes[0], "the publisher is not on the node it was given"
            kill_seq = direct[-1][0]["seq"]
            sources_on_node = cluster.connections(node, f"transport-server source {SUBJECT}")
            cluster.kill(node)
            await asyncio.sleep(8)
            stop.set()
            await asyncio.gather(*tasks)
            return direct, via_b, via_c, c_first[0] - connect_at, kill_seq, c, sources_on_node

        direct, via_b, via_c, c_wait, kill_seq, c, sources_on_node = run(main(), timeout=90)
        a = stack
        for name, got in (("A (ring)", direct), ("B (NATS)", via_b), ("C (NATS, late)", via_c)):
            frames = [f for f, _ in got]
            check_gated(frames)  # starts at a keyframe, in order, every gap resumes at a keyframe
            assert frames[-1]["seq"] > kill_seq + 3 * FPS, f"{name}: the stream did not resume after the node kill"
        assert missing([f for f, _ in direct]) == 0, "the ring-reading server lost frames"

        # Everyone connected to the killed node noticed, and reconnected (the streams resumed).
        assert a.metric("shmring_ws_nats_disconnects_total") >= 1
        assert b.metric("shmring_ws_nats_disconnects_total") >= 1
        assert (b.metric("shmring_ws_nats_disconnects_total")
                + c.metric("shmring_ws_nats_disconnects_total")) >= sources_on_node

        # Chunking happened (keyframes > max_payload), and JetStream stored keyframes.
        assert a.metric("shmring_ws_nats_chunks_published_total") > a.metric("shmring_ws_nats_frames_published_total") > 0
        assert a.metric("shmring_ws_nats_keyframes_stored_total") >= 1
        assert a.metric("shmring_ws_nats_idr_requests_received_total") >= 1
        assert b.metric("shmring_ws_nats_idr_requests_sent_total") >= 1

        # C started from the stored keyframe, at once.
        assert c.metric("shmring_ws_nats_keyframes_fetched_total") == 1, c.text()[-3000:]
        m = re.search(r"started from the stored keyframe (\d+)", c.text())
        assert m, c.text()[-3000:]
        assert c_wait < 1.0, f"C's first client waited {c_wait:.2f} s for a picture"

        for name, srv, got in (("B", b, via_b), ("C", c, via_c)):
            frames = [f for f, _ in got]
            lost = srv.metric("shmring_ws_nats_frames_lost_total")
            print(f"{name}: {len(frames)} frames, {missing(frames)} missing, lost {lost:.0f}, "
                  f"disconnects {srv.metric('shmring_ws_nats_disconnects_total'):.0f}, "
                  f"stale {srv.metric('shmring_ws_nats_stale_total'):.0f}")
            assert lost <= MAX_LOST, f"{lost} frames lost"
            if name == "C" and frames[0]["seq"] == int(m.group(1)):
                frames = frames[1:]  # the gap after the stored keyframe is a join, not a loss
            skipped = (srv.metric('shmring_ws_dropped_total{reason="awaiting_keyframe"}')
                       + srv.metric('shmring_ws_dropped_total{reason="queue_overflow"}'))
            # Every frame a client missed is accounted for on /metrics.
            assert missing(frames) <= lost + skipped, (missing(frames), lost, skipped)
            assert srv.proc.alive()
        # B was subscribed when two malformed messages came: dropped, counted, logged.
        assert b.metric("shmring_ws_nats_malformed_total") >= 2
        assert "dropped a NATS video message" in b.text()
        assert stack.server.alive()
    finally:
        for s in servers:
            s.proc.kill()
        cluster.stop()
