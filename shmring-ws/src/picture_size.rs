//! The picture size of a keyframe, read from its own bytes: the H.264 or HEVC sequence
//! parameter set (the coded size less the cropping / conformance window) or a JPEG
//! image's start-of-frame segment. The ring records no picture size, so `GET /cameras`
//! reads it here from the newest keyframe, when asked (nothing per frame).
//!
//! The bytes come from a writer the server does not trust: anything truncated, garbled
//! or out of range is `None`, never a panic. H.264 SPS are parsed by `h264-reader`
//! (cropping, chroma format and field coding included); HEVC SPS with its bit reader
//! (emulation prevention and Exp-Golomb codes), by the syntax of H.265 7.3.2.2.

use h264_reader::nal::sps::SeqParameterSet;
use h264_reader::rbsp::{BitRead, BitReader, ByteReader};
use shmring_core::Codec;

use crate::annexb::find_start_code;

/// Largest HEVC width or height: `sqrt(8 * MaxLumaPs)` of the highest level (6.x,
/// H.265 A.4.1); a larger one is garbage. (`h264-reader` checks H.264 SPS against
/// their level's limits itself; JPEG sides are 16-bit.)
const MAX_HEVC_SIDE: u32 = 16_888;

/// The picture size `(width, height)` of a keyframe of `codec` (`payload` without the
/// frame header), or `None` if its bytes do not say (no SPS, garbled, another codec).
pub(crate) fn picture_size(codec: Codec, payload: &[u8]) -> Option<(u32, u32)> {
    let size = match codec {
        Codec::H264 => nal_units(payload).find(|n| n[0] & 0x1F == 7).and_then(h264_sps_size),
        Codec::HEVC => nal_units(payload)
            .find(|n| (n[0] >> 1) & 0x3F == 33)
            .and_then(hevc_sps_size)
            .filter(|&(w, h)| w <= MAX_HEVC_SIDE && h <= MAX_HEVC_SIDE),
        Codec::JPEG => jpeg_size(payload),
        _ => None,
    }?;
    (size.0 > 0 && size.1 > 0).then_some(size)
}

/// The NAL units of an Annex B access unit (header first, start codes and trailing
/// zero bytes removed; empty ones skipped).
fn nal_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = data;
    std::iter::from_fn(move || loop {
        let start = find_start_code(rest, 0)? + 3;
        rest = &rest[start..];
        let end = find_start_code(rest, 0).unwrap_or(rest.len());
        let mut nal = &rest[..end];
        while let [head @ .., 0] = nal {
            nal = head;
        }
        if !nal.is_empty() {
            return Some(nal);
        }
    })
}

/// The cropped size an H.264 SPS NAL unit (with its header) gives.
fn h264_sps_size(nal: &[u8]) -> Option<(u32, u32)> {
    let sps = SeqParameterSet::from_bits(BitReader::new(ByteReader::skipping_h264_header(nal))).ok()?;
    sps.pixel_dimensions().ok()
}

/// The size an HEVC SPS NAL unit (with its two-byte header) gives: the luma picture
/// less its conformance window.
fn hevc_sps_size(nal: &[u8]) -> Option<(u32, u32)> {
    let mut r = BitReader::new(ByteReader::without_skip(nal.get(2..)?));
    r.skip(4, "sps_video_parameter_set_id").ok()?;
    let sub_layers = r.read::<3, u8>("sps_max_sub_layers_minus1").ok()?;
    r.skip(1, "sps_temporal_id_nesting_flag").ok()?;
    skip_profile_tier_level(&mut r, sub_layers)?;
    r.read_ue("sps_seq_parameter_set_id").ok()?;
    let chroma_format_idc = r.read_ue("chroma_format_idc").ok()?;
    let separate_planes = chroma_format_idc == 3 && r.read_bit("separate_colour_plane_flag").ok()?;
    let width = r.read_ue("pic_width_in_luma_samples").ok()?;
    let height = r.read_ue("pic_height_in_luma_samples").ok()?;
    if !r.read_bit("conformance_window_flag").ok()? {
        return Some((width, height));
    }
    // Window offsets count chroma samples (Table 6-1: SubWidthC, SubHeightC).
    let (sub_w, sub_h) = match (chroma_format_idc, separate_planes) {
        (1, _) => (2, 2),
        (2, _) => (2, 1),
        _ => (1, 1),
    };
    let mut offset = |name| r.read_ue(name).ok().map(u64::from);
    let (left, right) = (offset("conf_win_left_offset")?, offset("conf_win_right_offset")?);
    let (top, bottom) = (offset("conf_win_top_offset")?, offset("conf_win_bottom_offset")?);
    let cropped = |side: u32, sub: u64, a: u64, b: u64| {
        u64::from(side)
            .checked_sub(sub * (a + b))
            .and_then(|v| u32::try_from(v).ok())
    };
    Some((
        cropped(width, sub_w, left, right)?,
        cropped(height, sub_h, top, bottom)?,
    ))
}

/// Skips `profile_tier_level(1, sub_layers)` (H.265 7.3.3).
fn skip_profile_tier_level<R: BitRead>(r: &mut R, sub_layers: u8) -> Option<()> {
    // general_profile_space .. general_level_idc: 2 + 1 + 5 + 32 + 4 + 43 + 1 + 8 bits.
    r.skip(96, "general profile, tier and level").ok()?;
    let mut present = Vec::with_capacity(usize::from(sub_layers));
    for _ in 0..sub_layers {
        let profile = r.read_bit("sub_layer_profile_present_flag").ok()?;
        let level = r.read_bit("sub_layer_level_present_flag").ok()?;
        present.push((profile, level));
    }
    if sub_layers > 0 {
        r.skip(2 * (8 - u32::from(sub_layers)), "reserved_zero_2bits").ok()?;
    }
    for (profile, level) in present {
        r.skip(
            if profile { 88 } else { 0 } + if level { 8 } else { 0 },
            "sub-layer profile and level",
        )
        .ok()?;
    }
    Some(())
}

/// The size in a JPEG image's start-of-frame segment (SOF0..SOF15 but DHT, JPG, DAC),
/// looked for up to the start of the scan.
fn jpeg_size(data: &[u8]) -> Option<(u32, u32)> {
    let mut at = 2;
    if data.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    loop {
        // Fill bytes (0xFF) may precede a marker.
        while *data.get(at)? == 0xFF && *data.get(at + 1)? == 0xFF {
            at += 1;
        }
        let (0xFF, marker) = (*data.get(at)?, *data.get(at + 1)?) else {
            return None;
        };
        at += 2;
        if matches!(marker, 0x01 | 0xD0..=0xD7) {
            continue; // no length
        }
        let length = usize::from(u16::from_be_bytes([*data.get(at)?, *data.get(at + 1)?]));
        let sof = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if sof {
            // [length u16][precision u8][height u16][width u16]
            let height = u16::from_be_bytes([*data.get(at + 3)?, *data.get(at + 4)?]);
            let width = u16::from_be_bytes([*data.get(at + 5)?, *data.get(at + 6)?]);
            return Some((u32::from(width), u32::from(height)));
        }
        if marker == 0xDA || length < 2 {
            return None;
        }
        at += length;
    }
}

#[cfg(test)]
mod tests;
