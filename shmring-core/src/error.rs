//! Errors of the `no_std` protocol. Each Display text says what happened and what to do.

use crate::layout::LayoutError;
use core::fmt;

/// Why a frame could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteError {
    /// The payload is larger than the ring's maximum frame size.
    FrameTooLarge {
        /// Payload bytes offered.
        size: usize,
        /// The ring's maximum.
        max: usize,
    },
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::FrameTooLarge { size, max } => write!(
                f,
                "frame of {size} bytes is larger than the ring's max frame size of {max} bytes; nothing was written (create the ring with a larger capacity or max frame size)"
            ),
        }
    }
}

impl core::error::Error for WriteError {}

/// Why a read returned no frame. The reader has already moved past the problem: the
/// next read continues with the following frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The caller's buffer is smaller than the next frame; nothing was consumed, retry
    /// with at least `needed` bytes.
    BufferTooSmall {
        /// The frame's payload size.
        needed: usize,
    },
    /// A record's header is impossible (size beyond the ring, frame_seq going
    /// backwards, a record past the write position): the ring file is damaged or was
    /// written by something that is not a shmring writer. The reader resynchronised.
    Corrupt {
        /// Monotonic byte position of the record.
        position: u64,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// The payload does not match its CRC-32 (the frame was damaged in memory). The frame
    /// was counted as lost and skipped; with keyframe resync on, the reader waits for the
    /// next keyframe.
    CrcMismatch {
        /// The damaged frame.
        frame_seq: u64,
        /// CRC stored by the writer.
        stored: u32,
        /// CRC of the bytes read.
        computed: u32,
    },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::BufferTooSmall { needed } => {
                write!(f, "the read buffer is smaller than the next frame ({needed} bytes); pass a larger buffer")
            }
            ReadError::Corrupt { position, reason } => write!(
                f,
                "damaged record at ring position {position}: {reason}; skipped (is something other than a shmring writer writing this file?)"
            ),
            ReadError::CrcMismatch { frame_seq, stored, computed } => write!(
                f,
                "frame {frame_seq} failed its CRC check (stored {stored:#010x}, computed {computed:#010x}); skipped"
            ),
        }
    }
}

impl core::error::Error for ReadError {}

/// Why an existing ring cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingStateError {
    /// The descriptor is missing or invalid.
    Layout(LayoutError),
    /// The descriptor is fine but the live counters are impossible.
    Damaged(&'static str),
}

impl fmt::Display for RingStateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingStateError::Layout(e) => e.fmt(f),
            RingStateError::Damaged(what) => {
                write!(f, "the ring's counters are damaged ({what}); recreate the ring")
            }
        }
    }
}

impl core::error::Error for RingStateError {}
