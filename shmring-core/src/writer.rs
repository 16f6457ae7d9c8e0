//! The v1 writer: publishes records into a caller-provided region without allocating,
//! never waiting for readers.

use core::ops::Deref;

use crate::error::{RingStateError, WriteError};
use crate::layout::{
    record_len, trailer, FrameHeader, Geometry, LayoutError, WriterState, FLAG_KEYFRAME, FLAG_NO_CRC, FLAG_WRAP,
    FRAME_REGION_OFFSET, HEADER_SIZE, NO_POSITION, RECORD_ALIGN,
};
use crate::region::{read_geometry, RegionOffsets};
use crate::sync::{fence, AtomicU64, Ordering};
use crate::words;
use crate::FrameMeta;

/// Writes frames into a v1 ring region. Exactly one writer may exist per region; the
/// file layer enforces that with a lock, callers of this type must ensure it themselves.
///
/// `M` is anything that derefs to the region's words: `&[AtomicU64]`, `Box<[AtomicU64]>`,
/// `Arc<[AtomicU64]>`, or the file layer's mapping.
///
/// ```
/// use shmring_core::{RegionWriter, RegionReader, Geometry, FrameMeta, ReaderOptions, Word};
/// let geometry = Geometry::new(4096, 1024).unwrap();
/// let region: Vec<Word> = (0..geometry.file_len() / 8).map(|_| Word::new(0)).collect();
/// let mut writer = RegionWriter::format(&region[..], geometry, 0).unwrap();
/// let mut reader = RegionReader::new(&region[..], ReaderOptions::default()).unwrap();
/// let seq = writer.write(b"hello", FrameMeta::keyframe(7)).unwrap();
/// let mut buf = [0u8; 1024];
/// let info = reader.try_read(&mut buf).unwrap().unwrap();
/// assert_eq!((info.frame_seq, info.frame_id, &buf[..info.size]), (seq, 7, &b"hello"[..]));
/// ```
pub struct RegionWriter<M: Deref<Target = [AtomicU64]>> {
    words: M,
    geometry: Geometry,
    at: RegionOffsets,
    /// Monotonic byte position just past the last committed record.
    tail: u64,
    /// The `tail_intent` last stored: at least `tail`, and possibly up to `reserve` bytes
    /// ahead of it (see [`Self::publish_intent`]).
    intent: u64,
    /// Position of the newest committed keyframe (`NO_POSITION`: none).
    latest_keyframe: u64,
    /// How far ahead of a write's end the intent is published, at most.
    reserve: u64,
    /// frame_seq of the next frame.
    next_seq: u64,
    /// Value last stored in the notify word.
    notify: u64,
    compute_crc: bool,
}

impl<M: Deref<Target = [AtomicU64]>> RegionWriter<M> {
    /// Formats `words` as an empty ring with `geometry` and returns its writer.
    /// `created_unix_ns` is recorded in the descriptor (pass 0 where there is no clock).
    pub fn format(words: M, geometry: Geometry, created_unix_ns: u64) -> Result<Self, LayoutError> {
        let len = words.len() * 8;
        if len != geometry.file_len() {
            return Err(LayoutError::Inconsistent("region length does not match the geometry"));
        }
        let at = RegionOffsets::new(&geometry);
        for w in words.iter() {
            w.store(0, Ordering::Relaxed);
        }
        words::copy_in(
            &words,
            at.trailer + trailer::DESCRIPTOR,
            zerocopy::IntoBytes::as_bytes(&geometry.descriptor(created_unix_ns)),
        );
        words::store(
            &words,
            at.trailer + trailer::LATEST_RECORD,
            NO_POSITION,
            Ordering::Relaxed,
        );
        words::store(
            &words,
            at.trailer + trailer::LATEST_KEYFRAME,
            NO_POSITION,
            Ordering::Relaxed,
        );
        words::store(&words, at.trailer + trailer::WRITER_EPOCH, 1, Ordering::Relaxed);
        words::store(
            &words,
            at.trailer + trailer::WRITER_STATE,
            WriterState::Open.to_word(),
            Ordering::Relaxed,
        );
        // SYNC POINT (format): the file layer publishes a formatted region to other
        // processes only by renaming the file into place; in-process readers are created
        // after this returns. The fence orders the stores above before either.
        fence(Ordering::Release);
        Ok(RegionWriter {
            words,
            geometry,
            at,
            tail: 0,
            intent: 0,
            latest_keyframe: NO_POSITION,
            reserve: intent_reserve(&geometry),
            next_seq: 1,
            notify: 0,
            compute_crc: true,
        })
    }

