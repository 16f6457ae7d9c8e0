//! Bad input gets a clear error, never a panic, and loses nothing: the encoder keeps
//! working after every rejected call.

mod common;

use common::TempDir;
use shmring_core::{RingWriter, WriterOptions};
use shmring_nvenc::testpattern::TestPattern;
use shmring_nvenc::{
    AccessUnit, EncodeError, Encoder, EncoderChoice, EncoderConfig, FrameSink, OwnedAccessUnit, PixelFormat, SinkError,
    VideoCodec,
};

fn x264(width: u32, height: u32, input: PixelFormat) -> Encoder {
    let config = EncoderConfig {
        encoder: EncoderChoice::Named("libx264".into()),
        input,
        ..EncoderConfig::new(width, height)
    };
    Encoder::new(config).unwrap()
}

#[test]
fn wrong_frame_size_and_stride_are_rejected_and_nothing_is_lost() {
    let mut encoder = x264(64, 48, PixelFormat::Rgb24);
    let pattern = TestPattern::new(64, 48, PixelFormat::Rgb24);
    let good = pattern.render(0);
    let mut out: Vec<OwnedAccessUnit> = Vec::new();

    let e = encoder
        .encode(&good[..good.len() - 1], 64 * 3, 1, &mut out)
        .unwrap_err();
    assert!(
        matches!(e, EncodeError::FrameLength { got, full: 9216, trimmed: 9216 } if got == 9215),
        "{e:?}"
    );
    assert!(e.to_string().contains("expected 9216"), "{e}");

    let e = encoder.encode(&good, 64 * 3 - 1, 1, &mut out).unwrap_err();
    assert!(matches!(e, EncodeError::Stride { stride: 191, min: 192 }), "{e:?}");

    // A 1280x720 frame given to a 64x48 encoder.
    let big = TestPattern::new(1280, 720, PixelFormat::Rgb24).render(0);
    assert!(matches!(
        encoder.encode(&big, 1280 * 3, 1, &mut out),
        Err(EncodeError::Stride { .. } | EncodeError::FrameLength { .. })
    ));
    assert!(matches!(
        encoder.encode(&big, 64 * 3, 1, &mut out),
        Err(EncodeError::FrameLength { .. })
    ));
    assert!(out.is_empty());
    assert_eq!(encoder.frames_in(), 0);

    // Still works, and the first frame it does take is a keyframe with id 7.
    encoder.encode(&good, 64 * 3, 7, &mut out).unwrap();
    assert_eq!(out.len(), 1);
    assert!(out[0].keyframe);
    assert_eq!(out[0].frame_id, 7);

    // Last row trimmed to its pixels is accepted with a padded stride.
    let stride = 64 * 3 + 10;
    let trimmed = vec![0u8; stride * 47 + 64 * 3];
    encoder.encode(&trimmed, stride, 8, &mut out).unwrap();
    assert_eq!(out.len(), 2);
}

#[test]
fn nv12_length_counts_the_chroma_rows() {
    let mut encoder = x264(64, 48, PixelFormat::Nv12);
    let mut out: Vec<OwnedAccessUnit> = Vec::new();
    let luma_only = vec![16u8; 64 * 48];
    assert!(matches!(
        encoder.encode(&luma_only, 64, 0, &mut out),
        Err(EncodeError::FrameLength { full: 4608, .. })
    ));
    encoder.encode(&vec![128u8; 64 * 72], 64, 0, &mut out).unwrap();
    assert_eq!(out.len(), 1);
}

#[test]
fn unknown_and_mismatched_encoders_are_named_in_the_error() {
    let named = |name: &str, codec| EncoderConfig {
        codec,
        encoder: EncoderChoice::Named(name.into()),
        ..EncoderConfig::new(64, 48)
    };
    let e = Encoder::new(named("h264_bogus", VideoCodec::H264)).err().unwrap();
    assert!(
        matches!(&e, EncodeError::UnknownEncoder { name } if name == "h264_bogus"),
        "{e:?}"
    );
    assert!(e.to_string().contains("h264_bogus"));

    let e = Encoder::new(named("libx264", VideoCodec::HEVC)).err().unwrap();
    assert!(
        matches!(
            e,
            EncodeError::WrongCodec {
                wanted: VideoCodec::HEVC,
                ..
            }
        ),
        "{e:?}"
    );

    let e = Encoder::new(named("", VideoCodec::H264)).err().unwrap();
    assert!(matches!(e, EncodeError::InvalidConfig(_)), "{e:?}");
}

#[test]
fn impossible_configurations_are_rejected() {
    for config in [
        EncoderConfig::new(63, 48),
        EncoderConfig::new(64, 7),
        EncoderConfig {
            fps: 0,
            ..EncoderConfig::new(64, 48)
        },
        EncoderConfig {
            gop: 0,
            ..EncoderConfig::new(64, 48)
        },
        EncoderConfig {
            bitrate_bps: 0,
            ..EncoderConfig::new(64, 48)
        },
    ] {
        let e = Encoder::new(config.clone()).err().unwrap();
        assert!(matches!(e, EncodeError::InvalidConfig(_)), "{config:?}: {e:?}");
    }
}

/// Refuses the access unit with index `refuse`, keeps the others.
struct Flaky {
    refuse: usize,
    calls: usize,
    kept: Vec<OwnedAccessUnit>,
}

impl FrameSink for Flaky {
    fn write_access_unit(&mut self, au: &AccessUnit<'_>) -> Result<u64, SinkError> {
        self.calls += 1;
        if self.calls - 1 == self.refuse {
            return Err("disk full".into());
        }
        self.kept.push(au.to_owned());
        Ok(self.kept.len() as u64)
    }
}

