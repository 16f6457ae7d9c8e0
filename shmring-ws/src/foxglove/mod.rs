//! The Foxglove WebSocket protocol (`foxglove.websocket.v1`), served on the same port as
//! the SDR_OS protocol: a client that offers this subprotocol (Foxglove, Lichtblick)
//! gets a `serverInfo`, an `advertise` of the video channel (`foxglove.CompressedVideo`,
//! protobuf encoding, schema as a base64 `FileDescriptorSet`), and after it subscribes,
//! Message Data frames: `[0x01][u32 LE subscription id][u64 LE log time ns][protobuf]`.
//!
//! Each subscription starts at a keyframe (the GOP cache, as a new SDR client does) and
//! waits for keyframes like any client: a subscriber that falls behind resumes at a keyframe. H.264
//! keyframes from the ring carry their SPS and PPS (Annex B), as Foxglove requires.
//!
//! Each NATS telemetry subject with JSON payloads becomes a `json` channel (ids from
//! [`FIRST_TELEMETRY_CHANNEL`], advertised to connected clients when first seen); its
//! Message Data payload is the NATS payload as published.
//!
//! No per-client copy: the protobuf fields before `data` (timestamp, frame_id, format,
//! and `data`'s tag and length) form a small per-client head written with the frame
//! payload, a slice of the shared message, in one `writev`. Protobuf allows fields in
//! any order, so `data` (field 3) goes last.
//!
//! - `encode`: the messages, built without state (`serverInfo`, `advertise`,
//!   `status`, the schema, the Message Data heads).
//! - `session`: the channel registry, a client's subscriptions and its requests.

mod encode;
mod session;

#[cfg(test)]
pub(crate) use encode::OP_MESSAGE_DATA;
pub(crate) use encode::{
    advertise, advertise_cameras, advertise_telemetry, message_data_head, server_info, status, telemetry_data_head,
    unadvertise, wall_clock_ns, MAX_HEAD, STATUS_WARNING,
};
pub use encode::{CAMERA_TOPIC_PREFIX, IMAGE_TOPIC, SUBPROTOCOL, VIDEO_TOPIC};
pub(crate) use session::{
    client_topic_action, ClientTopic, IMAGE_CHANNEL_ID, OP_CLIENT_MESSAGE_DATA, VIDEO_CHANNEL_ID,
};
pub(crate) use session::{handle_request, Channels, Session, Subscriptions};
