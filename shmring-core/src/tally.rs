//! Per-reader accounting shared by the v1 and the legacy reader: frames lost, CRC checks
//! and the delivery of a frame, so both count `delivered + lost` the same way.

use crate::error::ReadError;
use crate::frame::FrameInfo;
use crate::layout::{FrameHeader, FLAG_NO_CRC};
use crate::reading::{ReaderOptions, ReaderStats};

/// A reader's counters and the losses not yet reported with a delivered frame.
#[derive(Default)]
pub(crate) struct Tally {
    stats: ReaderStats,
    /// Frames lost since the last delivered frame (reported as `lost_before`).
    lost_since_delivery: u64,
}

impl Tally {
    /// Accounting so far.
    #[inline]
    pub(crate) fn stats(&self) -> ReaderStats {
        self.stats
    }

    /// Counts an impossible record that was skipped.
    #[inline]
    pub(crate) fn corrupt(&mut self) {
        self.stats.corrupt += 1;
    }

    /// Counts a lap (the writer overwrote a record the reader had not finished with).
    #[inline]
    pub(crate) fn lapped(&mut self) {
        self.stats.lapped += 1;
    }

    /// Counts `frames` as lost.
    #[inline]
    pub(crate) fn lost(&mut self, frames: u64) {
        // Saturating: a hostile file can claim absurd frame_seq gaps.
        self.stats.lost = self.stats.lost.saturating_add(frames);
        self.lost_since_delivery = self.lost_since_delivery.saturating_add(frames);
    }

    /// The last step for a frame that follows `gap` missing frames: `payload` is `None` if
    /// it was skipped while waiting for a keyframe (lost with the gap: `Ok(None)`);
    /// otherwise its CRC is checked (a mismatch loses it and, with keyframe resync, sets
    /// `await_keyframe`) and it is delivered, clearing `await_keyframe`.
    #[inline]
    pub(crate) fn finish(
        &mut self,
        header: &FrameHeader,
        payload: Option<&[u8]>,
        gap: u64,
        options: &ReaderOptions,
        await_keyframe: &mut bool,
    ) -> Result<Option<FrameInfo>, ReadError> {
        let Some(payload) = payload else {
            self.lost(gap.saturating_add(1));
            return Ok(None);
        };
        if options.verify_crc && header.flags.get() & FLAG_NO_CRC == 0 {
            let computed = crc32fast::hash(payload);
            if computed != header.crc32.get() {
                self.lost(gap.saturating_add(1));
                self.stats.crc_errors += 1;
                *await_keyframe = options.resync_at_keyframe;
                return Err(ReadError::CrcMismatch {
                    frame_seq: header.frame_seq.get(),
                    stored: header.crc32.get(),
                    computed,
                });
            }
        }
        self.lost(gap);
        self.stats.delivered += 1;
        *await_keyframe = false;
        let lost_before = core::mem::take(&mut self.lost_since_delivery);
        Ok(Some(FrameInfo::from_header(header, lost_before)))
    }
}
