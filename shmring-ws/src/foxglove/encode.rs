//! Foxglove's messages, built without state: `serverInfo`, `advertise`, `status`, the
//! `foxglove.CompressedVideo` schema, and the per-client heads of Message Data frames
//! (the shared payload follows them on the wire).

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet};

use shmring_core::Codec;

use super::session::{IMAGE_CHANNEL_ID, VIDEO_CHANNEL_ID};
use crate::message::{Telemetry, VideoFrame};

/// The WebSocket subprotocol name.
pub const SUBPROTOCOL: &str = "foxglove.websocket.v1";
/// The topic of the video channel.
pub const VIDEO_TOPIC: &str = "/video";
/// The schema name of the video channel.
pub(super) const VIDEO_SCHEMA_NAME: &str = "foxglove.CompressedVideo";
/// The `frame_id` (frame of reference) put in every CompressedVideo message.
pub(super) const VIDEO_FRAME_ID: &str = "camera";
/// Opcode of a Message Data frame (server to client).
pub(crate) const OP_MESSAGE_DATA: u8 = 0x01;
/// Bytes of a Message Data frame before its payload: opcode, subscription id, log time.
pub(super) const MESSAGE_DATA_HEAD: usize = 13;

/// The `serverInfo` message sent first on every connection.
pub(crate) fn server_info(session_id: &str) -> String {
    serde_json::json!({
        "op": "serverInfo",
        "name": "shmring transport-server",
        "capabilities": ["clientPublish"],
        "supportedEncodings": ["json"],
        "metadata": {},
        "sessionId": session_id,
    })
    .to_string()
}

fn telemetry_channel(id: u32, subject: &str) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "topic": subject,
        "encoding": "json",
        "schemaName": subject,
        "schema": "",
        "schemaEncoding": "jsonschema",
    })
}

/// The `advertise` message a client gets first: the video channel and the telemetry
/// channels `(id, subject)` known so far.
pub(crate) fn advertise(cameras: &[(u32, &str, bool)], telemetry: &[(u32, &str)]) -> String {
    let mut channels = vec![serde_json::json!({
        "id": VIDEO_CHANNEL_ID,
        "topic": VIDEO_TOPIC,
        "encoding": "protobuf",
        "schemaName": VIDEO_SCHEMA_NAME,
        "schema": compressed_video_schema(),
    })];
    channels.push(serde_json::json!({
        "id": IMAGE_CHANNEL_ID,
        "topic": IMAGE_TOPIC,
        "encoding": "protobuf",
        "schemaName": IMAGE_SCHEMA_NAME,
        "schema": compressed_image_schema(),
    }));
    channels.extend(cameras.iter().map(|&(id, name, jpeg)| camera_channel(id, name, jpeg)));
    channels.extend(telemetry.iter().map(|(id, subject)| telemetry_channel(*id, subject)));
    serde_json::json!({"op": "advertise", "channels": channels}).to_string()
}

/// The `advertise` message for telemetry channels `(id, subject)` seen for the first time.
pub(crate) fn advertise_telemetry(telemetry: &[(u32, &str)]) -> String {
    let channels: Vec<_> = telemetry
        .iter()
        .map(|(id, subject)| telemetry_channel(*id, subject))
        .collect();
    serde_json::json!({"op": "advertise", "channels": channels}).to_string()
}

/// The topic prefix of the camera channels: `/camera/<name>`.
pub const CAMERA_TOPIC_PREFIX: &str = "/camera/";

/// The `advertise` message for camera channels `(id, name, jpeg)`: `/camera/<name>`,
/// each `foxglove.CompressedImage` if its codec is JPEG, else `foxglove.CompressedVideo`.
pub(crate) fn advertise_cameras(cameras: &[(u32, &str, bool)]) -> String {
    let channels: Vec<_> = cameras
        .iter()
        .map(|&(id, name, jpeg)| camera_channel(id, name, jpeg))
        .collect();
    serde_json::json!({"op": "advertise", "channels": channels}).to_string()
}

