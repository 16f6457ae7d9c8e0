//! Which layout a ring file has.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::layout::{v1_file_len, Geometry, LayoutError, LEGACY_MIN_LEN, MIN_CAPACITY};
use crate::legacy::{check_legacy_prefix, legacy_max_frame};

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

    /// Detects the layout of `file` (`len` bytes, from fstat) by reading its first and
    /// last bytes, before anything is mapped: a file is mapped only once its length is
    /// known to be a ring's (a v1 descriptor that matches the length, or a plausible
    /// legacy control block within the legacy size bounds).
    pub(crate) fn probe(file: &File, len: u64, choice: LayoutChoice) -> io::Result<Result<Self, LayoutError>> {
        let v1 = || -> io::Result<Result<Self, LayoutError>> {
            let needed = v1_file_len(MIN_CAPACITY);
            if len < needed as u64 {
                return Ok(Err(LayoutError::TooShort {
                    len: len as usize,
                    needed,
                }));
            }
            let mut descriptor = [0u8; 64];
            file.read_exact_at(&mut descriptor, len - 64)?;
            let region_len = usize::try_from(len).unwrap_or(usize::MAX);
            Ok(Geometry::from_descriptor_bytes(&descriptor, region_len).map(RingKind::V1))
        };
        let legacy = || -> io::Result<Result<Self, LayoutError>> {
            let mut prefix = [0u8; LEGACY_MIN_LEN];
            if len >= LEGACY_MIN_LEN as u64 {
                file.read_exact_at(&mut prefix, 0)?;
            }
            Ok(check_legacy_prefix(len, &prefix).map(|()| RingKind::Legacy { len: len as usize }))
        };
        match choice {
            LayoutChoice::Legacy => legacy(),
            LayoutChoice::V1 => v1(),
            LayoutChoice::Auto => match v1()? {
                Err(LayoutError::BadMagic) | Err(LayoutError::TooShort { .. }) => legacy(),
                other => Ok(other),
            },
        }
    }

    /// Length of the file a ring of this kind has.
    pub(crate) fn file_len(&self) -> usize {
        match self {
            RingKind::V1(g) => g.file_len(),
            RingKind::Legacy { len } => *len,
        }
    }
}