    /// Continues the stream in an existing ring: frame_seq carries on from the last
    /// committed frame, and bytes a crashed writer left half-written are covered with
    /// padding records before anything new is written. The writer epoch is incremented.
    pub fn resume(words: M) -> Result<Self, RingStateError> {
        let geometry = read_geometry(&words)?;
        let at = RegionOffsets::new(&geometry);
        let cap = geometry.capacity as u64;
        // SYNC POINT (resume): Acquire loads pair with the previous (possibly dead) writer's
        // Release stores of write_index, sequence_number and the hints; tail_intent was
        // stored Relaxed before a Release fence, which the Acquire load here also observes
        // in coherence order (it is the newest value: that writer is gone).
        let committed = words::load(&words, at.write_index, Ordering::Acquire);
        let intent = words::load(&words, at.trailer + trailer::TAIL_INTENT, Ordering::Acquire);
        let align = RECORD_ALIGN as u64;
        if !committed.is_multiple_of(align) || !intent.is_multiple_of(align) {
            return Err(RingStateError::Damaged("write position is not record aligned"));
        }
        if intent < committed || intent - committed > cap {
            return Err(RingStateError::Damaged(
                "tail intent is not within one lap of the write index",
            ));
        }
        if intent > u64::MAX / 2 {
            // Positions count bytes ever written: 2^63 of them is centuries of writing,
            // so this is a damaged counter, and continuing would overflow positions.
            return Err(RingStateError::Damaged("write position is beyond 2^63 bytes"));
        }
        let mut sequence = words::load(&words, at.sequence_number, Ordering::Acquire);
        // Positions published before a crash but not committed (>= write_index) point at
        // bytes about to be covered by padding, and so do records the dead writer had
        // started to overwrite (the intent check: `tail_intent > pos + capacity`, the
        // crash came after W1 of a write reaching into the record's lap): forget them.
        for hint in [trailer::LATEST_RECORD, trailer::LATEST_KEYFRAME] {
            let pos = words::load(&words, at.trailer + hint, Ordering::Acquire);
            let usable = pos != NO_POSITION
                && pos < committed
                && committed - pos <= cap
                && intent - pos <= cap
                && pos.is_multiple_of(align);
            if pos != NO_POSITION && !usable {
                words::store(&words, at.trailer + hint, NO_POSITION, Ordering::Relaxed);
            }
            if usable && hint == trailer::LATEST_RECORD {
                // A writer that died between storing write_index and sequence_number left
                // the newest frame_seq only in that record's header. The header is intact:
                // nothing was written into its lap since it was committed. (Had the dead
                // writer started another frame, it had stored sequence_number first.)
                let header = words::load_header(&words, at.frame_offset(pos, cap));
                sequence = sequence.max(header.frame_seq.get());
            }
        }
        // What the loop above kept (or NO_POSITION).
        let latest_keyframe = words::load(&words, at.trailer + trailer::LATEST_KEYFRAME, Ordering::Relaxed);
        let notify = words::load(&words, at.trailer + trailer::NOTIFY, Ordering::Relaxed);
        let epoch = words::load(&words, at.trailer + trailer::WRITER_EPOCH, Ordering::Relaxed);
        words::store(
            &words,
            at.trailer + trailer::WRITER_EPOCH,
            epoch.wrapping_add(1),
            Ordering::Relaxed,
        );
        words::store(
            &words,
            at.trailer + trailer::WRITER_STATE,
            WriterState::Open.to_word(),
            Ordering::Relaxed,
        );
        let mut writer = RegionWriter {
            words,
            geometry,
            at,
            tail: committed,
            intent,
            latest_keyframe,
            reserve: intent_reserve(&geometry),
            next_seq: sequence.saturating_add(1),
            notify,
            compute_crc: true,
        };
        writer.cover_gap(intent);
        Ok(writer)
    }

    /// Fills `[tail, intent)` with padding records and commits them, so readers walk past
    /// whatever a crashed writer left there. The intent never moves backwards.
    fn cover_gap(&mut self, intent: u64) {
        if intent == self.tail {
            return;
        }
        let cap = self.geometry.capacity as u64;
        // SYNC POINT (intent publish, as in `write`): pairs with the reader's
        // fence(Acquire) + tail_intent load; the value is the crashed writer's, restored
        // by this process so the order holds for the padding stores below.
        words::store(
            &self.words,
            self.at.trailer + trailer::TAIL_INTENT,
            intent,
            Ordering::Relaxed,
        );
        fence(Ordering::Release);
        let mut pos = self.tail;
        while pos < intent {
            let off = pos & (cap - 1);
            let len = (intent - pos).min(cap - off);
            self.store_padding(pos, len as usize);
            pos += len;
        }
        self.store_write_index(intent);
        self.publish_notify();
    }

