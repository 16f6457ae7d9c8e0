"""The trust boundary (issue 14): who may watch, who may command, and limits a client
cannot get around. Real processes: the producer, transport-server, a real nats-server,
WebSocket clients (Python, the official Foxglove client in Node, headless Chromium)."""
import asyncio
import base64
import json
import os
import resource
import signal
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import nats
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conftest import SERVER, Proc, free_port, parse_video, run
from test_nats import NatsServer
from test_transport_server import masked_frame, raw_ws_connect, wait_for, ws_frames

VIEW = "view-token-5d2c9a7e31f04b68"
CONTROL = "control-token-8e1f3b6c0a9d4275"
BROWSER_DIR = Path(__file__).resolve().parent / "browser"
FOXGLOVE = "foxglove.websocket.v1"


def http_status(url, headers=None):
    """(status, body) of a GET, whatever the status."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


async def refused_status(url, **kw):
    """The HTTP status a refused handshake got (None if it was accepted)."""
    try:
        async with connect(url, max_size=None, open_timeout=10, **kw):
            return None
    except InvalidStatus as e:
        return e.response.status_code


async def first_video(ws, n=1):
    frames = []
    while len(frames) < n:
        msg = await asyncio.wait_for(ws.recv(), 20)
        if msg[0] == 1:
            frames.append(parse_video(msg))
    return frames


class Commands:
    """Collects what arrives on command.genesis.> on the real nats-server."""

    def __init__(self, nats_url):
        self.url, self.got = nats_url, []

    async def __aenter__(self):
        self.nc = await nats.connect(self.url)

        async def on(m):
            self.got.append((m.subject, json.loads(m.data)))

        await self.nc.subscribe("command.genesis.>", cb=on)
        await self.nc.flush()
        return self

    async def __aexit__(self, *exc):
        await self.nc.close()

    def tags(self):
        return [c.get("cmd_seq") for _, c in self.got]


def command(action, tag):
    return b"\x04" + json.dumps({"action": action, "cmd_seq": tag, "data": {}}).encode()


@pytest.fixture
def nats_server(tmp_path):
    port = free_port()
    ns = NatsServer(tmp_path, port)
    ns.start()
    yield f"nats://127.0.0.1:{port}"
    ns.kill()


def test_with_tokens_nothing_without_one_view_cannot_command_control_can(stack, nats_server):
    """Defect 1: tokens configured -> no video, no command, no /metrics without one; a
    view token watches but cannot command; a control token commands. Each place a client
    can put a token works; /health stays open."""
    stack.start_producer()
    stack.start_server("--view-token", VIEW, env={"SDR_NATS_URL": nats_server, "SDR_CONTROL_TOKEN": CONTROL})
    wait_for(lambda: stack.health()["frames_read"] > 0, what="first frame")
    base = f"http://127.0.0.1:{stack.port}"

    async def main():
        async with Commands(nats_server) as cmds:
            assert await refused_status(stack.url()) == 401, "video without a token"
            assert await refused_status(stack.url() + "?token=wrong-token-0123456789") == 401
            # view, as a Bearer header: video yes, commands no (the connection stays).
            async with connect(stack.url(), max_size=None, additional_headers={"Authorization": f"Bearer {VIEW}"}) as ws:
                await first_video(ws, 5)
                await ws.send(command("set_cmd_vel", 1))
                await first_video(ws, 5)
            # control, as a subprotocol entry (what a browser can send): commands go out.
            async with connect(stack.url(), max_size=None, subprotocols=["shmring.v1", f"shmring.token.{CONTROL}"]) as ws:
                assert ws.subprotocol == "shmring.v1", "the answer names an offered protocol, not the token"
                await first_video(ws, 1)
                await ws.send(command("set_cmd_vel", 2))
                await asyncio.to_thread(wait_for, lambda: 2 in cmds.tags(), 10, "the control command on NATS")
            # control, in the URL: commands go out too.
            async with connect(stack.url() + f"?token={CONTROL}", max_size=None) as ws:
                await first_video(ws, 1)  # a client with no picture may not drive
                await ws.send(command("set_cmd_vel", 3))
                await asyncio.to_thread(wait_for, lambda: 3 in cmds.tags(), 10, "the URL-token command on NATS")
            await asyncio.sleep(0.5)
            return cmds.tags()

    tags = run(main())
    assert 1 not in tags, "a view token commanded the simulator"
    assert stack.metric('shmring_ws_commands_refused_total{reason="role"}', token=VIEW) >= 1
    assert http_status(base + "/health")[0] == 200, "/health is for healthchecks: always open"
    assert http_status(base + "/metrics")[0] == 401
    assert http_status(base + "/metrics", {"Authorization": f"Bearer {VIEW}"})[0] == 200
    assert http_status(base + "/")[0] == 200, "the viewer page asks for the token itself"
    assert stack.metric('shmring_ws_refused_total{reason="token"}', token=VIEW) >= 2


def test_tokens_file_is_reloaded_for_rotation(stack, tmp_path):
    """A token removed from the tokens file stops working without a restart; the new one
    works."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# operators\ncontrol {CONTROL}\n")
    stack.start_producer()
    stack.start_server("--tokens-file", tokens)

    async def main():
        async with connect(stack.url(), max_size=None, additional_headers={"Authorization": f"Bearer {CONTROL}"}) as ws:
            await first_video(ws, 1)
        new = "rotated-control-token-77c1e0a4"
        tokens.write_text(f"control {new}\n")
        assert await refused_status(stack.url(), additional_headers={"Authorization": f"Bearer {CONTROL}"}) == 401
        async with connect(stack.url(), max_size=None, additional_headers={"Authorization": f"Bearer {new}"}) as ws:
            await first_video(ws, 1)

    run(main())


