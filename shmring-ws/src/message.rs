//! The messages the hub hands to its clients: a video frame or a telemetry message,
//! each one shared buffer holding the whole SDR_OS WebSocket message
//! ([`crate::protocol`]), built once and sent to every client.

use bytes::Bytes;
use shmring_core::layout::FrameHeader;

/// A video frame ready to send: the whole WebSocket message
/// (`[0x01][32-byte frame header][payload]`), built once and shared by every client.
#[derive(Clone, Debug)]
pub(crate) struct VideoFrame {
    /// The complete binary message.
    pub(crate) message: Bytes,
    /// True if a decoder can start at this frame.
    pub(crate) keyframe: bool,
    /// The ring's frame_seq.
    pub(crate) frame_seq: u64,
    /// CLOCK_MONOTONIC ns when the reader thread took the frame out of the ring.
    pub(crate) read_ns: u64,
    /// CLOCK_MONOTONIC ns when the producer committed the frame, when known (the ring
    /// has no per-frame commit time; producers that stamp it as the frame_id say so with
    /// `--frame-id-commit-time`).
    pub(crate) commit_ns: Option<u64>,
    /// The frame's own time in ns (simulation or capture time), when the source was told
    /// that frame_id carries it (`--frame-id-time`, as `shmring.VideoWriter` writes it;
    /// `docs/protocol.md` 1.5): Foxglove messages carry it as their timestamp.
    pub(crate) time_ns: Option<u64>,
}

impl VideoFrame {
    /// The frame header and payload (`None` only for a message that is not a video
    /// message, which the sources never build).
    pub(crate) fn parts(&self) -> Option<(&FrameHeader, &[u8])> {
        crate::protocol::parse_video(&self.message)
    }

    /// The frame's codec (`None` only for a message that is not a video message).
    pub(crate) fn codec(&self) -> Option<shmring_core::Codec> {
        self.parts().map(|(h, _)| shmring_core::Codec(h.codec.get()))
    }

    /// The frame's record (`[header][payload]`, the message without its type byte),
    /// sharing the message's buffer.
    pub(crate) fn record(&self) -> Bytes {
        self.message.slice(1..)
    }
}

/// A telemetry message, and what Foxglove clients need to relay it.
#[derive(Clone, Debug)]
pub(crate) struct Telemetry {
    /// The whole message: `[0x02][u16 LE subject length][subject][payload]`.
    pub(crate) message: Bytes,
    /// Where the payload starts in `message`.
    pub(crate) payload_at: usize,
    /// The channel of its subject, if its payload is JSON (see [`crate::foxglove::Channels`]).
    pub(crate) channel: Option<u32>,
    /// Wall-clock ns when it was published (the Foxglove log time).
    pub(crate) log_ns: u64,
}

/// One message for a client.
#[derive(Clone, Debug)]
pub(crate) enum Outgoing {
    /// A video frame (subject to the keyframe wait: a client that lost frames skips to a keyframe).
    Video(VideoFrame),
    /// A telemetry message, never held back.
    Telemetry(Telemetry),
    /// A frame of a camera a Foxglove client subscribed to on its `/camera/<name>`
    /// channel, under that subscription id. Relayed from the camera's own queue, which
    /// applied that camera's keyframe wait; this client's own keyframe wait skips it.
    Camera(u32, VideoFrame),
}

impl Outgoing {
    /// The WebSocket message bytes.
    pub(crate) fn message(&self) -> &Bytes {
        match self {
            Outgoing::Video(f) => &f.message,
            Outgoing::Telemetry(t) => &t.message,
            Outgoing::Camera(_, f) => &f.message,
        }
    }
}
