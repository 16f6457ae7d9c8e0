//! A moving test pattern with a frame counter: for `shmring testsrc`, demos without a
//! camera, and encoder tests (smooth areas, sharp edges and motion in every frame).
//!
//! ```
//! use shmring_nvenc::{PixelFormat, testpattern::TestPattern};
//! let pattern = TestPattern::new(64, 48, PixelFormat::Rgb24);
//! let a = pattern.render(0);
//! assert_eq!(a.len(), 64 * 48 * 3);
//! assert_ne!(a, pattern.render(1)); // it moves
//! ```

use crate::PixelFormat;

/// Glyphs 0-9, 5 pixels wide and 7 high, one row per byte (bit 4 = leftmost pixel).
const DIGITS: [[u8; 7]; 10] = [
    [0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110],
    [0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110],
    [0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b01000, 0b11111],
    [0b11110, 0b00001, 0b00001, 0b01110, 0b00001, 0b00001, 0b11110],
    [0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010],
    [0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110],
    [0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110],
    [0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b01000, 0b01000],
    [0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110],
    [0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100],
];

/// Glyphs A-Z in the same 5x7 cells as [`DIGITS`].
const LETTERS: [[u8; 7]; 26] = [
    [0b01110, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001],
    [0b11110, 0b10001, 0b10001, 0b11110, 0b10001, 0b10001, 0b11110],
    [0b01110, 0b10001, 0b10000, 0b10000, 0b10000, 0b10001, 0b01110],
    [0b11110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b11110],
    [0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b11111],
    [0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b10000],
    [0b01110, 0b10001, 0b10000, 0b10111, 0b10001, 0b10001, 0b01111],
    [0b10001, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001],
    [0b01110, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110],
    [0b00111, 0b00010, 0b00010, 0b00010, 0b00010, 0b10010, 0b01100],
    [0b10001, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010, 0b10001],
    [0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b11111],
    [0b10001, 0b11011, 0b10101, 0b10101, 0b10001, 0b10001, 0b10001],
    [0b10001, 0b10001, 0b11001, 0b10101, 0b10011, 0b10001, 0b10001],
    [0b01110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110],
    [0b11110, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000, 0b10000],
    [0b01110, 0b10001, 0b10001, 0b10001, 0b10101, 0b10010, 0b01101],
    [0b11110, 0b10001, 0b10001, 0b11110, 0b10100, 0b10010, 0b10001],
    [0b01111, 0b10000, 0b10000, 0b01110, 0b00001, 0b00001, 0b11110],
    [0b11111, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100],
    [0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110],
    [0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100],
    [0b10001, 0b10001, 0b10001, 0b10101, 0b10101, 0b10101, 0b01010],
    [0b10001, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001, 0b10001],
    [0b10001, 0b10001, 0b01010, 0b00100, 0b00100, 0b00100, 0b00100],
    [0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b11111],
];

/// Digits of the frame counter.
const COUNTER_DIGITS: usize = 6;

/// Characters of a camera label that are drawn (the rest of a longer name is cut).
const LABEL_CHARS: usize = 16;

/// The glyph of a label character: letters (either case), digits, `-`, `_` and `.`;
/// anything else is blank.
fn glyph(c: u8) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        c @ b'A'..=b'Z' => LETTERS[(c - b'A') as usize],
        c @ b'0'..=b'9' => DIGITS[(c - b'0') as usize],
        b'-' => [0, 0, 0, 0b11111, 0, 0, 0],
        b'_' => [0, 0, 0, 0, 0, 0, 0b11111],
        b'.' => [0, 0, 0, 0, 0, 0b01100, 0b01100],
        _ => [0; 7],
    }
}

/// Colours of the bouncing square, one per camera variant (yellow for the first).
const SQUARE_COLOURS: [(u8, u8, u8); 4] = [(240, 240, 32), (32, 240, 240), (240, 32, 240), (255, 140, 0)];

/// Draws frames of a given size and pixel format. Frame `i` shows a scrolling colour
/// gradient, a square that bounces across the picture and `i` (mod 10^6) in white
/// digits on a black box in the top-left corner. Frames are tightly packed
/// ([`TestPattern::stride`] bytes per row). [`TestPattern::with_camera`] makes one
/// camera's pattern tell itself apart from another's: its name under the counter and
/// its own colours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestPattern {
    width: u32,
    height: u32,
    format: PixelFormat,
    /// The camera's name (ASCII bytes, `label_len` of them), drawn under the counter.
    label: [u8; LABEL_CHARS],
    label_len: u8,
    /// Which camera of several: shifts the gradient's colours and picks the square's.
    variant: u32,
}