def test_cross_origin_command_refused_same_origin_published(stack, nats_server):
    """Defect 1 (cross-site WebSocket hijacking): a page of another site cannot open the
    socket, so cannot command; the server's own page (Origin = Host) and an allow-listed
    origin can, and their commands reach the real nats-server."""
    stack.start_producer()
    stack.start_server(env={"SDR_NATS_URL": nats_server})
    own = f"http://127.0.0.1:{stack.port}"

    async def main():
        async with Commands(nats_server) as cmds:
            assert await refused_status(stack.url(), origin="https://evil.example.com") == 403
            assert await refused_status(stack.url(), origin="null") == 403
            async with connect(stack.url(), max_size=None, origin=own) as ws:
                await first_video(ws, 1)  # a client with no picture may not drive
                await ws.send(command("set_cmd_vel", 10))
                await asyncio.to_thread(wait_for, lambda: 10 in cmds.tags(), 10, "the same-origin command")
            # A program (no Origin) may still watch and, without tokens, command.
            async with connect(stack.url(), max_size=None) as ws:
                await first_video(ws, 1)

    run(main())
    assert stack.metric('shmring_ws_refused_total{reason="origin"}') == 2, "cross-site attempts are counted"


def test_allowed_origins_admit_a_development_proxy(stack, nats_server):
    """SDR_OS's development UI on another port (a proxy that rewrites Host) is admitted
    with one setting, SDR_ALLOWED_ORIGINS; other ports of the same host are not."""
    stack.start_producer()
    stack.start_server(env={"SDR_NATS_URL": nats_server, "SDR_ALLOWED_ORIGINS": "http://localhost:3000"})

    async def main():
        async with Commands(nats_server) as cmds:
            assert await refused_status(stack.url(), origin="http://localhost:3001") == 403
            async with connect(stack.url(), max_size=None, origin="http://localhost:3000") as ws:
                await first_video(ws, 1)  # a client with no picture may not drive
                await ws.send(command("set_cmd_vel", 11))
                await asyncio.to_thread(wait_for, lambda: 11 in cmds.tags(), 10, "the allowed origin's command")

    run(main())


def test_global_command_budget_caps_all_clients_together(stack, nats_server):
    """Defect 1: besides each client's own limit, all clients together publish at most
    the global budget (here 20 commands a second, with a one-second burst). Safety
    commands (estop) are outside the budget: every one is published."""
    stack.start_producer()
    stack.start_server("--max-commands-per-sec", "20", env={"SDR_NATS_URL": nats_server})

    async def main():
        async with Commands(nats_server) as cmds:
            async def client(k):
                async with connect(stack.url(), max_size=None) as ws:
                    await first_video(ws, 1)  # a client with no picture may not drive
                    start.set()
                    for i in range(30):
                        await ws.send(command("set_cmd_vel", k * 100 + i))
                    await ws.send(command("estop", -1 - k))
                    await asyncio.sleep(1)

            start = asyncio.Event()
            clients = [asyncio.create_task(client(k)) for k in range(5)]
            await start.wait()
            t0 = time.monotonic()
            await asyncio.gather(*clients)
            elapsed = time.monotonic() - t0
            await asyncio.to_thread(wait_for, lambda: len([c for s, c in cmds.got if s.endswith(".estop")]) == 5,
                                    10, "the five estops on NATS")
            motion = [c for s, c in cmds.got if s.endswith(".set_cmd_vel")]
            return len(motion), elapsed

    published, elapsed = run(main())
    # 150 motion commands sent within `elapsed` seconds: at most the burst plus what the
    # budget refilled was taken from it; the rest was refused.
    allowed = 20 + 20 * elapsed + 1
    assert published <= allowed, f"{published} commands published in {elapsed:.1f} s"
    assert stack.metric('shmring_ws_commands_refused_total{reason="budget"}') >= 150 - allowed


