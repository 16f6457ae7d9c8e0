//! Layout: header and descriptor round trips, descriptor validation, and readers over
//! hostile region bytes (never a panic, never an out-of-bounds access, always returning).
//! Runs under Miri too.

use proptest::prelude::*;
use shmring_core::layout::{self, trailer, Descriptor, FrameHeader};
use shmring_core::{Geometry, LayoutError, LegacyReader, ReaderOptions, RegionReader, StartPosition, Word};
use std::sync::atomic::Ordering;
use zerocopy::{FromBytes, IntoBytes};

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: if cfg!(miri) { 3 } else { n },
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

#[test]
fn seed_offsets_are_kept() {
    let h = FrameHeader::new(0x0102030405060708, 9, 10, 0x0001, 2, 0xAABBCCDD);
    let b = h.as_bytes();
    assert_eq!(&b[0..8], &0x0102030405060708u64.to_le_bytes());
    assert_eq!(&b[8..16], &9u64.to_le_bytes());
    assert_eq!(&b[16..20], &10u32.to_le_bytes());
    assert_eq!(&b[20..22], &1u16.to_le_bytes());
    assert_eq!(&b[22..24], &2u16.to_le_bytes());
    assert_eq!(&b[24..28], &0xAABBCCDDu32.to_le_bytes());
    assert_eq!(&b[28..32], &[0; 4]);
    assert_eq!(layout::FRAME_REGION_OFFSET, 16);
    assert_eq!(layout::v1_file_len(4096), 4096 + 320);
    assert_eq!(layout::trailer_offset(4096) % 64, 0);
}

#[test]
fn geometry_validation_messages() {
    assert_eq!(Geometry::new(1000, 10), Err(LayoutError::BadCapacity(1000)));
    let e = Geometry::new(4096, 4096).unwrap_err();
    assert!(e.to_string().contains("raise the capacity"), "{e}");
    assert!(Geometry::new(64, 1).is_err());
    assert!(Geometry::new(1 << 31, 1).is_err());
    let g = Geometry::with_capacity(4096).unwrap();
    assert_eq!(g.max_frame_size, 2048 - 32);
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn header_round_trips(id: u64, seq: u64, size: u32, flags: u16, codec: u16, crc: u32) {
        let h = FrameHeader::new(id, seq, size, flags, codec, crc);
        let parsed = FrameHeader::parse(h.as_bytes()).unwrap();
        prop_assert_eq!(parsed, h);
        prop_assert_eq!(parsed.frame_seq.get(), seq);
        prop_assert_eq!(parsed.size.get(), size);
    }

    #[test]
    fn any_32_bytes_parse_and_reserialise(bytes in proptest::collection::vec(any::<u8>(), 32)) {
        let h = FrameHeader::parse(&bytes).unwrap();
        prop_assert_eq!(h.as_bytes(), &bytes[..]);
    }

    #[test]
    fn descriptor_round_trips(cap_log in 7u32..=30, frac in 1u64..=1000) {
        let capacity = 1usize << cap_log;
        let max = ((layout::max_frame_limit(capacity) as u64 * frac) / 1000).max(1) as usize;
        let g = Geometry::new(capacity, max).unwrap();
        let d = g.descriptor(123);
        let back = Geometry::from_descriptor_bytes(d.as_bytes(), g.file_len()).unwrap();
        prop_assert_eq!(back, g);
        // Any other length is refused.
        prop_assert!(Geometry::from_descriptor_bytes(d.as_bytes(), g.file_len() + 8).is_err());
    }

    #[test]
    fn random_descriptors_never_panic(bytes in proptest::collection::vec(any::<u8>(), 64), len in 0usize..1 << 20) {
        let d = Descriptor::read_from_bytes(&bytes).unwrap();
        let _ = Geometry::from_descriptor(&d, len);
    }

    /// A valid descriptor over hostile counters and records: reads return (frames,
    /// errors or nothing) and never panic or loop forever.
    #[test]
    fn reader_survives_hostile_v1_regions(
        words in proptest::collection::vec(any::<u64>(), (256 + 320) / 8),
        hints in proptest::collection::vec(0u64..1024, 5),
        start in 0usize..3,
    ) {
        let g = Geometry::new(256, 64).unwrap();
        let region: Vec<Word> = words.iter().map(|w| Word::new(*w)).collect();
        let d = g.descriptor(0);
        for (i, c) in d.as_bytes().chunks(8).enumerate() {
            region[(g.trailer_offset() + trailer::DESCRIPTOR) / 8 + i].store(u64::from_le_bytes(c.try_into().unwrap()), Ordering::Relaxed);
        }
        // Plausible counters make the reader walk the garbage records.
        let t = g.trailer_offset();
        region[1].store(hints[0] * 32, Ordering::Relaxed);
        region[(t + trailer::TAIL_INTENT) / 8].store(hints[1] * 32, Ordering::Relaxed);
        region[(t + trailer::LATEST_RECORD) / 8].store(hints[2] * 32, Ordering::Relaxed);
        region[(t + trailer::LATEST_KEYFRAME) / 8].store(hints[3] * 32, Ordering::Relaxed);
        region[0].store(hints[4], Ordering::Relaxed);
        let start = [StartPosition::LatestKeyframe, StartPosition::Next, StartPosition::Latest][start];
        let mut r = RegionReader::new(&region[..], ReaderOptions { start, ..Default::default() }).unwrap();
        let mut buf = [0u8; 64];
        for _ in 0..8 {
            if let Ok(Some(info)) = r.try_read(&mut buf) {
                prop_assert!(info.size <= 64);
            }
            let _ = r.read_latest(&mut buf);
        }
    }

    #[test]
    fn legacy_reader_survives_hostile_bytes(words in proptest::collection::vec(any::<u64>(), 6..64)) {
        let region: Vec<Word> = words.iter().map(|w| Word::new(*w)).collect();
        let mut r = LegacyReader::new(&region[..], ReaderOptions::default()).unwrap();
        let mut buf = vec![0u8; 1024];
        for _ in 0..4 {
            if let Ok(Some(info)) = r.try_read(&mut buf) {
                prop_assert!(info.size <= region.len() * 8 - 48);
            }
        }
    }
}