impl TestPattern {
    /// A pattern for `width` x `height` frames in `format` (NV12 needs even sizes; odd
    /// sizes are rounded down for the chroma plane).
    pub fn new(width: u32, height: u32, format: PixelFormat) -> Self {
        TestPattern {
            width,
            height,
            format,
            label: [0; LABEL_CHARS],
            label_len: 0,
            variant: 0,
        }
    }

    /// The same pattern for camera number `index` (0-based) named `name`: the name
    /// (its first 16 characters; letters, digits, `-`, `_`, `.`) in white under the
    /// counter, and colours of its own, so pictures of several cameras are told apart
    /// at a glance. Camera 0 keeps the plain pattern's colours.
    ///
    /// ```
    /// use shmring_nvenc::{PixelFormat, testpattern::TestPattern};
    /// let plain = TestPattern::new(320, 240, PixelFormat::Rgb24);
    /// let front = plain.with_camera("front", 0);
    /// let wrist = plain.with_camera("wrist", 1);
    /// assert_ne!(front.render(0), plain.render(0)); // the label
    /// assert_ne!(front.render(0), wrist.render(0));
    /// ```
    pub fn with_camera(mut self, name: &str, index: usize) -> Self {
        let bytes = &name.as_bytes()[..name.len().min(LABEL_CHARS)];
        self.label = [0; LABEL_CHARS];
        self.label[..bytes.len()].copy_from_slice(bytes);
        self.label_len = bytes.len() as u8;
        self.variant = (index % 1024) as u32;
        self
    }

    /// Bytes per row.
    pub fn stride(&self) -> usize {
        self.format.packed_stride(self.width)
    }

    /// Bytes per frame.
    pub fn frame_len(&self) -> usize {
        self.format.frame_len(self.width, self.height)
    }

    /// Frame `index` in a new buffer.
    pub fn render(&self, index: u64) -> Vec<u8> {
        let mut out = Vec::new();
        self.render_into(index, &mut out);
        out
    }

    /// Frame `index` into `out`, resized to [`TestPattern::frame_len`].
    pub fn render_into(&self, index: u64, out: &mut Vec<u8>) {
        out.resize(self.frame_len(), 0);
        let (w, h) = (self.width as usize, self.height as usize);
        match self.format {
            PixelFormat::Nv12 => {
                let (luma, chroma) = out.split_at_mut(w * h);
                for y in 0..h {
                    for x in 0..w {
                        let (r, g, b) = self.pixel(index, x, y);
                        luma[y * w + x] = rgb_to_yuv(r, g, b).0;
                    }
                }
                for cy in 0..h / 2 {
                    for cx in 0..w / 2 {
                        let (r, g, b) = self.pixel(index, cx * 2, cy * 2);
                        let (_, u, v) = rgb_to_yuv(r, g, b);
                        chroma[cy * w + cx * 2] = u;
                        chroma[cy * w + cx * 2 + 1] = v;
                    }
                }
            }
            format => {
                let bpp = format.bytes_per_pixel();
                for y in 0..h {
                    let row = &mut out[y * w * bpp..(y + 1) * w * bpp];
                    for (x, px) in row.chunks_exact_mut(bpp).enumerate() {
                        let (r, g, b) = self.pixel(index, x, y);
                        match format {
                            PixelFormat::Bgra => px.copy_from_slice(&[b, g, r, 255]),
                            PixelFormat::Rgba => px.copy_from_slice(&[r, g, b, 255]),
                            _ => px.copy_from_slice(&[r, g, b]),
                        }
                    }
                }
            }
        }
    }

