//! What to encode and how: [`EncoderConfig`] and its parts.

use std::fmt;

use shmring_core::Codec;

/// The compressed format to produce. Spelled as in the ring's codec table
/// ([`Codec::H264`], [`Codec::HEVC`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[allow(clippy::upper_case_acronyms)] // the codec table's spelling
pub enum VideoCodec {
    /// H.264 / AVC (ring codec id 1). Every browser decodes it.
    #[default]
    H264,
    /// HEVC / H.265 (ring codec id 2).
    HEVC,
}

#[allow(non_upper_case_globals)]
impl VideoCodec {
    /// The former spelling of [`VideoCodec::HEVC`].
    #[deprecated(note = "spelled VideoCodec::HEVC, as in the codec table (Codec::HEVC)")]
    pub const Hevc: VideoCodec = VideoCodec::HEVC;
}

impl VideoCodec {
    /// The codec id written into each ring record.
    pub fn ring_codec(self) -> Codec {
        match self {
            VideoCodec::H264 => Codec::H264,
            VideoCodec::HEVC => Codec::HEVC,
        }
    }

    /// FFmpeg encoders tried, in order, by [`EncoderChoice::Auto`]: the NVENC one first,
    /// then the software one.
    pub fn auto_encoders(self) -> &'static [&'static str] {
        match self {
            VideoCodec::H264 => &["h264_nvenc", "libx264"],
            VideoCodec::HEVC => &["hevc_nvenc", "libx265"],
        }
    }

    pub(crate) fn ffmpeg_id(self) -> ffmpeg_next::codec::Id {
        match self {
            VideoCodec::H264 => ffmpeg_next::codec::Id::H264,
            VideoCodec::HEVC => ffmpeg_next::codec::Id::HEVC,
        }
    }
}

impl fmt::Display for VideoCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VideoCodec::H264 => "H.264",
            VideoCodec::HEVC => "HEVC",
        })
    }
}

/// Which FFmpeg encoder to open.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum EncoderChoice {
    /// NVENC if it opens (a GPU and driver are present), otherwise the software encoder:
    /// see [`VideoCodec::auto_encoders`]. [`crate::Encoder::fallback_reasons`] tells why
    /// earlier candidates were passed over.
    #[default]
    Auto,
    /// Exactly this FFmpeg encoder (`h264_nvenc`, `libx264`, `hevc_nvenc`, `libx265`, ...);
    /// fails if it is missing or cannot be opened.
    Named(String),
}

impl EncoderChoice {
    /// Parses a command-line value: `auto` (any case) or an encoder name.
    pub fn parse(value: &str) -> Self {
        if value.eq_ignore_ascii_case("auto") {
            EncoderChoice::Auto
        } else {
            EncoderChoice::Named(value.to_string())
        }
    }
}

/// Layout of the raw frames given to [`crate::Encoder::encode`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// 3 bytes per pixel, R G B.
    #[default]
    Rgb24,
    /// 4 bytes per pixel, R G B A (alpha ignored).
    Rgba,
    /// 4 bytes per pixel, B G R A (alpha ignored).
    Bgra,
    /// Planar Y (`height` rows) followed by interleaved U/V at half resolution
    /// (`height / 2` rows); both planes use the same stride.
    Nv12,
}

impl PixelFormat {
    /// Bytes per pixel of the first (or only) plane.
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Rgb24 => 3,
            PixelFormat::Rgba | PixelFormat::Bgra => 4,
            PixelFormat::Nv12 => 1,
        }
    }

    /// Number of rows of `stride` bytes a frame of `height` rows occupies.
    pub fn rows(self, height: u32) -> usize {
        match self {
            PixelFormat::Nv12 => height as usize + (height as usize).div_ceil(2),
            _ => height as usize,
        }
    }

    /// The tightly packed stride for `width` pixels.
    pub fn packed_stride(self, width: u32) -> usize {
        width as usize * self.bytes_per_pixel()
    }

    /// Bytes of a tightly packed frame.
    pub fn frame_len(self, width: u32, height: u32) -> usize {
        self.packed_stride(width) * self.rows(height)
    }

    /// Parses `rgb24`, `rgba`, `bgra` or `nv12` (any case).
    pub fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_lowercase().as_str() {
            "rgb24" | "rgb" => Some(PixelFormat::Rgb24),
            "rgba" => Some(PixelFormat::Rgba),
            "bgra" => Some(PixelFormat::Bgra),
            "nv12" => Some(PixelFormat::Nv12),
            _ => None,
        }
    }

    pub(crate) fn ffmpeg(self) -> ffmpeg_next::util::format::Pixel {
        use ffmpeg_next::util::format::Pixel;
        match self {
            PixelFormat::Rgb24 => Pixel::RGB24,
            PixelFormat::Rgba => Pixel::RGBA,
            PixelFormat::Bgra => Pixel::BGRA,
            PixelFormat::Nv12 => Pixel::NV12,
        }
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PixelFormat::Rgb24 => "rgb24",
            PixelFormat::Rgba => "rgba",
            PixelFormat::Bgra => "bgra",
            PixelFormat::Nv12 => "nv12",
        })
    }
}

