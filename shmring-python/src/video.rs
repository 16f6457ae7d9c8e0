//! `shmring.VideoWriter`: raw RGB/RGBA frames in, encoded access units into a ring.
//!
//! The class always exists so code and stubs are the same in every build; the encoder
//! behind it needs the `video` cargo feature (FFmpeg, through `shmring-nvenc`), which
//! the package's build backend turns on where FFmpeg is installed. Without it,
//! constructing a `VideoWriter` raises `FeatureNotBuiltError` saying what to install.

use std::path::PathBuf;
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::PyType;

use crate::errors::closed;

#[cfg(not(feature = "video"))]
#[path = "video/disabled.rs"]
mod session;

#[cfg(feature = "video")]
#[path = "video/enabled.rs"]
mod session;

/// What `VideoWriter(...)` was asked for.
// Without the `video` feature nothing reads the fields: opening fails first.
#[cfg_attr(not(feature = "video"), allow(dead_code))]
pub(crate) struct Settings<'a> {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) fps: f64,
    pub(crate) codec: &'a str,
    pub(crate) encoder: &'a str,
    pub(crate) bitrate: Option<u64>,
    pub(crate) gop: Option<u32>,
    pub(crate) options: Vec<(String, String)>,
}

/// Encodes raw frames to H.264 or HEVC (NVENC when a GPU is there, libx264 otherwise)
/// and writes each access unit into a ring as a :class:`Writer` would.
///
/// Needs FFmpeg: shmring wheels carry their own, and ``pip install ./shmring-python``
/// builds it in where FFmpeg's development files are installed (the ``video`` cargo
/// feature). Without it, constructing a ``VideoWriter`` raises ``FeatureNotBuiltError``
/// saying what to install.
///
/// Args:
///     path: the ring file (created or continued as by :class:`Writer`).
///     width, height: frame size in pixels.
///     fps: frames per second the stream is encoded for.
///     codec: ``"h264"`` or ``"hevc"``.
///     encoder: ``"auto"`` (NVENC if available, else software), or an FFmpeg encoder
///         name such as ``"h264_nvenc"`` or ``"libx264"``.
///     bitrate: target bits per second (default: the encoder's choice for the size).
///     gop: frames between keyframes (default: one second's worth).
///     options: FFmpeg private options of the encoder, overriding shmring's low-latency
///         defaults, as ``ffmpeg -c:v NAME -KEY VALUE`` takes them (for example
///         ``{"preset": "p4"}``, or ``encoder="libx264rgb", options={"qp": "0"}`` for a
///         lossless stream).
///
/// Threads may share a video writer: calls are serialised.
#[pyclass(module = "shmring._shmring", frozen)]
pub struct VideoWriter {
    inner: Mutex<Option<session::Session>>,
    path: PathBuf,
}

impl VideoWriter {
    /// Runs `f` on the open session, or raises `ClosedError`.
    fn with_session<T>(&self, py: Python<'_>, f: impl FnOnce(&mut session::Session) -> PyResult<T>) -> PyResult<T> {
        let mut guard = crate::lock::lock(py, &self.inner);
        let session = guard.as_mut().ok_or_else(|| closed("VideoWriter", &self.path))?;
        f(session)
    }
}

#[pymethods]
impl VideoWriter {
    #[new]
    #[pyo3(signature = (path, width, height, fps, *, codec = "h264", encoder = "auto", bitrate = None, gop = None, options = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        width: u32,
        height: u32,
        fps: f64,
        codec: &str,
        encoder: &str,
        bitrate: Option<u64>,
        gop: Option<u32>,
        options: Option<std::collections::BTreeMap<String, String>>,
    ) -> PyResult<Self> {
        let settings = Settings {
            width,
            height,
            fps,
            codec,
            encoder,
            bitrate,
            gop,
            options: options.unwrap_or_default().into_iter().collect(),
        };
        let inner = session::Session::open(py, &path, &settings)?;
        Ok(VideoWriter {
            inner: Mutex::new(Some(inner)),
            path,
        })
    }

    /// Encodes one frame and writes the access units the encoder produces; returns the
    /// frame_seq of the last one written (``None`` while the encoder is still buffering).
    /// The GIL is released while encoding.
    ///
    /// ``frame`` is a ``uint8`` image of this writer's size, ``(height, width, 3)`` RGB or
    /// ``(height, width, 4)`` RGBA, optionally with a leading batch axis of 1, from any
    /// of: a numpy array with any strides (a flipped view such as Genesis'
    /// ``cam.render()[0]`` is read in place, not copied), a torch CPU tensor or anything
    /// with ``__dlpack__`` (JAX, CuPy host arrays), anything with
    /// ``__array_interface__``, or any other buffer-protocol object. Tensors in GPU
    /// memory are refused with the call that copies them to the host (``.cpu()``).
    ///
    /// ``timestamp_ns`` is the frame's time (simulation or capture time, ns, increasing
    /// from frame to frame). It is recorded as the ring frame's ``frame_id``, which
    /// readers use to time the stream (``shmring dump --timestamps``, the Foxglove
    /// message time). Without it a frame is stamped one nominal period (``1/fps``)
    /// after the previous one, the first at 0.
    #[pyo3(signature = (frame, *, timestamp_ns = None))]
    fn write(&self, py: Python<'_>, frame: &Bound<'_, PyAny>, timestamp_ns: Option<i64>) -> PyResult<Option<u64>> {
        let timestamp_ns = timestamp_ns
            .map(|t| {
                u64::try_from(t).map_err(|_| {
                    pyo3::exceptions::PyValueError::new_err(format!(
                        "write: timestamp_ns={t} is negative; pass the frame's simulation or capture time in ns (>= 0)"
                    ))
                })
            })
            .transpose()?;
        self.with_session(py, |session| session.write(py, frame, timestamp_ns))
    }

    /// Makes the next frame a keyframe (for a reader that just joined or lost frames).
    fn request_keyframe(&self, py: Python<'_>) -> PyResult<()> {
        self.with_session(py, |session| {
            session.request_keyframe();
            Ok(())
        })
    }

    /// Flushes the encoder into the ring and closes it. Closing twice is allowed.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let session = crate::lock::lock(py, &self.inner).take();
        match session {
            Some(session) => session.finish(py),
            None => Ok(()),
        }
    }

    /// True once :meth:`close` was called.
    #[getter]
    fn closed(&self, py: Python<'_>) -> bool {
        crate::lock::lock(py, &self.inner).is_none()
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (_exc_type = None, _exc = None, _tb = None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: Option<&Bound<'_, PyType>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.close(py)
    }
}
