//! What a frame carries besides its payload: its codec (one table of ids and names for
//! the whole workspace) and the metadata a writer records with it.

use core::fmt;

use crate::layout::FrameHeader;

/// Description of a delivered frame; its payload is the first `size` bytes of the buffer
/// passed to the read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    /// The writer's application id.
    pub frame_id: u64,
    /// Monotonic 1-based frame number.
    pub frame_seq: u64,
    /// Payload bytes.
    pub size: usize,
    /// Raw `FLAG_*` bits.
    pub flags: u16,
    /// Codec.
    pub codec: Codec,
    /// CRC-32 the writer stored (0 when it computed none).
    pub crc32: u32,
    /// Frames lost immediately before this one (like tokio broadcast's `Lagged(n)`).
    pub lost_before: u64,
}

impl FrameInfo {
    /// True if the frame is a keyframe.
    pub fn keyframe(&self) -> bool {
        self.flags & crate::layout::FLAG_KEYFRAME != 0
    }

    pub(crate) fn from_header(header: &FrameHeader, lost_before: u64) -> Self {
        FrameInfo {
            frame_id: header.frame_id.get(),
            frame_seq: header.frame_seq.get(),
            size: header.size.get() as usize,
            flags: header.flags.get(),
            codec: Codec(header.codec.get()),
            crc32: header.crc32.get(),
            lost_before,
        }
    }
}

/// A codec id as stored in the frame header. Values other than the constants are the
/// application's own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Codec(pub u16);

impl Codec {
    /// H.264 / AVC access units (Annex B).
    pub const H264: Codec = Codec(1);
    /// HEVC / H.265 access units (Annex B).
    pub const HEVC: Codec = Codec(2);
    /// JPEG images.
    pub const JPEG: Codec = Codec(3);

    /// The codecs this project names, with their names: the one table every crate,
    /// tool and log line uses (`shmring tail`, the Foxglove bridge, ...).
    pub const KNOWN: [(Codec, &'static str); 3] = [(Codec::H264, "h264"), (Codec::HEVC, "hevc"), (Codec::JPEG, "jpeg")];

    /// The codec's name (`"h264"`, `"hevc"`, `"jpeg"`), or `None` for an
    /// application's own id.
    ///
    /// ```
    /// use shmring_core::Codec;
    /// assert_eq!(Codec::HEVC.name(), Some("hevc"));
    /// assert_eq!(Codec::from_name("h264"), Some(Codec::H264));
    /// assert_eq!(Codec(77).to_string(), "codec77");
    /// ```
    pub fn name(self) -> Option<&'static str> {
        Codec::KNOWN.iter().find(|(c, _)| *c == self).map(|(_, n)| *n)
    }

    /// The codec named `name` in [`Codec::KNOWN`].
    pub fn from_name(name: &str) -> Option<Codec> {
        Codec::KNOWN.iter().find(|(_, n)| *n == name).map(|(c, _)| *c)
    }
}

impl fmt::Display for Codec {
    /// The codec's name, or `codec<id>` for an id outside [`Codec::KNOWN`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "codec{}", self.0),
        }
    }
}

/// What a writer records with each frame besides its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameMeta {
    /// The application's id for the frame (a timestamp, a camera frame number, ...).
    pub frame_id: u64,
    /// True if a decoder can start at this frame.
    pub keyframe: bool,
    /// The payload's codec.
    pub codec: Codec,
}

impl FrameMeta {
    /// An H.264 keyframe with the given id.
    pub fn keyframe(frame_id: u64) -> Self {
        FrameMeta {
            frame_id,
            keyframe: true,
            codec: Codec::H264,
        }
    }

    /// An H.264 non-keyframe (delta frame) with the given id.
    pub fn delta(frame_id: u64) -> Self {
        FrameMeta {
            frame_id,
            keyframe: false,
            codec: Codec::H264,
        }
    }

    /// The same metadata with another codec.
    pub fn with_codec(self, codec: Codec) -> Self {
        FrameMeta { codec, ..self }
    }
}

impl From<&FrameInfo> for FrameHeader {
    /// The 32-byte header a frame was stored with, rebuilt from what a reader returned
    /// (for sending the frame on: a WebSocket video message, a NATS record).
    fn from(info: &FrameInfo) -> Self {
        FrameHeader::new(
            info.frame_id,
            info.frame_seq,
            info.size as u32,
            info.flags,
            info.codec.0,
            info.crc32,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_codec_table_round_trips_and_names_unknown_ids() {
        for (codec, name) in Codec::KNOWN {
            assert_eq!(codec.name(), Some(name));
            assert_eq!(Codec::from_name(name), Some(codec));
        }
        assert_eq!(Codec(9).name(), None);
        assert_eq!(Codec::from_name("vp9"), None);
    }

    #[test]
    fn a_header_rebuilt_from_frame_info_keeps_every_field() {
        let header = FrameHeader::new(11, 22, 333, crate::layout::FLAG_KEYFRAME, 2, 0xdead_beef);
        let info = FrameInfo {
            frame_id: 11,
            frame_seq: 22,
            size: 333,
            flags: crate::layout::FLAG_KEYFRAME,
            codec: Codec::HEVC,
            crc32: 0xdead_beef,
            lost_before: 5,
        };
        assert_eq!(FrameHeader::from(&info), header);
    }
}