    fn store_padding(&self, pos: u64, len: usize) {
        let header = FrameHeader::new(0, 0, (len - HEADER_SIZE) as u32, FLAG_WRAP, 0, 0);
        words::store_header(
            &self.words,
            self.at.frame_offset(pos, self.geometry.capacity as u64),
            &header,
        );
    }

    fn store_write_index(&mut self, new_tail: u64) {
        // SYNC POINT (commit): Release pairs with the reader's Acquire load of
        // write_index; everything stored for the record happens-before a reader that
        // sees the new position.
        words::store(&self.words, self.at.write_index, new_tail, Ordering::Release);
        self.tail = new_tail;
    }

    fn publish_notify(&mut self) {
        self.notify = self.notify.wrapping_add(1);
        // SYNC POINT (notify): Release pairs with the blocking reader's Acquire load of
        // notify before it re-checks write_index and sleeps on the futex.
        words::store(
            &self.words,
            self.at.trailer + trailer::NOTIFY,
            self.notify,
            Ordering::Release,
        );
    }

    /// Turns CRC computation on (the default) or off. Without it records carry
    /// `FLAG_NO_CRC` and readers skip the check; torn frames are still never delivered.
    pub fn set_crc(&mut self, compute: bool) {
        self.compute_crc = compute;
    }

    /// Writes one frame and returns its frame_seq. Never blocks: readers that fall a
    /// lap behind lose frames, the writer does not wait for them.
    pub fn write(&mut self, payload: &[u8], meta: FrameMeta) -> Result<u64, WriteError> {
        self.write_stamped(payload, meta, || None).map(|(seq, _)| seq)
    }

    /// [`Self::write`], storing a heartbeat after the frame is committed: `stamp` is called
    /// once the frame is visible to readers (after `write_index` and `sequence_number`),
    /// and its time (CLOCK_MONOTONIC ns), if any, is stored in `heartbeat_ns` before the
    /// `notify` word, so a reader that sees this commit's notify value sees that
    /// heartbeat too. Reading the clock there keeps it off the path between the write
    /// call and a spinning reader having the frame. Returns the frame_seq and the stamp.
    pub fn write_stamped(
        &mut self,
        payload: &[u8],
        meta: FrameMeta,
        stamp: impl FnOnce() -> Option<u64>,
    ) -> Result<(u64, Option<u64>), WriteError> {
        if payload.len() > self.geometry.max_frame_size {
            return Err(WriteError::FrameTooLarge {
                size: payload.len(),
                max: self.geometry.max_frame_size,
            });
        }
        let cap = self.geometry.capacity as u64;
        let mut flags = if meta.keyframe { FLAG_KEYFRAME } else { 0 };
        let crc = if self.compute_crc {
            crc32fast::hash(payload)
        } else {
            flags |= FLAG_NO_CRC;
            0
        };
        let rec = record_len(payload.len()) as u64;
        let room = cap - (self.tail & (cap - 1));
        let pad = if room < rec { room } else { 0 };
        let start = self.tail + pad;
        let new_tail = start + rec;
        let seq = self.next_seq;

        self.publish_intent(start, new_tail);
        // SYNC POINT (intent publish): the Release fence pairs with the reader's
        // fence(Acquire) + relaxed tail_intent load after its copy; the intent it orders
        // before every store below is the one stored now or by an earlier write (the
        // fence of every write follows it in program order). A reader that saw any byte
        // stored below therefore sees tail_intent >= new_tail and discards what it copied
        // if new_tail reaches into its record's lap.
        fence(Ordering::Release);

        if pad > 0 {
            self.store_padding(self.tail, pad as usize);
        }
        let off = self.at.frame_offset(start, cap);
        let header = FrameHeader::new(meta.frame_id, seq, payload.len() as u32, flags, meta.codec.0, crc);
        words::store_header(&self.words, off, &header);
        words::copy_in(&self.words, off + HEADER_SIZE, payload);

        // SYNC POINT (hints): Release pairs with the reader's Acquire loads of
        // latest_record / latest_keyframe when it starts or resyncs; it still validates
        // the record (position below write_index, then the intent check).
        words::store(
            &self.words,
            self.at.trailer + trailer::LATEST_RECORD,
            start,
            Ordering::Release,
        );
        if meta.keyframe {
            words::store(
                &self.words,
                self.at.trailer + trailer::LATEST_KEYFRAME,
                start,
                Ordering::Release,
            );
            self.latest_keyframe = start;
        }
        self.store_write_index(new_tail);
        // SYNC POINT (seed commit marker): Release, paired with the Acquire load of
        // sequence_number that seed readers make first (and v1 readers make before
        // write_index when they start). Stored right after write_index, which shares its
        // cache line: the line leaves this core once per frame, not twice (a reader
        // spinning on write_index would otherwise take it between the two stores).
        words::store(&self.words, self.at.sequence_number, seq, Ordering::Release);
        let stamp = stamp();
        if let Some(now) = stamp {
            // SYNC POINT (wake gap): Relaxed, ordered before the Release store of notify
            // below, which the blocking reader Acquire-loads before it loads the
            // heartbeat (`RingReader::wait_until`).
            self.heartbeat(now);
        }
        self.publish_notify();
        self.next_seq = seq.wrapping_add(1);
        Ok((seq, stamp))
    }

