//! Hostile ring files: truncated files, random bytes, huge header sizes, wrong magic,
//! damaged counters, legacy files with a lying write_index. Readers and writers give a
//! clear error or skip the damage; none panics or hangs.

mod common;

use common::ring_dir;
use shmring_core::layout::{trailer, FRAME_REGION_OFFSET};
use shmring_core::{
    Error, FrameMeta, LayoutChoice, LayoutError, ReadError, ReaderOptions, RingReader, RingWriter, WriterOptions,
};
use std::path::Path;
use std::time::{Duration, Instant};

fn opts() -> WriterOptions {
    WriterOptions {
        capacity: 4096,
        ..Default::default()
    }
}

/// Overwrites bytes in place (same inode, no truncation), as a damaged or hostile
/// process sharing the file would.
fn patch(path: &Path, offset: usize, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset as u64).unwrap();
}

/// Reads until nothing is left (bounded), returning (frames, errors).
fn drain(r: &mut RingReader) -> (Vec<u64>, Vec<String>) {
    let (mut frames, mut errors) = (vec![], vec![]);
    let start = Instant::now();
    for _ in 0..10_000 {
        match r.try_read() {
            Ok(Some(f)) => frames.push(f.info.frame_seq),
            Ok(None) => break,
            Err(e) => errors.push(e.to_string()),
        }
    }
    assert!(start.elapsed() < Duration::from_secs(5), "reader took too long");
    (frames, errors)
}

#[test]
fn truncated_v1_file_is_refused_with_a_clear_error() {
    let dir = ring_dir("truncated");
    let path = dir.join("ring");
    drop(RingWriter::create(&path, &opts()).unwrap());
    let full = std::fs::read(&path).unwrap();
    for cut in [0usize, 7, 15, 47, 200, full.len() - 64, full.len() - 8] {
        std::fs::write(&path, &full[..cut]).unwrap();
        match RingReader::open_layout(&path, &ReaderOptions::default(), LayoutChoice::V1) {
            Err(e @ Error::Layout { .. }) => assert!(!e.to_string().is_empty()),
            other => panic!("cut at {cut}: expected a layout error, got {:?}", other.map(|_| ())),
        }
        // Auto falls back to the legacy reading of the bytes, or refuses a tiny file.
        if let Ok(mut r) = RingReader::open(&path, &ReaderOptions::default()) {
            drain(&mut r);
        }
        let e = RingWriter::open(
            &path,
            &WriterOptions {
                layout: LayoutChoice::V1,
                ..opts()
            },
        )
        .err()
        .unwrap();
        assert!(matches!(e, Error::Layout { .. }), "cut at {cut}: {e}");
    }
}

