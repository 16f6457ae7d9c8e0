//! [`EncodeError`]: everything that can go wrong while opening an encoder or encoding.

use std::fmt;

use crate::VideoCodec;

/// Why an encoder could not be opened or a frame could not be encoded. Display texts
/// say what to do. After any error the [`crate::Encoder`] is still usable: a rejected
/// frame was never given to the encoder, and a frame the sink refused is followed by a
/// keyframe so decoders recover.
#[derive(Debug)]
pub enum EncodeError {
    /// A configuration value is out of range.
    InvalidConfig(String),
    /// This FFmpeg build has no encoder by that name.
    UnknownEncoder {
        /// The name asked for.
        name: String,
    },
    /// The named encoder produces another codec than the configuration asks for.
    WrongCodec {
        /// The encoder's name.
        name: String,
        /// The codec the configuration asks for.
        wanted: VideoCodec,
    },
    /// The encoder exists but FFmpeg could not open it (for NVENC: no GPU, no driver, or
    /// all sessions busy).
    Open {
        /// The encoder's name.
        name: String,
        /// FFmpeg's error.
        source: ffmpeg_next::Error,
    },
    /// [`crate::EncoderChoice::Auto`] found no encoder that opens.
    NoEncoder {
        /// The codec asked for.
        codec: VideoCodec,
        /// Each encoder tried and why it was passed over.
        tried: Vec<(String, String)>,
    },
    /// The frame's stride is smaller than one row of pixels.
    Stride {
        /// The stride given.
        stride: usize,
        /// Bytes in one row of pixels.
        min: usize,
    },
    /// A row given to [`crate::Encoder::encode_rows`] lies outside the memory given.
    RowsOutOfBounds {
        /// Bytes of memory given.
        len: usize,
        /// Offset of row 0.
        first_row: usize,
        /// Bytes from one row to the next (negative: bottom-up).
        stride: isize,
        /// Bytes in one row of pixels.
        row_bytes: usize,
        /// Rows in a frame.
        rows: usize,
    },
    /// The frame buffer's length does not match width, height, stride and format.
    FrameLength {
        /// Bytes given.
        got: usize,
        /// `stride * rows` (every row full).
        full: usize,
        /// The same with the last row trimmed to its pixels.
        trimmed: usize,
    },
    /// An FFmpeg call failed while encoding.
    Ffmpeg {
        /// What was being done.
        action: &'static str,
        /// FFmpeg's error.
        source: ffmpeg_next::Error,
    },
    /// The sink refused an encoded access unit (for a ring: larger than its largest
    /// frame). The next frame is encoded as a keyframe.
    Sink(Box<dyn std::error::Error + Send + Sync>),
    /// [`crate::Encoder::flush`] was called: the encoder takes no more frames.
    Finished,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::InvalidConfig(what) => write!(f, "invalid encoder configuration: {what}"),
            EncodeError::UnknownEncoder { name } => write!(
                f,
                "this FFmpeg has no encoder named {name:?} (try `auto`, libx264, h264_nvenc, libx265 or hevc_nvenc; `ffmpeg -encoders` lists them)"
            ),
            EncodeError::WrongCodec { name, wanted } => {
                write!(f, "encoder {name:?} does not produce {wanted}; pick an encoder for {wanted} or change the codec")
            }
            EncodeError::Open { name, source } => {
                write!(f, "cannot open encoder {name}: {source}")?;
                if name.contains("nvenc") {
                    f.write_str(" (NVENC needs an NVIDIA GPU, its driver's libcuda.so.1 and a free encode session; use `auto` to fall back to software)")?;
                }
                Ok(())
            }
            EncodeError::NoEncoder { codec, tried } => {
                write!(f, "no {codec} encoder could be opened")?;
                for (name, why) in tried {
                    write!(f, "; {name}: {why}")?;
                }
                Ok(())
            }
            EncodeError::Stride { stride, min } => {
                write!(f, "stride {stride} is smaller than one row of pixels ({min} bytes)")
            }
            EncodeError::RowsOutOfBounds {
                len,
                first_row,
                stride,
                row_bytes,
                rows,
            } => write!(
                f,
                "{rows} rows of {row_bytes} bytes from offset {first_row}, {stride} bytes apart, do not fit in {len} bytes: check width, height, stride and pixel format"
            ),
            EncodeError::FrameLength { got, full, trimmed } => write!(
                f,
                "frame is {got} bytes, expected {full} (stride x rows) or {trimmed} (last row trimmed): check width, height, stride and pixel format"
            ),
            EncodeError::Ffmpeg { action, source } => write!(f, "FFmpeg failed to {action}: {source}"),
            EncodeError::Sink(e) => write!(f, "the encoded frame could not be stored: {e}"),
            EncodeError::Finished => f.write_str("the encoder was flushed and takes no more frames"),
        }
    }
}

impl std::error::Error for EncodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EncodeError::Open { source, .. } | EncodeError::Ffmpeg { source, .. } => Some(source),
            EncodeError::Sink(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}