/// Camera channel `id`, `/camera/<name>`, in an `advertise` message.
fn camera_channel(id: u32, name: &str, jpeg: bool) -> serde_json::Value {
    let (schema_name, schema) = if jpeg {
        (IMAGE_SCHEMA_NAME, compressed_image_schema())
    } else {
        (VIDEO_SCHEMA_NAME, compressed_video_schema())
    };
    serde_json::json!({
        "id": id,
        "topic": format!("{CAMERA_TOPIC_PREFIX}{name}"),
        "encoding": "protobuf",
        "schemaName": schema_name,
        "schema": schema,
    })
}

/// The `unadvertise` message for channels `ids`.
pub(crate) fn unadvertise(ids: &[u32]) -> String {
    serde_json::json!({"op": "unadvertise", "channelIds": ids}).to_string()
}

/// CLOCK_REALTIME now, in ns since the Unix epoch (Foxglove log times).
pub(crate) fn wall_clock_ns() -> u64 {
    shmring_core::monotonic_ns().saturating_add(realtime_offset_ns())
}

/// The `level` of a `status` message: a warning (a request was ignored).
pub(crate) const STATUS_WARNING: u8 = 1;
/// The `level` of a `status` message: an error (a message was not understood).
pub(super) const STATUS_ERROR: u8 = 2;

/// A `status` message of `level` ([`STATUS_WARNING`] or [`STATUS_ERROR`]; the server
/// sends no information-level (0) status).
pub(crate) fn status(level: u8, message: &str) -> String {
    serde_json::json!({"op": "status", "level": level, "message": message}).to_string()
}

fn field(name: &str, number: i32, kind: Type, type_name: Option<&str>) -> FieldDescriptorProto {
    FieldDescriptorProto {
        name: Some(name.into()),
        number: Some(number),
        label: Some(Label::Optional as i32),
        r#type: Some(kind as i32),
        type_name: type_name.map(Into::into),
        json_name: Some(name.into()),
        ..Default::default()
    }
}

/// The topic of the image channel (JPEG frames).
pub const IMAGE_TOPIC: &str = "/image";
/// The schema name of the image channel.
pub(super) const IMAGE_SCHEMA_NAME: &str = "foxglove.CompressedImage";

/// `foxglove.CompressedImage` and its dependency `google.protobuf.Timestamp` as a
/// base64 `FileDescriptorSet`: the `schema` of the image channel.
pub(super) fn compressed_image_schema() -> &'static str {
    static SCHEMA: OnceLock<String> = OnceLock::new();
    SCHEMA.get_or_init(|| picture_schema("CompressedImage", [4, 2, 3]))
}

/// `foxglove.CompressedVideo` and its dependency `google.protobuf.Timestamp` as a
/// protobuf `FileDescriptorSet`, base64: the `schema` of the video channel.
pub(super) fn compressed_video_schema() -> &'static str {
    static SCHEMA: OnceLock<String> = OnceLock::new();
    SCHEMA.get_or_init(|| picture_schema("CompressedVideo", [2, 3, 4]))
}

