//! Word-wise atomic access to a ring region.
//!
//! Another process may write any byte of the region at any time, so every access is an
//! atomic load or store of an aligned `u64` (racy plain reads would be undefined
//! behaviour even when their result is thrown away, and loom could not model them).
//! Long payload copies on x86-64 CPUs with AVX move the same words with 16-byte vector
//! instructions (see [`bulk`]); other CPUs, loom and Miri use the word loop.
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
    #[cfg(feature = "test-hooks")]
    crate::lines::note(off, 8, false);
    words[off / 8].load(order)
}

/// Stores the word at byte offset `off` (a multiple of 8).
#[inline]
pub(crate) fn store(words: &[AtomicU64], off: usize, value: u64, order: Ordering) {
    #[cfg(feature = "test-hooks")]
    crate::lines::note(off, 8, true);
    words[off / 8].store(value, order)
}

/// Copies of at least this many bytes move their middle part with 16-byte vector
/// accesses where [`bulk`] is usable; shorter ones are not worth the alignment prologue.
#[cfg(all(target_arch = "x86_64", not(miri), not(shmring_loom)))]
const BULK_MIN: usize = 256;

/// Copies `dst.len()` bytes starting at byte offset `off` (a multiple of 8) out of the
/// region.
#[inline]
pub(crate) fn copy_out(words: &[AtomicU64], off: usize, dst: &mut [u8]) {
    #[cfg(feature = "test-hooks")]
    crate::lines::note(off, dst.len(), false);
    #[cfg(all(target_arch = "x86_64", not(miri), not(shmring_loom)))]
    if dst.len() >= BULK_MIN && bulk::usable() {
        bulk::copy_out(words, off, dst);
        return;
    }
    copy_out_words(words, off, dst);
}

/// Copies `src` into the region at byte offset `off` (a multiple of 8); a partial last
/// word is padded with zeros.
#[inline]
pub(crate) fn copy_in(words: &[AtomicU64], off: usize, src: &[u8]) {
    #[cfg(feature = "test-hooks")]
    crate::lines::note(off, src.len(), true);
    #[cfg(all(target_arch = "x86_64", not(miri), not(shmring_loom)))]
    if src.len() >= BULK_MIN && bulk::usable() {
        bulk::copy_in(words, off, src);
        return;
    }
    copy_in_words(words, off, src);
}