#[test]
fn a_refused_access_unit_is_followed_by_a_keyframe() {
    let mut encoder = x264(64, 48, PixelFormat::Rgb24);
    let pattern = TestPattern::new(64, 48, PixelFormat::Rgb24);
    let mut sink = Flaky {
        refuse: 4,
        calls: 0,
        kept: Vec::new(),
    };
    for i in 0..8 {
        let r = encoder.encode(&pattern.render(i), pattern.stride(), i, &mut sink);
        if i == 4 {
            let e = r.unwrap_err();
            assert!(
                matches!(e, EncodeError::Sink(_)) && e.to_string().contains("disk full"),
                "{e}"
            );
        } else {
            r.unwrap();
        }
    }
    let keys: Vec<u64> = sink.kept.iter().filter(|a| a.keyframe).map(|a| a.frame_id).collect();
    assert_eq!(keys, vec![0, 5], "keyframe right after the refused frame 4");
}

#[test]
fn access_unit_larger_than_the_ring_allows_is_an_error() {
    let dir = TempDir::new("small");
    let options = WriterOptions {
        capacity: 4096,
        ..WriterOptions::default()
    };
    let mut ring = RingWriter::create(dir.path("ring"), &options).unwrap();
    let mut encoder = x264(320, 240, PixelFormat::Rgb24);
    let pattern = TestPattern::new(320, 240, PixelFormat::Rgb24);
    let e = encoder
        .encode(&pattern.render(0), pattern.stride(), 0, &mut ring)
        .unwrap_err();
    assert!(matches!(e, EncodeError::Sink(_)), "{e:?}");
    println!("{e}");
}

#[test]
fn no_frames_after_flush() {
    let mut encoder = x264(64, 48, PixelFormat::Rgb24);
    let pattern = TestPattern::new(64, 48, PixelFormat::Rgb24);
    let mut out: Vec<OwnedAccessUnit> = Vec::new();
    encoder
        .encode(&pattern.render(0), pattern.stride(), 0, &mut out)
        .unwrap();
    encoder.flush(&mut out).unwrap();
    assert!(matches!(
        encoder.encode(&pattern.render(1), pattern.stride(), 1, &mut out),
        Err(EncodeError::Finished)
    ));
    assert!(
        encoder.flush(&mut out).unwrap().is_empty(),
        "flushing twice is harmless"
    );
}

#[test]
fn rows_outside_the_memory_given_are_rejected_and_nothing_is_lost() {
    let mut encoder = x264(64, 48, PixelFormat::Rgb24);
    let pattern = TestPattern::new(64, 48, PixelFormat::Rgb24);
    let good = pattern.render(0);
    let row = 64 * 3;
    let mut out: Vec<OwnedAccessUnit> = Vec::new();
    for (first_row, stride) in [
        (0, row as isize + 1),           // the last row runs past the end
        (0, -(row as isize)),            // bottom-up from row 0: row 1 is before the start
        (row * 47 + 1, -(row as isize)), // row 0 runs past the end
        (0, row as isize - 1),           // rows overlap
        (usize::MAX, row as isize),      // nonsense offset
        (0, isize::MIN),                 // nonsense stride
    ] {
        let e = encoder.encode_rows(&good, first_row, stride, 1, &mut out).unwrap_err();
        assert!(
            matches!(e, EncodeError::RowsOutOfBounds { .. }),
            "{first_row} {stride}: {e:?}"
        );
        assert!(e.to_string().contains("do not fit in 9216 bytes"), "{e}");
    }
    assert!(out.is_empty());
    // Bottom-up rows that fit are taken.
    assert_eq!(
        encoder
            .encode_rows(&good, row * 47, -(row as isize), 7, &mut out)
            .unwrap()
            .len(),
        1
    );
    assert_eq!(out[0].frame_id, 7);
}

/// The same frames, read in place or (ending next to a page boundary, where swscale's
/// vector loads could reach the next page) copied first, encode to the same bytes.
#[test]
fn rows_next_to_a_page_boundary_are_copied_and_encode_the_same() {
    const PAGE: usize = 4096;
    let (width, height) = (64u32, 48u32);
    let pattern = TestPattern::new(width, height, PixelFormat::Rgb24);
    let row = width as usize * 3;
    let len = row * height as usize;
    let mut memory = vec![0u8; len + 3 * PAGE];
    // Place the frame so that it ends exactly at a page boundary.
    let base = memory.as_ptr() as usize;
    let end = (base + len + PAGE).next_multiple_of(PAGE) - base;
    let start = end - len;
    let mut in_place = x264(width, height, PixelFormat::Rgb24);
    let mut at_page_end = x264(width, height, PixelFormat::Rgb24);
    let (mut a, mut b): (Vec<OwnedAccessUnit>, Vec<OwnedAccessUnit>) = (Vec::new(), Vec::new());
    for i in 0..5 {
        let frame = pattern.render(i);
        memory[start..end].copy_from_slice(&frame);
        // Flipped in both: row 0 is the last row in memory.
        in_place
            .encode_rows(&frame, row * (height as usize - 1), -(row as isize), i, &mut a)
            .unwrap();
        at_page_end
            .encode_rows(
                &memory[..end],
                start + row * (height as usize - 1),
                -(row as isize),
                i,
                &mut b,
            )
            .unwrap();
    }
    in_place.flush(&mut a).unwrap();
    at_page_end.flush(&mut b).unwrap();
    assert_eq!(a.len(), 5);
    assert_eq!(a, b);
}
