//! Word-wise atomic access to a ring region.
//!
//! Another process may write any byte of the region at any time, so every access is an
//! atomic load or store of an aligned `u64` (racy plain reads would be undefined
//! behaviour even when their result is thrown away, and loom could not model them).
//! Relaxed is enough for payload and header words: ordering comes from the fences and the
//! `write_index` / `tail_intent` accesses in the writer and reader (see their SYNC POINTs).
//!
//! All offsets here are byte offsets into the region; callers pass offsets that the
//! validated geometry keeps in bounds, and a word slice whose length the constructors
//! checked. Out-of-range offsets panic rather than read out of bounds; the protocol code
//! never produces them (checked by the fuzz targets).

use crate::layout::{FrameHeader, HEADER_SIZE};
use crate::sync::{AtomicU64, Ordering};
use zerocopy::{FromBytes, IntoBytes};

/// Loads the word at byte offset `off` (a multiple of 8).
#[inline]
pub(crate) fn load(words: &[AtomicU64], off: usize, order: Ordering) -> u64 {
    words[off / 8].load(order)
}

/// Stores the word at byte offset `off` (a multiple of 8).
#[inline]
pub(crate) fn store(words: &[AtomicU64], off: usize, value: u64, order: Ordering) {
    words[off / 8].store(value, order)
}

/// Copies `dst.len()` bytes starting at byte offset `off` (a multiple of 8) out of the
/// region, one relaxed word load at a time.
#[inline]
pub(crate) fn copy_out(words: &[AtomicU64], off: usize, dst: &mut [u8]) {
    let first = off / 8;
    let (chunks, rest) = dst.as_chunks_mut::<8>();
    let src = &words[first..first + chunks.len() + usize::from(!rest.is_empty())];
    for (chunk, word) in chunks.iter_mut().zip(src) {
        *chunk = word.load(Ordering::Relaxed).to_le_bytes();
    }
    if !rest.is_empty() {
        let last = src[chunks.len()].load(Ordering::Relaxed).to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }
}

/// Copies `src` into the region at byte offset `off` (a multiple of 8), one relaxed word
/// store at a time; a partial last word is padded with zeros.
#[inline]
pub(crate) fn copy_in(words: &[AtomicU64], off: usize, src: &[u8]) {
    let first = off / 8;
    let (chunks, rest) = src.as_chunks::<8>();
    let dst = &words[first..first + chunks.len() + usize::from(!rest.is_empty())];
    for (chunk, word) in chunks.iter().zip(dst) {
        word.store(u64::from_le_bytes(*chunk), Ordering::Relaxed);
    }
    if !rest.is_empty() {
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        dst[chunks.len()].store(u64::from_le_bytes(last), Ordering::Relaxed);
    }
}

/// Loads the 32-byte header at byte offset `off`. The result is untrusted until the
/// caller has validated the record (see the reader's intent check).
#[inline]
pub(crate) fn load_header(words: &[AtomicU64], off: usize) -> FrameHeader {
    let mut bytes = [0u8; HEADER_SIZE];
    copy_out(words, off, &mut bytes);
    FrameHeader::read_from_bytes(&bytes).unwrap_or_default()
}

/// Stores a 32-byte header at byte offset `off`.
#[inline]
pub(crate) fn store_header(words: &[AtomicU64], off: usize, header: &FrameHeader) {
    copy_in(words, off, header.as_bytes());
}
