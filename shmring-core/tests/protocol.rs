//! Corner cases of the reader rules in docs/protocol.md §4, over heap regions whose words
//! a test changes directly, as a crashed or hostile writer would: every case must end in
//! a frame, an error or "nothing new" (never a panic), must leave `has_unread` false once
//! a read found nothing (so a blocking read sleeps instead of spinning), and must never
//! deliver a frame twice.

use proptest::prelude::*;
use shmring_core::layout::{record_len, trailer, Descriptor, FRAME_REGION_OFFSET, HEADER_SIZE};
use shmring_core::{
    FrameMeta, Geometry, LayoutError, ReadError, ReaderOptions, RegionReader, RegionWriter, StartPosition, Word,
};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use zerocopy::{FromBytes, IntoBytes};

type Region = Arc<[Word]>;

fn region(geometry: Geometry) -> Region {
    (0..geometry.file_len() / 8).map(|_| Word::new(0)).collect()
}

fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seq as usize * 31 + i * 7) as u8).collect()
}

fn meta(seq: u64, keyframe: bool) -> FrameMeta {
    FrameMeta {
        keyframe,
        ..FrameMeta::delta(seq)
    }
}

fn options(start: StartPosition) -> ReaderOptions {
    ReaderOptions {
        start,
        verify_crc: false,
        resync_at_keyframe: true,
        ..Default::default()
    }
}

fn load(words: &Region, off: usize) -> u64 {
    words[off / 8].load(Ordering::SeqCst)
}

fn store(words: &Region, off: usize, value: u64) {
    words[off / 8].store(value, Ordering::SeqCst)
}

const WRITE_INDEX: usize = 8;

/// Reads until a read finds nothing (at most `limit` calls), returning the delivered
/// frame_seqs and the errors. Checks the rule every blocking read relies on: once a read
/// returned `Ok(None)`, `has_unread` is false until the region changes.
fn drain(r: &mut RegionReader<Region>, limit: usize) -> (Vec<u64>, Vec<ReadError>) {
    let mut buf = vec![0u8; r.geometry().max_frame_size];
    let (mut frames, mut errors) = (vec![], vec![]);
    for _ in 0..limit {
        match r.try_read(&mut buf) {
            Ok(Some(info)) => frames.push(info.frame_seq),
            Ok(None) => {
                assert!(
                    !r.has_unread(),
                    "nothing was read, yet has_unread() is true: a blocking read would spin"
                );
                return (frames, errors);
            }
            Err(e) => errors.push(e),
        }
    }
    panic!("the reader never settled: {frames:?} {errors:?}");
}

fn corrupt_reasons(errors: &[ReadError]) -> Vec<&'static str> {
    errors
        .iter()
        .map(|e| match e {
            ReadError::Corrupt { reason, .. } => *reason,
            other => panic!("expected a corrupt-record report, got {other:?}"),
        })
        .collect()
}

/// Item 4 (issue 11): a writer died after publishing its intent (W1) over the record a new
/// reader starts at. The start record can never be validated again; the reader falls
/// back to the write index instead of retrying forever (which kept `has_unread` true and
/// made `read_timeout` spin).
#[test]
fn start_record_lapped_by_a_dead_writer_falls_back_to_the_write_index() {
    let g = Geometry::new(1024, 400).unwrap();
    let words = region(g);
    let mut w = RegionWriter::format(words.clone(), g, 0).unwrap();
    for seq in 1..=5 {
        w.write(&payload(seq, 100), meta(seq, seq == 1)).unwrap();
    }
    let tail = load(&words, WRITE_INDEX);
    // W1 of a 400-byte frame that needs a WRAP pad and reaches over frames 1-3 (at
    // positions 0, 160 and 320), then death.
    assert_eq!(tail, 800);
    let intent = g.capacity as u64 + record_len(400) as u64;
    store(&words, g.trailer_offset() + trailer::TAIL_INTENT, intent);
    for (start, expected) in [
        (StartPosition::LatestKeyframe, vec![]),
        (StartPosition::Latest, vec![5]),
        (StartPosition::Next, vec![]),
    ] {
        let mut r = RegionReader::new(words.clone(), options(start)).unwrap();
        let (frames, errors) = drain(&mut r, 8);
        assert_eq!((&frames, &errors), (&expected, &vec![]), "{start:?}");
    }
}

