//! What every reader (the v1 reader, the legacy reader, the file readers) is set up with
//! and what it counts: where it starts, its options, its accounting. Apart from the
//! readers so that the accounting (`tally`) can name them without importing a reader.

use core::time::Duration;

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
    /// How a blocked read of a ring file waits (`RingReader::read_timeout`, `wait`):
    /// learn the writer's cadence and be awake around the next commit (the default), or
    /// always sleep. No effect on `RegionReader` itself, which never waits.
    pub wake: WakePolicy,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            start: StartPosition::LatestKeyframe,
            verify_crc: true,
            resync_at_keyframe: true,
            wake: WakePolicy::default(),
        }
    }
}

/// How a blocked ring-file reader waits for the next frame.
///
/// Video comes at a cadence. With [`WakePolicy::Cadence`] the reader learns the interval
/// between commits (robust to jitter, skipped and lost frames, frame-rate changes and
/// writer restarts) and spins only in a short window around the next expected commit,
/// sleeping otherwise: it sees a frame within a few hundred nanoseconds of its commit
/// instead of after a futex wake-up (v1 rings) or a poll interval (legacy rings). A
/// writer without a cadence (irregular messages) never locks it, and its reader sleeps as
/// with [`WakePolicy::Sleep`]. See `docs/protocol.md` ("Waking readers").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WakePolicy {
    /// Learn the cadence; spin at most `max_window` either side of an expected commit
    /// (the window itself follows the measured jitter, never narrower than 30 µs).
    Cadence {
        /// Widest half-window (default [`WakePolicy::DEFAULT_WINDOW`]).
        max_window: Duration,
    },
    /// Always sleep: on the futex on v1 rings, polling every 500 µs on legacy rings.
    Sleep,
}

impl WakePolicy {
    /// The default widest half-window: 250 µs, at most 3 % of a core at 60 fps.
    pub const DEFAULT_WINDOW: Duration = Duration::from_micros(250);

    /// The widest half-window, or `None` for [`WakePolicy::Sleep`].
    pub fn max_window(&self) -> Option<Duration> {
        match self {
            WakePolicy::Cadence { max_window } => Some(*max_window),
            WakePolicy::Sleep => None,
        }
    }
}

impl Default for WakePolicy {
    fn default() -> Self {
        WakePolicy::Cadence {
            max_window: Self::DEFAULT_WINDOW,
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