/// How the encoder spends its bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RateControl {
    /// Constant bit rate: `bitrate_bps` average and maximum, with a one-second VBV
    /// buffer. Predictable network load (the default).
    #[default]
    Cbr,
    /// Variable bit rate averaging `bitrate_bps`, peaks up to twice that.
    Vbr,
}

/// Everything [`crate::Encoder::new`] needs.
///
/// ```
/// use shmring_nvenc::{EncoderConfig, PixelFormat, VideoCodec};
/// let config = EncoderConfig { fps: 60, input: PixelFormat::Rgba, ..EncoderConfig::new(1280, 720) };
/// assert_eq!(config.codec, VideoCodec::H264);
/// assert_eq!(config.gop, 30); // one second at the default 30 fps, from `new`
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncoderConfig {
    /// Frame width in pixels (even, at least 16).
    pub width: u32,
    /// Frame height in pixels (even, at least 16).
    pub height: u32,
    /// Frames per second (the encoder's time base and rate control; frames may come at
    /// any pace).
    pub fps: u32,
    /// H.264 or HEVC.
    pub codec: VideoCodec,
    /// Which FFmpeg encoder to open.
    pub encoder: EncoderChoice,
    /// Target bit rate in bits per second.
    pub bitrate_bps: u64,
    /// Rate-control mode.
    pub rate_control: RateControl,
    /// Frames from one IDR keyframe to the next (1 = every frame a keyframe). New readers
    /// wait at most this long for a picture.
    pub gop: u32,
    /// Pixel layout of the frames passed to [`crate::Encoder::encode`].
    pub input: PixelFormat,
    /// Extra FFmpeg private options for the encoder (`("preset", "p4")`,
    /// `("x264-params", "...")`), applied after this crate's low-latency defaults so they
    /// override them. Options the opened encoder does not know are ignored.
    pub options: Vec<(String, String)>,
}

impl EncoderConfig {
    /// H.264, automatic encoder choice, 30 fps, 4 Mbit/s CBR, one-second GOP, RGB24 input.
    pub fn new(width: u32, height: u32) -> Self {
        EncoderConfig {
            width,
            height,
            fps: 30,
            codec: VideoCodec::H264,
            encoder: EncoderChoice::Auto,
            bitrate_bps: 4_000_000,
            rate_control: RateControl::Cbr,
            gop: 30,
            input: PixelFormat::Rgb24,
            options: Vec::new(),
        }
    }

    /// Checks the numbers; the error says which one is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.width < 16 || self.height < 16 || self.width > 8192 || self.height > 8192 {
            return Err(format!(
                "frame size {}x{} is outside 16x16 ..= 8192x8192",
                self.width, self.height
            ));
        }
        if !self.width.is_multiple_of(2) || !self.height.is_multiple_of(2) {
            return Err(format!(
                "frame size {}x{} must be even in both directions (4:2:0 chroma)",
                self.width, self.height
            ));
        }
        if self.fps == 0 || self.fps > 1000 {
            return Err(format!("fps {} is outside 1 ..= 1000", self.fps));
        }
        if self.gop == 0 {
            return Err("gop must be at least 1 frame".to_string());
        }
        if self.bitrate_bps < 10_000 || self.bitrate_bps > i32::MAX as u64 {
            return Err(format!(
                "bitrate {} bit/s is outside 10 kbit/s ..= 2 Gbit/s",
                self.bitrate_bps
            ));
        }
        if let EncoderChoice::Named(name) = &self.encoder {
            if name.is_empty() {
                return Err("encoder name is empty (use `auto` or an FFmpeg encoder name)".to_string());
            }
        }
        Ok(())
    }
}
