//! Annex B byte streams: splitting an access unit into NAL units and telling what they
//! are. Used to guarantee parameter sets on every keyframe, and by tests and tools.

use crate::VideoCodec;

/// One NAL unit of an Annex B access unit: its bytes without the start code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NalUnit<'a> {
    /// The NAL unit (header byte(s) first).
    pub data: &'a [u8],
}

impl NalUnit<'_> {
    /// The NAL unit type: 5 bits for H.264, 6 bits for HEVC. `None` if the unit is empty.
    pub fn nal_type(&self, codec: VideoCodec) -> Option<u8> {
        let first = *self.data.first()?;
        Some(match codec {
            VideoCodec::H264 => first & 0x1f,
            VideoCodec::HEVC => (first >> 1) & 0x3f,
        })
    }

    /// True for a parameter set (H.264 SPS/PPS, HEVC VPS/SPS/PPS).
    pub fn is_parameter_set(&self, codec: VideoCodec) -> bool {
        matches!(
            (codec, self.nal_type(codec)),
            (VideoCodec::H264, Some(7 | 8)) | (VideoCodec::HEVC, Some(32..=34))
        )
    }

    /// True for a slice of an IDR picture (HEVC: IDR_W_RADL or IDR_N_LP).
    pub fn is_idr(&self, codec: VideoCodec) -> bool {
        matches!(
            (codec, self.nal_type(codec)),
            (VideoCodec::H264, Some(5)) | (VideoCodec::HEVC, Some(19 | 20))
        )
    }
}

/// The NAL units of an Annex B stream (3- or 4-byte start codes). Bytes before the first
/// start code are skipped; trailing zero bytes of a unit are dropped.
pub fn nal_units(data: &[u8]) -> impl Iterator<Item = NalUnit<'_>> {
    let mut pos = find_start(data, 0).map(|(_, after)| after);
    std::iter::from_fn(move || {
        let start = pos?;
        let (end, next) = match find_start(data, start) {
            Some((code_at, after)) => (code_at, Some(after)),
            None => (data.len(), None),
        };
        pos = next;
        let mut unit = &data[start..end];
        while let [rest @ .., 0] = unit {
            unit = rest;
        }
        Some(NalUnit { data: unit })
    })
}

/// Finds the next `00 00 01` at or after `from`: (its index, the index after it).
fn find_start(data: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while i + 3 <= data.len() {
        if data[i + 2] > 1 {
            i += 3;
        } else if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            return Some((i, i + 3));
        } else {
            i += 1;
        }
    }
    None
}

/// True if `data` begins with an Annex B start code.
pub fn starts_with_start_code(data: &[u8]) -> bool {
    data.starts_with(&[0, 0, 1]) || data.starts_with(&[0, 0, 0, 1])
}

/// True if the access unit carries every parameter set a decoder needs to start there
/// (H.264: SPS and PPS; HEVC: VPS, SPS and PPS).
pub fn has_parameter_sets(data: &[u8], codec: VideoCodec) -> bool {
    let mut seen = [false; 3];
    for nal in nal_units(data) {
        let slot = match (codec, nal.nal_type(codec)) {
            (VideoCodec::H264, Some(7)) | (VideoCodec::HEVC, Some(33)) => 1,
            (VideoCodec::H264, Some(8)) | (VideoCodec::HEVC, Some(34)) => 2,
            (VideoCodec::HEVC, Some(32)) => 0,
            _ => continue,
        };
        seen[slot] = true;
    }
    match codec {
        VideoCodec::H264 => seen[1] && seen[2],
        VideoCodec::HEVC => seen.iter().all(|s| *s),
    }
}

/// True if the access unit contains an IDR slice.
pub fn has_idr(data: &[u8], codec: VideoCodec) -> bool {
    nal_units(data).any(|n| n.is_idr(codec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_three_and_four_byte_start_codes() {
        let au = [0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5, 0];
        let units: Vec<_> = nal_units(&au).map(|n| n.data.to_vec()).collect();
        assert_eq!(units, vec![vec![0x67, 1, 2], vec![0x68, 3], vec![0x65, 4, 5]]);
        assert!(has_parameter_sets(&au, VideoCodec::H264));
        assert!(has_idr(&au, VideoCodec::H264));
        assert!(!has_parameter_sets(&au[10..], VideoCodec::H264));
    }

    #[test]
    fn hevc_types() {
        // VPS (32), SPS (33), PPS (34), IDR_W_RADL (19): type in bits 1..7 of byte 0.
        let au = [
            0,
            0,
            1,
            32 << 1,
            1,
            0,
            0,
            1,
            33 << 1,
            1,
            0,
            0,
            1,
            34 << 1,
            1,
            0,
            0,
            1,
            19 << 1,
            1,
        ];
        assert!(has_parameter_sets(&au, VideoCodec::HEVC));
        assert!(has_idr(&au, VideoCodec::HEVC));
        assert!(!has_parameter_sets(&au[5..], VideoCodec::HEVC));
    }

    #[test]
    fn garbage_is_harmless() {
        assert_eq!(nal_units(&[]).count(), 0);
        assert_eq!(nal_units(&[1, 2, 3, 0, 0]).count(), 0);
        assert_eq!(nal_units(&[0, 0, 1]).next().unwrap().data, &[] as &[u8]);
        assert!(!has_idr(&[0, 0, 1], VideoCodec::H264));
    }
}
