//! Encodes the moving test pattern with a real FFmpeg encoder into a real ring, reads
//! it back through a RingReader, decodes it with FFmpeg's decoder and checks what
//! arrived: every frame, in order, with its frame_id; the resolution; keyframe positions
//! (GOP and on request); parameter sets on every keyframe; zero-delay decoding; PSNR.

mod common;

use std::collections::BTreeSet;

use common::{decode, psnr_yuv, reference_yuv, skip_without_gpu, TempDir};
use shmring_core::{Codec, ReaderOptions, RingReader, RingWriter, WriterOptions};
use shmring_nvenc::testpattern::TestPattern;
use shmring_nvenc::{annexb, EncodeError, Encoder, EncoderChoice, EncoderConfig, PixelFormat, VideoCodec};

const W: u32 = 320;
const H: u32 = 240;
const FRAMES: u64 = 40;
const GOP: u32 = 10;
const REQUEST_AT: u64 = 25;

/// What the reader got for one frame.
struct Received {
    frame_id: u64,
    keyframe: bool,
    codec: Codec,
    payload: Vec<u8>,
}

/// Encodes FRAMES frames (frame_id = 1000 + index) through a ring, asking for a
/// keyframe before frame REQUEST_AT, and returns what a reader received.
fn encode_through_ring(encoder: &mut Encoder, format: PixelFormat, pad: usize) -> Vec<Received> {
    let dir = TempDir::new("ring");
    let path = dir.path("ring");
    let mut writer = RingWriter::create(&path, &WriterOptions::default()).unwrap();
    let mut reader = RingReader::open(&path, &ReaderOptions::default()).unwrap();
    let pattern = TestPattern::new(W, H, format);
    let mut received = Vec::new();
    let read_all = |reader: &mut RingReader, received: &mut Vec<Received>| {
        while let Some(f) = reader.try_read().unwrap() {
            assert_eq!(f.info.lost_before, 0, "reader lost frames");
            received.push(Received {
                frame_id: f.info.frame_id,
                keyframe: f.info.keyframe(),
                codec: f.info.codec,
                payload: f.payload.to_vec(),
            });
        }
    };
    for i in 0..FRAMES {
        if i == REQUEST_AT {
            encoder.request_keyframe();
        }
        let packed = pattern.render(i);
        let stride = pattern.stride() + pad;
        let mut frame = vec![0xAB; stride * format.rows(H)];
        for r in 0..format.rows(H) {
            frame[r * stride..r * stride + pattern.stride()]
                .copy_from_slice(&packed[r * pattern.stride()..(r + 1) * pattern.stride()]);
        }
        let seqs = encoder.encode(&frame, stride, 1000 + i, &mut writer).unwrap();
        assert_eq!(
            seqs.len(),
            1,
            "frame {i}: one access unit per frame, at once (zero latency)"
        );
        read_all(&mut reader, &mut received);
    }
    let tail = encoder.flush(&mut writer).unwrap();
    assert!(tail.is_empty(), "nothing held back in the encoder");
    read_all(&mut reader, &mut received);
    assert_eq!(reader.stats().lost, 0);
    received
}

/// Keyframes expected: frame 0, the requested one, and one every GOP frames counted
/// from the previous keyframe.
fn expected_keyframes() -> BTreeSet<u64> {
    let mut keys = BTreeSet::new();
    let mut last = 0;
    keys.insert(0);
    for i in 1..FRAMES {
        if i == REQUEST_AT || i - last == GOP as u64 {
            keys.insert(i);
            last = i;
        }
    }
    keys
}

