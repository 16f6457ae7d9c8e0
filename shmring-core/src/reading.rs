//! What every reader (the v1 reader, the legacy reader, the file readers) is set up with
//! and what it counts: where it starts, its options, its accounting. Apart from the
//! readers so that the accounting (`tally`) can name them without importing a reader.

/// Where a new reader starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StartPosition {
    /// At the newest keyframe still in the ring, so a decoder can start at once (the
    /// default). Without one, at the next keyframe written.
    #[default]
    LatestKeyframe,
    /// At the next frame written after the reader opened.
    Next,
    /// At the newest frame in the ring (keyframe or not).
    Latest,
}

/// Reader settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReaderOptions {
    /// Where to start.
    pub start: StartPosition,
    /// Check each payload against its CRC-32 (when the writer computed one). Torn frames
    /// are rejected without it; this catches memory damaged by other means.
    pub verify_crc: bool,
    /// After losing frames (lapped, or a CRC failure), skip to a keyframe so a decoder
    /// never sees a frame whose reference is missing. Turn off for streams of
    /// independent messages: the reader then resumes at the newest frame.
    pub resync_at_keyframe: bool,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            start: StartPosition::LatestKeyframe,
            verify_crc: true,
            resync_at_keyframe: true,
        }
    }
}

/// Per-reader accounting. Once the reader has caught up with the writer,
/// `delivered + lost` equals the frames written since the reader's first frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReaderStats {
    /// Frames returned to the caller.
    pub delivered: u64,
    /// Frames the reader will never return: overwritten before it got to them, skipped
    /// while waiting for a keyframe, or failed their CRC.
    pub lost: u64,
    /// Times the writer overwrote a record the reader had not finished with.
    pub lapped: u64,
    /// Frames that failed their CRC check (also counted in `lost`).
    pub crc_errors: u64,
    /// Impossible records skipped (a damaged or foreign ring file).
    pub corrupt: u64,
}
