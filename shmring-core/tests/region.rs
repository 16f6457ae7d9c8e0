//! The protocol over heap regions: single-threaded behaviour and a threaded run. These
//! tests also run under Miri (`cargo +nightly miri test -p shmring-core --test region`).

use shmring_core::layout::{trailer, FLAG_KEYFRAME};
use shmring_core::{
    FrameMeta, Geometry, ReadError, ReaderOptions, RegionReader, RegionWriter, StartPosition, Word, WriteError,
};
use std::sync::atomic::Ordering;
use std::sync::Arc;

fn region(geometry: Geometry) -> Arc<[Word]> {
    (0..geometry.file_len() / 8).map(|_| Word::new(0)).collect()
}

fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seq as usize * 31 + i * 7) as u8).collect()
}

fn meta(seq: u64, keyframe: bool) -> FrameMeta {
    FrameMeta {
        frame_id: seq * 10,
        keyframe,
        codec: shmring_core::Codec::H264,
    }
}

#[test]
fn frames_round_trip_in_order_across_wraps() {
    let g = Geometry::new(1024, 200).unwrap();
    let words = region(g);
    let mut w = RegionWriter::format(words.clone(), g, 0).unwrap();
    let mut r = RegionReader::new(words.clone(), ReaderOptions::default()).unwrap();
    let mut buf = vec![0u8; 200];
    for seq in 1..=200u64 {
        let len = (seq as usize * 13) % 201;
        assert_eq!(w.write(&payload(seq, len), meta(seq, seq % 5 == 1)).unwrap(), seq);
        let info = r.try_read(&mut buf).unwrap().expect("a frame");
        assert_eq!(info.frame_seq, seq);
        assert_eq!(info.frame_id, seq * 10);
        assert_eq!(&buf[..info.size], &payload(seq, len)[..]);
        assert_eq!(r.try_read(&mut buf).unwrap(), None);
    }
    assert_eq!(r.stats().delivered, 200);
    assert_eq!(r.stats().lost, 0);
}

#[test]
fn lapped_reader_resyncs_at_latest_keyframe_and_counts_losses() {
    let g = Geometry::new(1024, 100).unwrap();
    let words = region(g);
    let mut w = RegionWriter::format(words.clone(), g, 0).unwrap();
    let mut r = RegionReader::new(
        words.clone(),
        ReaderOptions {
            start: StartPosition::Next,
            ..Default::default()
        },
    )
    .unwrap();
    let mut buf = vec![0u8; 100];
    w.write(&payload(1, 50), meta(1, true)).unwrap();
    assert_eq!(r.try_read(&mut buf).unwrap().unwrap().frame_seq, 1);
    // 96-byte records: ten frames overwrite everything after frame 1 at least once.
    for seq in 2..=40u64 {
        w.write(&payload(seq, 60), meta(seq, seq % 8 == 0)).unwrap();
    }
    let first = r.try_read(&mut buf).unwrap().unwrap();
    assert!(first.keyframe(), "resync lands on a keyframe");
    assert_eq!(first.frame_seq, 40);
    assert_eq!(first.lost_before, 38);
    let s = r.stats();
    assert_eq!(s.delivered + s.lost, 40);
    assert!(s.lapped >= 1);
}

#[test]
fn start_positions() {
    let g = Geometry::new(4096, 100).unwrap();
    let words = region(g);
    let mut w = RegionWriter::format(words.clone(), g, 0).unwrap();
    for seq in 1..=10u64 {
        w.write(&payload(seq, 10), meta(seq, seq == 4)).unwrap();
    }
    let mut buf = vec![0u8; 100];
    let mut first = |start| {
        let mut r = RegionReader::new(
            words.clone(),
            ReaderOptions {
                start,
                ..Default::default()
            },
        )
        .unwrap();
        r.try_read(&mut buf).unwrap().map(|i| i.frame_seq)
    };
    assert_eq!(first(StartPosition::LatestKeyframe), Some(4));
    assert_eq!(first(StartPosition::Latest), Some(10));
    assert_eq!(first(StartPosition::Next), None);
}

#[test]
fn read_latest_skips_to_newest() {
    let g = Geometry::new(4096, 100).unwrap();
    let words = region(g);
    let mut w = RegionWriter::format(words.clone(), g, 0).unwrap();
    let mut r = RegionReader::new(words.clone(), ReaderOptions::default()).unwrap();
    let mut buf = vec![0u8; 100];
    for seq in 1..=5u64 {
        w.write(&payload(seq, 10), meta(seq, seq == 1)).unwrap();
    }
    let info = r.read_latest(&mut buf).unwrap().unwrap();
    assert_eq!(info.frame_seq, 5);
    assert_eq!(r.read_latest(&mut buf).unwrap(), None);
}

