//! The legacy single-slot layout of the SDR_OS Python writer: one frame, always at
//! offset 16, `write_index = 32 + size`, `sequence_number` = frames written, no trailer.
//!
//! Kept so existing writers and readers interoperate. It cannot promise what v1 does: a
//! reader that is one frame late loses it, and a reader copying while the writer
//! overwrites the slot is caught only if `sequence_number` moved meanwhile or the CRC
//! fails. Use v1 for anything new.

use core::ops::Deref;

use crate::error::{ReadError, WriteError};
use crate::frame::FrameInfo;
use crate::layout::{FrameHeader, FLAG_KEYFRAME, FLAG_NO_CRC, HEADER_SIZE, LEGACY_MIN_LEN};
use crate::reading::{ReaderStats, StartPosition};
use crate::sync::{fence, AtomicU64, Ordering};
use crate::tally::Tally;
use crate::{words, FrameMeta, LayoutError, ReaderOptions};

const SEQUENCE: usize = 0;
const WRITE_INDEX: usize = 8;
const HEADER_AT: usize = 16;
const PAYLOAD_AT: usize = HEADER_AT + HEADER_SIZE;

/// Largest payload a legacy region of `len` bytes holds.
pub(crate) const fn legacy_max_frame(len: usize) -> usize {
    (len / 8 * 8).saturating_sub(PAYLOAD_AT)
}

fn check_len(words: &[AtomicU64]) -> Result<(), LayoutError> {
    let len = words.len() * 8;
    if len < LEGACY_MIN_LEN {
        return Err(LayoutError::TooShort {
            len,
            needed: LEGACY_MIN_LEN,
        });
    }
    Ok(())
}

/// Checks, before a file of `len` bytes is mapped, that its first 48 bytes (`prefix`:
/// the control block and the slot's header) can be a legacy ring: the length within
/// `LEGACY_MIN_LEN..=LEGACY_MAX_LEN`, `write_index` 0 (empty) or `32 + size` for some
/// size the file holds, and the header's `size` within the file. A writer may be
/// storing a new frame meanwhile, so `write_index` and `size` are not compared with each
/// other; each is only bounded. (The file layer's, before it maps a file.)
#[cfg(all(feature = "std", not(shmring_loom)))]
pub(crate) fn check_legacy_prefix(len: u64, prefix: &[u8]) -> Result<(), LayoutError> {
    use crate::layout::LEGACY_MAX_LEN;
    if len < LEGACY_MIN_LEN as u64 || prefix.len() < LEGACY_MIN_LEN {
        return Err(LayoutError::TooShort {
            len: len as usize,
            needed: LEGACY_MIN_LEN,
        });
    }
    if len > LEGACY_MAX_LEN as u64 {
        return Err(LayoutError::TooLong {
            len,
            max: LEGACY_MAX_LEN,
        });
    }
    let max = legacy_max_frame(len as usize) as u64;
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&prefix[at..at + 8]);
        u64::from_le_bytes(w)
    };
    let write_index = word(WRITE_INDEX);
    if write_index != 0 && !(HEADER_SIZE as u64..=HEADER_SIZE as u64 + max).contains(&write_index) {
        return Err(LayoutError::NotARing("write_index is beyond the file"));
    }
    let header = FrameHeader::parse(&prefix[HEADER_AT..]).ok_or(LayoutError::NotARing("no header"))?;
    if u64::from(header.size.get()) > max {
        return Err(LayoutError::NotARing("the frame size is larger than the file"));
    }
    Ok(())
}

/// Writes frames in the legacy single-slot layout.
pub struct LegacyWriter<M: Deref<Target = [AtomicU64]>> {
    words: M,
    next_seq: u64,
    compute_crc: bool,
}

