//! Which layout a ring file has.

use core::sync::atomic::AtomicU64;

use crate::layout::{Geometry, LayoutError};
use crate::legacy_max_frame;

/// Which layout to use when opening a ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LayoutChoice {
    /// v1 if the file ends with a v1 descriptor, otherwise legacy.
    #[default]
    Auto,
    /// Only v1.
    V1,
    /// Only the legacy single-slot layout.
    Legacy,
}

/// The layout of an open ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingKind {
    /// v1 broadcast ring.
    V1(Geometry),
    /// Legacy single slot in a file of `len` bytes.
    Legacy {
        /// File length.
        len: usize,
    },
}

impl RingKind {
    /// Largest payload the ring accepts.
    pub fn max_frame_size(&self) -> usize {
        match self {
            RingKind::V1(g) => g.max_frame_size,
            RingKind::Legacy { len } => legacy_max_frame(*len),
        }
    }

    pub(crate) fn detect(words: &[AtomicU64], choice: LayoutChoice) -> Result<Self, LayoutError> {
        let len = words.len() * 8;
        let legacy = || {
            if len < crate::layout::LEGACY_MIN_LEN {
                Err(LayoutError::TooShort {
                    len,
                    needed: crate::layout::LEGACY_MIN_LEN,
                })
            } else {
                Ok(RingKind::Legacy { len })
            }
        };
        match choice {
            LayoutChoice::Legacy => legacy(),
            LayoutChoice::V1 => crate::region::read_geometry(words).map(RingKind::V1),
            LayoutChoice::Auto => match crate::region::read_geometry(words) {
                Ok(g) => Ok(RingKind::V1(g)),
                Err(LayoutError::BadMagic) | Err(LayoutError::TooShort { .. }) => legacy(),
                Err(e) => Err(e),
            },
        }
    }
}
