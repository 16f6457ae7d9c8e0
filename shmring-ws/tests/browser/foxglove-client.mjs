// The official Foxglove client library (@foxglove/ws-protocol, over the `ws` package)
// against transport-server with a token: refused without it; with the token in its
// subprotocol list it gets serverInfo, the /video channel and video messages.
// Usage: node foxglove-client.mjs ws://127.0.0.1:PORT/ TOKEN
import wsProtocol from "@foxglove/ws-protocol";
import WebSocket from "ws";

const { FoxgloveClient } = wsProtocol;

const [url, token] = process.argv.slice(2);
if (!url || !token) {
  console.error("usage: node foxglove-client.mjs URL TOKEN");
  process.exit(2);
}
const timer = setTimeout(() => {
  console.error("FAIL: timed out");
  process.exit(1);
}, 60_000);

/** Connects with these subprotocols; resolves with what happened. */
function attempt(protocols, wantMessages) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, protocols);
    const client = new FoxgloveClient({ ws });
    const got = { open: false, serverInfo: null, video: null, messages: 0, refused: null };
    ws.on("unexpected-response", (_req, res) => {
      got.refused = res.statusCode;
      resolve(got);
    });
    client.on("open", () => (got.open = true));
    client.on("error", () => {});
    client.on("close", () => resolve(got));
    client.on("serverInfo", (info) => (got.serverInfo = info));
    client.on("advertise", (channels) => {
      const video = channels.find((c) => c.topic === "/video");
      if (video && !got.video) {
        got.video = video;
        client.subscribe(video.id);
      }
    });
    client.on("message", ({ data }) => {
      if (data.byteLength > 0 && ++got.messages >= wantMessages) {
        client.close();
        resolve(got);
      }
    });
  });
}

try {
  const without = await attempt([FoxgloveClient.SUPPORTED_SUBPROTOCOL], 1);
  if (without.refused !== 401) throw new Error(`without a token: ${JSON.stringify(without)}`);
  const withToken = await attempt([FoxgloveClient.SUPPORTED_SUBPROTOCOL, `shmring.token.${token}`], 10);
  if (!withToken.serverInfo || !withToken.video || withToken.messages < 10) {
    throw new Error(`with the token: ${JSON.stringify(withToken)}`);
  }
  console.log(`PASS: refused without a token (401); with it: ${withToken.video.schemaName} on /video, ${withToken.messages} messages`);
} catch (e) {
  console.error("FAIL:", e.message);
  process.exitCode = 1;
} finally {
  clearTimeout(timer);
}
