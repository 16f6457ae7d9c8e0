//! The v1 reader: copies frames out of a region, validates them after the copy, detects
//! laps by position and resynchronises at the newest keyframe.

use core::ops::Deref;

use crate::error::ReadError;
use crate::frame::FrameInfo;
use crate::layout::{record_len, trailer, FrameHeader, Geometry, HEADER_SIZE, NO_POSITION, RECORD_ALIGN};
use crate::reading::{ReaderOptions, ReaderStats, StartPosition};
use crate::region::{read_geometry, RegionOffsets};
use crate::sync::{fence, AtomicU64, Ordering};
use crate::tally::Tally;
use crate::words;
use crate::LayoutError;

/// What one record turned out to be.
enum Record {
    Padding {
        len: u64,
    },
    Frame {
        header: FrameHeader,
        len: u64,
        copied: bool,
    },
    Lapped,
    Corrupt(&'static str),
    TooSmall(usize),
}

/// Most records one call walks before returning, so a reader facing a writer that
/// laps it continuously, or a damaged ring, always returns.
const STEP_BUDGET: usize = 256;

/// Reads frames from a v1 ring region, never writing to it.
///
/// See [`crate::RegionWriter`] for an example.
pub struct RegionReader<M: Deref<Target = [AtomicU64]>> {
    words: M,
    geometry: Geometry,
    at: RegionOffsets,
    cap: u64,
    /// Monotonic position of the next record to read.
    pos: u64,
    /// frame_seq the next frame should have; 0 until the first frame is passed.
    expected: u64,
    /// A `write_index` value already reported as damaged (not record aligned, or behind
    /// `pos`); nothing is read until the word changes. `NO_POSITION` when none.
    reported_tail: u64,
    /// Skip non-keyframes until a keyframe arrives.
    await_keyframe: bool,
    options: ReaderOptions,
    tally: Tally,
}

impl<M: Deref<Target = [AtomicU64]>> RegionReader<M> {
    /// A reader over `words`, which must hold a v1 ring (its descriptor is validated).
    pub fn new(words: M, options: ReaderOptions) -> Result<Self, LayoutError> {
        let geometry = read_geometry(&words)?;
        let mut reader = RegionReader {
            at: RegionOffsets::new(&geometry),
            cap: geometry.capacity as u64,
            words,
            geometry,
            pos: 0,
            expected: 0,
            reported_tail: NO_POSITION,
            await_keyframe: false,
            options,
            tally: Tally::default(),
        };
        // Apply the start position now, so `Next` means "after the reader opened".
        reader.start_at(options.start);
        Ok(reader)
    }

    /// The ring's geometry.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Accounting so far.
    pub fn stats(&self) -> ReaderStats {
        self.tally.stats()
    }

    /// The options the reader was opened with.
    pub fn options(&self) -> ReaderOptions {
        self.options
    }

    /// The region's words.
    pub fn words(&self) -> &[AtomicU64] {
        &self.words
    }

    /// The word a blocked reader sleeps on (low 32 bits are the futex word).
    pub fn notify_word(&self) -> &AtomicU64 {
        &self.words[(self.at.trailer + trailer::NOTIFY) / 8]
    }

    /// True if the writer has committed something this reader has not looked at yet.
    ///
    /// False whenever [`Self::try_read`] just returned `Ok(None)` and the region has not
    /// changed since, so a blocking read sleeps instead of spinning, whatever the region
    /// holds (a write index behind the reader or not record aligned is reported once,
    /// then ignored until it changes).
    pub fn has_unread(&self) -> bool {
        // SYNC POINT (commit acquire): pairs with the writer's Release store of write_index.
        let tail = self.load(self.at.write_index, Ordering::Acquire);
        tail > self.pos && tail != self.reported_tail
    }

    /// A trailer or control word (for the file layer's status queries).
    pub(crate) fn load(&self, off: usize, order: Ordering) -> u64 {
        words::load(&self.words, off, order)
    }

    /// Byte offset of the trailer.
    pub fn trailer_offset(&self) -> usize {
        self.at.trailer
    }