/// The base64 `FileDescriptorSet` of `foxglove.<message>`, a message with the fields
/// `timestamp` (1) and `frame_id`, `data`, `format` numbered as in `numbers` (the two
/// Foxglove picture messages differ only there), and its dependency
/// `google.protobuf.Timestamp`.
fn picture_schema(message: &str, [frame_id, data, format]: [i32; 3]) -> String {
    let timestamp = FileDescriptorProto {
        name: Some("google/protobuf/timestamp.proto".into()),
        package: Some("google.protobuf".into()),
        message_type: vec![DescriptorProto {
            name: Some("Timestamp".into()),
            field: vec![
                field("seconds", 1, Type::Int64, None),
                field("nanos", 2, Type::Int32, None),
            ],
            ..Default::default()
        }],
        syntax: Some("proto3".into()),
        ..Default::default()
    };
    let picture = FileDescriptorProto {
        name: Some(format!("foxglove/{message}.proto")),
        package: Some("foxglove".into()),
        dependency: vec!["google/protobuf/timestamp.proto".into()],
        message_type: vec![DescriptorProto {
            name: Some(message.into()),
            field: vec![
                field("timestamp", 1, Type::Message, Some(".google.protobuf.Timestamp")),
                field("frame_id", frame_id, Type::String, None),
                field("data", data, Type::Bytes, None),
                field("format", format, Type::String, None),
            ],
            ..Default::default()
        }],
        syntax: Some("proto3".into()),
        ..Default::default()
    };
    let set = FileDescriptorSet {
        file: vec![timestamp, picture],
    };
    base64_encode(&set.encode_to_vec())
}

fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// CLOCK_REALTIME minus CLOCK_MONOTONIC, measured once: turns the reader's monotonic
/// read time into the wall-clock log time Foxglove shows.
fn realtime_offset_ns() -> u64 {
    static OFFSET: OnceLock<u64> = OnceLock::new();
    *OFFSET.get_or_init(|| {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        wall.saturating_sub(shmring_core::monotonic_ns())
    })
}

/// The CompressedVideo `format` of a ring codec, or `None` if Foxglove cannot show it.
fn video_format(codec: Codec) -> Option<&'static str> {
    match codec {
        Codec::H264 => Some("h264"),
        Codec::HEVC => Some("h265"),
        _ => None,
    }
}

/// Largest head [`message_data_head`] writes.
pub(crate) const MAX_HEAD: usize = MESSAGE_DATA_HEAD + 48;

/// Writes the head of the Message Data frame carrying `frame` for subscription `sub`
/// into `out`: opcode, subscription id, log time, then the CompressedVideo fields up
/// to and including `data`'s tag and length. The payload follows it on the wire.
/// Returns the head's length and the payload, or `None` for a codec Foxglove does not
/// decode (the frame is not sent).
pub(crate) fn message_data_head<'a>(
    sub: u32,
    frame: &'a VideoFrame,
    out: &mut [u8; MAX_HEAD],
) -> Option<(usize, &'a [u8])> {
    let (header, payload) = frame.parts()?;
    // JPEG frames go out as CompressedImage, whose fields are numbered differently:
    // frame_id 4, format 3, data 2 (CompressedVideo: frame_id 2, format 4, data 3).
    let (format, frame_id_tag, format_tag, data_tag) = match Codec(header.codec.get()) {
        Codec::JPEG => ("jpeg", 0x22, 0x1a, 0x12),
        codec => (video_format(codec)?, 0x12, 0x22, 0x1a),
    };
    // Log time: when this server read the frame, on the wall clock. The message's own
    // timestamp: the frame's time (simulation or capture time) where the source knows
    // it, else the log time.
    let log_ns = frame.read_ns.saturating_add(realtime_offset_ns());
    let stamp_ns = frame.time_ns.unwrap_or(log_ns);
    let mut w = Writer { out, at: 0 };
    w.put(&[OP_MESSAGE_DATA]);
    w.put(&sub.to_le_bytes());
    w.put(&log_ns.to_le_bytes());
    // timestamp (1): google.protobuf.Timestamp { seconds (1), nanos (2) }
    let (secs, nanos) = (stamp_ns / 1_000_000_000, stamp_ns % 1_000_000_000);
    let ts_len = 1 + varint_len(secs) + 1 + varint_len(nanos);
    w.put(&[0x0a]);
    w.varint(ts_len as u64);
    w.put(&[0x08]);
    w.varint(secs);
    w.put(&[0x10]);
    w.varint(nanos);
    // frame_id, format, then data: tag and length only.
    w.put(&[frame_id_tag, VIDEO_FRAME_ID.len() as u8]);
    w.put(VIDEO_FRAME_ID.as_bytes());
    w.put(&[format_tag, format.len() as u8]);
    w.put(format.as_bytes());
    w.put(&[data_tag]);
    w.varint(payload.len() as u64);
    Some((w.at, payload))
}

