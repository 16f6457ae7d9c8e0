//! Picture sizes from real encoders' parameter sets and JPEG headers, and from hostile
//! bytes (truncated, flipped, random), which must give `None` or a size, never a panic.

use super::*;

/// `bytes` as hex digits, into bytes.
fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// An Annex B access unit: `nal` behind a start code, a stand-in slice behind another.
fn access_unit(nal: &[u8], slice: u8) -> Vec<u8> {
    let mut au = vec![0, 0, 0, 1];
    au.extend_from_slice(nal);
    au.extend_from_slice(&[0, 0, 0, 1, slice, 0x88, 0x84]);
    au
}

// SPS of libx264 (yuv420p) at 1920x1080 (1088 coded, 8 rows cropped) and at 160x120
// (128 coded).
const H264_1080P: &str = "67640028acd940780227e5c044000003000400000300f03c60c658";
const H264_160X120: &str = "6764000bacd942847e5c0440000003004000000f03c50a6580";
// SPS of libx265: 1920x1080 yuv420p (conformance window of 8 rows), 202x122 yuv422p
// (the window counts whole chroma columns).
const HEVC_1080P: &str = "420101016000000300900000030000030078a003c08010e596566924caf0168080000003008000000f04";
const HEVC_202X122_422: &str = "4201010408000003009d0800000300003cb01a2020724f96566924caf0168080000003008000000f04";
// The head of ffmpeg's mjpeg image at 64x48, to the end of its SOF0 segment (DHT first).
const JPEG_64X48: &str = "ffd8ffe000104a46494600010200000100010000fffe00104c61766335392e33372e31303000ffdb0043000804040404040505050505050606060606060606060606060607070708080807070706060707080808080909090808080809090a0a0a0c0c0b0b0e0e0e111114ffc400a1000003010101010000000000000000000005040603070008010003010100000000000000000000000004050607081000000405020107070b0501000000000003020104131114051206002131223482161507b2c2354183234384b4b3c332d4241755364553a5a2d225a41100020201030104070509010100000000020304010506121100212313071433345141b12272b27331323524b3828175b4c1740842ffc0001108003000400301";

fn samples() -> [(Codec, Vec<u8>, (u32, u32)); 5] {
    [
        (Codec::H264, access_unit(&hex(H264_1080P), 0x65), (1920, 1080)),
        (Codec::H264, access_unit(&hex(H264_160X120), 0x65), (160, 120)),
        (Codec::HEVC, access_unit(&hex(HEVC_1080P), 0x26), (1920, 1080)),
        (Codec::HEVC, access_unit(&hex(HEVC_202X122_422), 0x26), (202, 122)),
        (Codec::JPEG, hex(JPEG_64X48), (64, 48)),
    ]
}

#[test]
fn sizes_come_from_the_sps_less_cropping_and_from_the_jpeg_header() {
    for (codec, bytes, size) in samples() {
        assert_eq!(picture_size(codec, &bytes), Some(size), "{codec:?} {size:?}");
    }
    // The SPS need not come first (an access unit delimiter, an SEI before it).
    let mut au = vec![0, 0, 0, 1, 0x09, 0xF0, 0, 0, 1, 0x06, 0x05, 0x01, 0x80];
    au.extend(access_unit(&hex(H264_160X120), 0x65));
    assert_eq!(picture_size(Codec::H264, &au), Some((160, 120)));
}

#[test]
fn no_parameter_set_or_another_codec_has_no_size() {
    let slice_only = [0, 0, 0, 1, 0x65, 0x88, 0x84, 0x00];
    assert_eq!(picture_size(Codec::H264, &slice_only), None);
    assert_eq!(picture_size(Codec::HEVC, &slice_only), None);
    assert_eq!(picture_size(Codec::H264, &[]), None);
    assert_eq!(
        picture_size(Codec(77), &samples()[0].1),
        None,
        "an application's own codec"
    );
    // An H.264 SPS is not an HEVC one, and the other way round.
    assert_eq!(picture_size(Codec::HEVC, &samples()[0].1), None);
    assert_eq!(picture_size(Codec::JPEG, &samples()[0].1), None);
    // A JPEG whose scan starts before any SOF.
    assert_eq!(picture_size(Codec::JPEG, &[0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02]), None);
}

#[test]
fn truncated_garbled_or_random_bytes_never_panic() {
    for (codec, bytes, size) in samples() {
        for cut in 0..bytes.len() {
            let got = picture_size(codec, &bytes[..cut]);
            // Cut inside the parameter set or header: no size, or the right one (a
            // cut after the size fields); never a wrong one from half the fields.
            assert!(
                got.is_none() || got == Some(size) || codec == Codec::HEVC,
                "{codec:?} cut at {cut}: {got:?}"
            );
        }
        for at in 0..bytes.len() {
            for flip in [0x01, 0x10, 0x80, 0xFF] {
                let mut bad = bytes.clone();
                bad[at] ^= flip;
                let _ = picture_size(codec, &bad);
            }
        }
    }
    // Random bytes behind a start code and an SPS header, and random JPEG segments.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as u8
    };
    for round in 0..20_000 {
        let len = round % 64;
        let body: Vec<u8> = (0..len).map(|_| next()).collect();
        for (codec, head) in [
            (Codec::H264, &[0u8, 0, 1, 0x67][..]),
            (Codec::HEVC, &[0, 0, 1, 0x42, 0x01][..]),
            (Codec::JPEG, &[0xFF, 0xD8, 0xFF][..]),
        ] {
            let bytes = [head, &body].concat();
            if let Some((w, h)) = picture_size(codec, &bytes) {
                assert!(w > 0 && h > 0 && w <= 65_535 && h <= 65_535, "{codec:?}: {w}x{h}");
            }
        }
    }
}