    /// W1: makes sure `tail_intent` covers the write of `[tail, new_tail)` (record at
    /// `start`). Storing the intent line for every frame would move it to every reader's
    /// core and back per frame (readers load it after each copy), so a write that runs
    /// past the published intent publishes `new_tail` plus up to `reserve` bytes more,
    /// and the next small writes find themselves covered already. The reservation never
    /// passes `capacity` beyond this write's record, the newest keyframe before it (a
    /// keyframe written now does not replace it in this bound: the keyframe before it
    /// must survive this write, docs/protocol.md §1.4) or the current write index: a
    /// reader's intent check and resync, and a resuming writer's hint check, then judge
    /// those exactly as without it. Only a reader that is almost a whole lap behind may
    /// be judged lapped up to `reserve` bytes early (docs/protocol.md §3).
    fn publish_intent(&mut self, start: u64, new_tail: u64) {
        if new_tail <= self.intent {
            return;
        }
        let cap = self.geometry.capacity as u64;
        let intent = new_tail
            .saturating_add(self.reserve)
            .min(self.latest_keyframe.saturating_add(cap))
            .min(start.saturating_add(cap))
            .min(self.tail.saturating_add(cap))
            .max(new_tail);
        // SYNC POINT (intent publish): Relaxed; the Release fence after this call (in
        // `write_stamped`) orders it before the record's stores.
        words::store(
            &self.words,
            self.at.trailer + trailer::TAIL_INTENT,
            intent,
            Ordering::Relaxed,
        );
        self.intent = intent;
    }

    /// Records the writer's identity: `pid` and a heartbeat time (CLOCK_MONOTONIC ns).
    pub fn set_writer_pid(&self, pid: u64) {
        words::store(
            &self.words,
            self.at.trailer + trailer::WRITER_PID,
            pid,
            Ordering::Relaxed,
        );
    }

    /// Stores a heartbeat time (CLOCK_MONOTONIC ns); readers compare it with their clock.
    pub fn heartbeat(&self, now_ns: u64) {
        words::store(
            &self.words,
            self.at.trailer + trailer::HEARTBEAT_NS,
            now_ns,
            Ordering::Relaxed,
        );
    }

    /// Stores the writer state readers see (`Closed` on a clean close, `Retired` when the
    /// ring is replaced).
    pub fn set_state(&self, state: WriterState) {
        // SYNC POINT (state): Release pairs with the reader's Acquire load in its
        // retirement check, after which it reopens the path.
        words::store(
            &self.words,
            self.at.trailer + trailer::WRITER_STATE,
            state.to_word(),
            Ordering::Release,
        );
    }

    /// The ring's geometry.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// frame_seq the next write will get.
    pub fn next_frame_seq(&self) -> u64 {
        self.next_seq
    }

    /// The word readers sleep on (its low 32 bits are the futex word); the file layer
    /// wakes it after each write.
    pub fn notify_word(&self) -> &AtomicU64 {
        &self.words[(self.at.trailer + trailer::NOTIFY) / 8]
    }

    /// The region's words.
    pub fn words(&self) -> &[AtomicU64] {
        &self.words
    }
}

// The frame region starts at offset 16; a record at position `pos` lives at
// FRAME_REGION_OFFSET + (pos mod capacity).
const _: () = assert!(FRAME_REGION_OFFSET.is_multiple_of(8));

/// How far ahead of a write's end the writer publishes its intent at most: a sixteenth of
/// the capacity (so a reader is judged lapped early only in the last sixteenth of a lap),
/// at least one record alignment unit, at most 64 KiB. A multiple of 32, as every
/// position is.
fn intent_reserve(geometry: &Geometry) -> u64 {
    let r = (geometry.capacity / 16).clamp(RECORD_ALIGN, 64 << 10);
    (r - r % RECORD_ALIGN) as u64
}