impl<M: Deref<Target = [AtomicU64]>> LegacyWriter<M> {
    /// Zeroes the control block (as the SDR_OS writer does on start) and returns a writer
    /// whose first frame is frame_seq 1.
    pub fn format(words: M) -> Result<Self, LayoutError> {
        check_len(&words)?;
        words::store(&words, SEQUENCE, 0, Ordering::Relaxed);
        // SYNC POINT (legacy format): Release pairs with the legacy reader's Acquire loads.
        words::store(&words, WRITE_INDEX, 0, Ordering::Release);
        Ok(LegacyWriter {
            words,
            next_seq: 1,
            compute_crc: true,
        })
    }

    /// Continues an existing legacy ring: frame_seq carries on after the larger of
    /// `sequence_number` and the slot's frame_seq.
    pub fn resume(words: M) -> Result<Self, LayoutError> {
        check_len(&words)?;
        // SYNC POINT (legacy resume): Acquire pairs with the previous writer's Release store
        // of sequence_number, so its slot header is visible.
        let sequence = words::load(&words, SEQUENCE, Ordering::Acquire);
        let header = words::load_header(&words, HEADER_AT);
        let last = sequence.max(header.frame_seq.get());
        Ok(LegacyWriter {
            words,
            next_seq: last.saturating_add(1),
            compute_crc: true,
        })
    }

    /// Turns CRC computation on (default) or off.
    pub fn set_crc(&mut self, compute: bool) {
        self.compute_crc = compute;
    }

    /// Largest payload this region holds.
    pub fn max_frame_size(&self) -> usize {
        legacy_max_frame(self.words.len() * 8)
    }

    /// Writes one frame over the previous one and returns its frame_seq.
    pub fn write(&mut self, payload: &[u8], meta: FrameMeta) -> Result<u64, WriteError> {
        let max = self.max_frame_size();
        if payload.len() > max {
            return Err(WriteError::FrameTooLarge {
                size: payload.len(),
                max,
            });
        }
        let mut flags = if meta.keyframe { FLAG_KEYFRAME } else { 0 };
        let crc = if self.compute_crc {
            crc32fast::hash(payload)
        } else {
            flags |= FLAG_NO_CRC;
            0
        };
        let seq = self.next_seq;
        let header = FrameHeader::new(meta.frame_id, seq, payload.len() as u32, flags, meta.codec.0, crc);
        words::store_header(&self.words, HEADER_AT, &header);
        words::copy_in(&self.words, PAYLOAD_AT, payload);
        // SYNC POINT (legacy commit): Release stores of write_index then sequence_number
        // pair with the legacy reader's Acquire load of sequence_number.
        words::store(
            &self.words,
            WRITE_INDEX,
            (HEADER_SIZE + payload.len()) as u64,
            Ordering::Release,
        );
        words::store(&self.words, SEQUENCE, seq, Ordering::Release);
        self.next_seq = seq.wrapping_add(1);
        Ok(seq)
    }

    /// frame_seq the next write will get.
    pub fn next_frame_seq(&self) -> u64 {
        self.next_seq
    }
}

/// Reads frames from a legacy single-slot region.
pub struct LegacyReader<M: Deref<Target = [AtomicU64]>> {
    words: M,
    /// `sequence_number` of the last slot content consumed.
    last_sequence: u64,
    expected: u64,
    await_keyframe: bool,
    options: ReaderOptions,
    tally: Tally,
}

/// Attempts at a consistent copy before giving up until the next call.
const COPY_ATTEMPTS: usize = 8;

impl<M: Deref<Target = [AtomicU64]>> LegacyReader<M> {
    /// A reader over a legacy region.
    pub fn new(words: M, options: ReaderOptions) -> Result<Self, LayoutError> {
        check_len(&words)?;
        // `Next` skips what the slot holds now; the other starts deliver it.
        let last_sequence = match options.start {
            // SYNC POINT (legacy start): pairs with the writer's Release store of sequence_number.
            StartPosition::Next => words::load(&words, SEQUENCE, Ordering::Acquire),
            _ => 0,
        };
        Ok(LegacyReader {
            words,
            last_sequence,
            expected: 0,
            await_keyframe: options.start == StartPosition::LatestKeyframe,
            options,
            tally: Tally::default(),
        })
    }

