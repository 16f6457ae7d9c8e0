//! Browsers' decoders hold frames back unless the stream says it never reorders. Checks,
//! with FFmpeg's `trace_headers` bitstream filter on the encoded stream, that every
//! sequence parameter set announces zero reordering: H.264 VUI bitstream_restriction
//! with max_num_reorder_frames = 0, HEVC sps_max_num_reorder_pics = 0.

mod common;

use std::process::Command;

use common::{skip_without_gpu, TempDir};
use shmring_nvenc::testpattern::TestPattern;
use shmring_nvenc::{EncodeError, Encoder, EncoderChoice, EncoderConfig, OwnedAccessUnit, VideoCodec};

/// Encodes 20 frames (two GOPs) and returns `(field, value)` for every syntax element
/// trace_headers printed, or the error opening the encoder.
fn traced_fields(name: &str, codec: VideoCodec) -> Result<Vec<(String, i64)>, EncodeError> {
    let config = EncoderConfig {
        codec,
        encoder: EncoderChoice::Named(name.into()),
        gop: 10,
        ..EncoderConfig::new(320, 240)
    };
    let mut encoder = Encoder::new(config)?;
    let pattern = TestPattern::new(320, 240, encoder.config().input);
    let mut out: Vec<OwnedAccessUnit> = Vec::new();
    for i in 0..20 {
        encoder.encode(&pattern.render(i), pattern.stride(), i, &mut out)?;
    }
    encoder.flush(&mut out)?;
    let dir = TempDir::new("vui");
    let file = dir.path(if codec == VideoCodec::H264 { "s.h264" } else { "s.hevc" });
    std::fs::write(
        &file,
        out.iter().flat_map(|a| a.data.iter().copied()).collect::<Vec<u8>>(),
    )
    .unwrap();
    let trace = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-i"])
        .arg(&file)
        .args(["-c", "copy", "-bsf:v", "trace_headers", "-f", "null", "-"])
        .output()
        .expect("the ffmpeg binary is installed (scripts/setup)");
    assert!(trace.status.success(), "{}", String::from_utf8_lossy(&trace.stderr));
    // Lines look like: "[trace_headers @ 0x..] 152   max_num_reorder_frames   1 = 0".
    Ok(String::from_utf8_lossy(&trace.stderr)
        .lines()
        .filter_map(|line| {
            let (left, value) = line.rsplit_once(" = ")?;
            let mut words = left.split_whitespace().rev();
            let _bits = words.next()?;
            let field = words.next()?;
            Some((field.to_string(), value.trim().parse().ok()?))
        })
        .collect())
}

fn values<'a>(fields: &'a [(String, i64)], name: &'a str) -> impl Iterator<Item = i64> + 'a {
    fields.iter().filter(move |(f, _)| f == name).map(|(_, v)| *v)
}

#[test]
fn libx264_announces_no_reordering() {
    let fields = traced_fields("libx264", VideoCodec::H264).unwrap();
    let sps = values(&fields, "seq_parameter_set_id").count();
    assert!(sps >= 2, "an SPS on each of the two keyframes, saw {sps}");
    let restriction: Vec<i64> = values(&fields, "bitstream_restriction_flag").collect();
    let reorder: Vec<i64> = values(&fields, "max_num_reorder_frames").collect();
    assert_eq!(restriction, vec![1; restriction.len()]);
    assert!(!reorder.is_empty() && reorder.iter().all(|v| *v == 0), "{reorder:?}");
    assert_eq!(reorder.len(), restriction.len(), "every SPS carries it");
}

#[test]
fn libx265_announces_no_reordering() {
    let fields = traced_fields("libx265", VideoCodec::HEVC).unwrap();
    let reorder: Vec<i64> = values(&fields, "sps_max_num_reorder_pics[0]").collect();
    assert!(reorder.len() >= 2 && reorder.iter().all(|v| *v == 0), "{reorder:?}");
}

#[test]
fn h264_nvenc_announces_no_reordering() {
    let fields = match traced_fields("h264_nvenc", VideoCodec::H264) {
        Ok(f) => f,
        Err(e @ EncodeError::Open { .. }) => return skip_without_gpu("h264_nvenc VUI", &e),
        Err(e) => panic!("{e}"),
    };
    // FFmpeg 5.1's NVENC wrapper does not ask the driver for bitstream_restriction; when
    // the driver writes it anyway, it must say no reordering.
    let reorder: Vec<i64> = values(&fields, "max_num_reorder_frames").collect();
    assert!(reorder.iter().all(|v| *v == 0), "{reorder:?}");
    if reorder.is_empty() {
        println!("NOTE h264_nvenc: no VUI bitstream_restriction in the SPS (browsers may buffer frames)");
    }
}
