//! `VideoWriter` with the `video` feature: a `shmring_nvenc::Encoder` whose access units
//! go straight into a `RingWriter`.

use std::path::Path;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use shmring_core::{RingWriter, WriterOptions};
use shmring_nvenc::{EncodeError, Encoder, EncoderChoice, EncoderConfig, PixelFormat, VideoCodec};

use super::Settings;
use crate::errors::{to_py, EncoderError};

#[path = "ffmpeg_log.rs"]
mod ffmpeg_log;
#[path = "image.rs"]
mod image;

use image::Image;

/// An open encoder and the ring it writes into.
pub(crate) struct Session {
    encoder: Encoder,
    ring: RingWriter,
    /// The configuration the encoder was opened with, for reopening it with RGBA input.
    config: EncoderConfig,
    /// The previous frame's timestamp (ns): the next must be later.
    last_timestamp: Option<u64>,
    /// One frame period at the nominal rate, in ns: the timestamp of a frame written
    /// without one is the previous frame's plus this.
    period_ns: u64,
}

fn encode_err(e: EncodeError) -> PyErr {
    EncoderError::new_err(e.to_string())
}

fn config(settings: &Settings<'_>) -> PyResult<EncoderConfig> {
    let codec = match settings.codec {
        "h264" => VideoCodec::H264,
        "hevc" => VideoCodec::HEVC,
        other => {
            return Err(PyValueError::new_err(format!(
                "codec must be \"h264\" or \"hevc\", not {other:?}"
            )))
        }
    };
    if !(settings.fps.is_finite() && settings.fps >= 1.0 && settings.fps.fract() == 0.0) {
        return Err(PyValueError::new_err(format!(
            "fps must be a whole number of frames per second (1 to 1000), not {}",
            settings.fps
        )));
    }
    let fps = settings.fps as u32;
    let mut config = EncoderConfig {
        fps,
        codec,
        encoder: EncoderChoice::parse(settings.encoder),
        gop: settings.gop.unwrap_or(fps),
        input: PixelFormat::Rgb24,
        options: settings.options.clone(),
        ..EncoderConfig::new(settings.width, settings.height)
    };
    if let Some(bitrate) = settings.bitrate {
        config.bitrate_bps = bitrate;
    }
    Ok(config)
}

impl Session {
    pub(crate) fn open(py: Python<'_>, path: &Path, settings: &Settings<'_>) -> PyResult<Self> {
        let config = config(settings)?;
        ffmpeg_log::start(py)?;
        // Opening an encoder (NVENC probing, x264 setup) and the ring takes a while.
        let encoder = py.detach(|| Encoder::new(config.clone()));
        ffmpeg_log::forward(py)?;
        let encoder = encoder.map_err(encode_err)?;
        let ring = py
            .detach(|| RingWriter::open_or_create(path, &WriterOptions::default()))
            .map_err(|e| to_py(py, e))?;
        Ok(Session {
            period_ns: (1e9 / f64::from(config.fps)).round() as u64,
            encoder,
            ring,
            config,
            last_timestamp: None,
        })
    }

    /// The timestamp to record for the next frame: `given`, which must be later than
    /// the previous frame's, or the previous one plus a frame period (0 for the first).
    fn timestamp(&self, given: Option<u64>) -> PyResult<u64> {
        match (given, self.last_timestamp) {
            (Some(t), Some(last)) if t <= last => Err(PyValueError::new_err(format!(
                "write: timestamp_ns={t} is not after the previous frame's {last}; timestamps must increase (simulation or capture time in ns)"
            ))),
            (Some(t), _) => Ok(t),
            (None, Some(last)) => Ok(last.saturating_add(self.period_ns)),
            (None, None) => Ok(0),
        }
    }

    pub(crate) fn write(
        &mut self,
        py: Python<'_>,
        frame: &Bound<'_, PyAny>,
        timestamp_ns: Option<u64>,
    ) -> PyResult<Option<u64>> {
        let image = Image::get(frame)?;
        let (width, height) = (self.config.width as usize, self.config.height as usize);
        let [h, w, channels] = image.shape;
        if (h, w) != (height, width) || !matches!(channels, 3 | 4) {
            return Err(PyValueError::new_err(format!(
                "write: frame must be a ({height}, {width}, 3) RGB or ({height}, {width}, 4) RGBA uint8 array (this VideoWriter's size), not shape {:?}; resize it or open the VideoWriter with width={w}, height={h}",
                image.shape
            )));
        }
        let input = if channels == 3 {
            PixelFormat::Rgb24
        } else {
            PixelFormat::Rgba
        };
        if input != self.config.input {
            if self.encoder.frames_in() > 0 {
                return Err(PyValueError::new_err(format!(
                    "write: frame has {channels} channels but this VideoWriter was given {} so far; keep one format per stream",
                    self.config.input.bytes_per_pixel()
                )));
            }
            // The first frame decides RGB or RGBA: reopen the encoder for it.
            let config = EncoderConfig {
                input,
                ..self.config.clone()
            };
            let encoder = py.detach(|| Encoder::new(config.clone()));
            ffmpeg_log::forward(py)?;
            self.encoder = encoder.map_err(encode_err)?;
            self.config = config;
        }
        let timestamp = self.timestamp(timestamp_ns)?;
        let [row_stride, pixel_stride, channel_stride] = image.strides;
        let row_bytes = width * channels;
        let (low, high) = image.extent();
        // SAFETY: the exporter (buffer view, DLPack capsule or __array_interface__
        // object, all kept alive by `image` until after the encode below) guarantees
        // that every element `ptr + y*row_stride + x*pixel_stride + c*channel_stride` is
        // readable; `extent` is the range from the lowest to the highest of them, which
        // lies inside the exporter's one allocation. The bytes are only read.
        let memory = unsafe { std::slice::from_raw_parts(image.ptr.offset(low), (high - low) as usize) };
        let first = low.unsigned_abs();
        let (encoder, ring) = (&mut self.encoder, &mut self.ring);
        let packed_rows =
            channel_stride == 1 && pixel_stride == channels as isize && row_stride.unsigned_abs() >= row_bytes;
        let seqs = if packed_rows {
            // Rows of packed pixels (any row stride, flipped or not): the converter reads
            // them where they are.
            py.detach(|| encoder.encode_rows(memory, first, row_stride, timestamp, ring))
        } else {
            // Pixels or channels apart (a column slice, a transposed or broadcast array):
            // gather them into packed rows first.
            let mut packed = vec![0u8; height * row_bytes];
            for (i, byte) in packed.iter_mut().enumerate() {
                let (y, x, c) = (i / row_bytes, i % row_bytes / channels, i % channels);
                let at =
                    first as isize + y as isize * row_stride + x as isize * pixel_stride + c as isize * channel_stride;
                *byte = memory[at as usize];
            }
            py.detach(|| encoder.encode(&packed, row_bytes, timestamp, ring))
        };
        drop(image);
        ffmpeg_log::forward(py)?;
        let seqs = seqs.map_err(encode_err)?;
        self.last_timestamp = Some(timestamp);
        Ok(seqs.last().copied())
    }

    pub(crate) fn request_keyframe(&mut self) {
        self.encoder.request_keyframe();
    }

    pub(crate) fn finish(mut self, py: Python<'_>) -> PyResult<()> {
        let (encoder, ring) = (&mut self.encoder, &mut self.ring);
        let flushed = py.detach(|| encoder.flush(ring));
        // Closing the encoder is when libx264 logs its statistics.
        drop(self);
        ffmpeg_log::forward(py)?;
        flushed.map_err(encode_err)?;
        Ok(())
    }
}