    /// Accounting so far.
    pub fn stats(&self) -> ReaderStats {
        self.tally.stats()
    }

    /// Largest payload the region holds.
    pub fn max_frame_size(&self) -> usize {
        legacy_max_frame(self.words.len() * 8)
    }

    /// `sequence_number` as the writer last stored it.
    pub fn sequence_number(&self) -> u64 {
        words::load(&self.words, SEQUENCE, Ordering::Acquire)
    }

    /// `write_index` as the writer last stored it.
    pub fn write_index(&self) -> u64 {
        // SYNC POINT (legacy status): pairs with the writer's Release store of write_index.
        words::load(&self.words, WRITE_INDEX, Ordering::Acquire)
    }

    /// True if the slot holds a frame this reader has not consumed.
    pub fn has_unread(&self) -> bool {
        self.sequence_number() != self.last_sequence
    }

    /// "Latest wins" is all a single slot can do: the same as [`Self::try_read`].
    pub fn read_latest(&mut self, buf: &mut [u8]) -> Result<Option<FrameInfo>, ReadError> {
        self.await_keyframe = false;
        self.try_read(buf)
    }

    /// Reads the slot if it holds a new frame. Errors report a frame that was skipped.
    pub fn try_read(&mut self, buf: &mut [u8]) -> Result<Option<FrameInfo>, ReadError> {
        for _ in 0..COPY_ATTEMPTS {
            // SYNC POINT (legacy acquire): pairs with the writer's Release store of
            // sequence_number; the slot it committed is visible from here.
            // SYNC POINT (legacy status): pairs with the writer's Release store of sequence_number.
            let first = words::load(&self.words, SEQUENCE, Ordering::Acquire);
            if first == self.last_sequence {
                return Ok(None);
            }
            // SYNC POINT (legacy commit): pairs with the writer's Release store of write_index.
            let write_index = words::load(&self.words, WRITE_INDEX, Ordering::Acquire);
            let header = words::load_header(&self.words, HEADER_AT);
            let size = header.size.get() as usize;
            let fits = size <= self.max_frame_size();
            if fits && size <= buf.len() {
                words::copy_out(&self.words, PAYLOAD_AT, &mut buf[..size]);
            }
            // SYNC POINT (legacy validate): the Acquire fence orders the copy before the
            // second load; a changed sequence_number means the writer replaced the slot.
            fence(Ordering::Acquire);
            if words::load(&self.words, SEQUENCE, Ordering::Relaxed) != first {
                continue;
            }
            if !fits {
                self.last_sequence = first;
                self.tally.corrupt();
                return Err(ReadError::Corrupt {
                    position: 0,
                    reason: "legacy frame size is larger than the file",
                });
            }
            if write_index != (HEADER_SIZE + size) as u64 {
                self.last_sequence = first;
                self.tally.corrupt();
                return Err(ReadError::Corrupt {
                    position: 0,
                    reason: "legacy write_index disagrees with the frame size",
                });
            }
            if size > buf.len() {
                return Err(ReadError::BufferTooSmall { needed: size });
            }
            self.last_sequence = first;
            return self.accept(&header, &buf[..size]);
        }
        Ok(None)
    }

    fn accept(&mut self, header: &FrameHeader, payload: &[u8]) -> Result<Option<FrameInfo>, ReadError> {
        let seq = header.frame_seq.get();
        // A legacy writer restarts frame_seq at 1 when it restarts: a new baseline.
        let gap = if self.expected == 0 || seq < self.expected {
            0
        } else {
            seq - self.expected
        };
        self.expected = seq.wrapping_add(1);
        // Not delivered: skipped while waiting for a keyframe.
        let payload = (!self.await_keyframe || header.is_keyframe()).then_some(payload);
        self.tally
            .finish(header, payload, gap, &self.options, &mut self.await_keyframe)
    }
}