/// Item 5: an unaligned write index must not reach the copy routines (the 16-byte copy
/// asserted on the misaligned address, debug builds underflowed computing the room left).
#[test]
fn unaligned_write_index_is_reported_not_a_panic() {
    let g = Geometry::new(4096, 1000).unwrap();
    let words = region(g);
    let mut w = RegionWriter::format(words.clone(), g, 0).unwrap();
    w.write(&payload(1, 300), meta(1, true)).unwrap();
    let mut r = RegionReader::new(words.clone(), options(StartPosition::Next)).unwrap();
    let tail = load(&words, WRITE_INDEX);
    // A plausible 300-byte header in the next record slot: a reader that moved to a bogus
    // position 4 bytes further reads it (word loads round the offset down) and copies its
    // payload from a misaligned address.
    let header = shmring_core::FrameHeader::new(9, 2, 300, shmring_core::layout::FLAG_KEYFRAME, 1, 0);
    let mut bytes = [0u8; 64];
    bytes[..HEADER_SIZE].copy_from_slice(header.as_bytes());
    for (i, chunk) in bytes.chunks(8).enumerate() {
        let off = FRAME_REGION_OFFSET + (tail as usize % g.capacity) + 8 * i;
        store(&words, off, u64::from_le_bytes(chunk.try_into().unwrap()));
    }
    // First a jump of more than a lap (which resyncs at the write index), then a small one.
    for bogus in [
        tail + 4 + 2 * g.capacity as u64,
        tail + 2 * g.capacity as u64 + 1028,
        tail + 4,
    ] {
        store(&words, WRITE_INDEX, bogus);
        let (frames, errors) = drain(&mut r, 8);
        assert!(frames.is_empty(), "{frames:?}");
        assert!(
            corrupt_reasons(&errors).iter().all(|r| r.contains("aligned")),
            "{errors:?}"
        );
    }
    // The real writer carries on from its own position: the reader follows it.
    store(&words, WRITE_INDEX, tail);
    w.write(&payload(2, 300), meta(2, true)).unwrap();
    let (frames, _) = drain(&mut r, 8);
    assert_eq!(frames, vec![2]);
}

/// Item 12: a write index moved back (which no writer does) is reported once; the reader
/// never moves backwards (a position behind it may be the middle of a record), waits for
/// the writer to pass it again and never delivers a frame twice.
#[test]
fn write_index_moved_back_is_reported_once_and_the_reader_waits() {
    let g = Geometry::new(4096, 400).unwrap();
    let words = region(g);
    let mut w = RegionWriter::format(words.clone(), g, 0).unwrap();
    let mut r = RegionReader::new(words.clone(), options(StartPosition::LatestKeyframe)).unwrap();
    for seq in 1..=5 {
        w.write(&payload(seq, 40), meta(seq, seq == 1)).unwrap();
    }
    assert_eq!(drain(&mut r, 16).0, vec![1, 2, 3, 4, 5]);
    let tail = load(&words, WRITE_INDEX);
    for back in [64u64, 3 * 64, tail] {
        store(&words, WRITE_INDEX, tail - back);
        let (frames, errors) = drain(&mut r, 16);
        assert!(frames.is_empty(), "{frames:?}");
        assert_eq!(corrupt_reasons(&errors), vec!["the write index moved backwards"]);
        assert_eq!(drain(&mut r, 16), (vec![], vec![]), "reported once");
        store(&words, WRITE_INDEX, tail);
        assert_eq!(drain(&mut r, 16), (vec![], vec![]), "frames delivered again");
    }
    w.write(&payload(6, 40), meta(6, false)).unwrap();
    assert_eq!(drain(&mut r, 16).0, vec![6]);
    assert_eq!(r.stats().lost, 0);
}

/// Found by the `ring_live` fuzz target: a write index at the end of the u64 range made
/// `pos + len` overflow (a panic in debug builds, a wrapped bound check in release ones
/// that let a record past the write index through).
#[test]
fn positions_at_the_end_of_the_u64_range_do_not_overflow() {
    let g = Geometry::new(1024, 400).unwrap();
    let words = region(g);
    let mut w = RegionWriter::format(words.clone(), g, 0).unwrap();
    let mut r = RegionReader::new(words.clone(), options(StartPosition::Next)).unwrap();
    w.write(&payload(1, 20), meta(1, true)).unwrap();
    let far = u64::MAX - 63;
    store(&words, WRITE_INDEX, far);
    let (frames, _) = drain(&mut r, 8);
    assert!(frames.is_empty());
    // A 64-byte record at `far` runs past a write index 32 bytes further.
    let header = shmring_core::FrameHeader::new(7, 7, 20, shmring_core::layout::FLAG_KEYFRAME, 1, 0);
    for (i, chunk) in header.as_bytes().chunks(8).enumerate() {
        store(
            &words,
            FRAME_REGION_OFFSET + (far % 1024) as usize + 8 * i,
            u64::from_le_bytes(chunk.try_into().unwrap()),
        );
    }
    store(&words, g.trailer_offset() + trailer::TAIL_INTENT, far + 32);
    store(&words, WRITE_INDEX, far + 32);
    let (frames, errors) = drain(&mut r, 8);
    assert!(frames.is_empty(), "{frames:?}");
    assert_eq!(corrupt_reasons(&errors), vec!["record runs past the write index"]);
    // A writer resuming such a ring refuses it instead of overflowing its positions.
    assert!(RegionWriter::resume(words.clone()).is_err());
}

