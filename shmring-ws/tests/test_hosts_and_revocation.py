"""The trust side of the command path (issue 18): DNS rebinding, revoked tokens, the
scheme of an origin, tokens kept out of answers and logs, and the limits that keep
sockets from piling up. Real processes: the producer, transport-server, a real
nats-server, WebSocket clients on plain sockets and the websockets library."""
import asyncio
import base64
import json
import os
import resource
import socket
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conftest import SERVER, Proc, free_port, run
from test_transport_server import masked_frame, wait_for
from test_trust import CONTROL, FOXGLOVE, Commands, command, first_video, nats_server, refused_status  # noqa: F401

REBOUND = "rebind.attacker.example"
OTHER_CONTROL = "other-control-token-41d7e0c2b9a8"
DEMOTED = "demoted-control-token-93f0a1b7c6d2"


def other(tag):
    """A command the video gate does not judge (not motion): what reaches NATS then
    depends on the trust boundary alone."""
    return command("set_camera", tag)


def raw_request(port, head_lines, timeout=10):
    """Sends a request head on a plain socket; returns everything the server answered
    until it closed (or the first 64 KiB of a 101 stream)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(("\r\n".join(head_lines) + "\r\n\r\n").encode())
        data = b""
        while len(data) < 1 << 16:
            try:
                chunk = s.recv(4096)
            except socket.timeout:
                break
            if not chunk:
                break
            data += chunk
            if data.startswith(b"HTTP/1.1 101") and b"\r\n\r\n" in data:
                # Send a command through the upgraded socket: it must not reach NATS.
                s.sendall(masked_frame(0x02, other(666)))
                time.sleep(0.5)
                break
        return data


def upgrade_head(path, host, origin=None, protocols=None):
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    if origin:
        lines.append(f"Origin: {origin}")
    if protocols:
        lines.append(f"Sec-WebSocket-Protocol: {protocols}")
    return lines


def test_a_rebound_host_is_refused_before_anything_is_served(stack, nats_server):
    """Defect 1 (DNS rebinding): a page of rebind.attacker.example re-resolved to
    127.0.0.1 sends Host and Origin that agree. Its WebSocket upgrades (SDR and
    Foxglove) and its HTTP requests are refused with 421 naming the setting; nothing it
    sends reaches NATS. The healthcheck (HEAD, Host localhost:PORT) still gets 200."""
    stack.start_producer()
    stack.start_server(env={"SDR_NATS_URL": nats_server})
    rebound = f"{REBOUND}:{stack.port}"
    origin = f"http://{rebound}"

    async def main():
        async with Commands(nats_server) as cmds:
            answers = {}
            for name, head in [
                ("ws", upgrade_head("/stream/ws", rebound, origin)),
                ("foxglove", upgrade_head("/", rebound, origin, FOXGLOVE)),
                ("page", [f"GET / HTTP/1.1", f"Host: {rebound}", f"Origin: {origin}"]),
                ("health", [f"GET /health HTTP/1.1", f"Host: {rebound}"]),
                ("metrics", [f"GET /metrics HTTP/1.1", f"Host: {rebound}"]),
            ]:
                answers[name] = await asyncio.to_thread(raw_request, stack.port, head)
            await asyncio.sleep(0.5)
            return answers, cmds.tags()

    answers, tags = run(main())
    assert 666 not in tags, "a rebound page's command reached NATS"
    for name, data in answers.items():
        assert data.startswith(b"HTTP/1.1 421"), f"{name}: {data[:200]!r}"
        assert b"SDR_ALLOWED_HOSTS" in data, f"{name}: the answer does not name the setting"
    healthcheck = raw_request(stack.port, ["HEAD /health HTTP/1.1", f"Host: localhost:{stack.port}"])
    assert healthcheck.startswith(b"HTTP/1.1 200"), healthcheck[:200]
    assert stack.metric('shmring_ws_refused_total{reason="host"}') == 5


def test_allowed_hosts_admits_a_name_and_star_turns_the_check_off(stack, nats_server):
    """A name the operator gives in SDR_ALLOWED_HOSTS (a reverse proxy's site, the
    compose service name) is served, and its same-origin page may command."""
    stack.start_producer()
    stack.start_server(env={"SDR_NATS_URL": nats_server, "SDR_ALLOWED_HOSTS": f"transport-server,{REBOUND}"})
    host = f"{REBOUND}:{stack.port}"

    async def main():
        async with Commands(nats_server) as cmds:
            data = await asyncio.to_thread(raw_request, stack.port, upgrade_head("/stream/ws", host, f"http://{host}"))
            await asyncio.to_thread(wait_for, lambda: 666 in cmds.tags(), 10, "the allowed host's command")
            return data

    assert run(main()).startswith(b"HTTP/1.1 101")
    page = raw_request(stack.port, ["GET /health HTTP/1.1", f"Host: transport-server:{stack.port}"])
    assert page.startswith(b"HTTP/1.1 200"), page[:200]


def test_star_turns_the_host_check_off(stack):
    stack.start_producer()
    stack.start_server("--allowed-hosts", "*")
    data = raw_request(stack.port, ["GET /health HTTP/1.1", f"Host: {REBOUND}:{stack.port}"])
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    assert "no DNS-rebinding guard" in stack.server_log()


def test_removed_or_demoted_token_closes_its_connections(stack, nats_server, tmp_path):
    """Defect 5: a control token removed from the tokens file (or moved to view) ends
    every connection that presented it within one reload interval; its commands stop
    reaching NATS; the other token's connection goes on; the token is nowhere in the
    close reason or the server's log."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"control {CONTROL}\ncontrol {OTHER_CONTROL}\ncontrol {DEMOTED}\n")
    stack.start_producer()
    stack.start_server("--tokens-file", tokens, env={"SDR_NATS_URL": nats_server})

    def protocols(token):
        return ["shmring.v1", f"shmring.token.{token}"]

    async def drain(ws):
        """Reads (and drops) what the server sends: a client that stops reading leaves
        the close frame unread behind its video, and sees the socket reset instead."""
        try:
            async for _ in ws:
                pass
        except ConnectionClosed:
            pass

    async def until_closed(ws, first_tag):
        """Sends a command every 50 ms until the server closes the socket."""
        tag = first_tag
        reader = asyncio.create_task(drain(ws))
        try:
            while True:
                await ws.send(other(tag))
                tag += 1
                await asyncio.sleep(0.05)
        except ConnectionClosed:
            pass
        await ws.wait_closed()
        await reader
        return ws.close_code, ws.close_reason, tag

    async def main():
        async with Commands(nats_server) as cmds:
            revoked = await connect(stack.url(), max_size=None, subprotocols=protocols(CONTROL))
            demoted = await connect(stack.url(), max_size=None, subprotocols=protocols(DEMOTED))
            remaining = await connect(stack.url(), max_size=None, subprotocols=protocols(OTHER_CONTROL))
            for ws, tag in [(revoked, 1), (demoted, 2), (remaining, 3)]:
                await first_video(ws, 1)
                await ws.send(other(tag))
            await asyncio.to_thread(wait_for, lambda: {1, 2, 3} <= set(cmds.tags()), 10, "the three commands")
            remaining_reader = asyncio.create_task(drain(remaining))
            tokens.write_text(f"control {OTHER_CONTROL}\nview {DEMOTED}\n")
            closed = await asyncio.wait_for(
                asyncio.gather(until_closed(revoked, 1000), until_closed(demoted, 2000)), 30)
            # The other connection goes on commanding.
            await remaining.send(other(4))
            await asyncio.to_thread(wait_for, lambda: 4 in cmds.tags(), 10, "the remaining token's command")
            await remaining.close()
            await remaining_reader
            status = await refused_status(stack.url(), subprotocols=protocols(CONTROL))
            async with connect(stack.url(), max_size=None, subprotocols=protocols(DEMOTED)) as ws:
                await first_video(ws, 1)
                await ws.send(other(5))
                await first_video(ws, 3)
            await asyncio.sleep(0.5)
            return closed, status, set(cmds.tags())

    closed, status, finally_published = run(main())
    (code_r, reason_r, _), (code_d, reason_d, _) = closed
    assert code_r == 1008 and "revoked" in reason_r, (code_r, reason_r)
    assert code_d == 1008 and "demoted" in reason_d, (code_d, reason_d)
    assert status == 401, "the removed token still opens connections"
    assert 5 not in finally_published, "the demoted token still commands after reconnecting"
    log = (tmp_path / "server.log").read_text()
    for token in (CONTROL, DEMOTED, OTHER_CONTROL):
        assert token not in reason_r + reason_d and token not in log, "a token was shown"
    assert stack.metric("shmring_ws_clients_revoked_total", token=OTHER_CONTROL) == 2