#[test]
fn oversized_frames_are_refused_and_small_buffers_reported() {
    let g = Geometry::new(1024, 100).unwrap();
    let words = region(g);
    let mut w = RegionWriter::format(words.clone(), g, 0).unwrap();
    assert_eq!(
        w.write(&[0; 101], meta(1, true)),
        Err(WriteError::FrameTooLarge { size: 101, max: 100 })
    );
    w.write(&[1; 80], meta(1, true)).unwrap();
    let mut r = RegionReader::new(words.clone(), ReaderOptions::default()).unwrap();
    let mut small = [0u8; 10];
    assert_eq!(r.try_read(&mut small), Err(ReadError::BufferTooSmall { needed: 80 }));
    let mut big = [0u8; 100];
    assert_eq!(r.try_read(&mut big).unwrap().unwrap().size, 80);
}

#[test]
fn crc_mismatch_is_reported_and_skipped() {
    let g = Geometry::new(1024, 100).unwrap();
    let words = region(g);
    let mut w = RegionWriter::format(words.clone(), g, 0).unwrap();
    let mut r = RegionReader::new(words.clone(), ReaderOptions::default()).unwrap();
    w.write(&[7; 64], meta(1, true)).unwrap();
    // Damage one payload word (frame region starts at byte 16, payload after the header).
    words[(16 + 32) / 8].fetch_xor(1, Ordering::Relaxed);
    let mut buf = [0u8; 100];
    assert!(matches!(
        r.try_read(&mut buf),
        Err(ReadError::CrcMismatch { frame_seq: 1, .. })
    ));
    w.write(&[8; 64], meta(2, false)).unwrap();
    w.write(&[9; 64], meta(3, true)).unwrap();
    // Waits for the next keyframe after a loss.
    assert_eq!(r.try_read(&mut buf).unwrap().unwrap().frame_seq, 3);
    assert_eq!(r.stats().crc_errors, 1);
    assert_eq!(r.stats().lost, 2);
}

#[test]
fn resume_covers_a_crashed_writers_half_written_record() {
    let g = Geometry::new(1024, 100).unwrap();
    let words = region(g);
    let mut w = RegionWriter::format(words.clone(), g, 0).unwrap();
    w.write(&[1; 40], meta(1, true)).unwrap();
    let mut r = RegionReader::new(words.clone(), ReaderOptions::default()).unwrap();
    let mut buf = [0u8; 100];
    assert_eq!(r.try_read(&mut buf).unwrap().unwrap().frame_seq, 1);
    // Simulate a crash mid-write: intent published, garbage in the record, no commit.
    let tail = words[1].load(Ordering::Relaxed);
    let t = g.trailer_offset();
    words[(t + trailer::TAIL_INTENT) / 8].store(tail + 96, Ordering::Relaxed);
    for i in 0..12 {
        words[(16 + tail as usize) / 8 + i].store(u64::MAX, Ordering::Relaxed);
    }
    drop(w);
    let mut w = RegionWriter::resume(words.clone()).unwrap();
    assert_eq!(w.next_frame_seq(), 2);
    w.write(&[2; 40], meta(2, false)).unwrap();
    let info = r.try_read(&mut buf).unwrap().unwrap();
    assert_eq!((info.frame_seq, info.lost_before), (2, 0));
    assert_eq!(&buf[..40], &[2; 40]);
    let _ = FLAG_KEYFRAME;
}

#[test]
fn threaded_writer_and_readers_never_see_torn_frames() {
    let g = Geometry::new(2048, 256).unwrap();
    let words = region(g);
    let frames: u64 = if cfg!(miri) { 200 } else { 100_000 };
    let mut w = RegionWriter::format(words.clone(), g, 0).unwrap();
    w.set_crc(false);
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let opts = ReaderOptions {
                start: StartPosition::Next,
                verify_crc: false,
                resync_at_keyframe: false,
                ..Default::default()
            };
            let mut r = RegionReader::new(words.clone(), opts).unwrap();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 256];
                let mut last = 0;
                while last < frames {
                    if let Some(info) = r.try_read(&mut buf).unwrap() {
                        assert!(info.frame_seq > last);
                        assert_eq!(
                            &buf[..info.size],
                            &payload(info.frame_seq, info.size)[..],
                            "torn frame {}",
                            info.frame_seq
                        );
                        last = info.frame_seq;
                    } else {
                        std::thread::yield_now();
                    }
                }
                r.stats()
            })
        })
        .collect();
    for seq in 1..=frames {
        let len = (seq as usize * 37) % 257;
        w.write(&payload(seq, len), meta(seq, seq % 30 == 1)).unwrap();
    }
    for h in readers {
        let s = h.join().unwrap();
        assert_eq!(s.delivered + s.lost, frames, "delivered + lost == written: {s:?}");
        assert!(s.delivered > 0);
    }
}