    /// The colour of pixel (x, y) in frame `index`.
    fn pixel(&self, index: u64, x: usize, y: usize) -> (u8, u8, u8) {
        let (w, h) = (self.width as usize, self.height as usize);
        // The counter: digits scaled so the number is about a third of the width.
        let scale = (w / (COUNTER_DIGITS * 6 * 3)).max(1);
        let (box_w, box_h) = ((COUNTER_DIGITS * 6 + 1) * scale, 9 * scale);
        if x < box_w && y < box_h {
            return if self.counter_pixel(index, x / scale, y / scale) {
                (255, 255, 255)
            } else {
                (0, 0, 0)
            };
        }
        // The camera's name, in a box of its own under the counter.
        let label_w = (self.label_len as usize * 6 + 1) * scale;
        if self.label_len > 0 && x < label_w && (box_h..2 * box_h).contains(&y) {
            return if self.label_pixel(x / scale, (y - box_h) / scale) {
                (255, 255, 255)
            } else {
                (0, 0, 0)
            };
        }
        // The bouncing square: side h/5, moving 4 px per frame horizontally, 3 vertically.
        let side = (h / 5).max(2);
        let sx = bounce(index * 4, w.saturating_sub(side));
        let sy = bounce(index * 3, h.saturating_sub(side));
        if (sx..sx + side).contains(&x) && (sy..sy + side).contains(&y) {
            return SQUARE_COLOURS[self.variant as usize % SQUARE_COLOURS.len()];
        }
        // Background: a gradient scrolling left 2 px per frame, brightness across y;
        // each camera variant starts the colour cycle elsewhere.
        let phase = (x as u64 + index * 2) % (w as u64).max(1);
        let t = ((phase * 512 / (w as u64).max(1)) as u32 + self.variant * 197) % 512; // 0..512
        let tri = |v: u32| if v < 256 { v } else { 511 - v }; // triangle wave 0..255
        let r = tri(t);
        let g = tri((t + 170) % 512);
        let b = tri((t + 340) % 512);
        let light = 96 + (y * 160 / h.max(1)) as u32; // 96..256
                                                      // Texture that scrolls with the gradient: costs bits like camera detail does.
        let grain = texture(x as u64 + index * 2, y as u64);
        let shade = |c: u32| ((c * light / 256) as i32 + grain).clamp(0, 255) as u8;
        (shade(r), shade(g), shade(b))
    }

    /// Whether cell (cx, cy) of the counter box (1-cell margin, 6 cells per digit) is lit.
    fn counter_pixel(&self, index: u64, cx: usize, cy: usize) -> bool {
        if cx == 0 || cy == 0 || cy > 7 {
            return false;
        }
        let (digit_pos, col) = ((cx - 1) / 6, (cx - 1) % 6);
        if digit_pos >= COUNTER_DIGITS || col >= 5 {
            return false;
        }
        let digit = (index / 10u64.pow((COUNTER_DIGITS - 1 - digit_pos) as u32)) % 10;
        DIGITS[digit as usize][cy - 1] & (0b10000 >> col) != 0
    }

    /// Whether cell (cx, cy) of the label box (1-cell margin, 6 cells per character) is lit.
    fn label_pixel(&self, cx: usize, cy: usize) -> bool {
        if cx == 0 || cy == 0 || cy > 7 {
            return false;
        }
        let (pos, col) = ((cx - 1) / 6, (cx - 1) % 6);
        if pos >= self.label_len as usize || col >= 5 {
            return false;
        }
        glyph(self.label[pos])[cy - 1] & (0b10000 >> col) != 0
    }
}

/// Deterministic grain in -8..=8 for a pixel position (a cheap integer hash): sensor-like
/// noise, so frames cost bits as camera pictures do.
fn texture(x: u64, y: u64) -> i32 {
    let mut v = x.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ y.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    v ^= v >> 29;
    v = v.wrapping_mul(0x1656_67B1_9E37_79F9);
    v ^= v >> 32;
    (v % 17) as i32 - 8
}

/// Position bouncing between 0 and `range` for a travelled distance `t`.
fn bounce(t: u64, range: usize) -> usize {
    if range == 0 {
        return 0;
    }
    let period = 2 * range as u64;
    let p = t % period;
    (if p <= range as u64 { p } else { period - p }) as usize
}