def test_empty_continuation_frames_are_counted_and_a_flood_is_closed(stack):
    """Defect 2: empty continuation frames count as frames; a flood of them is closed
    (1008) like any other flood."""
    stack.start_producer()
    stack.start_server("--max-messages-per-sec", "100")
    s, data = raw_ws_connect(stack.port)
    try:
        # Start a fragmented binary message, then continuation frames with no payload.
        empty = b"\x00\x80" + os.urandom(4)  # FIN=0, continuation, masked, no payload
        first = masked_frame(0x02, b"\x04")
        s.sendall(bytes([first[0] & 0x7F]) + first[1:])  # the same binary frame with FIN=0
        s.settimeout(0.2)
        closes = []
        deadline = time.time() + 20
        while not closes and time.time() < deadline:
            try:
                s.sendall(empty * 2000)
            except OSError:
                pass
            try:
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                data += chunk
            except socket.timeout:
                pass
            frames, _ = ws_frames(data)
            closes = [p for op, p in frames if op == 8]
        assert closes, "the flood of empty continuation frames was never closed"
        assert struct.unpack(">H", closes[0][:2])[0] == 1008 and b"flood" in closes[0][2:]
    finally:
        s.close()


def test_idle_foxglove_sockets_cannot_hold_the_client_slots(stack):
    """Defect 3: Foxglove clients that never subscribe nor answer pings are closed after
    the ping deadline, so they cannot lock new viewers out."""
    stack.start_producer()
    stack.start_server("--max-clients", "5", "--ping-interval-ms", "300")
    idle = []
    try:
        for _ in range(5):
            s = socket.create_connection(("127.0.0.1", stack.port), timeout=10)
            key = base64.b64encode(os.urandom(16)).decode()
            s.sendall((f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{stack.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                       f"Sec-WebSocket-Protocol: {FOXGLOVE}\r\n\r\n").encode())
            assert s.recv(12).startswith(b"HTTP/1.1 101")
            idle.append(s)  # never reads again, never answers a ping
        wait_for(lambda: stack.metric("shmring_ws_clients") == 5, what="5 idle clients")

        async def newcomer():
            deadline = time.time() + 20
            while time.time() < deadline:
                try:
                    async with connect(stack.url("/"), subprotocols=[FOXGLOVE], open_timeout=5) as ws:
                        json.loads(await asyncio.wait_for(ws.recv(), 5))
                        return True
                except InvalidStatus as e:
                    assert e.response.status_code == 503
                    await asyncio.sleep(0.2)
            return False

        assert run(newcomer()), "idle Foxglove sockets kept every new client out"
    finally:
        for s in idle:
            s.close()


def test_foxglove_advertise_of_many_subjects_is_split_never_dropped(stack, nats_server):
    """Defect 4: with ~600 telemetry subjects the advertise is sent in several messages;
    a new Foxglove client sees every channel, the video channel included."""
    stack.start_producer()
    stack.start_server(env={"SDR_NATS_URL": nats_server})
    subjects = [f"telemetry.robot{i // 50}.sensor_with_a_long_descriptive_name_{i}" for i in range(600)]

    async def main():
        wait_for(lambda: stack.health()["nats"] == "connected", what="NATS connected")
        nc = await nats.connect(nats_server)

        async def publish():
            await asyncio.sleep(1)
            for s in subjects:
                await nc.publish(s, b'{"v":1}')
            await nc.flush()

        seen, _ = await asyncio.gather(advertised(30), publish())
        await nc.close()
        return seen

    async def advertised(within):
        """The channels a new client is advertised (waiting up to `within` s for all 602:
        /video, /image and the 600 subjects)."""
        seen = {}
        async with connect(stack.url("/"), subprotocols=[FOXGLOVE], max_size=None, open_timeout=10) as ws:
            deadline = time.time() + within
            while len(seen) < 602 and time.time() < deadline:
                try:
                    msg = await asyncio.wait_for(ws.recv(), 1)
                except asyncio.TimeoutError:
                    continue
                if isinstance(msg, str):
                    m = json.loads(msg)
                    if m["op"] == "advertise":
                        seen.update({c["topic"]: c["id"] for c in m["channels"]})
        return seen

    # The server knows every subject once a first client, connected before they were
    # published, has been advertised all of them (as they arrived, one by one).
    first = run(main())
    assert len(first) == 602, f"the first client saw {len(first)} channels"
    # A client connecting now gets them all in its first advertise(s).
    seen = run(advertised(10))
    assert "/video" in seen, "the video channel was not advertised"
    assert set(subjects) <= set(seen), f"{602 - len(seen)} channels never advertised"


def test_close_handshake_is_echoed_utf8_checked_and_shutdown_says_going_away(stack):
    """Defect 5: the server answers a client's close frame (no 1006, no 10 s wait),
    closes invalid UTF-8 text with 1007, and says 1001 when it shuts down; abrupt
    resets by peers are counted apart from closes by the server."""
    stack.start_producer()
    stack.start_server()

    async def echo():
        ws = await connect(stack.url(), max_size=None, close_timeout=5)
        await first_video(ws, 1)
        await ws.close(1000, "bye")
        return ws.protocol.close_rcvd

    rcvd = run(echo())
    assert rcvd is not None and rcvd.code == 1000, f"the close was not echoed: {rcvd}"

    s, data = raw_ws_connect(stack.port)
    s.sendall(masked_frame(0x01, b"\xff\xfe not utf-8"))
    s.settimeout(5)
    try:
        while True:
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    s.close()
    closes = [p for op, p in ws_frames(data)[0] if op == 8]
    assert closes and struct.unpack(">H", closes[0][:2])[0] == 1007, f"closes: {closes}"

    before = stack.metric("shmring_ws_clients_closed_by_server_total")
    for _ in range(5):
        r, _ = raw_ws_connect(stack.port)
        r.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        r.close()
    wait_for(lambda: stack.metric("shmring_ws_clients") == 0, what="clients gone")
    wait_for(lambda: stack.metric("shmring_ws_clients_reset_by_peer_total") >= 5, what="resets counted")
    assert stack.metric("shmring_ws_clients_closed_by_server_total") == before, "peer resets counted as server closes"

    async def shutdown():
        async with connect(stack.url(), max_size=None) as ws:
            await first_video(ws, 1)
            stack.server.p.send_signal(signal.SIGTERM)
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            except ConnectionClosed as e:
                return e.rcvd

    rcvd = run(shutdown())
    assert rcvd is not None and rcvd.code == 1001, f"shutdown sent {rcvd}"


def test_keyframe_requests_are_coalesced_per_client(stack):
    """Defect 6: one client asking for a keyframe again and again gets one request to
    the producer per interval, not one per global coalescing window."""
    stack.start_producer()
    stack.start_server("--idr-coalesce-ms", "100")

    async def main():
        async with connect(stack.url(), max_size=None) as ws:
            await first_video(ws, 1)
            await asyncio.sleep(0.3)
            before = stack.metric("shmring_ws_keyframe_requests_total")
            for i in range(10):
                await ws.send(command("request_idr", i))
                await asyncio.sleep(0.15)
            return stack.metric("shmring_ws_keyframe_requests_total") - before

    forwarded = run(main())
    assert forwarded <= 2, f"one client forced {forwarded} keyframe requests in 1.5 s"


def test_sockets_in_the_http_phase_are_capped(stack):
    """Defect 6: hundreds of idle sockets that never send a request cannot keep /health
    (or anyone) out when the server has few file descriptors."""
    stack.start_producer()

    def small_fd_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    stack.server = Proc([SERVER, "--shm-path", stack.ring, "--listen", f"127.0.0.1:{stack.port}"],
                        stack.tmp / "server.log", env=dict(os.environ, RUST_LOG="info"), preexec_fn=small_fd_limit)
    stack.procs.append(stack.server)
    wait_for(lambda: _health_ok(stack), what="server up")
    idle = []
    try:
        for _ in range(400):
            idle.append(socket.create_connection(("127.0.0.1", stack.port), timeout=10))
        # The head timeout (10 s) would free them eventually; /health must not wait for it.
        t0 = time.monotonic()
        status, _ = http_status(f"http://127.0.0.1:{stack.port}/health")
        took = time.monotonic() - t0
        assert status == 200
        assert took < 5, f"/health took {took:.1f} s behind 400 idle sockets"
    finally:
        for s in idle:
            s.close()


def _health_ok(stack):
    try:
        return http_status(f"http://127.0.0.1:{stack.port}/health")[0] == 200
    except OSError:
        return False


def test_metrics_on_their_own_listen_address(stack):
    """/metrics can have its own address (for Prometheus on a private network); the main
    port then does not serve it, and /health stays open there."""
    mport = free_port()
    stack.start_producer()
    stack.start_server("--metrics-listen", f"127.0.0.1:{mport}", "--control-token", CONTROL)
    assert http_status(f"http://127.0.0.1:{stack.port}/metrics", {"Authorization": f"Bearer {CONTROL}"})[0] == 404
    status, body = http_status(f"http://127.0.0.1:{mport}/metrics")
    assert status == 200 and "shmring_ws_clients" in body
    assert http_status(f"http://127.0.0.1:{stack.port}/health")[0] == 200


def test_safe_defaults_and_a_plain_exposure_line(stack):
    """A bare run listens on 127.0.0.1; binding all interfaces says once, plainly, what is
    exposed and that commands are open."""
    out = subprocess.run([SERVER, "--help"], capture_output=True, text=True, timeout=30).stdout
    assert "[default: 127.0.0.1:8080" in out, "the default listen address is not loopback"
    stack.start_producer()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDR_")}
    stack.server = Proc([SERVER, "--shm-path", stack.ring], stack.tmp / "server.log",
                        env=dict(env, RUST_LOG="info", SDR_LISTEN_ADDR=f"0.0.0.0:{stack.port}"))
    stack.procs.append(stack.server)
    wait_for(lambda: _health_ok(stack), what="server up")
    log = stack.server_log()
    assert log.count("every network") == 1 and "send commands" in log, log


def test_official_foxglove_client_connects_with_a_token(stack):
    """The official client (@foxglove/ws-protocol from npm, over the `ws` package) with
    the token in its subprotocol list gets the video channel and messages; without the
    token it is refused."""
    stack.start_producer()
    stack.start_server("--view-token", VIEW)
    r = subprocess.run(["node", str(BROWSER_DIR / "foxglove-client.mjs"), f"ws://127.0.0.1:{stack.port}/", VIEW],
                       capture_output=True, text=True, timeout=90)
    print(r.stdout[-3000:], r.stderr[-3000:])
    assert r.returncode == 0 and "PASS:" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]


