//! Loom models of the v1 protocol. Every interleaving with at most two preemptions is
//! explored; in every model each reader delivers only frames whose header and payload are
//! exactly what the writer wrote (CRC off, so nothing but the intent check stands between
//! a reader and a torn frame), in order, without duplicates, and ends on the last frame.
//!
//! - `one_writer_two_readers_wrap_lap_resync`: frames 1-3 are written before the threads
//!   start; concurrently the writer writes frame 4, which needs a WRAP padding record and
//!   then overwrites frame 1; reader 0 (at the newest keyframe, frame 1) copies frame 1
//!   while it may be overwritten, reader 1 (at frame 3) races the padding and frame 4.
//!   `delivered + lost == written` since each reader's first frame.
//! - `a_reader_starts_while_the_writer_writes`: the reader is created on its thread,
//!   racing the write that overwrites the newest keyframe it starts at.
//! - `two_laps_and_a_resync_target_overwritten`: on a 128-byte ring a lapped reader
//!   resyncs at a keyframe that two concurrent writes overwrite while it copies it.
//! - `resume_after_a_crash_mid_write`: a writer died after publishing its intent and half
//!   a record over the reader's frame; a new writer resumes (covering the gap with
//!   padding) and writes while the reader reads.
//! - `read_latest_races_the_writer`: a "latest wins" read of the newest frame while the
//!   next write (after a WRAP pad) overwrites it.
//! - `a_write_covered_by_a_reserved_intent_overwrites_a_reader`: the write that overwrites
//!   the reader's record stores no intent (an earlier write reserved it); the reader's
//!   intent check must still see it.
//! - `loom_catches_intent_published_after_payload`: a deliberately broken writer (intent
//!   published after the payload) must be caught delivering a frame whose payload bytes
//!   differ from what was written, so the models are known to have teeth.
//! - `loom_catches_a_reservation_that_does_not_cover_the_write`: the same for a writer
//!   that believes its reserved intent covers a write when the stored one does not.
//!
//! Run: `RUSTFLAGS="--cfg shmring_loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p shmring-core --release --test loom`
#![cfg(shmring_loom)]

use loom::sync::atomic::{fence, Ordering};
use loom::thread;
use shmring_core::layout::{
    record_len, trailer, FrameHeader, FLAG_KEYFRAME, FLAG_NO_CRC, FLAG_WRAP, FRAME_REGION_OFFSET,
};
use shmring_core::{FrameInfo, FrameMeta, Geometry, ReaderOptions, RegionReader, RegionWriter, StartPosition, Word};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use zerocopy::IntoBytes;

/// Payload bytes of frame `seq` in most models: one word, except frame 2 (five words, so
/// on a 256-byte ring records 1-3 fill the region up to the padding).
fn usual_size(seq: u64) -> usize {
    if seq == 2 {
        40
    } else {
        8
    }
}

/// One word per frame.
fn one_word(_seq: u64) -> usize {
    8
}

/// The payload of frame `seq`: `size(seq)` bytes, distinct for every frame and word.
fn payload(seq: u64, size: fn(u64) -> usize) -> Vec<u8> {
    (0..size(seq) as u64 / 8)
        .flat_map(|i| (seq * 0x0101_0101_0101_0101 ^ i).to_le_bytes())
        .collect()
}

fn meta(seq: u64, keyframe: bool) -> FrameMeta {
    FrameMeta {
        keyframe,
        ..FrameMeta::delta(seq)
    }
}

type Region = Arc<[Word]>;

fn region(capacity: usize) -> (Region, Geometry) {
    let g = Geometry::new(capacity, 40.min(shmring_core::layout::max_frame_limit(capacity))).unwrap();
    ((0..g.file_len() / 8).map(|_| Word::new(0)).collect(), g)
}

fn options(start: StartPosition, resync_at_keyframe: bool) -> ReaderOptions {
    ReaderOptions {
        start,
        verify_crc: false,
        resync_at_keyframe,
        ..Default::default()
    }
}

