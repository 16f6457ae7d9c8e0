"""Foxglove WebSocket protocol (foxglove.websocket.v1) on transport-server's port
(issue 7), with a client written from the spec (github.com/foxglove/ws-protocol,
docs/spec.md): serverInfo, advertise with a protobuf FileDescriptorSet schema,
subscribe, Message Data framing, and the first video message a keyframe with SPS/PPS."""
import asyncio
import base64
import json
import struct
import time

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from websockets.asyncio.client import connect

from conftest import run

SUBPROTOCOL = "foxglove.websocket.v1"


def message_class(schema_b64, name):
    """Builds a message class from an advertised base64 FileDescriptorSet."""
    fds = descriptor_pb2.FileDescriptorSet.FromString(base64.b64decode(schema_b64))
    pool = descriptor_pool.DescriptorPool()
    for f in fds.file:
        pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))


def nal_types(annexb):
    """NAL unit types of an H.264 Annex B access unit."""
    types, i = [], 0
    while True:
        i = annexb.find(b"\x00\x00\x01", i)
        if i < 0 or i + 3 >= len(annexb):
            return types
        types.append(annexb[i + 3] & 0x1F)
        i += 3


async def handshake(url):
    ws = await connect(url, subprotocols=[SUBPROTOCOL], max_size=None, open_timeout=10)
    assert ws.subprotocol == SUBPROTOCOL
    info = json.loads(await asyncio.wait_for(ws.recv(), 10))
    adv = json.loads(await asyncio.wait_for(ws.recv(), 10))
    return ws, info, adv


async def video_messages(ws, n):
    out = []
    while len(out) < n:
        msg = await asyncio.wait_for(ws.recv(), 20)
        assert isinstance(msg, bytes), f"unexpected text message {msg!r}"
        out.append(msg)
    return out


def test_foxglove_client_gets_gated_compressed_video(stack):
    stack.start_producer()
    stack.start_server()

    async def main():
        # Foxglove connects to the root path.
        ws, info, adv = await handshake(stack.url("/"))
        assert info["op"] == "serverInfo" and info["name"] and isinstance(info["capabilities"], list)
        assert info["sessionId"]
        # The video channel, and the image channel JPEG frames go to (issue 13).
        assert adv["op"] == "advertise" and [c["topic"] for c in adv["channels"]] == ["/video", "/image"]
        ch = adv["channels"][0]
        assert ch["encoding"] == "protobuf" and ch["schemaName"] == "foxglove.CompressedVideo"
        Video = message_class(ch["schema"], "foxglove.CompressedVideo")
        assert [f.name for f in Video.DESCRIPTOR.fields] == ["timestamp", "frame_id", "data", "format"]

        # No video before subscribing.
        try:
            early = await asyncio.wait_for(ws.recv(), 0.5)
            raise AssertionError(f"got a message before subscribing: {early[:20]!r}")
        except asyncio.TimeoutError:
            pass

        sub_id = 42
        await ws.send(json.dumps({"op": "subscribe", "subscriptions": [{"id": sub_id, "channelId": ch["id"]}]}))
        msgs = await video_messages(ws, 40)
        frames = []
        for m in msgs:
            assert m[0] == 0x01, "Message Data opcode"
            sub, log_ns = struct.unpack_from("<IQ", m, 1)
            assert sub == sub_id
            v = Video.FromString(m[13:])
            assert v.format == "h264" and v.frame_id
            assert v.timestamp.seconds * 1_000_000_000 + v.timestamp.nanos == log_ns
            frames.append((log_ns, v.data))
        first = nal_types(frames[0][1])
        assert 7 in first and 8 in first and 5 in first, f"first message is not an IDR with SPS/PPS: {first}"
        assert all(a[0] <= b[0] for a, b in zip(frames, frames[1:])), "log times go backwards"
        # Every later message is one access unit with a slice.
        for _, data in frames[1:]:
            assert set(nal_types(data)) & {1, 5}

        # A second subscription to the same channel is refused with a status message.
        await ws.send(json.dumps({"op": "subscribe", "subscriptions": [{"id": 43, "channelId": ch["id"]}]}))
        # Unknown ops are answered, not fatal.
        await ws.send(json.dumps({"op": "getParameters", "parameterNames": []}))
        statuses = []
        while len(statuses) < 2:
            m = await asyncio.wait_for(ws.recv(), 10)
            if isinstance(m, str):
                statuses.append(json.loads(m))
        assert all(s["op"] == "status" for s in statuses)

        # Unsubscribe: video stops (after what was in flight).
        await ws.send(json.dumps({"op": "unsubscribe", "subscriptionIds": [sub_id]}))
        await asyncio.sleep(0.5)
        while True:
            try:
                await asyncio.wait_for(ws.recv(), 0.3)
            except asyncio.TimeoutError:
                break
        try:
            late = await asyncio.wait_for(ws.recv(), 1.0)
            raise AssertionError(f"video after unsubscribe: {late[:20]!r}")
        except asyncio.TimeoutError:
            pass

        # Subscribing again starts at a keyframe again.
        await ws.send(json.dumps({"op": "subscribe", "subscriptions": [{"id": 7, "channelId": ch["id"]}]}))
        again = await video_messages(ws, 1)
        assert struct.unpack_from("<I", again[0], 1)[0] == 7
        assert 5 in nal_types(Video.FromString(again[0][13:]).data)
        await ws.close()

    run(main())
    assert stack.metric("shmring_ws_client_messages_malformed_total") >= 1


