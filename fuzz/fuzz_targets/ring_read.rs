//! A reader over arbitrary region bytes. The first byte picks the layout and start
//! position; for v1 regions a valid descriptor is stamped on (half the time) so the
//! record walk itself is exercised. Reads must return (a frame, an error or nothing)
//! without panicking, hanging or touching memory outside the region.
#![no_main]

use core::sync::atomic::AtomicU64;
use libfuzzer_sys::fuzz_target;
use shmring_core::layout::{self, trailer};
use shmring_core::{Geometry, LegacyReader, ReaderOptions, RegionReader, StartPosition};
use zerocopy::IntoBytes;

fn words_of(bytes: &[u8]) -> Vec<AtomicU64> {
    bytes
        .chunks(8)
        .map(|c| {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            AtomicU64::new(u64::from_le_bytes(w))
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else { return };
    let start = [StartPosition::LatestKeyframe, StartPosition::Next, StartPosition::Latest][(control % 3) as usize];
    let options = ReaderOptions { start, verify_crc: control & 0x10 != 0, resync_at_keyframe: control & 0x20 != 0, ..Default::default() };
    let mut buf = vec![0u8; 4096];
    if control & 0x80 != 0 {
        if let Ok(mut r) = LegacyReader::new(&words_of(rest)[..], options) {
            for _ in 0..4 {
                if let Ok(Some(info)) = r.try_read(&mut buf) {
                    assert!(info.size <= r.max_frame_size());
                }
            }
        }
        return;
    }
    let mut capacity = layout::MIN_CAPACITY;
    while capacity * 2 + layout::V1_OVERHEAD <= rest.len() && capacity < 1 << 16 {
        capacity *= 2;
    }
    let mut region = vec![0u8; capacity + layout::V1_OVERHEAD];
    let n = rest.len().min(region.len());
    region[..n].copy_from_slice(&rest[..n]);
    if control & 0x40 != 0 {
        let max = (rest.first().copied().unwrap_or(1) as usize * 8).clamp(1, layout::max_frame_limit(capacity));
        let g = Geometry::new(capacity, max).unwrap();
        let at = g.trailer_offset() + trailer::DESCRIPTOR;
        region[at..at + 64].copy_from_slice(g.descriptor(0).as_bytes());
    }
    let words = words_of(&region);
    if let Ok(mut r) = RegionReader::new(&words[..], options) {
        for i in 0..6 {
            let got = if i % 3 == 2 { r.read_latest(&mut buf) } else { r.try_read(&mut buf) };
            if let Ok(Some(info)) = got {
                assert!(info.size <= r.geometry().max_frame_size);
            }
        }
    }
});
