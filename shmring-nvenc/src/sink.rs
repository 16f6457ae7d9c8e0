//! Where encoded access units go: the [`FrameSink`] trait, implemented for
//! [`RingWriter`] (straight into shared memory) and for `Vec<OwnedAccessUnit>`.

use shmring_core::{Codec, FrameMeta, RingWriter};

/// One encoded picture: a complete Annex B access unit, borrowed from the encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessUnit<'a> {
    /// Annex B bytes (start codes included). Keyframes always carry their parameter
    /// sets (SPS/PPS, and VPS for HEVC).
    pub data: &'a [u8],
    /// The caller's id of the raw frame this picture encodes.
    pub frame_id: u64,
    /// True for an IDR picture: a decoder can start here.
    pub keyframe: bool,
    /// Ring codec id (1 = H.264, 2 = HEVC).
    pub codec: Codec,
    /// Presentation index: 0 for the first frame given to the encoder, then 1, 2, ...
    pub pts: i64,
}

impl AccessUnit<'_> {
    /// An owned copy.
    pub fn to_owned(&self) -> OwnedAccessUnit {
        OwnedAccessUnit {
            data: self.data.to_vec(),
            frame_id: self.frame_id,
            keyframe: self.keyframe,
            codec: self.codec,
            pts: self.pts,
        }
    }
}

/// An [`AccessUnit`] that owns its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedAccessUnit {
    /// Annex B bytes.
    pub data: Vec<u8>,
    /// The caller's frame id.
    pub frame_id: u64,
    /// True for an IDR picture.
    pub keyframe: bool,
    /// Ring codec id.
    pub codec: Codec,
    /// Presentation index.
    pub pts: i64,
}

/// The error type sinks return: anything that explains itself.
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// Receives each access unit as the encoder produces it.
pub trait FrameSink {
    /// Stores one access unit; returns the sink's number for it (the ring's frame_seq
    /// for a [`RingWriter`], the index for a `Vec`).
    fn write_access_unit(&mut self, au: &AccessUnit<'_>) -> Result<u64, SinkError>;
}

impl FrameSink for RingWriter {
    /// Writes the access unit as one ring record with its frame_id, keyframe flag and
    /// codec, waking sleeping readers.
    fn write_access_unit(&mut self, au: &AccessUnit<'_>) -> Result<u64, SinkError> {
        let meta = FrameMeta {
            frame_id: au.frame_id,
            keyframe: au.keyframe,
            codec: au.codec,
        };
        Ok(self.write(au.data, meta)?)
    }
}

impl FrameSink for Vec<OwnedAccessUnit> {
    fn write_access_unit(&mut self, au: &AccessUnit<'_>) -> Result<u64, SinkError> {
        self.push(au.to_owned());
        Ok(self.len() as u64 - 1)
    }
}

impl<S: FrameSink + ?Sized> FrameSink for &mut S {
    fn write_access_unit(&mut self, au: &AccessUnit<'_>) -> Result<u64, SinkError> {
        (**self).write_access_unit(au)
    }
}