    /// Reads the next frame into `buf` (which should hold the ring's max frame size).
    ///
    /// `Ok(None)`: nothing new. `Err(BufferTooSmall)`: nothing was consumed. Other errors
    /// report a record that was skipped; the next call continues after it.
    pub fn try_read(&mut self, buf: &mut [u8]) -> Result<Option<FrameInfo>, ReadError> {
        for _ in 0..STEP_BUDGET {
            // SYNC POINT (commit acquire): pairs with the writer's Release store of
            // write_index; every record below `tail` is fully stored as of this load.
            let tail = self.load(self.at.write_index, Ordering::Acquire);
            if tail == self.pos || tail == self.reported_tail {
                return Ok(None);
            }
            if !tail.is_multiple_of(RECORD_ALIGN as u64) {
                return Err(self.damaged_tail(tail, "the write index is not record aligned"));
            }
            if tail < self.pos {
                // No writer moves write_index back. The reader does not follow it either
                // (a position behind it may be the middle of a record): it waits for the
                // writer to pass its position again.
                return Err(self.damaged_tail(tail, "the write index moved backwards"));
            }
            if tail - self.pos > self.cap {
                self.lapped(tail);
                continue;
            }
            match self.record_at(self.pos, tail, buf, self.await_keyframe) {
                Record::Padding { len } => self.pos += len,
                Record::Lapped => self.lapped(tail),
                Record::Corrupt(reason) => return Err(self.corrupt(tail, reason)),
                Record::TooSmall(needed) => return Err(ReadError::BufferTooSmall { needed }),
                Record::Frame { header, len, copied } => {
                    let seq = header.frame_seq.get();
                    if self.expected != 0 && seq < self.expected {
                        return Err(self.corrupt(tail, "frame_seq went backwards"));
                    }
                    let gap = if self.expected == 0 { 0 } else { seq - self.expected };
                    self.pos += len;
                    // No overflow: `record_at` refuses frame_seq u64::MAX.
                    self.expected = seq + 1;
                    // Not copied: skipped while waiting for a keyframe.
                    let payload = copied.then(|| &buf[..header.size.get() as usize]);
                    match self
                        .tally
                        .finish(&header, payload, gap, &self.options, &mut self.await_keyframe)?
                    {
                        Some(info) => return Ok(Some(info)),
                        None => continue,
                    }
                }
            }
        }
        Ok(None)
    }

    /// "Latest wins": jumps to the newest committed frame and reads it (keyframe or not),
    /// counting the frames jumped over as lost. Without a newer frame to jump to it reads
    /// like [`Self::try_read`].
    pub fn read_latest(&mut self, buf: &mut [u8]) -> Result<Option<FrameInfo>, ReadError> {
        // SYNC POINT (hints): Acquire pairs with the writer's Release store of latest_record;
        // the record is still validated (below write_index, then the intent check).
        let latest = self.load(self.at.trailer + trailer::LATEST_RECORD, Ordering::Acquire);
        let tail = self.load(self.at.write_index, Ordering::Acquire);
        if self.usable(latest, tail) && latest > self.pos {
            // The caller asked for the newest frame, keyframe or not.
            self.pos = latest;
            self.await_keyframe = false;
        }
        self.try_read(buf)
    }