def test_a_token_offered_alone_as_subprotocol_is_never_echoed(stack):
    """Smaller item: the 101 never names a shmring.token.<t> entry. Offered alone, the
    answer names no subprotocol (a browser page offers shmring.v1 besides, as the viewer
    does, and gets that)."""
    stack.start_producer()
    stack.start_server(env={"SDR_CONTROL_TOKEN": CONTROL})
    alone = raw_request(stack.port, upgrade_head("/stream/ws", f"127.0.0.1:{stack.port}",
                                                 protocols=f"shmring.token.{CONTROL}"))
    head = alone.split(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 101"), head
    assert CONTROL.encode() not in alone and b"sec-websocket-protocol" not in head.lower(), head
    both = raw_request(stack.port, upgrade_head("/stream/ws", f"127.0.0.1:{stack.port}",
                                                protocols=f"shmring.v1, shmring.token.{CONTROL}"))
    head = both.split(b"\r\n\r\n")[0]
    assert b"Sec-WebSocket-Protocol: shmring.v1" in head and CONTROL.encode() not in both, head


def test_same_origin_compares_the_scheme(stack):
    """Smaller item: on a plain-http server a page of https://127.0.0.1:PORT is not the
    server's own origin; behind a TLS proxy that says X-Forwarded-Proto: https, the
    https page is."""
    stack.start_producer()
    stack.start_server()
    host = f"127.0.0.1:{stack.port}"
    other_scheme = raw_request(stack.port, upgrade_head("/stream/ws", host, f"https://{host}"))
    assert other_scheme.startswith(b"HTTP/1.1 403"), other_scheme[:200]
    proxied = upgrade_head("/stream/ws", host, f"https://{host}") + ["X-Forwarded-Proto: https"]
    assert raw_request(stack.port, proxied).startswith(b"HTTP/1.1 101")
    same = raw_request(stack.port, upgrade_head("/stream/ws", host, f"http://{host}"))
    assert same.startswith(b"HTTP/1.1 101")


def test_metrics_listener_holds_a_bounded_number_of_sockets(stack):
    """Smaller item: 200 idle sockets on the /metrics listener do not each hold a
    descriptor; a scrape still gets through."""
    mport = free_port()
    stack.start_producer()
    stack.start_server("--metrics-listen", f"127.0.0.1:{mport}")
    fd_dir = f"/proc/{stack.server.p.pid}/fd"
    before = len(os.listdir(fd_dir))
    idle = []
    try:
        for _ in range(200):
            idle.append(socket.create_connection(("127.0.0.1", mport), timeout=10))

        def scrape():
            try:
                with socket.create_connection(("127.0.0.1", mport), timeout=5) as s:
                    s.sendall(f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{mport}\r\n\r\n".encode())
                    return s.recv(12) == b"HTTP/1.1 200"
            except OSError:
                return False

        # The accept loop takes sockets in order: once a scrape is answered, the idle
        # sockets before it have been accepted (and kept or closed).
        wait_for(scrape, 30, "a /metrics scrape past 200 idle sockets")
        held = len(os.listdir(fd_dir)) - before
        assert held <= 64, f"the /metrics listener holds {held} descriptors for idle sockets"
    finally:
        for s in idle:
            s.close()


def test_the_default_client_limit_fits_the_descriptor_limit(stack):
    """Smaller item: with a descriptor limit of 200 and no --max-clients, the server
    refuses with 503 before it runs out of descriptors, and /health keeps answering."""
    stack.start_producer()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDR_")}

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))

    stack.server = Proc([SERVER, "--shm-path", stack.ring, "--listen", f"127.0.0.1:{stack.port}"],
                        stack.tmp / "server.log", env=dict(env, RUST_LOG="info"), preexec_fn=low_limit)
    stack.procs.append(stack.server)

    def up():
        try:
            stack.health()
            return True
        except OSError:
            return False

    wait_for(up, 10, "server up")

    async def main():
        clients, refused = [], None
        try:
            for _ in range(250):
                try:
                    clients.append(await connect(stack.url(), max_size=None, open_timeout=10))
                except InvalidStatus as e:
                    refused = e.response.status_code
                    break
            health = await asyncio.to_thread(stack.health)
            return len(clients), refused, health
        finally:
            for ws in clients:
                await ws.close()

    admitted, refused, health = run(main())
    assert refused == 503, f"{admitted} clients admitted and no 503 with 200 descriptors"
    assert admitted <= 200 - 64, admitted
    assert health["status"] == "ok"