/// Item 12: a frame_seq of u64::MAX used to wrap `expected` to 0 ("unknown"), after which
/// any frame_seq, including ones already delivered, was accepted.
#[test]
fn frame_seq_at_u64_max_is_refused() {
    let g = Geometry::new(4096, 400).unwrap();
    let words = region(g);
    let mut w = RegionWriter::format(words.clone(), g, 0).unwrap();
    let mut r = RegionReader::new(words.clone(), options(StartPosition::LatestKeyframe)).unwrap();
    w.write(&payload(1, 40), meta(1, true)).unwrap();
    assert_eq!(drain(&mut r, 4).0, vec![1]);
    let at = load(&words, WRITE_INDEX);
    w.write(&payload(2, 40), meta(2, true)).unwrap();
    store(&words, FRAME_REGION_OFFSET + at as usize + 8, u64::MAX);
    w.write(&payload(3, 40), meta(3, true)).unwrap();
    let (frames, errors) = drain(&mut r, 8);
    assert_eq!(frames, vec![3]);
    assert_eq!(corrupt_reasons(&errors), vec!["frame_seq out of range"]);
}

/// Item 12: a tail intent behind the write index (which no writer stores) is reported
/// instead of being trusted by the intent check.
#[test]
fn tail_intent_behind_the_write_index_is_reported() {
    let g = Geometry::new(4096, 400).unwrap();
    let words = region(g);
    let mut w = RegionWriter::format(words.clone(), g, 0).unwrap();
    let mut r = RegionReader::new(words.clone(), options(StartPosition::LatestKeyframe)).unwrap();
    w.write(&payload(1, 40), meta(1, true)).unwrap();
    w.write(&payload(2, 40), meta(2, false)).unwrap();
    store(&words, g.trailer_offset() + trailer::TAIL_INTENT, 32);
    let (frames, errors) = drain(&mut r, 8);
    assert!(frames.is_empty(), "{frames:?}");
    let reasons = corrupt_reasons(&errors);
    assert!(!reasons.is_empty(), "not reported");
    assert!(
        reasons
            .iter()
            .all(|r| *r == "the tail intent is behind the write index"),
        "{reasons:?}"
    );
}

/// Item 12: one overwrite used to count as two laps when the resync target (the newest
/// keyframe) was inside the same in-flight write.
#[test]
fn one_overwrite_is_one_lap() {
    let g = Geometry::new(1024, 400).unwrap();
    let words = region(g);
    let mut w = RegionWriter::format(words.clone(), g, 0).unwrap();
    let mut r = RegionReader::new(words.clone(), options(StartPosition::LatestKeyframe)).unwrap();
    // Frame 1 (key) at 0, where the reader is; frame 2 (key) at 64; frames 3.. behind.
    w.write(&payload(1, 20), meta(1, true)).unwrap();
    w.write(&payload(2, 20), meta(2, true)).unwrap();
    for seq in 3..=8 {
        w.write(&payload(seq, 90), meta(seq, false)).unwrap();
    }
    // A writer in the middle of a frame whose bytes reach over positions 0 and 64 (the
    // reader's record and the newest keyframe) of the next lap.
    let tail = load(&words, WRITE_INDEX);
    let intent = g.capacity as u64 + 160;
    assert!(intent > tail && intent - tail <= 400);
    store(&words, g.trailer_offset() + trailer::TAIL_INTENT, intent);
    let (frames, errors) = drain(&mut r, 8);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(frames.is_empty(), "no keyframe is left: {frames:?}");
    assert_eq!(r.stats().lapped, 1, "{:?}", r.stats());
}

/// Item 12 (spec): after a lap with keyframe resync but no keyframe left, the reader
/// resumes at `latest_record` and skips (counting them lost) frames until a keyframe.
#[test]
fn resync_without_a_keyframe_waits_for_the_next_one() {
    let g = Geometry::new(1024, 200).unwrap();
    let words = region(g);
    let mut w = RegionWriter::format(words.clone(), g, 0).unwrap();
    let mut r = RegionReader::new(words.clone(), options(StartPosition::LatestKeyframe)).unwrap();
    w.write(&payload(1, 20), meta(1, true)).unwrap();
    assert_eq!(drain(&mut r, 4).0, vec![1]);
    for seq in 2..=30 {
        w.write(&payload(seq, 100), meta(seq, false)).unwrap();
    }
    assert_eq!(drain(&mut r, 8).0, Vec::<u64>::new());
    w.write(&payload(31, 20), meta(31, false)).unwrap();
    w.write(&payload(32, 20), meta(32, true)).unwrap();
    let (frames, _) = drain(&mut r, 8);
    assert_eq!(frames, vec![32]);
    let s = r.stats();
    assert_eq!(s.delivered + s.lost, 32, "{s:?}");
}

