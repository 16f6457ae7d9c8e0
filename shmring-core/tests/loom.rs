//! Loom model of the v1 protocol: one writer and two readers on a 256-byte ring.
//! Frames 1-3 are written before the threads start. Concurrently the writer writes frame
//! 4, which needs a WRAP padding record at the region's end and then overwrites frame 1;
//! reader 0 (started at the newest keyframe, frame 1) copies frame 1 while it may be
//! overwritten — the lap race; reader 1 (started at the newest frame, frame 3) reads
//! frame 3 and then races the commit of the padding and frame 4. Every interleaving with
//! at most two preemptions is explored. Afterwards each reader drains the ring (walking
//! the padding, or resyncing after the lap). Each reader delivers exactly what was written
//! (CRC off), in order, without duplicates, and `delivered + lost == written` since its
//! first frame. A deliberately broken writer (intent published after the payload) must be
//! caught delivering a torn frame, so the model is known to have teeth.
//!
//! Run: `RUSTFLAGS="--cfg shmring_loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p shmring-core --release --test loom`
#![cfg(shmring_loom)]

use loom::sync::atomic::{fence, Ordering};
use loom::thread;
use shmring_core::layout::{
    record_len, trailer, FrameHeader, FLAG_KEYFRAME, FLAG_NO_CRC, FLAG_WRAP, FRAME_REGION_OFFSET,
};
use shmring_core::{FrameInfo, FrameMeta, Geometry, ReaderOptions, RegionReader, RegionWriter, StartPosition, Word};
use std::sync::Arc;
use zerocopy::IntoBytes;

/// Records: frame 1 at 0..64, frame 2 at 64..160, frame 3 at 160..224, padding at
/// 224..256, frame 4 at 256..320 (offset 0, over frame 1).
const CAPACITY: usize = 256;
const FRAMES: u64 = 4;

/// Payload bytes of each frame: one word, except frame 2 (five words).
const fn size_of_frame(seq: u64) -> usize {
    if seq == 2 {
        40
    } else {
        8
    }
}

/// Frames 1 and 4 are keyframes.
const fn is_keyframe(seq: u64) -> bool {
    seq == 1 || seq == 4
}

fn payload(seq: u64) -> Vec<u8> {
    (0..size_of_frame(seq) as u64 / 8)
        .flat_map(|i| (seq * 0x0101_0101_0101_0101 ^ i).to_le_bytes())
        .collect()
}

fn meta(seq: u64) -> FrameMeta {
    FrameMeta {
        keyframe: is_keyframe(seq),
        ..FrameMeta::delta(seq)
    }
}

type Region = Arc<[Word]>;

fn region() -> (Region, Geometry) {
    let g = Geometry::new(CAPACITY, 96).unwrap();
    ((0..g.file_len() / 8).map(|_| Word::new(0)).collect(), g)
}

/// Reader 0 starts at the newest keyframe (frame 1, which frame 4 overwrites) and
/// resyncs at keyframes; reader 1 starts at the newest frame (frame 3, which is not
/// overwritten) and resyncs at the newest frame.
fn reader_options(i: usize) -> ReaderOptions {
    let start = if i == 0 {
        StartPosition::LatestKeyframe
    } else {
        StartPosition::Latest
    };
    ReaderOptions {
        start,
        verify_crc: false,
        resync_at_keyframe: i == 0,
    }
}

/// Checks one delivered frame and its order after the previous one.
fn check(info: &FrameInfo, buf: &[u8], last: &mut u64) {
    assert!(
        info.frame_seq > *last,
        "out of order or duplicate: {} after {}",
        info.frame_seq,
        last
    );
    assert!(info.frame_seq <= FRAMES);
    assert_eq!(info.frame_id, info.frame_seq);
    assert_eq!(
        &buf[..info.size],
        &payload(info.frame_seq)[..],
        "torn frame {}",
        info.frame_seq
    );
    *last = info.frame_seq;
}

