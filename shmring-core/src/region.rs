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

const _: () = assert!(trailer::TAIL_INTENT % 64 == 0 && trailer::LATEST_RECORD % 64 == 0);

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