/// Item 12: the reserved descriptor fields must be zero.
#[test]
fn reserved_descriptor_fields_are_checked() {
    let g = Geometry::new(4096, 400).unwrap();
    let good = g.descriptor(0);
    assert_eq!(Geometry::from_descriptor(&good, g.file_len()), Ok(g));
    let mut bad = good;
    bad.reserved0 = 1.into();
    assert!(matches!(
        Geometry::from_descriptor(&bad, g.file_len()),
        Err(LayoutError::Inconsistent(_))
    ));
    let mut bytes = good.as_bytes().to_vec();
    bytes[63] = 1;
    let bad = Descriptor::read_from_bytes(&bytes).unwrap();
    assert!(matches!(
        Geometry::from_descriptor(&bad, g.file_len()),
        Err(LayoutError::Inconsistent(_))
    ));
}

/// Item 10: the reproduction. The frame after a keyframe needs a WRAP pad and its
/// record is longer than the keyframe's offset in the region: the keyframe is overwritten
/// (the exception docs/protocol.md §1.4 now states), and a reader starting at the newest
/// keyframe falls back to the next one.
#[test]
fn a_wrap_pad_can_overwrite_the_newest_keyframe() {
    let g = Geometry::new(1024, 480).unwrap();
    let words = region(g);
    let mut w = RegionWriter::format(words.clone(), g, 0).unwrap();
    w.write(&[], meta(1, false)).unwrap();
    w.write(&payload(2, 480), meta(2, true)).unwrap();
    assert_eq!(load(&words, g.trailer_offset() + trailer::LATEST_KEYFRAME), 32);
    w.write(&payload(3, 480), meta(3, false)).unwrap();
    assert!(
        !keyframe_survives(&words, g),
        "the exception no longer happens: update the spec"
    );
    let mut r = RegionReader::new(words.clone(), options(StartPosition::LatestKeyframe)).unwrap();
    assert_eq!(drain(&mut r, 4).0, Vec::<u64>::new());
    w.write(&payload(4, 10), meta(4, true)).unwrap();
    assert_eq!(drain(&mut r, 4).0, vec![4]);
}

/// True if the newest keyframe's record is out of reach of everything written so far.
fn keyframe_survives(words: &Region, g: Geometry) -> bool {
    let keyframe = load(words, g.trailer_offset() + trailer::LATEST_KEYFRAME);
    let intent = load(words, g.trailer_offset() + trailer::TAIL_INTENT);
    intent <= keyframe + g.capacity as u64
}

proptest! {
    /// Item 10: the rule docs/protocol.md §1.4 states. With `3 · record_len(max) ≤
    /// capacity + 32` the newest keyframe always survives the write of the frame after
    /// it; with any max frame size it survives when that write needs no WRAP pad or its
    /// record is no longer than the keyframe's offset in the region.
    #[test]
    fn the_newest_keyframe_survives_the_next_write(
        cap_log in 7u32..12,
        max_frac in 1u32..=1000,
        sizes in proptest::collection::vec((0u32..=1000, any::<bool>()), 1..40),
    ) {
        let capacity = 1usize << cap_log;
        let limit = shmring_core::layout::max_frame_limit(capacity);
        let max = ((limit as u64 * max_frac as u64) / 1000).max(1) as usize;
        let g = Geometry::new(capacity, max).unwrap();
        let words = region(g);
        let mut w = RegionWriter::format(words.clone(), g, 0).unwrap();
        let safe = 3 * record_len(max) <= capacity + 32;
        let mut seq = 0;
        for (frac, key) in sizes {
            let n = (max as u64 * frac as u64 / 1000) as usize;
            let tail = load(&words, WRITE_INDEX);
            let keyframe = load(&words, g.trailer_offset() + trailer::LATEST_KEYFRAME);
            let was_key = seq > 0 && keyframe == load(&words, g.trailer_offset() + trailer::LATEST_RECORD);
            seq += 1;
            w.write(&payload(seq, n), meta(seq, key)).unwrap();
            if was_key {
                let room = capacity as u64 - tail % capacity as u64;
                let padded = room < record_len(n) as u64;
                let exception = padded && record_len(n) as u64 > keyframe % capacity as u64;
                let intent = load(&words, g.trailer_offset() + trailer::TAIL_INTENT);
                let survived = intent <= keyframe + capacity as u64;
                prop_assert_eq!(survived, !exception);
                prop_assert!(survived || !safe, "the bound does not prevent the exception");
            }
        }
    }
}