def _test_certificate(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=30)
    return cert, key


def test_viewer_over_https_in_chromium_with_a_token(stack, tmp_path):
    """TLS without Caddy: the viewer page over HTTPS (a test certificate), the token given
    once in the URL fragment; headless Chromium decodes the video over WSS."""
    cert, key = _test_certificate(tmp_path)
    stack.start_producer()
    port = stack.port
    stack.server = Proc([SERVER, "--shm-path", stack.ring, "--listen", f"127.0.0.1:{port}",
                         "--tls-cert", cert, "--tls-key", key, "--view-token", VIEW],
                        stack.tmp / "server.log", env=dict(os.environ, RUST_LOG="info"))
    stack.procs.append(stack.server)
    import ssl
    ctx = ssl.create_default_context(cafile=str(cert))

    def up():
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{port}/health", timeout=2, context=ctx) as r:
                return r.status == 200
        except OSError:
            return False

    wait_for(up, what="HTTPS /health")
    r = subprocess.run(["node", str(BROWSER_DIR / "viewer.test.mjs"), f"https://127.0.0.1:{port}/#token={VIEW}"],
                       capture_output=True, text=True, timeout=150)
    print(r.stdout[-3000:], r.stderr[-3000:])
    assert r.returncode == 0 and "PASS:" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]


def test_viewer_says_why_it_cannot_decode_outside_a_secure_context(stack):
    """Opened as http://robot:PORT/ (not a secure context: no WebCodecs), the page says
    so and how to fix it, rather than showing nothing. The machine's name `robot` is
    one the operator gave the server (SDR_ALLOWED_HOSTS)."""
    stack.start_producer()
    stack.start_server(env={"SDR_ALLOWED_HOSTS": "robot"})
    r = subprocess.run(["node", str(BROWSER_DIR / "insecure.test.mjs"), f"http://robot:{stack.port}/"],
                       capture_output=True, text=True, timeout=90)
    print(r.stdout[-3000:], r.stderr[-3000:])
    assert r.returncode == 0 and "PASS:" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
