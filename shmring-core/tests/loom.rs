//! Loom models of the v1 protocol: one writer and two readers on a ring so small that
//! the third frame wraps and laps the first. Across every interleaving loom explores
//! (LOOM_MAX_PREEMPTIONS=2), each reader delivers exactly what was written (CRC off), in
//! order, without duplicates, and once drained `delivered + lost == written`.
//!
//! Run: `RUSTFLAGS="--cfg shmring_loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p shmring-core --release --test loom`
#![cfg(shmring_loom)]

use loom::sync::atomic::{fence, Ordering};
use loom::thread;
use shmring_core::layout::{
    record_len, trailer, FrameHeader, FLAG_KEYFRAME, FLAG_NO_CRC, FRAME_REGION_OFFSET,
};
use shmring_core::{
    FrameMeta, Geometry, ReaderOptions, RegionReader, RegionWriter, StartPosition, Word,
};
use std::sync::Arc;
use zerocopy::IntoBytes;

/// 128-byte region: two 64-byte records (32-byte header + one payload word) per lap.
const CAPACITY: usize = 128;
const FRAMES: u64 = 3;
/// Frames 1 and 3 are keyframes; frame 3 overwrites frame 1.
const fn is_keyframe(seq: u64) -> bool {
    seq != 2
}
const fn payload_word(seq: u64) -> u64 {
    seq * 0x0101_0101_0101_0101
}

fn region() -> (Arc<[Word]>, Geometry) {
    let g = Geometry::new(CAPACITY, 8).unwrap();
    ((0..g.file_len() / 8).map(|_| Word::new(0)).collect(), g)
}

fn reader_options() -> ReaderOptions {
    ReaderOptions {
        start: StartPosition::Next,
        verify_crc: false,
        resync_at_keyframe: true,
    }
}

/// Checks one delivered frame and the ordering against the previous one.
fn check(info: &shmring_core::FrameInfo, buf: &[u8; 8], last: &mut u64) {
    assert!(
        info.frame_seq > *last,
        "out of order or duplicate: {} after {}",
        info.frame_seq,
        last
    );
    assert!(info.frame_seq <= FRAMES);
    assert_eq!(info.size, 8);
    assert_eq!(info.frame_id, info.frame_seq);
    assert_eq!(
        u64::from_le_bytes(*buf),
        payload_word(info.frame_seq),
        "torn frame {}",
        info.frame_seq
    );
    *last = info.frame_seq;
}

/// Reads a few times concurrently with the writer, then returns the reader so the
/// main thread can drain it after the writer finished.
fn concurrent_reads(
    mut reader: RegionReader<Arc<[Word]>>,
    attempts: usize,
) -> (RegionReader<Arc<[Word]>>, u64) {
    let mut buf = [0u8; 8];
    let mut last = 0;
    for _ in 0..attempts {
        if let Some(info) = reader.try_read(&mut buf).unwrap() {
            check(&info, &buf, &mut last);
        } else {
            thread::yield_now();
        }
    }
    (reader, last)
}

fn drain_and_account(mut reader: RegionReader<Arc<[Word]>>, mut last: u64) {
    let mut buf = [0u8; 8];
    while let Some(info) = reader.try_read(&mut buf).unwrap() {
        check(&info, &buf, &mut last);
    }
    let s = reader.stats();
    assert_eq!(
        s.delivered + s.lost,
        FRAMES,
        "delivered + lost == written: {s:?}"
    );
    assert_eq!(
        last, FRAMES,
        "the newest frame (a keyframe) is always delivered"
    );
}

fn real_writer(words: Arc<[Word]>, g: Geometry) -> impl FnOnce() {
    let mut writer = RegionWriter::format(words, g, 0).unwrap();
    writer.set_crc(false);
    move || {
        for seq in 1..=FRAMES {
            let meta = FrameMeta {
                keyframe: is_keyframe(seq),
                ..FrameMeta::delta(seq)
            };
            assert_eq!(
                writer
                    .write(&payload_word(seq).to_le_bytes(), meta)
                    .unwrap(),
                seq
            );
        }
    }
}

fn model_one_writer_two_readers(writer: fn(Arc<[Word]>, Geometry) -> Box<dyn FnOnce() + Send>) {
    loom::model(move || {
        let (words, g) = region();
        let run_writer = writer(words.clone(), g);
        let readers: Vec<_> = (0..2)
            .map(|_| RegionReader::new(words.clone(), reader_options()).unwrap())
            .collect();
        let w = thread::spawn(run_writer);
        let handles: Vec<_> = readers
            .into_iter()
            .map(|r| thread::spawn(move || concurrent_reads(r, 1)))
            .collect();
        w.join().unwrap();
        for h in handles {
            let (reader, last) = h.join().unwrap();
            drain_and_account(reader, last);
        }
    });
}

#[test]
fn one_writer_two_readers_wrap_lap_resync() {
    model_one_writer_two_readers(|words, g| Box::new(real_writer(words, g)));
}

/// A writer that follows the protocol except that it publishes its intent after the
/// payload instead of before: readers can copy half-overwritten records and the intent
/// check no longer sees it. Loom must find an interleaving that delivers a torn frame.
fn broken_writer(words: Arc<[Word]>, g: Geometry) -> Box<dyn FnOnce() + Send> {
    // Format with the real writer, then write records by hand.
    drop(RegionWriter::format(words.clone(), g, 0).unwrap());
    Box::new(move || {
        let t = g.trailer_offset();
        let store = |off: usize, v: u64, o: Ordering| words[off / 8].store(v, o);
        let mut tail = 0u64;
        for seq in 1..=FRAMES {
            let start = tail;
            let len = record_len(8) as u64;
            let off = FRAME_REGION_OFFSET + (start % CAPACITY as u64) as usize;
            let flags = FLAG_NO_CRC | if is_keyframe(seq) { FLAG_KEYFRAME } else { 0 };
            let header = FrameHeader::new(seq, seq, 8, flags, 1, 0);
            for (i, chunk) in header.as_bytes().chunks(8).enumerate() {
                store(
                    off + 8 * i,
                    u64::from_le_bytes(chunk.try_into().unwrap()),
                    Ordering::Relaxed,
                );
            }
            store(off + 32, payload_word(seq), Ordering::Relaxed);
            // BROKEN ON PURPOSE: intent after the payload.
            store(t + trailer::TAIL_INTENT, start + len, Ordering::Relaxed);
            fence(Ordering::Release);
            store(t + trailer::LATEST_RECORD, start, Ordering::Release);
            if is_keyframe(seq) {
                store(t + trailer::LATEST_KEYFRAME, start, Ordering::Release);
            }
            store(8, start + len, Ordering::Release);
            store(0, seq, Ordering::Release);
            tail = start + len;
        }
    })
}

#[test]
fn loom_catches_intent_published_after_payload() {
    let result = std::panic::catch_unwind(|| model_one_writer_two_readers(broken_writer));
    let message = match result {
        Ok(()) => panic!("loom accepted a writer that publishes its intent after the payload"),
        Err(e) => e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string())),
    };
    let message = message.unwrap_or_default();
    assert!(
        message.contains("torn frame"),
        "failed for another reason: {message}"
    );
}