def test_a_foxglove_client_that_never_subscribes_loses_its_slot(stack):
    """Smaller item: a Foxglove client that answers pings but never subscribes is
    closed after the subscribe timeout, so it cannot hold a slot forever; a subscribed
    one stays."""
    stack.start_producer()
    stack.start_server("--max-clients", "2", "--ping-interval-ms", "200", "--subscribe-timeout-ms", "1000")

    async def main():
        watcher = await connect(stack.url("/"), subprotocols=[FOXGLOVE], max_size=None)
        json.loads(await watcher.recv())
        adv = json.loads(await watcher.recv())
        video = next(c for c in adv["channels"] if c["topic"] == "/video")
        await watcher.send(json.dumps({"op": "subscribe", "subscriptions": [{"id": 1, "channelId": video["id"]}]}))
        idle = await connect(stack.url("/"), subprotocols=[FOXGLOVE], max_size=None)
        assert await refused_status(stack.url("/"), subprotocols=[FOXGLOVE]) == 503

        async def drain(ws):
            try:
                while True:
                    await ws.recv()  # reading keeps answering pings
            except ConnectionClosed:
                return ws.close_code, ws.close_reason

        async def count_video(ws):
            got = 0
            deadline = time.monotonic() + 30
            while got < 100 and time.monotonic() < deadline:
                if isinstance(await asyncio.wait_for(ws.recv(), 10), bytes):
                    got += 1
            return got

        # The watcher is read all along: a client whose messages pile up unread stops
        # reading its socket (the library's queue is full), so stops answering pings,
        # and is rightly closed after two ping intervals.
        watching = asyncio.create_task(count_video(watcher))
        code, reason = await asyncio.wait_for(drain(idle), 30)
        # The subscribed client still gets video, past several timeouts.
        got = await watching
        newcomer = await connect(stack.url("/"), subprotocols=[FOXGLOVE], max_size=None, open_timeout=10)
        await newcomer.close()
        await watcher.close()
        return code, reason, got

    code, reason, got = run(main(), timeout=90)
    assert code == 1008 and "subscribed to no channel" in reason, (code, reason)
    assert got == 100, "the subscribed client was cut off"


def test_a_token_on_the_command_line_is_warned_about(stack):
    """Smaller item: --help says where to give a token instead of the command line
    (visible in ps), and a token given there is warned about (never shown)."""
    import subprocess
    out = subprocess.run([SERVER, "--help"], capture_output=True, text=True, timeout=30).stdout
    assert "SDR_CONTROL_TOKEN" in out and "`ps`" in out
    stack.start_producer()
    stack.start_server("--control-token", CONTROL)
    log = (stack.tmp / "server.log").read_text()
    assert "command line" in log and "(ps)" in log and CONTROL not in log, log
