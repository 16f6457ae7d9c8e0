//! The WebSocket message format shared with the SDR_OS browser client. Every message is
//! binary and its first byte is its type:
//!
//! | type | direction | layout |
//! |---|---|---|
//! | `0x01` video | server -> client | `[0x01][32-byte frame header][payload]` |
//! | `0x02` telemetry | server -> client | `[0x02][u16 LE subject length][subject][payload]` |
//! | `0x03` signaling | reserved | |
//! | `0x04` command | client -> server | `[0x04][JSON {"action", "cmd_seq", "data", "ttl_ms"?}]` |
//!
//! A command's `action` must match `[a-z_]+`; it is published to NATS as
//! `command.genesis.<action>` with the JSON as payload. The action `request_idr` is the
//! viewer asking for a keyframe (after a decoder error): it goes to the keyframe
//! coalescer instead.
//!
//! This module is the one place a video message is built ([`encode_video`]) or taken
//! apart ([`parse_video`]); the 32-byte header is `shmring-core`'s [`FrameHeader`].

use bytes::{BufMut, Bytes, BytesMut};
use shmring_core::layout::{FrameHeader, HEADER_SIZE};
use zerocopy::{FromBytes, IntoBytes};

/// Video message type.
pub(crate) const MSG_VIDEO: u8 = 0x01;
/// Telemetry message type.
pub(crate) const MSG_TELEMETRY: u8 = 0x02;
/// Command message type. (0x03, signaling, is reserved: never sent, ignored if received.)
pub(crate) const MSG_COMMAND: u8 = 0x04;
/// Prefix of the NATS subjects client commands are published on
/// (`command.genesis.<action>`).
pub(crate) const COMMAND_SUBJECT_PREFIX: &str = "command.genesis.";
/// The command action that asks the producer for a keyframe.
pub(crate) const ACTION_REQUEST_IDR: &str = "request_idr";
/// Longest command action accepted.
pub(crate) const MAX_ACTION_LEN: usize = 64;
/// Longest telemetry subject relayed (the length field is a u16; the seed used 256).
pub(crate) const MAX_SUBJECT_LEN: usize = 256;

/// Bytes of a video message before its payload: the type byte and the frame header.
pub(crate) const VIDEO_HEAD: usize = 1 + HEADER_SIZE;

/// Builds a video message: `[0x01][header][payload]`.
pub(crate) fn encode_video(header: &FrameHeader, payload: &[u8]) -> Bytes {
    let mut message = BytesMut::with_capacity(VIDEO_HEAD + payload.len());
    message.put_u8(MSG_VIDEO);
    message.put_slice(header.as_bytes());
    message.put_slice(payload);
    message.freeze()
}

/// An empty video message with room for a record (`[header][payload]`) of
/// `record_len` bytes, which the caller appends (a frame arriving in chunks).
pub(crate) fn video_message_buffer(record_len: usize) -> BytesMut {
    let mut message = BytesMut::with_capacity(1 + record_len);
    message.put_u8(MSG_VIDEO);
    message
}

/// The header and payload of a video message, or `None` if `message` is not one (wrong
/// type byte, shorter than the header). The payload is what follows the header; its
/// length is not checked against the header's size field.
pub(crate) fn parse_video(message: &[u8]) -> Option<(&FrameHeader, &[u8])> {
    match message.split_first() {
        Some((&MSG_VIDEO, record)) => FrameHeader::ref_from_prefix(record).ok(),
        _ => None,
    }
}

/// Builds a telemetry message, or `None` if the subject is too long.
pub(crate) fn encode_telemetry(subject: &str, payload: &[u8]) -> Option<Bytes> {
    if subject.len() > MAX_SUBJECT_LEN {
        return None;
    }
    let mut b = BytesMut::with_capacity(3 + subject.len() + payload.len());
    b.put_u8(MSG_TELEMETRY);
    b.put_u16_le(subject.len() as u16);
    b.put_slice(subject.as_bytes());
    b.put_slice(payload);
    Some(b.freeze())
}

/// The subject of a telemetry message and where its payload starts, or `None` if the
/// message is not a well-formed telemetry message.
pub(crate) fn telemetry_subject(message: &[u8]) -> Option<(&str, usize)> {
    if message.first() != Some(&MSG_TELEMETRY) {
        return None;
    }
    let len = usize::from(u16::from_le_bytes([*message.get(1)?, *message.get(2)?]));
    let subject = std::str::from_utf8(message.get(3..3 + len)?).ok()?;
    Some((subject, 3 + len))
}

