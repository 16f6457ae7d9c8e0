// The official Foxglove client library (@foxglove/ws-protocol, over the `ws` package)
// on one connection, with the server's camera channels (/camera/<name>).
//
//   node foxglove-camera-channels.mjs subscribe N URL CAMERA [CAMERA...]
//     Subscribes to /camera/<CAMERA> for each CAMERA on the one connection and prints,
//     one JSON line per camera, its channel and its first N messages (base64); fails if
//     a message comes under a subscription it did not make.
//   node foxglove-camera-channels.mjs watch URL
//     Prints every advertise and unadvertise of camera channels as a JSON line, until
//     killed (or after 120 s); subscribed to /video meanwhile.
import wsProtocol from "@foxglove/ws-protocol";
import WebSocket from "ws";

const { FoxgloveClient } = wsProtocol;

const [mode, ...args] = process.argv.slice(2);
const TIMEOUT_MS = mode === "watch" ? 120_000 : 90_000;
const timer = setTimeout(() => {
  console.error(`FAIL: ${mode}: timed out after ${TIMEOUT_MS / 1000} s`);
  process.exit(1);
}, TIMEOUT_MS);

function open(url) {
  return new FoxgloveClient({ ws: new WebSocket(url, [FoxgloveClient.SUPPORTED_SUBPROTOCOL]) });
}

/** Subscribes to every camera's channel; resolves with `want` messages of each. */
function subscribe(want, url, cameras) {
  return new Promise((resolve, reject) => {
    const client = open(url);
    const byTopic = new Map(cameras.map((c) => [`/camera/${c}`, { camera: c, channel: null, messages: [] }]));
    const bySub = new Map();
    let done = 0;
    client.on("error", (e) => reject(new Error(`${url}: ${e?.message ?? e}`)));
    client.on("close", () => reject(new Error(`${url}: closed before ${want} messages of each camera`)));
    client.on("advertise", (channels) => {
      for (const channel of channels) {
        const got = byTopic.get(channel.topic);
        if (got && !got.channel) {
          got.channel = channel;
          bySub.set(client.subscribe(channel.id), got);
        }
      }
    });
    client.on("message", ({ subscriptionId, data }) => {
      const got = bySub.get(subscriptionId);
      if (!got) {
        reject(new Error(`a message under subscription ${subscriptionId}, which this client never made`));
        return;
      }
      if (got.messages.length >= want) return;
      got.messages.push(Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString("base64"));
      if (got.messages.length === want && ++done === cameras.length) {
        client.close();
        resolve([...byTopic.values()]);
      }
    });
  });
}

/** Prints the camera channels' advertise and unadvertise messages. */
function watch(url) {
  const client = open(url);
  const camera = new Map();
  client.on("error", (e) => {
    console.error("FAIL:", e?.message ?? e);
    process.exit(1);
  });
  client.on("advertise", (channels) => {
    // Subscribed to /video, so the server does not close a client that watches nothing.
    const video = channels.find((c) => c.topic === "/video");
    if (video) client.subscribe(video.id);
    const cams = channels.filter((c) => c.topic.startsWith("/camera/"));
    for (const c of cams) camera.set(c.id, c.topic);
    if (cams.length) {
      const shown = cams.map(({ id, topic, schemaName }) => ({ id, topic, schemaName }));
      console.log(JSON.stringify({ event: "advertise", channels: shown }));
    }
  });
  client.on("unadvertise", (ids) => {
    const topics = ids.filter((id) => camera.has(id)).map((id) => camera.get(id));
    if (topics.length) console.log(JSON.stringify({ event: "unadvertise", topics }));
  });
}

if (mode === "subscribe") {
  const [n, url, ...cameras] = args;
  try {
    for (const got of await subscribe(Number(n), url, cameras)) console.log(JSON.stringify(got));
  } catch (e) {
    console.error("FAIL:", e.message);
    process.exitCode = 1;
  } finally {
    clearTimeout(timer);
  }
} else if (mode === "watch") {
  watch(args[0]);
} else {
  console.error("usage: node foxglove-camera-channels.mjs subscribe N URL CAMERA... | watch URL");
  process.exit(2);
}
