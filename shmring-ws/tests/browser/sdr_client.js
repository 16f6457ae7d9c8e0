// A client that behaves as SDR_OS's browser client does (GenesisContext + H264Decoder, as
// PEERS.md describes them), written for our tests: no subprotocol, binaryType
// "arraybuffer", the 32-byte header read at offset 1, WebCodecs configured without a
// `description` (SPS/PPS in band) with the codec string taken from the SPS, delta frames
// dropped whenever more than 3 chunks wait in the decoder, and a decoder reset (wait for
// a keyframe) on a frame_seq jump > 1. Optionally drives: set_cmd_vel at 30 Hz, ttl 200 ms.
// Everything it sees is counted in window.sdrStats (times are Date.now() ms).
"use strict";
(() => {
  const MAX_QUEUE = 3;
  const stats = window.sdrStats = {
    opened: null, firstMessage: null, firstKeyframe: null, firstDecoded: null,
    messages: 0, videoMessages: 0, keyframes: 0, decoded: 0, drops: 0, dropsAtJoin: 0,
    errors: 0, resets: 0, skippedWaiting: 0, codec: null, codecs: [], telemetry: [], closed: null,
  };
  let decoder = null, codec = null, waiting = true, lastSeq = 0, cmdSeq = 0, ws = null;
  const hex2 = (n) => n.toString(16).toUpperCase().padStart(2, "0");
  function spsCodec(au) {
    for (let i = 0; i + 6 < au.length; i++) {
      if (au[i] === 0 && au[i + 1] === 0 && au[i + 2] === 1 && (au[i + 3] & 0x1f) === 7) {
        return "avc1." + hex2(au[i + 4]) + hex2(au[i + 5]) + hex2(au[i + 6]);
      }
    }
    return null;
  }
  function configure(c) {
    if (decoder) { try { decoder.close(); } catch (e) { /* closed */ } }
    codec = c;
    stats.codec = c;
    stats.codecs.push(c);
    decoder = new VideoDecoder({
      output: (frame) => {
        frame.close();
        stats.decoded++;
        if (stats.firstDecoded === null) stats.firstDecoded = Date.now();
      },
      error: (e) => { stats.errors++; waiting = true; console.log("decoder error: " + (e && e.message)); },
    });
    decoder.configure({ codec: c, optimizeForLatency: true });
    waiting = true;
  }
  function reset() {
    stats.resets++;
    waiting = true;
    if (decoder && decoder.state !== "closed") {
      try { decoder.reset(); decoder.configure({ codec, optimizeForLatency: true }); } catch (e) { /* closed */ }
    }
  }
  function onVideo(buf) {
    const view = new DataView(buf);
    const seq = Number(view.getBigUint64(9, true));
    const size = view.getUint32(17, true);
    const flags = view.getUint16(21, true);
    const codecId = view.getUint16(23, true);
    const payload = new Uint8Array(buf, 33, size);
    const key = (flags & 1) !== 0;
    stats.videoMessages++;
    if (key) stats.keyframes++;
    if (codecId !== 1) return; // the SDR_OS H.264 path only
    if (lastSeq !== 0 && seq > lastSeq + 1) reset();
    lastSeq = seq;
    if (key) {
      if (stats.firstKeyframe === null) stats.firstKeyframe = Date.now();
      const c = spsCodec(payload);
      if (c && c !== codec) configure(c);
    }
    if (!decoder || decoder.state !== "configured") return;
    if (waiting) {
      if (!key) { stats.skippedWaiting++; return; }
      waiting = false;
    }
    if (decoder.decodeQueueSize > MAX_QUEUE && !key) {
      stats.drops++;
      // Drops in the first second after the first keyframe are join drops.
      if (Date.now() - stats.firstKeyframe < 1000) stats.dropsAtJoin++;
      return;
    }
    try {
      decoder.decode(new EncodedVideoChunk({ type: key ? "key" : "delta", timestamp: seq * 16666, data: payload }));
    } catch (e) {
      stats.errors++;
      waiting = true;
    }
  }
  function onTelemetry(buf) {
    const b = new Uint8Array(buf);
    const len = b[1] | (b[2] << 8);
    const subject = new TextDecoder().decode(b.subarray(3, 3 + len));
    const text = new TextDecoder().decode(b.subarray(3 + len));
    let data = text;
    try { data = JSON.parse(text); } catch (e) { /* not JSON */ }
    stats.telemetry.push({ t: Date.now(), subject, data });
  }
  function send(action, data) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    const json = new TextEncoder().encode(JSON.stringify({ action, cmd_seq: ++cmdSeq, data, ttl_ms: 200 }));
    const msg = new Uint8Array(1 + json.length);
    msg[0] = 0x04;
    msg.set(json, 1);
    ws.send(msg);
  }
  window.sdrClient = {
    start(url, drive) {
      ws = new WebSocket(url);
      ws.binaryType = "arraybuffer";
      ws.onopen = () => {
        stats.opened = Date.now();
        ws.send(new Uint8Array([0x03, 0x7b, 0x7d])); // a signaling message, as the client sends
        if (drive) setInterval(() => send("set_cmd_vel", { linear_x: 0.2, linear_y: 0, angular_z: 0.1 }), 33);
      };
      ws.onmessage = (ev) => {
        if (stats.firstMessage === null) stats.firstMessage = Date.now();
        stats.messages++;
        const type = new Uint8Array(ev.data, 0, 1)[0];
        if (type === 0x01) onVideo(ev.data);
        else if (type === 0x02) onTelemetry(ev.data);
      };
      ws.onclose = (ev) => { stats.closed = { t: Date.now(), code: ev.code, reason: ev.reason }; };
    },
  };
})();
