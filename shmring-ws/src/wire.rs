//! How a message looks on one client's wire: the protocol the client speaks decides the
//! few bytes in front of the shared message body (the WebSocket frame header, and for
//! Foxglove the Message Data head), and which channel announcements it gets. The body
//! itself is never copied: head and body go to the socket in one `writev`.

use crate::framing::{binary_frame_header, text_frame, MAX_FRAME_HEADER};
use crate::message::Outgoing;

/// Most messages per `writev` call (two iovecs each).
pub(crate) const WRITEV_MESSAGES: usize = 64;

/// The protocol a client speaks, which decides how a message looks on its wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// The SDR_OS protocol ([`crate::protocol`]): every message as it is.
    Sdr,
    /// Foxglove WebSocket ([`crate::foxglove`]): only what it subscribed to, as
    /// Message Data with a per-client head.
    Foxglove,
}

/// Most bytes before a message's shared body on one client's wire.
const HEAD_MAX: usize = MAX_FRAME_HEADER + crate::foxglove::MAX_HEAD;

/// The per-client bytes before a message's shared body: the WebSocket frame header and,
/// for Foxglove, the Message Data head.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Head {
    buf: [u8; HEAD_MAX],
    len: usize,
}

impl Default for Head {
    fn default() -> Self {
        Head {
            buf: [0; HEAD_MAX],
            len: 0,
        }
    }
}

impl Head {
    /// The head's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The head's length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// `item` on the wire of a client speaking `protocol` (Foxglove: subscribed as `sub`):
/// fills `head` and returns the shared body, or `None` if the client does not get it.
pub(crate) fn wire<'a>(protocol: Protocol, sub: Option<u32>, item: &'a Outgoing, head: &mut Head) -> Option<&'a [u8]> {
    match protocol {
        Protocol::Sdr => {
            let (h, hl) = binary_frame_header(item.message().len());
            head.buf[..hl].copy_from_slice(&h[..hl]);
            head.len = hl;
            Some(item.message())
        }
        Protocol::Foxglove => {
            let mut fx = [0u8; crate::foxglove::MAX_HEAD];
            let (fl, body) = match item {
                Outgoing::Video(frame) => crate::foxglove::message_data_head(sub?, frame, &mut fx)?,
                Outgoing::Telemetry(t) => crate::foxglove::telemetry_data_head(sub?, t, &mut fx)?,
                Outgoing::Camera(_, frame) => crate::foxglove::message_data_head(sub?, frame, &mut fx)?,
            };
            let (h, hl) = binary_frame_header(fl + body.len());
            head.buf[..hl].copy_from_slice(&h[..hl]);
            head.buf[hl..hl + fl].copy_from_slice(&fx[..fl]);
            head.len = hl + fl;
            Some(body)
        }
    }
}

/// Most channels in one announcement message: a long channel list is split over
/// several messages, each of a size every client takes.
pub(crate) const CHANNELS_PER_ANNOUNCEMENT: usize = 100;

/// What a client speaking `protocol` is told about telemetry channels `(id, subject)`
/// that appeared (`first`: all channels known when it joins, as its first messages), as
/// WebSocket frames (one message per [`CHANNELS_PER_ANNOUNCEMENT`] channels), or `None`
/// if its protocol has no such message. With `first`, the camera channels `cameras`
/// `(id, name, jpeg)` are in the first message too.
pub(crate) fn announce_channels(
    protocol: Protocol,
    cameras: &[(u32, &str, bool)],
    channels: &[(u32, &str)],
    first: bool,
) -> Option<Vec<u8>> {
    if protocol == Protocol::Sdr {
        return None;
    }
    let mut frames = Vec::new();
    if first {
        // The video channel and the first channels, then the rest.
        let head = channels.len().min(CHANNELS_PER_ANNOUNCEMENT);
        frames.extend(text_frame(&crate::foxglove::advertise(cameras, &channels[..head])));
        for chunk in channels[head..].chunks(CHANNELS_PER_ANNOUNCEMENT) {
            frames.extend(text_frame(&crate::foxglove::advertise_telemetry(chunk)));
        }
    } else {
        for chunk in channels.chunks(CHANNELS_PER_ANNOUNCEMENT) {
            frames.extend(text_frame(&crate::foxglove::advertise_telemetry(chunk)));
        }
    }
    Some(frames)
}