#[test]
fn wrong_magic_and_version() {
    let dir = ring_dir("magic");
    let path = dir.join("ring");
    drop(RingWriter::create(&path, &opts()).unwrap());
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    patch(&path, len - 64, b"notaring");
    let e = RingReader::open_layout(&path, &ReaderOptions::default(), LayoutChoice::V1)
        .err()
        .unwrap();
    assert!(
        matches!(
            e,
            Error::Layout {
                source: LayoutError::BadMagic,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("legacy"), "{e}");
    drop(RingWriter::create(&path, &opts()).unwrap());
    patch(&path, len - 64 + 8, &7u32.to_le_bytes());
    let e = RingReader::open(&path, &ReaderOptions::default()).err().unwrap();
    assert!(
        matches!(
            e,
            Error::Layout {
                source: LayoutError::UnsupportedVersion(7),
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn huge_header_size_is_skipped_and_later_frames_arrive() {
    let dir = ring_dir("huge");
    let path = dir.join("ring");
    let mut w = RingWriter::create(&path, &opts()).unwrap();
    let mut r = RingReader::open(&path, &ReaderOptions::default()).unwrap();
    w.write(&[1; 100], FrameMeta::keyframe(1)).unwrap();
    // The writer maps the same file: damage frame 1's size field through the file.
    patch(&path, FRAME_REGION_OFFSET + 16, &u32::MAX.to_le_bytes());
    let (frames, errors) = drain(&mut r);
    assert!(frames.is_empty());
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("larger than the ring's max frame size"),
        "{errors:?}"
    );
    w.write(&[2; 100], FrameMeta::keyframe(2)).unwrap();
    let (frames, errors) = drain(&mut r);
    assert_eq!((frames, errors.len()), (vec![2], 0));
    assert_eq!(r.stats().corrupt, 1);
}

#[test]
fn random_bytes_never_panic_or_hang() {
    let dir = ring_dir("random");
    let path = dir.join("ring");
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        seed = common::mix(seed);
        seed
    };
    for round in 0..200 {
        let len = [48usize, 100, 4096 + 320, 8192 + 320, 65536 + 320][round % 5];
        let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if round % 2 == 0 && len > 4096 {
            // A valid descriptor over random contents: the v1 reader walks garbage.
            let g = shmring_core::Geometry::new(len - 320, 64).unwrap();
            data[len - 64..].copy_from_slice(zerocopy::IntoBytes::as_bytes(&g.descriptor(0)));
            let small = (next() % 64) * 32;
            data[8..16].copy_from_slice(&small.to_le_bytes());
            let t = g.trailer_offset();
            data[t + trailer::TAIL_INTENT..][..8].copy_from_slice(&(small + next() % 4096).to_le_bytes());
        }
        std::fs::write(&path, &data).unwrap();
        for layout in [LayoutChoice::Auto, LayoutChoice::Legacy, LayoutChoice::V1] {
            if let Ok(mut r) = RingReader::open_layout(&path, &ReaderOptions::default(), layout) {
                drain(&mut r);
                let _ = r.status();
                let _ = r.read_timeout(Some(Duration::from_millis(1)));
            }
        }
        // A writer either refuses or repairs; it never panics.
        if let Ok(mut w) = RingWriter::open(&path, &WriterOptions::default()) {
            let _ = w.write(b"x", FrameMeta::keyframe(0));
        }
    }
}

#[test]
fn damaged_counters_refuse_a_writer_with_advice() {
    let dir = ring_dir("counters");
    let path = dir.join("ring");
    let g = match RingWriter::create(&path, &opts()).unwrap().kind() {
        shmring_core::RingKind::V1(g) => g,
        _ => unreachable!(),
    };
    patch(
        &path,
        g.trailer_offset() + trailer::TAIL_INTENT,
        &(1u64 << 40).to_le_bytes(),
    );
    let e = RingWriter::open(&path, &opts()).err().unwrap();
    assert!(matches!(e, Error::Damaged { .. }), "{e}");
    assert!(e.to_string().contains("recreate the ring"), "{e}");
    // open_or_create replaces it instead.
    let mut w = RingWriter::open_or_create(&path, &opts()).unwrap();
    assert_eq!(w.write(b"ok", FrameMeta::keyframe(0)).unwrap(), 1);
}

#[test]
fn legacy_file_with_lying_write_index() {
    let dir = ring_dir("lying");
    let path = dir.join("ring");
    let lopts = WriterOptions {
        layout: LayoutChoice::Legacy,
        legacy_len: 4096,
        ..opts()
    };
    let mut w = RingWriter::create(&path, &lopts).unwrap();
    let mut r = RingReader::open(&path, &ReaderOptions::default()).unwrap();
    w.write(b"frame", FrameMeta::keyframe(1)).unwrap();
    patch(&path, 8, &9999u64.to_le_bytes());
    let e = r.try_read().err().unwrap();
    assert!(matches!(e, Error::Read(ReadError::Corrupt { .. })), "{e}");
    assert!(e.to_string().contains("write_index"), "{e}");
    // Skipped, not repeated; the next frame is read normally.
    assert!(r.try_read().unwrap().is_none());
    w.write(b"next", FrameMeta::keyframe(2)).unwrap();
    assert_eq!(r.try_read().unwrap().unwrap().payload, b"next");
    // A legacy header claiming a size beyond the file.
    patch(&path, 16 + 16, &u32::MAX.to_le_bytes());
    patch(&path, 0, &99u64.to_le_bytes());
    let e = r.try_read().err().unwrap();
    assert!(e.to_string().contains("larger than the file"), "{e}");
}
