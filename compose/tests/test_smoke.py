"""The deployment's real stack without Docker: nats-server with compose/nats.conf,
transport-server with its built-in test-pattern source (libx264), Caddy with
compose/Caddyfile and Prometheus with compose/prometheus.yml, all Debian packages on
loopback ports, addresses overridden the way each config file documents (environment for
Caddy, flags and the JetStream directory for NATS, the scrape targets for Prometheus).

Checks what a user of the compose stack relies on: video reaches a WebSocket client
through Caddy, telemetry and commands cross NATS through Caddy, /health passes through,
/metrics does not, the viewer page is served, Prometheus scrapes the transport server,
and every series the Grafana dashboard plots is exported.

transport-server comes from $SHMRING_BIN_DIR (default target/release).
"""
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

import nats
import pytest
import yaml
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose"
BIN_DIR = Path(os.environ.get("SHMRING_BIN_DIR", ROOT / "target" / "release"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout, what, proc=None):
    deadline = time.time() + timeout
    while True:
        try:
            if pred():
                return
        except (OSError, ValueError, KeyError):
            pass
        if proc is not None:
            assert proc.alive(), f"{proc.name} exited while waiting for {what}:\n{proc.log_tail()}"
        assert time.time() < deadline, f"timed out after {timeout} s waiting for {what}" + (
            f"\n{proc.name} log:\n{proc.log_tail()}" if proc else "")
        time.sleep(0.1)


def http_get(url, timeout=5):
    """(status, body) of a GET; HTTP errors are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Proc:
    """A child process with its output in a log file; stopped by pid when the stack stops."""

    def __init__(self, name, args, log_dir, env=None):
        exe = shutil.which(str(args[0]))
        assert exe, f"{args[0]} is not installed (scripts/setup installs it)"
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.log = open(self.log_path, "wb")
        self.p = subprocess.Popen([exe, *map(str, args[1:])], stdout=self.log, stderr=subprocess.STDOUT,
                                  env=env, cwd=log_dir)

    def alive(self):
        return self.p.poll() is None

    def log_tail(self):
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self):
        if self.alive():
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stack")
    ports = {k: free_port() for k in ("nats", "nats_http", "transport", "caddy", "caddy_admin", "prometheus")}
    procs = []
    base_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp),
                "XDG_DATA_HOME": str(tmp / "xdg-data"), "XDG_CONFIG_HOME": str(tmp / "xdg-config")}
    try:
        # NATS: the project's config with the listen addresses overridden by flags, and the
        # JetStream store (a flag cannot override one set in the file) in a scratch directory.
        nats_conf, n = re.subn(r"^(\s*store_dir:).*$", rf"\1 {tmp / 'jetstream'}",
                               (COMPOSE / "nats.conf").read_text(), flags=re.M)
        assert n == 1, "nats.conf should set jetstream store_dir once"
        (tmp / "nats.conf").write_text(nats_conf)
        nats_proc = Proc("nats", ["nats-server", "-c", tmp / "nats.conf", "-a", "127.0.0.1",
                                  "-p", ports["nats"], "-m", ports["nats_http"]], tmp, base_env)
        procs.append(nats_proc)
        wait_for(lambda: http_get(f"http://127.0.0.1:{ports['nats_http']}/healthz?js-enabled-only=true")[0] == 200,
                 15, "nats-server /healthz (JetStream enabled)", nats_proc)

        # The transport server, configured through the SDR_* environment as in compose.
        server_bin = BIN_DIR / "transport-server"
        assert server_bin.is_file(), f"{server_bin} missing: cargo build --release -p transport-server"
        server_env = dict(base_env, RUST_LOG="info", SDR_LISTEN_ADDR=f"127.0.0.1:{ports['transport']}",
                          SDR_NATS_URL=f"nats://127.0.0.1:{ports['nats']}", SDR_TELEMETRY_SUBJECTS="telemetry.>")
        ring = Path("/dev/shm") / f"shmring-smoke-{os.getpid()}"
        server = Proc("transport-server", [server_bin, "--demo", "--shm-path", ring], tmp, server_env)
        procs.append(server)
        health = f"http://127.0.0.1:{ports['transport']}/health"
        wait_for(lambda: json.loads(http_get(health)[1])["status"] == "ok", 30, "transport-server status ok",
                 server)

        # Caddy: the project's Caddyfile, addresses from the environment.
        caddy_env = dict(base_env, SHMRING_HTTP_ADDRESS=f"http://127.0.0.1:{ports['caddy']}",
                         SHMRING_TRANSPORT_UPSTREAM=f"127.0.0.1:{ports['transport']}",
                         SHMRING_CADDY_ADMIN=f"127.0.0.1:{ports['caddy_admin']}",
                         SHMRING_NODE_UPSTREAM="127.0.0.1:9", SHMRING_GRAFANA_UPSTREAM="127.0.0.1:9",
                         SHMRING_ROSBRIDGE_UPSTREAM="127.0.0.1:9")
        caddy = Proc("caddy", ["caddy", "run", "--config", COMPOSE / "Caddyfile", "--adapter", "caddyfile"],
                     tmp, caddy_env)
        procs.append(caddy)
        wait_for(lambda: http_get(f"http://127.0.0.1:{ports['caddy']}/health")[0] == 200, 15, "Caddy /health",
                 caddy)

        # Prometheus: the project's config with the transport-server target on loopback.
        prom_cfg = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
        jobs = {j["job_name"]: j for j in prom_cfg["scrape_configs"]}
        jobs["transport-server"]["static_configs"][0]["targets"] = [f"127.0.0.1:{ports['transport']}"]
        jobs["prometheus"]["static_configs"][0]["targets"] = [f"127.0.0.1:{ports['prometheus']}"]
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(prom_cfg))
        prom = Proc("prometheus", ["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
                                   f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
                                   f"--storage.tsdb.path={tmp / 'tsdb'}"], tmp, base_env)
        procs.append(prom)
        wait_for(lambda: http_get(f"http://127.0.0.1:{ports['prometheus']}/-/ready")[0] == 200, 30,
                 "Prometheus ready", prom)

        yield {"ports": ports, "procs": {p.name: p for p in procs}}
    finally:
        for p in reversed(procs):
            p.stop()
        Path(f"/dev/shm/shmring-smoke-{os.getpid()}").unlink(missing_ok=True)


def caddy_url(stack, path, scheme="http"):
    return f"{scheme}://127.0.0.1:{stack['ports']['caddy']}{path}"


def parse_video(msg):
    assert len(msg) >= 33 and msg[0] == 0x01, f"not a video message: {bytes(msg[:8])!r}"
    frame_id, frame_seq, size, flags, codec, crc = struct.unpack_from("<QQIHHI", msg, 1)
    payload = bytes(msg[33:])
    assert size == len(payload), f"header says {size} bytes, message carries {len(payload)}"
    assert crc == 0 or zlib.crc32(payload) == crc, f"CRC mismatch on frame {frame_seq}"
    return {"seq": frame_seq, "key": bool(flags & 0x01), "codec": codec, "payload": payload}


def test_video_through_caddy(stack):
    """A WebSocket client connected to Caddy receives a decodable H.264 stream."""

    async def main():
        frames = []
        async with connect(caddy_url(stack, "/stream/ws", "ws"), max_size=None, open_timeout=10) as ws:
            while len(frames) < 45:
                msg = await asyncio.wait_for(ws.recv(), 10)
                if msg[0] == 0x01:
                    frames.append(parse_video(msg))
        return frames

    frames = asyncio.run(asyncio.wait_for(main(), 60))
    assert frames[0]["key"], "the first frame a client gets is not a keyframe"
    assert all(f["codec"] == 1 for f in frames), "codec is not H.264"
    seqs = [f["seq"] for f in frames]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"frames lost or reordered: {seqs}"
    # Annex B access units; the keyframe carries SPS (NAL type 7) and an IDR slice (5).
    key = frames[0]["payload"]
    assert key.startswith(b"\x00\x00\x00\x01") or key.startswith(b"\x00\x00\x01")
    nal_types = {m[0] & 0x1F for m in re.findall(rb"\x00\x00\x01(.)", key, re.S)}
    assert {5, 7} <= nal_types, f"keyframe NAL types {sorted(nal_types)}"


def test_telemetry_and_commands_cross_nats_through_caddy(stack):
    """NATS telemetry.> reaches the browser (0x02); a browser command (0x04) reaches NATS."""
    nats_url = f"nats://127.0.0.1:{stack['ports']['nats']}"

    async def main():
        nc = await nats.connect(nats_url, connect_timeout=5)
        got = asyncio.get_running_loop().create_future()

        async def on_cmd(m):
            # The server asks the sim for a keyframe when a client connects (as SDR_OS's
            # does): not the browser's command.
            if m.subject == "command.genesis.force_idr":
                return
            if not got.done():
                got.set_result((m.subject, m.data))

        await nc.subscribe("command.genesis.>", cb=on_cmd)
        await nc.flush()
        async with connect(caddy_url(stack, "/stream/ws", "ws"), max_size=None, open_timeout=10) as ws:
            telemetry = None
            deadline = time.time() + 15
            while telemetry is None and time.time() < deadline:
                await nc.publish("telemetry.smoke", b'{"ok":1}')
                await nc.flush()
                end = time.time() + 0.5
                while time.time() < end:
                    try:
                        msg = await asyncio.wait_for(ws.recv(), 0.5)
                    except asyncio.TimeoutError:
                        break
                    if msg[0] == 0x02:
                        n = struct.unpack_from("<H", msg, 1)[0]
                        telemetry = (bytes(msg[3:3 + n]).decode(), bytes(msg[3 + n:]))
                        break
            command = json.dumps({"action": "smoke_test", "cmd_seq": 1, "data": {}}).encode()
            await ws.send(b"\x04" + command)
            subject, data = await asyncio.wait_for(got, 10)
        await nc.close()
        return telemetry, subject, data, command

    telemetry, subject, data, command = asyncio.run(asyncio.wait_for(main(), 60))
    assert telemetry == ("telemetry.smoke", b'{"ok":1}'), f"telemetry through Caddy: {telemetry}"
    assert subject == "command.genesis.smoke_test" and data == command


def test_health_viewer_and_metrics_routes(stack):
    status, body = http_get(caddy_url(stack, "/health"))
    assert status == 200
    health = json.loads(body)
    assert health["status"] == "ok" and health["writer_alive"] is True, health
    assert health["nats"] == "connected", health
    status, body = http_get(caddy_url(stack, "/"))
    assert status == 200 and "<html" in body.lower() and "/stream/ws" in body, "viewer page not served"
    status, _ = http_get(caddy_url(stack, "/metrics"))
    assert status == 404, "Caddy must not expose /metrics publicly"
    status, _ = http_get(caddy_url(stack, "/api/status"))
    assert status == 502, "a missing upstream (node) must fail with 502, not serve something else"


def test_prometheus_scrapes_transport_server(stack):
    base = f"http://127.0.0.1:{stack['ports']['prometheus']}"

    def target_up():
        data = json.loads(http_get(f"{base}/api/v1/targets?state=active")[1])["data"]["activeTargets"]
        ours = [t for t in data if t["labels"]["job"] == "transport-server"]
        assert len(ours) <= 1, ours
        return bool(ours) and ours[0]["health"] == "up"

    wait_for(target_up, 30, "Prometheus to report the transport-server target up", stack["procs"]["prometheus"])
    q = urllib.parse.quote('up{job="transport-server"}')
    result = json.loads(http_get(f"{base}/api/v1/query?query={q}")[1])["data"]["result"]
    assert [r["value"][1] for r in result] == ["1"], result
    assert result[0]["metric"]["stack"] == "shmring", "the static label from prometheus.yml is missing"

    # Frames are counted: the scraped counter grows.
    q = urllib.parse.quote('shmring_ws_frames_read_total{job="transport-server"}')

    def frames_read():
        r = json.loads(http_get(f"{base}/api/v1/query?query={q}")[1])["data"]["result"]
        return float(r[0]["value"][1]) if r else 0.0

    wait_for(lambda: frames_read() > 0, 20, "a scraped shmring_ws_frames_read_total > 0")


def test_dashboard_series_are_exported(stack):
    """Every metric the Grafana dashboard plots exists in the running server's /metrics."""
    _, text = http_get(f"http://127.0.0.1:{stack['ports']['transport']}/metrics")
    exported = set(re.findall(r"^(\w+)(?:\{[^}]*\})? ", text, re.M))
    dash = json.loads((COMPOSE / "grafana/dashboards/transport-server.json").read_text())
    used = {m for p in dash["panels"] for t in p["targets"] for m in re.findall(r"shmring_ws_\w+", t["expr"])}
    assert used, "the dashboard plots nothing"
    missing = used - exported
    assert not missing, f"the dashboard plots series the server does not export: {sorted(missing)}"