/// BT.601 limited-range RGB to YUV (what swscale uses by default).
fn rgb_to_yuv(r: u8, g: u8, b: u8) -> (u8, u8, u8) {
    let (r, g, b) = (r as i32, g as i32, b as i32);
    let y = (66 * r + 129 * g + 25 * b + 128) / 256 + 16;
    let u = (-38 * r - 74 * g + 112 * b + 128) / 256 + 128;
    let v = (112 * r - 94 * g - 18 * b + 128) / 256 + 128;
    (y.clamp(0, 255) as u8, u.clamp(0, 255) as u8, v.clamp(0, 255) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_has_the_right_length_and_moves() {
        for format in [
            PixelFormat::Rgb24,
            PixelFormat::Rgba,
            PixelFormat::Bgra,
            PixelFormat::Nv12,
        ] {
            let p = TestPattern::new(96, 64, format);
            let a = p.render(7);
            assert_eq!(a.len(), p.frame_len(), "{format}");
            assert_ne!(a, p.render(8), "{format}");
            assert_eq!(a, p.render(7), "{format}: deterministic");
        }
    }

    #[test]
    fn rgba_and_bgra_are_the_same_picture() {
        let rgba = TestPattern::new(40, 30, PixelFormat::Rgba).render(3);
        let bgra = TestPattern::new(40, 30, PixelFormat::Bgra).render(3);
        let rgb = TestPattern::new(40, 30, PixelFormat::Rgb24).render(3);
        for ((a, b), c) in rgba.chunks(4).zip(bgra.chunks(4)).zip(rgb.chunks(3)) {
            assert_eq!([a[0], a[1], a[2]], [b[2], b[1], b[0]]);
            assert_eq!(&a[..3], c);
        }
    }

    #[test]
    fn counter_shows_the_frame_number() {
        let p = TestPattern::new(360, 64, PixelFormat::Rgb24);
        // Frame 1 and 2 differ in the last digit's cells only within the counter box.
        let (a, b) = (p.render(1), p.render(2));
        let scale = 360 / (COUNTER_DIGITS * 6 * 3);
        let box_w = (COUNTER_DIGITS * 6 + 1) * scale;
        let last_digit_x = (1 + 5 * 6) * scale;
        let mut differs_in_last_digit = false;
        for y in 0..9 * scale {
            for x in 0..box_w {
                let i = (y * 360 + x) * 3;
                if a[i] != b[i] {
                    assert!(x >= last_digit_x, "only the last digit changes from 1 to 2, not x={x}");
                    differs_in_last_digit = true;
                }
            }
        }
        assert!(differs_in_last_digit);
    }

    #[test]
    fn a_camera_pattern_shows_its_name_and_its_own_colours() {
        let plain = TestPattern::new(360, 120, PixelFormat::Rgb24);
        let scale = 360 / (COUNTER_DIGITS * 6 * 3);
        let box_h = 9 * scale;
        let (front, wrist) = (plain.with_camera("front", 0), plain.with_camera("WRIST", 1));
        let (p, f, w) = (plain.render(5), front.render(5), wrist.render(5));
        let row = |frame: &[u8], y: usize| frame[y * 360 * 3..(y + 1) * 360 * 3].to_vec();
        // Camera 0: the plain picture but for the label box under the counter.
        for y in (0..box_h).chain(2 * box_h..120) {
            assert_eq!(row(&f, y), row(&p, y), "row {y} outside the label");
        }
        let label_rows = |frame: &[u8]| (box_h..2 * box_h).flat_map(|y| row(frame, y)).collect::<Vec<_>>();
        assert_ne!(label_rows(&f), label_rows(&p), "the name is drawn");
        assert_ne!(label_rows(&f), label_rows(&w), "each name its own letters");
        // Camera 1: other colours below the label, too.
        assert_ne!(row(&w, 100), row(&f, 100));
        // "F" of FRONT: the top row of its glyph is lit across, at the first cell.
        let lit = |x: usize, y: usize| f[(y * 360 + x) * 3] == 255;
        assert!((1..6).all(|cx| lit(cx * scale, box_h + scale)), "top bar of F");
        assert!(!lit(scale, box_h), "margin above the name");
    }

    #[test]
    fn tiny_and_odd_sizes_do_not_panic() {
        for (w, h) in [(1, 1), (2, 2), (3, 5), (17, 9)] {
            for format in [PixelFormat::Rgb24, PixelFormat::Nv12] {
                let p = TestPattern::new(w, h, format);
                assert_eq!(p.render(123_456_789).len(), p.frame_len());
            }
        }
    }
}
