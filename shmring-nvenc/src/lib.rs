//! Encode raw video frames to H.264 or HEVC and write each access unit straight into a
//! shmring ring: the producer side of the camera-to-browser pipeline.
//!
//! - [`Encoder`] takes RGB24, RGBA, BGRA or NV12 frames (any stride), converts them with
//!   swscale, encodes them with NVENC (`h264_nvenc`, `hevc_nvenc`) or, without a GPU,
//!   libx264 / libx265, and hands each Annex B access unit to a [`FrameSink`], such as a
//!   [`shmring_core::RingWriter`], with the caller's frame_id, the keyframe flag and the
//!   codec id.
//! - [`testpattern`] draws a moving test pattern with a frame counter, for demos and
//!   tests.
//! - [`annexb`] splits access units into NAL units.
//! - [`log`] captures FFmpeg's log lines for the application's own logging.
//! - [`probe`] checks CUDA, the GPU and NVENC (the `validate-nvenc` binary prints it).
//!
//! ```
//! use shmring_nvenc::{Encoder, EncoderConfig, EncoderChoice, OwnedAccessUnit, testpattern::TestPattern};
//! let config = EncoderConfig { encoder: EncoderChoice::Named("libx264".into()), ..EncoderConfig::new(320, 240) };
//! let mut encoder = Encoder::new(config)?;
//! let pattern = TestPattern::new(320, 240, encoder.config().input);
//! let mut out: Vec<OwnedAccessUnit> = Vec::new();
//! for i in 0..3 {
//!     encoder.encode(&pattern.render(i), pattern.stride(), 1000 + i, &mut out)?;
//! }
//! assert_eq!(out.len(), 3);
//! assert!(out[0].keyframe && !out[1].keyframe);
//! assert_eq!(out[2].frame_id, 1002);
//! # Ok::<(), shmring_nvenc::EncodeError>(())
//! ```

pub mod annexb;
mod config;
mod encoder;
mod error;
pub mod log;
pub mod probe;
mod sink;
pub mod testpattern;

pub use config::{EncoderChoice, EncoderConfig, PixelFormat, RateControl, VideoCodec};
pub use encoder::Encoder;
pub use error::EncodeError;
pub use sink::{AccessUnit, FrameSink, OwnedAccessUnit, SinkError};

/// The FFmpeg bindings this crate uses (for log levels and decoding in tests).
pub use ffmpeg_next;
