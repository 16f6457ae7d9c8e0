// The official Foxglove client library (@foxglove/ws-protocol, over the `ws` package)
// used as a Foxglove app uses it: it subscribes to /video and /image, advertises
// /cmd_vel as a client channel (clientPublish, what the Teleop panel does) and publishes
// a geometry_msgs/Twist on it when told to.
//
// Usage: node foxglove-teleop.mjs ws://127.0.0.1:PORT/stream/ws
// Prints one line per event, for the test driving it:
//   "ready"                 serverInfo with clientPublish; /video and /image advertised
//   "video N" / "image N"   N well-formed messages on that channel so far (every 5th)
//   "published"             one Twist sent on /cmd_vel
//   "FAIL: ..."             something was wrong (the exit code is 1)
// Reads commands on stdin: "publish" (send one Twist), "quit" (close and exit).
import readline from "node:readline";
import wsProtocol from "@foxglove/ws-protocol";
import WebSocket from "ws";

const { FoxgloveClient } = wsProtocol;
const [url] = process.argv.slice(2);
if (!url) {
  console.error("usage: node foxglove-teleop.mjs URL");
  process.exit(2);
}

function fail(why) {
  console.log(`FAIL: ${why}`);
  process.exit(1);
}

const timer = setTimeout(() => fail("timed out"), 90_000);
const client = new FoxgloveClient({ ws: new WebSocket(url, [FoxgloveClient.SUPPORTED_SUBPROTOCOL]) });
const subscriptions = new Map(); // subscription id -> "video" | "image"
const counts = { video: 0, image: 0 };
let capabilities = null;
let cmdVel = null;

client.on("error", (e) => fail(`client error: ${e?.message ?? e}`));
client.on("close", () => fail("the server closed the connection"));
client.on("serverInfo", (info) => {
  capabilities = info.capabilities;
  if (!capabilities.includes("clientPublish")) fail(`no clientPublish in ${JSON.stringify(capabilities)}`);
});
client.on("advertise", (channels) => {
  for (const c of channels) {
    if (c.topic === "/video" && c.schemaName === "foxglove.CompressedVideo") {
      subscriptions.set(client.subscribe(c.id), "video");
    } else if (c.topic === "/image" && c.schemaName === "foxglove.CompressedImage") {
      subscriptions.set(client.subscribe(c.id), "image");
    }
  }
  if (subscriptions.size === 2 && cmdVel === null) {
    cmdVel = client.advertise({ topic: "/cmd_vel", encoding: "json", schemaName: "geometry_msgs/Twist" });
    console.log("ready");
  }
});
client.on("message", ({ subscriptionId, data }) => {
  const kind = subscriptions.get(subscriptionId);
  if (!kind) fail(`a message for unknown subscription ${subscriptionId}`);
  const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  // The protobuf carries the format string and the picture: H.264 starts with an Annex B
  // start code, JPEG with its SOI marker.
  const ok =
    kind === "video"
      ? bytes.includes("h264") && bytes.includes(Buffer.from([0, 0, 1]))
      : bytes.includes("jpeg") && bytes.includes(Buffer.from([0xff, 0xd8, 0xff]));
  if (!ok) fail(`a malformed ${kind} message (${bytes.length} bytes)`);
  if (++counts[kind] % 5 === 0) console.log(`${kind} ${counts[kind]}`);
});

for await (const line of readline.createInterface({ input: process.stdin })) {
  if (line === "publish") {
    const twist = { linear: { x: 0.4, y: 0, z: 0 }, angular: { x: 0, y: 0, z: 0.2 } };
    client.sendMessage(cmdVel, new TextEncoder().encode(JSON.stringify(twist)));
    console.log("published");
  } else if (line === "quit") {
    break;
  }
}
clearTimeout(timer);
process.exit(0);