/// A validated client command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Command {
    /// The action (`[a-z_]+`).
    pub action: String,
    /// The JSON text, forwarded unchanged.
    pub json: Bytes,
}

/// Why a command was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CommandError {
    /// The body is not a JSON object.
    NotJsonObject,
    /// `action` is missing or not a string.
    MissingAction,
    /// `action` is empty, too long or has characters outside `[a-z_]`.
    BadAction,
    /// The message is larger than the configured cap.
    TooLarge {
        /// Its size.
        size: usize,
        /// The cap.
        max: usize,
    },
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandError::NotJsonObject => f.write_str("command is not a JSON object"),
            CommandError::MissingAction => f.write_str("command has no string \"action\""),
            CommandError::BadAction => {
                write!(f, "command action must match [a-z_]{{1,{MAX_ACTION_LEN}}}")
            }
            CommandError::TooLarge { size, max } => {
                write!(f, "command of {size} bytes exceeds the {max}-byte cap")
            }
        }
    }
}

impl std::error::Error for CommandError {}

/// Checks a command body (the bytes after the `0x04` type byte).
pub(crate) fn parse_command(body: &Bytes, max_size: usize) -> Result<Command, CommandError> {
    if body.len() > max_size {
        return Err(CommandError::TooLarge {
            size: body.len(),
            max: max_size,
        });
    }
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| CommandError::NotJsonObject)?;
    let obj = value.as_object().ok_or(CommandError::NotJsonObject)?;
    let action = obj
        .get("action")
        .and_then(|a| a.as_str())
        .ok_or(CommandError::MissingAction)?;
    if action.is_empty()
        || action.len() > MAX_ACTION_LEN
        || !action.bytes().all(|c| c.is_ascii_lowercase() || c == b'_')
    {
        return Err(CommandError::BadAction);
    }
    Ok(Command {
        action: action.to_owned(),
        json: body.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_messages_round_trip() {
        let header = FrameHeader::new(7, 8, 3, 1, 2, 9);
        let m = encode_video(&header, b"abc");
        assert_eq!((m[0], m.len()), (MSG_VIDEO, VIDEO_HEAD + 3));
        let (h, payload) = parse_video(&m).unwrap();
        assert_eq!((*h, payload), (header, &b"abc"[..]));
        assert!(parse_video(&m[..VIDEO_HEAD - 1]).is_none());
        assert!(parse_video(b"\x02").is_none());
        let mut built = video_message_buffer(32 + 3);
        built.put_slice(&m[1..]);
        assert_eq!(built, m);
    }

    #[test]
    fn telemetry_layout() {
        let m = encode_telemetry("telemetry.imu", b"{}").unwrap();
        assert_eq!(m[0], MSG_TELEMETRY);
        assert_eq!(u16::from_le_bytes([m[1], m[2]]), 13);
        assert_eq!(&m[3..16], b"telemetry.imu");
        assert_eq!(&m[16..], b"{}");
        assert!(encode_telemetry(&"a".repeat(257), b"").is_none());
        assert_eq!(telemetry_subject(&m), Some(("telemetry.imu", 16)));
        assert_eq!(telemetry_subject(&m[..10]), None);
        assert_eq!(telemetry_subject(b"\x01\x00\x00"), None);
    }

    #[test]
    fn commands_are_validated() {
        let ok = Bytes::from_static(br#"{"action":"set_speed","cmd_seq":1,"data":{"v":2}}"#);
        assert_eq!(parse_command(&ok, 1024).unwrap().action, "set_speed");
        for (body, err) in [
            (&b"not json"[..], CommandError::NotJsonObject),
            (b"[1,2]", CommandError::NotJsonObject),
            (br#"{"cmd_seq":1}"#, CommandError::MissingAction),
            (br#"{"action":"Reset"}"#, CommandError::BadAction),
            (br#"{"action":"a.b"}"#, CommandError::BadAction),
            (br#"{"action":""}"#, CommandError::BadAction),
        ] {
            assert_eq!(parse_command(&Bytes::copy_from_slice(body), 1024), Err(err));
        }
        assert!(matches!(parse_command(&ok, 10), Err(CommandError::TooLarge { .. })));
    }
}
