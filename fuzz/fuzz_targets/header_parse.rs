//! Parses arbitrary bytes as a frame header and as a v1 descriptor at every length the
//! input suggests. Nothing may panic; a descriptor that validates must describe a file
//! of exactly the claimed length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shmring_core::layout::{self, Descriptor, FrameHeader};
use shmring_core::Geometry;
use zerocopy::{FromBytes, IntoBytes};

fuzz_target!(|data: &[u8]| {
    if let Some(h) = FrameHeader::parse(data) {
        assert_eq!(h.as_bytes(), &data[..32]);
        let _ = (h.is_keyframe(), h.is_padding(), layout::record_len(h.size.get() as usize));
    }
    if data.len() >= 64 {
        let d = Descriptor::read_from_bytes(&data[..64]).unwrap();
        let claimed = d.capacity.get() as usize;
        for len in [claimed.wrapping_add(layout::V1_OVERHEAD), data.len(), 0, usize::MAX] {
            if let Ok(g) = Geometry::from_descriptor(&d, len) {
                assert_eq!(g.file_len(), len);
                assert!(g.capacity.is_power_of_two());
                assert!(layout::record_len(g.max_frame_size) <= g.capacity / 2);
            }
        }
    }
});