/// `reads` reads concurrent with the writer; the reader goes back to the main thread,
/// which drains it after the writer finished.
fn concurrent_reads(mut reader: RegionReader<Region>, reads: usize) -> (RegionReader<Region>, u64) {
    let mut buf = [0u8; 96];
    let mut last = 0;
    for _ in 0..reads {
        if let Some(info) = reader.try_read(&mut buf).unwrap() {
            check(&info, &buf, &mut last);
        }
    }
    (reader, last)
}

/// `first`: the frame the reader started at.
fn drain_and_account(mut reader: RegionReader<Region>, mut last: u64, first: u64) {
    let mut buf = [0u8; 96];
    while let Some(info) = reader.try_read(&mut buf).unwrap() {
        check(&info, &buf, &mut last);
    }
    let s = reader.stats();
    assert_eq!(
        s.delivered + s.lost,
        FRAMES - first + 1,
        "delivered + lost == written: {s:?}"
    );
    assert_eq!(last, FRAMES, "the newest frame (a keyframe) is always delivered");
}

/// Formats the region and writes frames 1-3, before any thread starts.
fn first_frames(words: &Region, g: Geometry) -> RegionWriter<Region> {
    let mut writer = RegionWriter::format(words.clone(), g, 0).unwrap();
    writer.set_crc(false);
    for seq in 1..FRAMES {
        writer.write(&payload(seq), meta(seq)).unwrap();
    }
    writer
}

fn real_writer(words: Region, g: Geometry) -> Box<dyn FnOnce() + Send> {
    let mut writer = first_frames(&words, g);
    Box::new(move || {
        assert_eq!(writer.write(&payload(FRAMES), meta(FRAMES)).unwrap(), FRAMES);
    })
}

fn model_one_writer_two_readers(writer: fn(Region, Geometry) -> Box<dyn FnOnce() + Send>) {
    loom::model(move || {
        let (words, g) = region();
        let run_writer = writer(words.clone(), g);
        let readers: Vec<_> = (0..2)
            .map(|i| RegionReader::new(words.clone(), reader_options(i)).unwrap())
            .collect();
        let w = thread::spawn(run_writer);
        let handles: Vec<_> = readers
            .into_iter()
            .zip([1, 2])
            .map(|(r, reads)| thread::spawn(move || concurrent_reads(r, reads)))
            .collect();
        w.join().unwrap();
        for (h, first) in handles.into_iter().zip([1, FRAMES - 1]) {
            let (reader, last) = h.join().unwrap();
            drain_and_account(reader, last, first);
        }
    });
}

#[test]
fn one_writer_two_readers_wrap_lap_resync() {
    model_one_writer_two_readers(real_writer);
}

/// A writer that follows the protocol except that it publishes its intent after the
/// payload instead of before: a reader can copy a half-overwritten record and the intent
/// check no longer sees it. Loom must find an interleaving that delivers a torn frame.
fn broken_writer(words: Region, g: Geometry) -> Box<dyn FnOnce() + Send> {
    drop(first_frames(&words, g));
    Box::new(move || {
        let t = g.trailer_offset();
        let store = |off: usize, v: u64, o: Ordering| words[off / 8].store(v, o);
        let store_header = |pos: u64, h: FrameHeader| {
            let off = FRAME_REGION_OFFSET + (pos % CAPACITY as u64) as usize;
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
        store_header(
            start,
            FrameHeader::new(FRAMES, FRAMES, 8, FLAG_NO_CRC | FLAG_KEYFRAME, 1, 0),
        );
        store(
            FRAME_REGION_OFFSET + 32,
            u64::from_le_bytes(payload(FRAMES).try_into().unwrap()),
            Ordering::Relaxed,
        );
        // BROKEN ON PURPOSE: the intent is published after the payload.
        store(t + trailer::TAIL_INTENT, end, Ordering::Relaxed);
        fence(Ordering::Release);
        store(t + trailer::LATEST_RECORD, start, Ordering::Release);
        store(t + trailer::LATEST_KEYFRAME, start, Ordering::Release);
        store(8, end, Ordering::Release);
        store(0, FRAMES, Ordering::Release);
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
    assert!(message.contains("torn frame"), "failed for another reason: {message}");
}