    /// Applies a start position. A start record found overwritten (the writer is writing
    /// over it, or died after publishing its intent over it) or damaged makes the reader
    /// start at the write index it loaded: everything from there on is still to come,
    /// including the write that overwrote the start record.
    fn start_at(&mut self, start: StartPosition) {
        // Load order matters: sequence_number, then write_index, then the hints (see
        // docs/protocol.md, "Starting").
        // SYNC POINT (start): Acquire loads pair with the writer's Release stores of
        // sequence_number (W6), write_index (W4) and the hints (W3).
        let sequence = self.load(self.at.sequence_number, Ordering::Acquire);
        let tail = self.load(self.at.write_index, Ordering::Acquire);
        let keyframe = self.load(self.at.trailer + trailer::LATEST_KEYFRAME, Ordering::Acquire);
        let latest = self.load(self.at.trailer + trailer::LATEST_RECORD, Ordering::Acquire);
        self.expected = 0;
        let chosen = match start {
            StartPosition::LatestKeyframe if self.usable(keyframe, tail) => Some((keyframe, true)),
            StartPosition::Latest if self.usable(latest, tail) => Some((latest, false)),
            _ => None,
        };
        if !tail.is_multiple_of(RECORD_ALIGN as u64) {
            // Reported by the first read; nothing is read until the word changes.
            self.start_at_tail(start, tail);
            return;
        }
        if let Some((pos, await_keyframe)) = chosen {
            // The reader's stream starts at this frame: read its frame_seq so frames
            // lost before the first delivery are counted too.
            let mut header_only = [0u8; 0];
            match self.record_at(pos, tail, &mut header_only, true) {
                Record::Frame { header, .. } => {
                    self.pos = pos;
                    self.expected = header.frame_seq.get();
                    self.await_keyframe = await_keyframe;
                }
                Record::Lapped => self.start_at_tail(start, tail),
                _ => {
                    self.tally.corrupt();
                    self.start_at_tail(start, tail);
                }
            }
            return;
        }
        self.await_keyframe = start == StartPosition::LatestKeyframe;
        if latest == NO_POSITION {
            // No frame committed yet: the next one is sequence_number + 1 (unknown if
            // the counter is damaged).
            self.pos = tail;
            self.expected = sequence.checked_add(1).unwrap_or(0);
            return;
        }
        if !self.usable(latest, tail) {
            self.pos = tail;
            return;
        }
        let mut header_only = [0u8; 0];
        match self.record_at(latest, tail, &mut header_only, true) {
            Record::Frame { header, len, .. } => {
                self.pos = latest + len;
                // No overflow: `record_at` refuses frame_seq u64::MAX.
                self.expected = header.frame_seq.get() + 1;
            }
            Record::Lapped => self.start_at_tail(start, tail),
            _ => {
                self.tally.corrupt();
                self.start_at_tail(start, tail);
            }
        }
    }

    /// Starts at `tail`, the write index loaded for the start (rounded down to a record
    /// boundary if it is damaged: the first read reports it), with frame_seq unknown: the
    /// fallback when no start record can be read.
    fn start_at_tail(&mut self, start: StartPosition, tail: u64) {
        self.pos = tail - tail % RECORD_ALIGN as u64;
        self.expected = 0;
        self.await_keyframe = start == StartPosition::LatestKeyframe;
    }

    /// Whether `pos` can name a committed record below `tail` that is not yet overwritten.
    fn usable(&self, pos: u64, tail: u64) -> bool {
        pos != NO_POSITION && pos < tail && tail - pos <= self.cap && pos.is_multiple_of(RECORD_ALIGN as u64)
    }

    /// The intent check: true if no byte of the record at `pos` can have been
    /// overwritten since it was committed, so whatever was copied before this call is
    /// exactly what the writer wrote.
    ///
    /// `Err` carries what the record turned out to be instead: `Lapped`, or `Corrupt` if
    /// the intent is behind `tail` (a writer stores its intent before the write index, so
    /// only a damaged or foreign ring shows that).
    fn intact(&self, pos: u64, tail: u64) -> Result<(), Record> {
        // SYNC POINT (intent check): the Acquire fence pairs with the writer's Release
        // fence after its tail_intent store. If any word copied before this fence came
        // from a write of a later lap, that write's intent (> pos + capacity) is visible
        // to the load below.
        fence(Ordering::Acquire);
        let intent = self.load(self.at.trailer + trailer::TAIL_INTENT, Ordering::Relaxed);
        if intent > pos.saturating_add(self.cap) {
            Err(Record::Lapped)
        } else if intent < tail {
            Err(Record::Corrupt("the tail intent is behind the write index"))
        } else {
            Ok(())
        }
    }

