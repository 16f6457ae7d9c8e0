//! Locating things in a v1 region: the geometry read from its descriptor and the byte
//! offsets of the words the protocol touches.

use crate::error::RingStateError;
use crate::layout::{trailer, Descriptor, Geometry, LayoutError, FRAME_REGION_OFFSET};
use crate::sync::AtomicU64;
use crate::words;
use zerocopy::FromBytes;

/// Byte offsets of the protocol's words in a region of a given geometry.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RegionOffsets {
    pub(crate) sequence_number: usize,
    pub(crate) write_index: usize,
    /// Start of the trailer; add a `layout::trailer` constant.
    pub(crate) trailer: usize,
}

impl RegionOffsets {
    pub(crate) fn new(geometry: &Geometry) -> Self {
        RegionOffsets {
            sequence_number: 0,
            write_index: 8,
            trailer: geometry.trailer_offset(),
        }
    }

    /// Byte offset of the record at monotonic position `pos`.
    #[inline]
    pub(crate) fn frame_offset(&self, pos: u64, capacity: u64) -> usize {
        FRAME_REGION_OFFSET + (pos & (capacity - 1)) as usize
    }
}

/// Reads and validates the descriptor in the last 64 bytes of `words`.
pub(crate) fn read_geometry(words: &[AtomicU64]) -> Result<Geometry, LayoutError> {
    let len = words.len() * 8;
    let needed = crate::layout::v1_file_len(crate::layout::MIN_CAPACITY);
    if len < needed {
        return Err(LayoutError::TooShort { len, needed });
    }
    let mut bytes = [0u8; 64];
    words::copy_out(words, len - 64, &mut bytes);
    let descriptor = Descriptor::read_from_bytes(&bytes).map_err(|_| LayoutError::Inconsistent("descriptor"))?;
    Geometry::from_descriptor(&descriptor, len)
}

impl From<LayoutError> for RingStateError {
    fn from(e: LayoutError) -> Self {
        RingStateError::Layout(e)
    }
}

const _: () = assert!(trailer::TAIL_INTENT.is_multiple_of(64) && trailer::LATEST_RECORD.is_multiple_of(64));

/// The `writer_state` word of a v1 region.
#[cfg(feature = "std")]
pub(crate) fn load_state(words: &[AtomicU64], geometry: &Geometry) -> crate::layout::WriterState {
    // SYNC POINT (state): Acquire pairs with the writer's Release store in `set_state`.
    let w = words::load(
        words,
        geometry.trailer_offset() + trailer::WRITER_STATE,
        crate::sync::Ordering::Acquire,
    );
    crate::layout::WriterState::from_word(w)
}

/// A snapshot of a v1 region's counters (each word loaded on its own: not a consistent
/// cut), for status queries.
#[cfg(feature = "std")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Counters {
    pub(crate) sequence_number: u64,
    pub(crate) write_index: u64,
    pub(crate) latest_record: Option<u64>,
    pub(crate) latest_keyframe: Option<u64>,
    pub(crate) writer_epoch: u64,
    /// 0 when no writer recorded one.
    pub(crate) writer_pid: u64,
    /// CLOCK_MONOTONIC ns; 0 before the first heartbeat.
    pub(crate) heartbeat_ns: u64,
    pub(crate) writer_state: crate::layout::WriterState,
}

/// Loads the counters of a v1 region of `geometry`.
#[cfg(feature = "std")]
pub(crate) fn load_counters(words: &[AtomicU64], geometry: &Geometry) -> Counters {
    let at = RegionOffsets::new(geometry);
    // SYNC POINT (status): Acquire loads pair with the writer's Release stores of the
    // same words (W3-W6 in docs/protocol.md); a snapshot, not a consistent cut.
    let load = |off: usize| words::load(words, off, crate::sync::Ordering::Acquire);
    let pos = |v: u64| (v != crate::layout::NO_POSITION).then_some(v);
    Counters {
        sequence_number: load(at.sequence_number),
        write_index: load(at.write_index),
        latest_record: pos(load(at.trailer + trailer::LATEST_RECORD)),
        latest_keyframe: pos(load(at.trailer + trailer::LATEST_KEYFRAME)),
        writer_epoch: load(at.trailer + trailer::WRITER_EPOCH),
        writer_pid: load(at.trailer + trailer::WRITER_PID),
        heartbeat_ns: load(at.trailer + trailer::HEARTBEAT_NS),
        writer_state: crate::layout::WriterState::from_word(load(at.trailer + trailer::WRITER_STATE)),
    }
}

/// The writer's heartbeat time (CLOCK_MONOTONIC ns) in a v1 region of `geometry`.
#[cfg(feature = "std")]
pub(crate) fn load_heartbeat(words: &[AtomicU64], geometry: &Geometry) -> u64 {
    // SYNC POINT (wake gap): Relaxed; ordered by the caller's preceding Acquire load of
    // notify, which pairs with the writer's Release store of notify after its heartbeat
    // store (see `RingReader::wait_until`).
    words::load(
        words,
        geometry.trailer_offset() + trailer::HEARTBEAT_NS,
        crate::sync::Ordering::Relaxed,
    )
}

/// Marks a v1 region retired, for a ring file whose writer lock the caller holds
/// without a [`crate::RegionWriter`] over it (a ring being replaced). Returns the notify
/// word to wake readers on.
#[cfg(feature = "std")]
pub(crate) fn mark_retired<'a>(words: &'a [AtomicU64], geometry: &Geometry) -> &'a AtomicU64 {
    let at = geometry.trailer_offset();
    // SYNC POINT (state): Release pairs with the reader's Acquire load of writer_state
    // (`load_state`) in its retirement check.
    words::store(
        words,
        at + trailer::WRITER_STATE,
        crate::layout::WriterState::Retired.to_word(),
        crate::sync::Ordering::Release,
    );
    &words[(at + trailer::NOTIFY) / 8]
}