/// Writes the head of the Message Data frame carrying telemetry message `t` for
/// subscription `sub` into `out`: opcode, subscription id, log time. Returns the head's
/// length and the payload (the NATS payload as published), or `None` if `t` has no
/// channel (its payload is not JSON).
pub(crate) fn telemetry_data_head<'a>(
    sub: u32,
    t: &'a Telemetry,
    out: &mut [u8; MAX_HEAD],
) -> Option<(usize, &'a [u8])> {
    t.channel?;
    out[0] = OP_MESSAGE_DATA;
    out[1..5].copy_from_slice(&sub.to_le_bytes());
    out[5..13].copy_from_slice(&t.log_ns.to_le_bytes());
    Some((MESSAGE_DATA_HEAD, t.message.get(t.payload_at..)?))
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

struct Writer<'a> {
    out: &'a mut [u8; MAX_HEAD],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, b: &[u8]) {
        self.out[self.at..self.at + b.len()].copy_from_slice(b);
        self.at += b.len();
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.put(&[(v as u8) | 0x80]);
            v >>= 7;
        }
        self.put(&[v as u8]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camera_channels_are_advertised_by_codec_and_unadvertised_by_id() {
        let first: serde_json::Value =
            serde_json::from_str(&advertise(&[(1 << 24, "front", false)], &[(3, "telemetry.x")])).unwrap();
        let topics: Vec<&str> = first["channels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["topic"].as_str().unwrap())
            .collect();
        assert_eq!(topics, ["/video", "/image", "/camera/front", "telemetry.x"]);
        let later: serde_json::Value = serde_json::from_str(&advertise_cameras(&[(7, "wrist", true)])).unwrap();
        let wrist = &later["channels"][0];
        assert_eq!(
            (wrist["id"].as_u64(), wrist["topic"].as_str()),
            (Some(7), Some("/camera/wrist"))
        );
        assert_eq!(wrist["schemaName"], IMAGE_SCHEMA_NAME);
        assert_eq!(wrist["schema"], compressed_image_schema());
        assert_eq!(unadvertise(&[7, 9]), r#"{"channelIds":[7,9],"op":"unadvertise"}"#);
    }

    #[test]
    fn base64_matches_the_rfc_4648_vectors() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(raw.as_bytes()), enc);
        }
    }

    #[test]
    fn the_head_and_payload_decode_as_one_compressed_video_message() {
        let payload = vec![0u8, 0, 0, 1, 0x67, 1, 2, 3];
        let mut message = vec![0x01];
        let mut header = [0u8; 32];
        header[22] = 1; // H.264
        message.extend_from_slice(&header);
        message.extend_from_slice(&payload);
        let frame = VideoFrame {
            message: message.into(),
            keyframe: true,
            frame_seq: 1,
            read_ns: 5_000_000_123,
            commit_ns: None,
            time_ns: None,
        };
        let mut buf = [0u8; MAX_HEAD];
        let (len, body) = message_data_head(7, &frame, &mut buf).unwrap();
        assert_eq!(buf[0], OP_MESSAGE_DATA);
        assert_eq!(u32::from_le_bytes(buf[1..5].try_into().unwrap()), 7);
        let mut pb = buf[MESSAGE_DATA_HEAD..len].to_vec();
        pb.extend_from_slice(body);
        #[derive(Clone, PartialEq, prost::Message)]
        struct Ts {
            #[prost(int64, tag = "1")]
            seconds: i64,
            #[prost(int32, tag = "2")]
            nanos: i32,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        struct CompressedVideo {
            #[prost(message, optional, tag = "1")]
            timestamp: Option<Ts>,
            #[prost(string, tag = "2")]
            frame_id: String,
            #[prost(bytes = "vec", tag = "3")]
            data: Vec<u8>,
            #[prost(string, tag = "4")]
            format: String,
        }
        let m = CompressedVideo::decode(&pb[..]).unwrap();
        assert_eq!(m.data, payload);
        assert_eq!(m.format, "h264");
        assert_eq!(m.frame_id, VIDEO_FRAME_ID);
        let log_ns = u64::from_le_bytes(buf[5..13].try_into().unwrap());
        let ts = m.timestamp.unwrap();
        assert_eq!(ts.seconds as u64 * 1_000_000_000 + ts.nanos as u64, log_ns);
        // With the frame's own time (a simulation at 2.5 s): the message's timestamp is
        // that time, the log time is still when the server read it.
        let sim = VideoFrame {
            time_ns: Some(2_500_000_007),
            ..frame.clone()
        };
        let (len, body) = message_data_head(7, &sim, &mut buf).unwrap();
        let mut pb = buf[MESSAGE_DATA_HEAD..len].to_vec();
        pb.extend_from_slice(body);
        let m = CompressedVideo::decode(&pb[..]).unwrap();
        let ts = m.timestamp.unwrap();
        assert_eq!((ts.seconds, ts.nanos), (2, 500_000_007));
        assert_eq!(m.data, payload);
        assert_eq!(u64::from_le_bytes(buf[5..13].try_into().unwrap()), log_ns);
        // A JPEG frame is a CompressedImage (frame_id 4, data 2, format 3).
        #[derive(Clone, PartialEq, prost::Message)]
        struct CompressedImage {
            #[prost(message, optional, tag = "1")]
            timestamp: Option<Ts>,
            #[prost(string, tag = "4")]
            frame_id: String,
            #[prost(bytes = "vec", tag = "2")]
            data: Vec<u8>,
            #[prost(string, tag = "3")]
            format: String,
        }
        let mut jpeg = frame.message.to_vec();
        jpeg[23] = 3;
        let jpeg = VideoFrame {
            message: jpeg.into(),
            ..frame.clone()
        };
        let (len, body) = message_data_head(7, &jpeg, &mut buf).unwrap();
        let mut pb = buf[MESSAGE_DATA_HEAD..len].to_vec();
        pb.extend_from_slice(body);
        let m = CompressedImage::decode(&pb[..]).unwrap();
        assert_eq!((m.format.as_str(), m.frame_id.as_str()), ("jpeg", VIDEO_FRAME_ID));
        assert_eq!(m.data, payload);
        // A codec Foxglove cannot decode is not sent.
        let mut other = frame.message.to_vec();
        other[23] = 9;
        let other = VideoFrame {
            message: other.into(),
            ..frame
        };
        assert!(message_data_head(7, &other, &mut buf).is_none());
    }

    #[test]
    fn the_schema_is_a_descriptor_set_naming_compressed_video() {
        let raw = {
            // Decode base64 (test-only, tiny).
            let s = compressed_video_schema().trim_end_matches('=');
            let val = |c: u8| match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                _ => 63,
            };
            let mut bits = 0u32;
            let mut n = 0;
            let mut out = Vec::new();
            for c in s.bytes() {
                bits = (bits << 6) | u32::from(val(c));
                n += 6;
                if n >= 8 {
                    n -= 8;
                    out.push((bits >> n) as u8);
                }
            }
            out
        };
        let set = FileDescriptorSet::decode(&raw[..]).unwrap();
        let video = set.file.iter().find(|f| f.package() == "foxglove").unwrap();
        assert_eq!(video.message_type[0].name(), "CompressedVideo");
        assert_eq!(video.message_type[0].field.len(), 4);
        assert!(set.file.iter().any(|f| f.name() == "google/protobuf/timestamp.proto"));
    }
}
