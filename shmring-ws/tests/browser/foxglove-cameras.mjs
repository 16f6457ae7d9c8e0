// The official Foxglove client library (@foxglove/ws-protocol, over the `ws` package)
// on several camera URLs at once (/stream/ws/<camera>): on each it subscribes to the
// /video channel and prints the channel and the first N messages (base64), one JSON line
// per URL, for the caller to decode with the advertised schema.
// Usage: node foxglove-cameras.mjs N URL [URL...]
import wsProtocol from "@foxglove/ws-protocol";
import WebSocket from "ws";

const { FoxgloveClient } = wsProtocol;

const [n, ...urls] = process.argv.slice(2);
const want = Number(n);
if (!want || urls.length === 0) {
  console.error("usage: node foxglove-cameras.mjs N URL [URL...]");
  process.exit(2);
}
const timer = setTimeout(() => {
  console.error("FAIL: timed out after 90 s waiting for the video messages");
  process.exit(1);
}, 90_000);

/** Subscribes to /video on `url`; resolves with the channel and `want` messages. */
function watch(url) {
  return new Promise((resolve, reject) => {
    const client = new FoxgloveClient({ ws: new WebSocket(url, [FoxgloveClient.SUPPORTED_SUBPROTOCOL]) });
    const got = { url, channel: null, messages: [] };
    client.on("error", (e) => reject(new Error(`${url}: ${e?.message ?? e}`)));
    client.on("close", () => reject(new Error(`${url}: closed after ${got.messages.length} messages`)));
    client.on("advertise", (channels) => {
      const video = channels.find((c) => c.topic === "/video");
      if (video && !got.channel) {
        got.channel = video;
        client.subscribe(video.id);
      }
    });
    client.on("message", ({ data }) => {
      if (got.messages.length >= want) return;
      got.messages.push(Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString("base64"));
      if (got.messages.length === want) {
        client.close();
        resolve(got);
      }
    });
  });
}

try {
  for (const got of await Promise.all(urls.map(watch))) console.log(JSON.stringify(got));
} catch (e) {
  console.error("FAIL:", e.message);
  process.exitCode = 1;
} finally {
  clearTimeout(timer);
}