/// [`copy_out`] one relaxed word load at a time: the portable path, and the only one
/// loom and Miri see.
#[inline]
fn copy_out_words(words: &[AtomicU64], off: usize, dst: &mut [u8]) {
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

/// [`copy_in`] one relaxed word store at a time.
#[inline]
fn copy_in_words(words: &[AtomicU64], off: usize, src: &[u8]) {
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

/// Payload copies with 16-byte SSE2 moves, four per 64-byte step, written in inline
/// assembly because Rust has no vector-wide atomic access and LLVM never vectorises a
/// loop of atomics: the word loop runs at about a third of memcpy speed on a
/// cache-resident ring (see docs/benchmarks.md). Used only on CPUs that report AVX
/// ([`usable`]).
///
/// Why this is the same operation as the word loop: every vector access touches a
/// 16-byte-aligned address inside the region, and Intel SDM Vol. 3A §9.1.1 ("Guaranteed
/// Atomic Operations") guarantees that processors which enumerate AVX
/// (CPUID.01H:ECX.AVX\[bit 28\] = 1) carry out the 16-byte memory operation of MOVDQA
/// (among others) atomically; without AVX an SSE access wider than a quadword "may be
/// implemented using multiple memory accesses", with no promise about how the bytes are
/// split, so such CPUs use the word loop. AMD's APM Vol. 2 §7.3.2 ("Access Atomicity")
/// is weaker: processors that report AVX extend the atomicity of naturally aligned single
/// loads and stores from a quadword to a double quadword for *cacheable* memory only. A
/// ring is an ordinary write-back mapping of a file (tmpfs or page cache), which both
/// guarantees cover. An atomic aligned 16-byte access is in
/// particular two single-copy-atomic 8-byte accesses, so each asm block is, to every other
/// thread and process, a run of relaxed 8-byte atomic loads or stores of the region's
/// words, which is exactly what the word loop does; the protocol orders payload accesses
/// only through the fences around the whole copy (see the SYNC POINTs in the writer and
/// reader), never among themselves. The asm is opaque to the compiler and declared as
/// reading and writing memory, so it is not moved across those fences.
#[cfg(all(target_arch = "x86_64", not(miri), not(shmring_loom)))]
mod bulk {
    use super::{copy_in_words, copy_out_words, AtomicU64};
    use core::arch::asm;
    use core::sync::atomic::{AtomicU8, Ordering};

    /// [`usable`]'s cached answer: 0 not yet asked, 1 no, 2 yes.
    static AVX: AtomicU8 = AtomicU8::new(0);

    /// True if the CPU reports AVX, the condition under which the vector copies are
    /// documented to be atomic. Asks CPUID once per process.
    #[inline]
    pub(super) fn usable() -> bool {
        // SYNC POINT (none needed): the cache holds a value every thread computes
        // identically; a thread that sees 0 just asks CPUID itself.
        match AVX.load(Ordering::Relaxed) {
            0 => {
                let avx = cpu_has_avx();
                AVX.store(if avx { 2 } else { 1 }, Ordering::Relaxed);
                avx
            }
            cached => cached == 2,
        }
    }

    /// CPUID.01H:ECX.AVX\[bit 28\] (leaf 1 exists on every x86-64 CPU). Only the flag the
    /// SDM's guarantee names: whether the OS saves AVX registers does not matter, the
    /// copies use SSE registers.
    #[cold]
    fn cpu_has_avx() -> bool {
        let leaf = core::arch::x86_64::__cpuid(1);
        leaf.ecx & (1 << 28) != 0
    }

    /// [`super::copy_out`] with the vector body, whatever [`usable`] says (the tests call
    /// it directly on every CPU: SSE2 itself is part of x86-64).
    #[inline]
    pub(super) fn copy_out(words: &[AtomicU64], off: usize, dst: &mut [u8]) {
        let (lead, body) = split(words, off, dst.len());
        copy_out_words(words, off, &mut dst[..lead]);
        let ring = &words[(off + lead) / 8..(off + lead + body) / 8];
        let (middle, tail) = dst[lead..].split_at_mut(body);
        load(ring, middle);
        copy_out_words(words, off + lead + body, tail);
    }

    /// [`super::copy_in`] with the vector body, whatever [`usable`] says.
    #[inline]
    pub(super) fn copy_in(words: &[AtomicU64], off: usize, src: &[u8]) {
        let (lead, body) = split(words, off, src.len());
        copy_in_words(words, off, &src[..lead]);
        let ring = &words[(off + lead) / 8..(off + lead + body) / 8];
        let (middle, tail) = src[lead..].split_at(body);
        store(ring, middle);
        copy_in_words(words, off + lead + body, tail);
    }

    /// Splits a copy of `len` bytes at region byte offset `off` (a multiple of 8) into a
    /// word-copied lead (0 or 8 bytes, so the vector part starts 16-byte aligned in
    /// memory) and a vector body (a multiple of 64 bytes); the word loop copies what is
    /// left.
    #[inline]
    fn split(words: &[AtomicU64], off: usize, len: usize) -> (usize, usize) {
        let addr = words.as_ptr() as usize + off;
        let lead = (addr.wrapping_neg() % 16).min(len);
        (lead, (len - lead) & !63)
    }

    /// Copies `ring` (16-byte aligned, `dst.len()` bytes, a multiple of 64) into `dst`.
    #[inline]
    fn load(ring: &[AtomicU64], dst: &mut [u8]) {
        if dst.is_empty() {
            return;
        }
        assert!(
            ring.len() * 8 == dst.len() && dst.len().is_multiple_of(64) && (ring.as_ptr() as usize).is_multiple_of(16)
        );
        // SAFETY: `ring` and `dst` are live slices of exactly `dst.len()` bytes (asserted),
        // a non-zero multiple of 64, so the loop reads only `ring` and writes only `dst`
        // and ends. `ring` is 16-byte aligned, as `movdqa` needs. Reading the atomics'
        // memory through a raw pointer is what `AtomicU64::as_ptr` allows; the module doc
        // explains why the loads are relaxed quadword atomic loads. The clobbered xmm
        // registers are declared.
        unsafe {
            asm!(
                "2:",
                "movdqa {a}, xmmword ptr [{src}]",
                "movdqa {b}, xmmword ptr [{src} + 16]",
                "movdqa {c}, xmmword ptr [{src} + 32]",
                "movdqa {d}, xmmword ptr [{src} + 48]",
                "movdqu xmmword ptr [{dst}], {a}",
                "movdqu xmmword ptr [{dst} + 16], {b}",
                "movdqu xmmword ptr [{dst} + 32], {c}",
                "movdqu xmmword ptr [{dst} + 48], {d}",
                "add {src}, 64",
                "add {dst}, 64",
                "sub {n}, 64",
                "jnz 2b",
                src = inout(reg) ring.as_ptr() => _,
                dst = inout(reg) dst.as_mut_ptr() => _,
                n = inout(reg) dst.len() => _,
                a = out(xmm_reg) _,
                b = out(xmm_reg) _,
                c = out(xmm_reg) _,
                d = out(xmm_reg) _,
                options(nostack),
            );
        }
    }

    /// Copies `src` (a multiple of 64 bytes) into `ring` (16-byte aligned, the same length).
    #[inline]
    fn store(ring: &[AtomicU64], src: &[u8]) {
        if src.is_empty() {
            return;
        }
        assert!(
            ring.len() * 8 == src.len() && src.len().is_multiple_of(64) && (ring.as_ptr() as usize).is_multiple_of(16)
        );
        // SAFETY: as in `load`, with the roles swapped: reads only `src`, writes only
        // `ring` (16-byte aligned for `movdqa`). Writing through a pointer derived from
        // `&[AtomicU64]` is allowed because atomics are interior-mutable (`UnsafeCell`),
        // and the module doc explains why the stores are relaxed quadword atomic stores.
        unsafe {
            asm!(
                "2:",
                "movdqu {a}, xmmword ptr [{src}]",
                "movdqu {b}, xmmword ptr [{src} + 16]",
                "movdqu {c}, xmmword ptr [{src} + 32]",
                "movdqu {d}, xmmword ptr [{src} + 48]",
                "movdqa xmmword ptr [{dst}], {a}",
                "movdqa xmmword ptr [{dst} + 16], {b}",
                "movdqa xmmword ptr [{dst} + 32], {c}",
                "movdqa xmmword ptr [{dst} + 48], {d}",
                "add {src}, 64",
                "add {dst}, 64",
                "sub {n}, 64",
                "jnz 2b",
                src = inout(reg) src.as_ptr() => _,
                dst = inout(reg) ring.as_ptr() => _,
                n = inout(reg) src.len() => _,
                a = out(xmm_reg) _,
                b = out(xmm_reg) _,
                c = out(xmm_reg) _,
                d = out(xmm_reg) _,
                options(nostack),
            );
        }
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

#[cfg(all(test, not(shmring_loom)))]
mod tests {
    use super::*;
    extern crate alloc;
    use alloc::{vec, vec::Vec};

    type Copies = (fn(&[AtomicU64], usize, &mut [u8]), fn(&[AtomicU64], usize, &[u8]));

    /// The copy paths to check: the word loop everywhere, and the vector copy on x86-64
    /// whatever the CPU reports (SSE2 is part of x86-64; only its atomicity needs AVX).
    fn paths() -> Vec<(&'static str, Copies)> {
        let mut paths: Vec<(&'static str, Copies)> = vec![("words", (copy_out_words, copy_in_words))];
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        paths.push(("vector", (bulk::copy_out, bulk::copy_in)));
        paths.push(("dispatch", (copy_out, copy_in)));
        paths
    }

    /// Every length around the vector thresholds, at both 16-byte phases of the ring
    /// address, through each path: the bytes land where the word loop would put them,
    /// the padding of a partial last word is zero, and no word outside the copy is
    /// touched.
    #[test]
    fn copies_match_the_word_loop_and_stay_in_bounds() {
        const WORDS: usize = 512;
        let sentinel = 0xA5A5_A5A5_A5A5_A5A5u64;
        let src: Vec<u8> = (0..WORDS * 8).map(|i| (i * 7 + 3) as u8).collect();
        for (name, (out, into)) in paths() {
            for off in [0usize, 8, 16, 24, 40] {
                for len in 0..=1200 {
                    let words: Vec<AtomicU64> = (0..WORDS).map(|_| AtomicU64::new(sentinel)).collect();
                    into(&words, off, &src[..len]);
                    let mut back = vec![0u8; len];
                    out(&words, off, &mut back);
                    assert_eq!(back, src[..len], "{name}: off {off} len {len}");
                    let mut by_words = vec![0u8; len];
                    copy_out_words(&words, off, &mut by_words);
                    assert_eq!(by_words, src[..len], "{name}: stored bytes, off {off} len {len}");
                    let end_word = (off + len).div_ceil(8);
                    for (i, w) in words.iter().enumerate() {
                        let v = w.load(Ordering::Relaxed);
                        if i < off / 8 || i >= end_word {
                            assert_eq!(
                                v, sentinel,
                                "{name}: word {i} outside the copy changed (off {off} len {len})"
                            );
                        }
                    }
                    if len % 8 != 0 {
                        let last = words[end_word - 1].load(Ordering::Relaxed).to_le_bytes();
                        assert!(last[len % 8..].iter().all(|&b| b == 0), "{name}: padding not zeroed");
                    }
                }
            }
        }
    }

    /// The vector copy is chosen exactly on CPUs that report AVX (issue 11 item 11).
    #[cfg(all(target_arch = "x86_64", not(miri), feature = "std"))]
    #[test]
    fn vector_copies_only_on_cpus_with_avx() {
        assert_eq!(bulk::usable(), std::is_x86_feature_detected!("avx"));
        assert_eq!(bulk::usable(), bulk::usable(), "the cached answer is stable");
    }
}