def test_sdr_and_foxglove_clients_share_the_port(stack):
    """The SDR_OS endpoint is unchanged while a Foxglove client is connected, and a
    Foxglove client on /stream/ws works too."""
    stack.start_producer()
    stack.start_server()

    async def main():
        fox, _, adv = await handshake(stack.url("/stream/ws"))
        await fox.send(json.dumps({"op": "subscribe",
                                   "subscriptions": [{"id": 1, "channelId": adv["channels"][0]["id"]}]}))
        async with connect(stack.url(), max_size=None, open_timeout=10) as sdr:
            assert sdr.subprotocol is None
            m = await asyncio.wait_for(sdr.recv(), 10)
            assert m[0] == 0x01 and len(m) > 33 and (m[1 + 20] & 1), "SDR client starts at a keyframe"
        got = await video_messages(fox, 5)
        assert all(g[0] == 0x01 and struct.unpack_from("<I", g, 1)[0] == 1 for g in got)
        await fox.close()

    run(main())


def test_foxglove_gets_nats_telemetry_as_json_channels(stack, tmp_path):
    """Each telemetry subject with JSON payloads becomes a json channel, advertised to
    connected clients when first seen and to later clients in their first advertise."""
    import nats

    from conftest import free_port
    from test_nats import NatsServer

    nats_port = free_port()
    nats_url = f"nats://127.0.0.1:{nats_port}"
    ns = NatsServer(tmp_path, nats_port)
    ns.start()
    stack.start_producer()
    stack.start_server(env={"SDR_NATS_URL": nats_url})
    try:
        async def next_text(ws, timeout):
            while True:
                m = await asyncio.wait_for(ws.recv(), timeout)
                if isinstance(m, str):
                    return json.loads(m)

        async def main():
            import time
            t0 = time.time()
            while stack.health()["nats"] != "connected":
                assert time.time() - t0 < 20, "the server did not connect to NATS"
                await asyncio.sleep(0.1)
            nc = await nats.connect(nats_url)
            ws, _, adv = await handshake(stack.url("/"))
            assert [c["id"] for c in adv["channels"]] == [1, 2], "no telemetry seen yet"
            # Not JSON: relayed to SDR clients only, never a Foxglove channel.
            await nc.publish("telemetry.raw", b"\x00\x01 not json")
            first = json.dumps({"tag": 1}).encode()
            await nc.publish("telemetry.imu", first)
            await nc.flush()
            new = await next_text(ws, 10)
            assert new["op"] == "advertise"
            [ch] = new["channels"]
            assert ch["topic"] == "telemetry.imu" and ch["encoding"] == "json" and ch["id"] >= 3
            await ws.send(json.dumps({"op": "subscribe", "subscriptions": [{"id": 5, "channelId": ch["id"]}]}))
            await asyncio.sleep(0.3)
            payload = json.dumps({"tag": 2, "gyro": [0.1, 0.2, 0.3]}).encode()
            await nc.publish("telemetry.imu", payload)
            await nc.flush()
            got = None
            while got is None:
                m = await asyncio.wait_for(ws.recv(), 10)
                if isinstance(m, bytes):
                    assert m[0] == 0x01
                    sub, log_ns = struct.unpack_from("<IQ", m, 1)
                    assert sub == 5, "only the subscribed channel arrives (no video subscription)"
                    assert log_ns > 1_600_000_000 * 10**9, "log time is wall-clock ns"
                    got = m[13:]
                    if got == first:
                        # The message that made the channel can still be on its way
                        # through the hub when the subscription lands: it then arrives
                        # under it, before the one published after subscribing.
                        got = None
            assert got == payload
            # A client connecting now sees the channel in its first advertise.
            late, _, adv2 = await handshake(stack.url("/"))
            topics = {c["topic"]: c for c in adv2["channels"]}
            assert topics["telemetry.imu"]["id"] == ch["id"] and "telemetry.raw" not in topics
            await late.close()
            await ws.close()
            await nc.close()

        run(main())
    finally:
        ns.kill()


def test_foxglove_timestamp_is_the_frames_own_time_with_frame_id_time(stack):
    """With --frame-id-time the CompressedVideo timestamp is each frame's frame_id (its
    simulation or capture time; the replay producer stamps CLOCK_MONOTONIC ns), while
    the Message Data log time stays the wall-clock time the server read the frame."""
    stack.start_producer()
    stack.start_server("--frame-id-time")

    async def main():
        ws, _, adv = await handshake(stack.url("/"))
        ch = adv["channels"][0]
        Video = message_class(ch["schema"], "foxglove.CompressedVideo")
        await ws.send(json.dumps({"op": "subscribe", "subscriptions": [{"id": 1, "channelId": ch["id"]}]}))
        msgs = await video_messages(ws, 20)
        await ws.close()
        return [(struct.unpack_from("<IQ", m, 1)[1], Video.FromString(m[13:]).timestamp) for m in msgs]

    stamped = run(main())
    now_mono, now_wall = time.monotonic_ns(), time.time_ns()
    times = [ts.seconds * 1_000_000_000 + ts.nanos for _, ts in stamped]
    assert all(now_mono - 60_000_000_000 < t <= now_mono for t in times), "not the producer's frame times"
    assert times == sorted(set(times)), "frame times must increase"
    assert all(abs(log_ns - now_wall) < 60_000_000_000 for log_ns, _ in stamped), "log time is not the wall clock"