    /// Reads the record at `pos` (< `tail`). The payload is copied into `buf` unless
    /// `keyframes_only` is set and the record is not a keyframe, or `buf` is empty and
    /// only the header is wanted. Every field is validated before it is trusted. Bounds
    /// are checked as `len > tail - pos`: `pos + len` can overflow when a hostile write
    /// index sits at the end of the u64 range.
    fn record_at(&self, pos: u64, tail: u64, buf: &mut [u8], keyframes_only: bool) -> Record {
        let off = self.at.frame_offset(pos, self.cap);
        let room = (self.cap - (pos & (self.cap - 1))) as usize;
        let header = words::load_header(&self.words, off);
        let size = header.size.get() as usize;
        // What to report about an impossible record: it is damage only if it was not
        // overwritten while being read.
        let unless_lapped = |verdict: Record| match self.intact(pos, tail) {
            Ok(()) => verdict,
            Err(record) => record,
        };
        if header.is_padding() {
            if size > room - HEADER_SIZE {
                return unless_lapped(Record::Corrupt("padding record runs past the end of the region"));
            }
            let len = record_len(size) as u64;
            if let Err(record) = self.intact(pos, tail) {
                return record;
            }
            if len > tail - pos {
                return Record::Corrupt("padding record runs past the write index");
            }
            return Record::Padding { len };
        }
        if size > self.geometry.max_frame_size || record_len(size) > room {
            return unless_lapped(Record::Corrupt("frame size is larger than the ring's max frame size"));
        }
        let len = record_len(size) as u64;
        let header_only = buf.is_empty() && size > 0;
        let copy = !header_only && (!keyframes_only || header.is_keyframe());
        if copy {
            if size > buf.len() {
                return unless_lapped(Record::TooSmall(size));
            }
            words::copy_out(&self.words, off + HEADER_SIZE, &mut buf[..size]);
        }
        if let Err(record) = self.intact(pos, tail) {
            return record;
        }
        if len > tail - pos {
            return Record::Corrupt("record runs past the write index");
        }
        if header.frame_seq.get() == 0 {
            return Record::Corrupt("frame record with frame_seq 0");
        }
        if header.frame_seq.get() == u64::MAX {
            // Would wrap `expected` to 0 ("unknown"), after which any frame_seq passes.
            return Record::Corrupt("frame_seq out of range");
        }
        Record::Frame {
            header,
            len,
            copied: copy,
        }
    }

    fn lapped(&mut self, tail: u64) {
        self.tally.lapped();
        self.resync(tail);
    }

    fn corrupt(&mut self, tail: u64, reason: &'static str) -> ReadError {
        let position = self.pos;
        self.tally.corrupt();
        self.resync(tail);
        ReadError::Corrupt { position, reason }
    }

    /// Reports a damaged `write_index` value once; reads return nothing until it changes.
    fn damaged_tail(&mut self, tail: u64, reason: &'static str) -> ReadError {
        self.tally.corrupt();
        self.reported_tail = tail;
        ReadError::Corrupt {
            position: self.pos,
            reason,
        }
    }

    /// Moves past the current position to the newest keyframe (or, without keyframe
    /// resync, the newest record); losses are counted from the frame_seq gap when the
    /// next frame is passed. A target the writer has already begun to overwrite is not
    /// taken (it would be one more lap for the same overwrite); without a target the
    /// reader goes to `tail`. After a resync with `resync_at_keyframe`, frames are skipped
    /// until a keyframe, wherever the reader landed.
    fn resync(&mut self, tail: u64) {
        let old = self.pos;
        // SYNC POINT (none needed): only chooses the target, whose own intent check after
        // its copy validates it; a stale value merely picks a target that fails that check.
        let intent = self.load(self.at.trailer + trailer::TAIL_INTENT, Ordering::Relaxed);
        let target = |pos: u64| self.usable(pos, tail) && pos > old && pos.saturating_add(self.cap) >= intent;
        // SYNC POINT (hints): Acquire loads pair with the writer's Release stores of
        // latest_keyframe and latest_record (W3).
        let keyframe = self.load(self.at.trailer + trailer::LATEST_KEYFRAME, Ordering::Acquire);
        let latest = self.load(self.at.trailer + trailer::LATEST_RECORD, Ordering::Acquire);
        self.pos = if self.options.resync_at_keyframe && target(keyframe) {
            keyframe
        } else if target(latest) {
            latest
        } else {
            tail
        };
        self.await_keyframe = self.options.resync_at_keyframe;
    }
}