/// Set by the broken-writer model when a delivered frame's bytes differ from the
/// written ones (only that test reads it).
static TORN_SEEN: AtomicBool = AtomicBool::new(false);

/// How a model judges delivered frames.
#[derive(Clone, Copy)]
struct Checks {
    /// Payload length of each frame.
    size: fn(u64) -> usize,
    /// The newest frame the writer writes in the model.
    frames: u64,
    /// false for the broken writer: a torn frame is recorded in `TORN_SEEN` instead of
    /// failing, and the accounting is not checked.
    strict: bool,
}

impl Checks {
    /// Checks one delivered frame and its order after the previous one.
    fn frame(self, info: &FrameInfo, buf: &[u8], last: &mut u64) {
        let intact = info.frame_id == info.frame_seq
            && info.frame_seq <= self.frames
            && buf[..info.size] == payload(info.frame_seq, self.size)[..];
        if !self.strict {
            if !intact {
                TORN_SEEN.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            return;
        }
        assert!(intact, "torn frame {info:?}: {:?}", &buf[..info.size]);
        assert!(
            info.frame_seq > *last,
            "out of order or duplicate: {} after {}",
            info.frame_seq,
            last
        );
        *last = info.frame_seq;
    }

    /// Reads until nothing is left (bounded: every read consumes or returns), checking
    /// every frame; then the newest frame (a keyframe in every model) must have been
    /// delivered and, if `first` is known, `delivered + lost` must equal the frames
    /// written since it.
    fn drain(self, reader: &mut RegionReader<Region>, mut last: u64, first: Option<u64>) {
        let mut buf = [0u8; 40];
        for _ in 0..16 {
            match reader.try_read(&mut buf) {
                Ok(Some(info)) => self.frame(&info, &buf, &mut last),
                Ok(None) => break,
                Err(_) if !self.strict => {}
                Err(e) => panic!("no record in these models is damaged: {e}"),
            }
        }
        if !self.strict {
            return;
        }
        assert!(!reader.has_unread());
        let started_after_the_newest = reader.options().start == StartPosition::Next && reader.stats().delivered == 0;
        assert!(
            last == self.frames || started_after_the_newest,
            "the newest frame (a keyframe) is always delivered: {last}"
        );
        if let Some(first) = first {
            let s = reader.stats();
            assert_eq!(
                s.delivered + s.lost,
                self.frames - first + 1,
                "delivered + lost == written: {s:?}"
            );
        }
    }
}

/// `reads` reads concurrent with the writer; returns the reader and its last frame_seq.
fn concurrent_reads(mut reader: RegionReader<Region>, reads: usize, checks: Checks) -> (RegionReader<Region>, u64) {
    let mut buf = [0u8; 40];
    let mut last = 0;
    for _ in 0..reads {
        if let Ok(Some(info)) = reader.try_read(&mut buf) {
            checks.frame(&info, &buf, &mut last);
        }
    }
    (reader, last)
}

/// Formats a 256-byte region and writes frames 1-3 (frame 1 the only keyframe): frame 1
/// at 0..64, frame 2 at 64..160, frame 3 at 160..224. Frame 4 needs padding at 224..256
/// and lands at 256..320 (offset 0, over frame 1).
fn first_frames(words: &Region, g: Geometry) -> RegionWriter<Region> {
    let mut writer = RegionWriter::format(words.clone(), g, 0).unwrap();
    writer.set_crc(false);
    for seq in 1..4 {
        writer.write(&payload(seq, usual_size), meta(seq, seq == 1)).unwrap();
    }
    writer
}

fn real_writer(words: Region, g: Geometry) -> Box<dyn FnOnce() + Send> {
    let mut writer = first_frames(&words, g);
    Box::new(move || {
        assert_eq!(writer.write(&payload(4, usual_size), meta(4, true)).unwrap(), 4);
    })
}

fn model_one_writer_two_readers(writer: fn(Region, Geometry) -> Box<dyn FnOnce() + Send>, strict: bool) {
    loom::model(move || {
        let (words, g) = region(256);
        let checks = Checks {
            size: usual_size,
            frames: 4,
            strict,
        };
        let run_writer = writer(words.clone(), g);
        // Reader 0 starts at the newest keyframe (frame 1, which frame 4 overwrites) and
        // resyncs at keyframes; reader 1 starts at the newest frame (frame 3) and resyncs
        // at the newest frame.
        let readers = [
            options(StartPosition::LatestKeyframe, true),
            options(StartPosition::Latest, false),
        ]
        .map(|o| RegionReader::new(words.clone(), o).unwrap());
        let w = thread::spawn(run_writer);
        let handles = readers.map(|r| {
            let reads = if r.options().resync_at_keyframe { 1 } else { 2 };
            thread::spawn(move || concurrent_reads(r, reads, checks))
        });
        w.join().unwrap();
        for (h, first) in handles.into_iter().zip([1, 3]) {
            let (mut reader, last) = h.join().unwrap();
            checks.drain(&mut reader, last, Some(first));
        }
    });
}

#[test]
fn one_writer_two_readers_wrap_lap_resync() {
    model_one_writer_two_readers(real_writer, true);
}

/// A reader is created on its thread while frame 4 overwrites frame 1, the newest
/// keyframe, which a `LatestKeyframe` reader starts at.
#[test]
fn a_reader_starts_while_the_writer_writes() {
    loom::model(|| {
        let (words, g) = region(256);
        let checks = Checks {
            size: usual_size,
            frames: 4,
            strict: true,
        };
        let mut writer = first_frames(&words, g);
        let w = thread::spawn(move || {
            writer.write(&payload(4, usual_size), meta(4, true)).unwrap();
        });
        let starting = words.clone();
        let r = thread::spawn(move || {
            let reader = RegionReader::new(starting, options(StartPosition::LatestKeyframe, true)).unwrap();
            concurrent_reads(reader, 1, checks)
        });
        w.join().unwrap();
        let (mut reader, last) = r.join().unwrap();
        checks.drain(&mut reader, last, None);
    });
}

/// A 128-byte ring holds two 64-byte records. Frames 1 (key), 2 and 3 (key, over 1) are
/// written with the reader at frame 1, so its first read finds itself lapped and resyncs
/// at frame 3; concurrently the writer writes 4 (over 2) and 5 (key, over 3), so the
/// resync target can be overwritten while the reader copies it: a second lap.
#[test]
fn two_laps_and_a_resync_target_overwritten() {
    loom::model(|| {
        let (words, g) = region(128);
        let checks = Checks {
            size: one_word,
            frames: 5,
            strict: true,
        };
        let mut writer = RegionWriter::format(words.clone(), g, 0).unwrap();
        writer.set_crc(false);
        writer.write(&payload(1, one_word), meta(1, true)).unwrap();
        let reader = RegionReader::new(words.clone(), options(StartPosition::LatestKeyframe, true)).unwrap();
        for seq in 2..=3 {
            writer.write(&payload(seq, one_word), meta(seq, seq == 3)).unwrap();
        }
        let w = thread::spawn(move || {
            for seq in 4..=5 {
                writer.write(&payload(seq, one_word), meta(seq, seq == 5)).unwrap();
            }
        });
        let r = thread::spawn(move || concurrent_reads(reader, 1, checks));
        w.join().unwrap();
        let (mut reader, last) = r.join().unwrap();
        checks.drain(&mut reader, last, Some(1));
    });
}

/// A writer died while writing frame 4: it had published its intent (the end of frame 4,
/// after a padding record) and stored part of frame 4's header over frame 1, where the
/// reader is. A new writer resumes (padding over the half-written bytes, frame_seq 4
/// next) and writes frame 4 while the reader reads.
#[test]
fn resume_after_a_crash_mid_write() {
    loom::model(|| {
        let (words, g) = region(256);
        let checks = Checks {
            size: usual_size,
            frames: 4,
            strict: true,
        };
        drop(first_frames(&words, g));
        let reader = RegionReader::new(words.clone(), options(StartPosition::LatestKeyframe, true)).unwrap();
        // The dead writer's W1 and its first header word over frame 1.
        let end = 256 + record_len(8) as u64;
        words[(g.trailer_offset() + trailer::TAIL_INTENT) / 8].store(end, Ordering::Relaxed);
        words[FRAME_REGION_OFFSET / 8].store(0xdead, Ordering::Relaxed);
        let resumed = words.clone();
        let w = thread::spawn(move || {
            let mut writer = RegionWriter::resume(resumed).unwrap();
            writer.set_crc(false);
            assert_eq!(writer.write(&payload(4, usual_size), meta(4, true)).unwrap(), 4);
        });
        let r = thread::spawn(move || concurrent_reads(reader, 2, checks));
        w.join().unwrap();
        let (mut reader, last) = r.join().unwrap();
        checks.drain(&mut reader, last, Some(1));
    });
}

/// Record lengths for the `read_latest` model: frame 1 empty (32 B), frames 2 and 3 four
/// words (64 B).
fn latest_size(seq: u64) -> usize {
    if seq == 1 {
        0
    } else {
        32
    }
}

/// `read_latest` against the one write that can overwrite the newest frame: on a
/// 128-byte ring frame 1 (32 B) is at 0 and frame 2 (64 B) at 32; frame 3 needs a WRAP
/// pad at 96 and lands at 128..192 (offsets 0..64), over frame 2's header, while the
/// reader jumps to frame 2 and copies it (the exception docs/protocol.md §1.4 states).
#[test]
fn read_latest_races_the_writer() {
    loom::model(|| {
        let (words, g) = region(128);
        let checks = Checks {
            size: latest_size,
            frames: 3,
            strict: true,
        };
        let mut writer = RegionWriter::format(words.clone(), g, 0).unwrap();
        writer.set_crc(false);
        for seq in 1..=2 {
            writer.write(&payload(seq, latest_size), meta(seq, seq == 1)).unwrap();
        }
        let mut reader = RegionReader::new(words.clone(), options(StartPosition::LatestKeyframe, true)).unwrap();
        let w = thread::spawn(move || {
            writer.write(&payload(3, latest_size), meta(3, true)).unwrap();
        });
        let r = thread::spawn(move || {
            let mut buf = [0u8; 40];
            let mut last = 0;
            if let Ok(Some(info)) = reader.read_latest(&mut buf) {
                checks.frame(&info, &buf, &mut last);
            }
            (reader, last)
        });
        w.join().unwrap();
        let (mut reader, mut last) = r.join().unwrap();
        let mut buf = [0u8; 40];
        while let Some(info) = reader.read_latest(&mut buf).unwrap() {
            checks.frame(&info, &buf, &mut last);
        }
        assert_eq!(last, 3, "read_latest ends on the newest frame");
    });
}

/// A writer that follows the protocol except that it publishes its intent after the
/// payload instead of before: a reader can copy a half-overwritten record and the intent
/// check no longer sees it.
fn broken_writer(words: Region, g: Geometry) -> Box<dyn FnOnce() + Send> {
    drop(first_frames(&words, g));
    Box::new(move || {
        let t = g.trailer_offset();
        let store = |off: usize, v: u64, o: Ordering| words[off / 8].store(v, o);
        let store_header = |pos: u64, h: FrameHeader| {
            let off = FRAME_REGION_OFFSET + (pos % 256) as usize;
            for (i, chunk) in h.as_bytes().chunks(8).enumerate() {
                store(
                    off + 8 * i,
                    u64::from_le_bytes(chunk.try_into().unwrap()),
                    Ordering::Relaxed,
                );
            }
        };
        let (pad_at, start) = (224u64, 256u64);
        let end = start + record_len(8) as u64;
        store_header(pad_at, FrameHeader::new(0, 0, 0, FLAG_WRAP, 0, 0));
        store_header(start, FrameHeader::new(4, 4, 8, FLAG_NO_CRC | FLAG_KEYFRAME, 1, 0));
        store(
            FRAME_REGION_OFFSET + 32,
            u64::from_le_bytes(payload(4, usual_size).try_into().unwrap()),
            Ordering::Relaxed,
        );
        // BROKEN ON PURPOSE: the intent is published after the payload.
        store(t + trailer::TAIL_INTENT, end, Ordering::Relaxed);
        fence(Ordering::Release);
        store(t + trailer::LATEST_RECORD, start, Ordering::Release);
        store(t + trailer::LATEST_KEYFRAME, start, Ordering::Release);
        store(8, end, Ordering::Release);
        store(0, 4, Ordering::Release);
    })
}

/// Loom must find an interleaving in which a reader delivers frame 1 with frame 4's
/// bytes in it (the payload differs from what was written for the frame_seq delivered).
#[test]
fn loom_catches_intent_published_after_payload() {
    TORN_SEEN.store(false, std::sync::atomic::Ordering::SeqCst);
    model_one_writer_two_readers(broken_writer, false);
    assert!(
        TORN_SEEN.load(std::sync::atomic::Ordering::SeqCst),
        "loom accepted a writer that publishes its intent after the payload: no torn frame was delivered"
    );
}

/// Empty payloads: 32-byte records, the only size whose writes a 128-byte ring's 32-byte
/// intent reservation can cover.
fn empty(_seq: u64) -> usize {
    0
}

/// A 128-byte ring of 32-byte records, frames 1-5 written (none a keyframe) with a reader
/// at frame 2 (32..64). Frame 5 (128..160) ran past the intent and reserved up to 192,
/// so the write of frame 6 (a keyframe, 160..192, over frame 2) stores no intent. With
/// `lower_intent`, the stored intent is then put back to 160 behind the writer's back: a
/// writer whose reservation does not cover the write.
fn model_covered_write(strict: bool, lower_intent: bool) {
    loom::model(move || {
        let (words, g) = region(128);
        let checks = Checks {
            size: empty,
            frames: 6,
            strict,
        };
        let intent_word = (g.trailer_offset() + trailer::TAIL_INTENT) / 8;
        let mut writer = RegionWriter::format(words.clone(), g, 0).unwrap();
        writer.set_crc(false);
        let mut reader = None;
        for seq in 1..=5 {
            writer.write(&payload(seq, empty), meta(seq, false)).unwrap();
            if seq == 2 {
                reader = Some(RegionReader::new(words.clone(), options(StartPosition::Latest, false)).unwrap());
            }
        }
        assert_eq!(
            words[intent_word].load(Ordering::Relaxed),
            192,
            "frame 5 reserved up to 192"
        );
        if lower_intent {
            words[intent_word].store(160, Ordering::Relaxed);
        }
        let reader = reader.unwrap();
        let w = thread::spawn(move || {
            writer.write(&payload(6, empty), meta(6, true)).unwrap();
        });
        let r = thread::spawn(move || concurrent_reads(reader, 1, checks));
        w.join().unwrap();
        let expected_intent = if lower_intent { 160 } else { 192 };
        assert_eq!(
            words[intent_word].load(Ordering::Relaxed),
            expected_intent,
            "the write of frame 6 stored no intent"
        );
        let (mut reader, last) = r.join().unwrap();
        checks.drain(&mut reader, last, Some(2));
    });
}

#[test]
fn a_write_covered_by_a_reserved_intent_overwrites_a_reader() {
    model_covered_write(true, false);
}

/// Loom must find the torn frame when the stored intent does not cover a write the
/// writer thinks it covers.
#[test]
fn loom_catches_a_reservation_that_does_not_cover_the_write() {
    TORN_SEEN.store(false, std::sync::atomic::Ordering::SeqCst);
    model_covered_write(false, true);
    assert!(
        TORN_SEEN.load(std::sync::atomic::Ordering::SeqCst),
        "loom accepted a write whose intent was not published: no torn frame was delivered"
    );
}
