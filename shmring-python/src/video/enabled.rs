//! `VideoWriter` with the `video` feature: a `shmring_nvenc::Encoder` whose access units
//! go straight into a `RingWriter`.

use std::path::Path;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use shmring_core::{RingWriter, WriterOptions};
use shmring_nvenc::{EncodeError, Encoder, EncoderChoice, EncoderConfig, PixelFormat, VideoCodec};

use super::Settings;
use crate::buffer::ArrayView;
use crate::errors::{to_py, EncoderError};

/// An open encoder and the ring it writes into.
pub(crate) struct Session {
    encoder: Encoder,
    ring: RingWriter,
    /// The configuration the encoder was opened with, for reopening it with RGBA input.
    config: EncoderConfig,
}

fn encode_err(e: EncodeError) -> PyErr {
    EncoderError::new_err(e.to_string())
}

fn config(settings: &Settings<'_>) -> PyResult<EncoderConfig> {
    let codec = match settings.codec {
        "h264" => VideoCodec::H264,
        "hevc" => VideoCodec::Hevc,
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
        // Opening an encoder (NVENC probing, x264 setup) and the ring takes a while.
        let encoder = py.detach(|| Encoder::new(config.clone())).map_err(encode_err)?;
        let ring = py
            .detach(|| RingWriter::open_or_create(path, &WriterOptions::default()))
            .map_err(|e| to_py(py, e))?;
        Ok(Session { encoder, ring, config })
    }

    pub(crate) fn write(&mut self, py: Python<'_>, frame: &Bound<'_, PyAny>) -> PyResult<Option<u64>> {
        let view = ArrayView::get(frame)?;
        let (width, height) = (self.config.width as usize, self.config.height as usize);
        let shape = view.shape();
        let channels = match shape.as_slice() {
            [h, w, c @ (3 | 4)] if (*h, *w) == (height, width) => *c,
            _ => {
                let want = format!("({height}, {width}, 3) RGB or ({height}, {width}, 4) RGBA");
                return Err(PyValueError::new_err(format!(
                    "frame must be a {want} array, not shape {shape:?}"
                )));
            }
        };
        if view.itemsize() != 1 || !matches!(view.format().as_str(), "B" | "=B" | "<B" | ">B" | "|B") {
            return Err(PyValueError::new_err(format!(
                "frame must be a uint8 array, not format {:?}",
                view.format()
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
                    "frame has {channels} channels but this VideoWriter was given {} so far; keep one format per stream",
                    self.config.input.bytes_per_pixel()
                )));
            }
            // The first frame decides RGB or RGBA: reopen the encoder for it.
            let config = EncoderConfig {
                input,
                ..self.config.clone()
            };
            self.encoder = py.detach(|| Encoder::new(config.clone())).map_err(encode_err)?;
            self.config = config;
        }
        let frame_id = self.encoder.frames_in();
        let pixels = view.as_slice();
        let stride = width * channels;
        let (encoder, ring) = (&mut self.encoder, &mut self.ring);
        let seqs = py
            .detach(|| encoder.encode(pixels, stride, frame_id, ring))
            .map_err(encode_err)?;
        Ok(seqs.last().copied())
    }

    pub(crate) fn request_keyframe(&mut self) {
        self.encoder.request_keyframe();
    }

    pub(crate) fn finish(mut self, py: Python<'_>) -> PyResult<()> {
        let (encoder, ring) = (&mut self.encoder, &mut self.ring);
        py.detach(|| encoder.flush(ring)).map_err(encode_err)?;
        Ok(())
    }
}
