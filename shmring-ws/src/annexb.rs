//! Splitting an H.264 Annex B byte stream into access units, for producers that get
//! their video from a file or from the `ffmpeg` command line.
//!
//! An access unit starts at an access unit delimiter (NAL type 9), at an SPS, PPS or SEI
//! (7, 8, 6) following a slice, or at a slice (1, 5) whose `first_mb_in_slice` is 0
//! following a slice. An access unit holding an IDR slice (type 5) is a keyframe.

/// One access unit the [`Splitter`] cut out of the byte stream (owned; not the encoder's
/// `shmring_nvenc::AccessUnit`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitUnit {
    /// The NAL units with their start codes.
    pub data: Vec<u8>,
    /// True if it holds an IDR slice.
    pub keyframe: bool,
}

/// The former name of [`SplitUnit`].
#[deprecated(note = "renamed SplitUnit (shmring_nvenc::AccessUnit is the encoder's)")]
pub type AccessUnit = SplitUnit;

/// Incremental access unit splitter: feed bytes with [`Splitter::push`], collect the
/// completed access units, and call [`Splitter::finish`] at the end of the stream.
#[derive(Debug, Default)]
pub struct Splitter {
    buf: Vec<u8>,
    /// Where scanning for start codes resumes.
    scanned: usize,
    /// Whether the access unit being built has a slice / an IDR slice.
    has_slice: bool,
    has_idr: bool,
}

/// Finds the next `00 00 01` at or after `from`; returns its index.
pub(crate) fn find_start_code(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 3 <= buf.len() {
        if buf[i + 2] > 1 {
            i += 3;
        } else if buf[i] == 0 && buf[i + 1] == 0 && buf[i + 2] == 1 {
            return Some(i);
        } else {
            i += 1;
        }
    }
    None
}

impl Splitter {
    /// An empty splitter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes; returns the access units they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SplitUnit> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(sc) = find_start_code(&self.buf, self.scanned) {
            // The NAL header byte must be there to classify the NAL.
            if sc + 4 >= self.buf.len() {
                break;
            }
            self.scanned = sc + 3;
            let nal_type = self.buf[sc + 3] & 0x1f;
            // Include a 4-byte start code's leading zero in this NAL, not the previous one.
            let begin = if sc > 0 && self.buf[sc - 1] == 0 { sc - 1 } else { sc };
            let first_mb_zero = self.buf[sc + 4] & 0x80 != 0;
            let starts_au = match nal_type {
                9 => true,
                6..=8 => self.has_slice,
                1 | 5 => self.has_slice && first_mb_zero,
                _ => false,
            };
            if starts_au && begin > 0 {
                let data: Vec<u8> = self.buf.drain(..begin).collect();
                out.push(SplitUnit {
                    data,
                    keyframe: self.has_idr,
                });
                self.scanned -= begin;
                self.has_slice = false;
                self.has_idr = false;
            }
            if nal_type == 1 || nal_type == 5 {
                self.has_slice = true;
                self.has_idr |= nal_type == 5;
            }
        }
        out
    }

    /// Returns the last access unit, if the stream ended inside one.
    pub fn finish(&mut self) -> Option<SplitUnit> {
        let data = std::mem::take(&mut self.buf);
        self.scanned = 0;
        let keyframe = self.has_idr || data.windows(4).any(|w| w[..3] == [0, 0, 1] && w[3] & 0x1f == 5);
        let has_slice = self.has_slice
            || data
                .windows(4)
                .any(|w| w[..3] == [0, 0, 1] && matches!(w[3] & 0x1f, 1 | 5));
        self.has_slice = false;
        self.has_idr = false;
        (has_slice && !data.is_empty()).then_some(SplitUnit { data, keyframe })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nal(t: u8, first_mb_zero: bool) -> Vec<u8> {
        vec![0, 0, 0, 1, t, if first_mb_zero { 0x88 } else { 0x08 }, 0xAB, 0xCD]
    }

    #[test]
    fn splits_at_parameter_sets_and_first_slices() {
        let mut stream = Vec::new();
        let au1 = [nal(7, true), nal(8, true), nal(5, true), nal(5, false)].concat();
        let au2 = nal(1, true);
        let au3 = [nal(9, true), nal(1, true)].concat();
        stream.extend(&au1);
        stream.extend(&au2);
        stream.extend(&au3);
        let mut s = Splitter::new();
        let mut aus = Vec::new();
        for chunk in stream.chunks(3) {
            aus.extend(s.push(chunk));
        }
        aus.extend(s.finish());
        assert_eq!(aus.len(), 3);
        assert_eq!(
            aus[0],
            SplitUnit {
                data: au1,
                keyframe: true
            }
        );
        assert_eq!(
            aus[1],
            SplitUnit {
                data: au2,
                keyframe: false
            }
        );
        assert_eq!(
            aus[2],
            SplitUnit {
                data: au3,
                keyframe: false
            }
        );
    }
}