fn check_stream(name: &str, codec: VideoCodec, format: PixelFormat, received: &[Received], exact_gop: bool) {
    assert_eq!(received.len() as u64, FRAMES, "{name}: reader got every frame");
    let ids: Vec<u64> = received.iter().map(|r| r.frame_id).collect();
    assert_eq!(
        ids,
        (1000..1000 + FRAMES).collect::<Vec<_>>(),
        "{name}: frame ids in order"
    );
    for r in received {
        assert_eq!(r.codec, codec.ring_codec(), "{name}: codec id");
        assert!(annexb::starts_with_start_code(&r.payload), "{name}: Annex B");
        if r.keyframe {
            assert!(
                annexb::has_parameter_sets(&r.payload, codec),
                "{name}: frame {} keyframe without parameter sets",
                r.frame_id
            );
            assert!(
                annexb::has_idr(&r.payload, codec),
                "{name}: frame {} keyframe is not IDR",
                r.frame_id
            );
        } else {
            assert!(
                !annexb::has_idr(&r.payload, codec),
                "{name}: frame {} IDR not flagged",
                r.frame_id
            );
        }
    }
    let keys: BTreeSet<u64> = received
        .iter()
        .filter(|r| r.keyframe)
        .map(|r| r.frame_id - 1000)
        .collect();
    assert!(
        keys.contains(&REQUEST_AT),
        "{name}: IDR within one frame of request_keyframe(); keyframes {keys:?}"
    );
    if exact_gop {
        assert_eq!(keys, expected_keyframes(), "{name}: keyframe positions");
    } else {
        let mut last = 0;
        for i in 0..FRAMES {
            if keys.contains(&i) {
                last = i;
            }
            assert!(i - last < GOP as u64, "{name}: more than a GOP without keyframe at {i}");
        }
    }

    let units: Vec<Vec<u8>> = received.iter().map(|r| r.payload.clone()).collect();
    let (per_unit, tail) = decode(codec, &units);
    assert!(
        tail.is_empty(),
        "{name}: decoder held {} frames back (reordering announced)",
        tail.len()
    );
    let pattern = TestPattern::new(W, H, format);
    let mut worst = f64::INFINITY;
    for (i, pictures) in per_unit.iter().enumerate() {
        assert_eq!(pictures.len(), 1, "{name}: frame {i} decoded at once");
        let d = &pictures[0];
        assert_eq!((d.width, d.height), (W, H), "{name}: resolution");
        assert_eq!(
            d.key, received[i].keyframe,
            "{name}: decoder and ring agree on keyframe {i}"
        );
        let reference = reference_yuv(format, W, H, &pattern.render(i as u64));
        let p = psnr_yuv(&reference, d);
        worst = worst.min(p);
        assert!(p >= 30.0, "{name}: frame {i} PSNR {p:.2} dB < 30");
    }
    println!(
        "{name} {format}: {} frames, keyframes {keys:?}, worst PSNR {worst:.2} dB",
        received.len()
    );
}

fn software(name: &str, codec: VideoCodec, format: PixelFormat) -> Encoder {
    let config = EncoderConfig {
        codec,
        encoder: EncoderChoice::Named(name.into()),
        gop: GOP,
        bitrate_bps: 1_500_000,
        input: format,
        ..EncoderConfig::new(W, H)
    };
    Encoder::new(config).unwrap()
}

#[test]
fn libx264_through_ring_decodes_back() {
    let mut encoder = software("libx264", VideoCodec::H264, PixelFormat::Rgb24);
    assert_eq!(encoder.name(), "libx264");
    assert!(!encoder.is_hardware());
    let received = encode_through_ring(&mut encoder, PixelFormat::Rgb24, 0);
    check_stream("libx264", VideoCodec::H264, PixelFormat::Rgb24, &received, true);
}

#[test]
fn libx264_every_input_format_and_padded_stride() {
    for format in [PixelFormat::Rgba, PixelFormat::Bgra, PixelFormat::Nv12] {
        let mut encoder = software("libx264", VideoCodec::H264, format);
        let received = encode_through_ring(&mut encoder, format, 64);
        check_stream("libx264", VideoCodec::H264, format, &received, true);
    }
}

#[test]
fn libx265_through_ring_decodes_back() {
    let mut encoder = software("libx265", VideoCodec::HEVC, PixelFormat::Rgb24);
    let received = encode_through_ring(&mut encoder, PixelFormat::Rgb24, 0);
    check_stream("libx265", VideoCodec::HEVC, PixelFormat::Rgb24, &received, true);
}

#[test]
fn auto_falls_back_to_software_without_gpu() {
    let encoder = Encoder::new(EncoderConfig {
        gop: GOP,
        ..EncoderConfig::new(W, H)
    })
    .unwrap();
    match encoder.name() {
        "h264_nvenc" => assert!(encoder.is_hardware() && encoder.fallback_reasons().is_empty()),
        "libx264" => {
            let tried = encoder.fallback_reasons();
            assert_eq!(tried.len(), 1, "{tried:?}");
            assert_eq!(tried[0].0, "h264_nvenc");
            println!("auto fell back to libx264: h264_nvenc: {}", tried[0].1);
        }
        other => panic!("auto opened {other}"),
    }
}

fn nvenc(codec: VideoCodec, name: &str) {
    let config = EncoderConfig {
        codec,
        encoder: EncoderChoice::Named(name.into()),
        gop: GOP,
        bitrate_bps: 1_500_000,
        ..EncoderConfig::new(W, H)
    };
    let mut encoder = match Encoder::new(config) {
        Ok(e) => e,
        Err(e @ EncodeError::Open { .. }) => return skip_without_gpu(name, &e),
        Err(e) => panic!("{name}: {e}"),
    };
    assert!(encoder.is_hardware());
    let received = encode_through_ring(&mut encoder, PixelFormat::Rgb24, 0);
    check_stream(name, codec, PixelFormat::Rgb24, &received, false);
}

#[test]
fn h264_nvenc_through_ring_decodes_back() {
    nvenc(VideoCodec::H264, "h264_nvenc");
}

#[test]
fn hevc_nvenc_through_ring_decodes_back() {
    nvenc(VideoCodec::HEVC, "hevc_nvenc");
}
