//! The shared mapping of a ring file, seen as words.

use std::fs::File;
use std::io;
use std::path::Path;

use super::error::io_err;
use super::sigbus::{self, Damage, Registration};
use super::{Error, LayoutChoice, RingKind};

use core::ops::Deref;
use core::sync::atomic::AtomicU64;

/// A shared mapping of a ring file, seen as words.
pub(crate) struct MappedWords {
    /// Declared before `map`, so it is dropped (unregistered) before the unmap.
    registration: Registration,
    map: memmap2::MmapRaw,
    words: usize,
}

impl MappedWords {
    /// Maps the first `len` bytes of `file`, which the caller has checked to be a ring
    /// of that length ([`map_ring`]). `file` must stay open until the mapping is dropped
    /// (the SIGBUS handler checks its size).
    pub(crate) fn map(file: &File, writable: bool, len: usize) -> io::Result<Self> {
        let mut options = memmap2::MmapOptions::new();
        options.len(len);
        // Pre-fault the whole mapping so the first frames do not pay for page faults.
        options.populate();
        let map = if writable {
            options.map_raw(file)?
        } else {
            options.map_raw_read_only(file)?
        };
        let words = map.len() / 8;
        // Registered before anything touches the mapping, so a truncation at any time is
        // survived (see the sigbus module).
        let registration = sigbus::register(map.as_ptr(), map.len(), writable, std::os::fd::AsRawFd::as_raw_fd(file))
            .ok_or_else(|| {
            io::Error::other("too many ring mappings in this process (1024); close some readers or writers")
        })?;
        Ok(MappedWords {
            registration,
            map,
            words,
        })
    }

    /// The mapping's damage flag (set if the file shrank under it).
    pub(crate) fn damage(&self) -> Damage {
        self.registration.damage()
    }

    /// Bytes mapped.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

impl Deref for MappedWords {
    type Target = [AtomicU64];
    fn deref(&self) -> &[AtomicU64] {
        // SAFETY:
        // - the pointer comes from mmap, so it is page aligned (>= align_of::<AtomicU64>())
        //   and valid for `map.len()` >= `words * 8` bytes while `self.map` lives, which
        //   outlives the returned borrow;
        // - `AtomicU64` has the size and alignment of `u64` and permits shared mutation,
        //   which is what other processes do to this memory; this crate only ever accesses
        //   it through these atomics;
        // - read-only mappings are only used by readers, which never store (atomic loads
        //   of read-only memory are allowed for lock-free 8-byte atomics).
        unsafe { core::slice::from_raw_parts(self.map.as_ptr() as *const AtomicU64, self.words) }
    }
}

/// Detects the layout of `file` (`len` bytes long, from fstat) without mapping it, then
/// maps exactly the ring's bytes: a file that is not a ring is refused before any of it
/// is mapped or faulted in.
pub(crate) fn map_ring(
    path: &Path,
    file: &File,
    len: u64,
    choice: LayoutChoice,
    writable: bool,
) -> Result<(RingKind, MappedWords), Error> {
    let kind = RingKind::probe(file, len, choice)
        .map_err(io_err(path, "read"))?
        .map_err(Error::layout(path))?;
    let words = MappedWords::map(file, writable, kind.file_len()).map_err(io_err(path, "map"))?;
    Ok((kind, words))
}
