//! `shmring.Writer`: the one writer of a ring file.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyType;
use shmring_core::{Codec, FrameMeta, LayoutChoice, RingKind, RingWriter, WriterOptions};

use crate::buffer::ByteView;
use crate::errors::{closed, to_py};
use crate::DETACH_MIN;

/// The one writer of a ring file (usually in ``/dev/shm``).
///
/// Continues the ring at ``path`` if it already exists with the same layout and geometry
/// (a restarted producer carries on its frame_seq; readers just see a pause), and creates
/// it, or replaces it, otherwise. Holds the ring's writer lock until closed: a second
/// writer on the same ring raises ``WriterExistsError`` naming this process's pid.
/// Writing never waits for readers.
///
/// Args:
///     path: the ring file.
///     capacity: ``"v1"``: frame-region bytes, a power of two (default 16 MiB).
///         ``"legacy"``: the file length (default 4 MiB, as the SDR_OS writer).
///     max_frame_size: ``"v1"`` only: the largest payload (default: the most the
///         capacity allows, half of it less the 32-byte header).
///     layout: ``"v1"`` (the broadcast ring; ``"ring"``, its former name, is accepted)
///         or ``"legacy"`` (the SDR_OS single-slot layout).
///     mode: permission bits of a created file (default ``0o600``).
///     crc: store a CRC-32 of each payload (default True).
///
/// Example::
///
///     with shmring.Writer("/dev/shm/cam0") as w:
///         seq = w.write(access_unit, keyframe=True)
///
/// Threads may share a writer: calls are serialised (a thread waits, with the GIL
/// released, while another one's ``write`` copies a large frame).
///
/// The first ring the process opens installs a process-wide SIGBUS handler, so a ring
/// file truncated by another process raises ``RingDamagedError`` instead of killing the
/// interpreter; other SIGBUS go to the handler installed before. Set
/// ``SHMRING_NO_SIGBUS_GUARD=1`` in the environment to leave SIGBUS alone.
#[pyclass(module = "shmring._shmring", frozen)]
pub struct Writer {
    ring: Mutex<Option<RingWriter>>,
    path: PathBuf,
}

impl Writer {
    /// The ring's slot, waiting (GIL released) if another thread is writing.
    fn lock(&self, py: Python<'_>) -> MutexGuard<'_, Option<RingWriter>> {
        crate::lock::lock(py, &self.ring)
    }

    /// Runs `f` on the open ring, or raises `ClosedError`.
    fn with_ring<T>(&self, py: Python<'_>, f: impl FnOnce(&mut RingWriter) -> PyResult<T>) -> PyResult<T> {
        let mut guard = self.lock(py);
        let ring = guard.as_mut().ok_or_else(|| closed("Writer", &self.path))?;
        f(ring)
    }
}

fn writer_options(
    capacity: Option<usize>,
    max_frame_size: Option<usize>,
    layout: &str,
    mode: u32,
    crc: bool,
) -> PyResult<WriterOptions> {
    let mut options = WriterOptions {
        max_frame_size,
        mode,
        crc,
        ..WriterOptions::default()
    };
    if mode > 0o7777 {
        return Err(PyValueError::new_err(format!(
            "mode {mode:#o} is not a file mode (0 to 0o7777)"
        )));
    }
    match layout {
        // "ring": the former name of "v1", still accepted.
        "v1" | "ring" => {
            options.layout = LayoutChoice::V1;
            if let Some(capacity) = capacity {
                options.capacity = capacity;
            }
        }
        "legacy" => {
            options.layout = LayoutChoice::Legacy;
            if max_frame_size.is_some() {
                return Err(PyValueError::new_err(
                    "max_frame_size applies to layout=\"v1\" only; a legacy ring's max frame is its file length less 48 bytes (set capacity)",
                ));
            }
            if let Some(capacity) = capacity {
                options.legacy_len = capacity;
            }
        }
        other => {
            return Err(PyValueError::new_err(format!(
                "layout must be \"v1\" or \"legacy\", not {other:?}"
            )));
        }
    }
    Ok(options)
}

#[pymethods]
impl Writer {
    #[new]
    #[pyo3(signature = (path, *, capacity = None, max_frame_size = None, layout = "v1", mode = 0o600, crc = true))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        capacity: Option<usize>,
        max_frame_size: Option<usize>,
        layout: &str,
        mode: u32,
        crc: bool,
    ) -> PyResult<Self> {
        let options = writer_options(capacity, max_frame_size, layout, mode, crc)?;
        // Creating, sizing and pre-faulting the mapping can take milliseconds.
        let ring = py
            .detach(|| RingWriter::open_or_create(&path, &options))
            .map_err(|e| to_py(py, e))?;
        Ok(Writer {
            ring: Mutex::new(Some(ring)),
            path,
        })
    }

    /// Writes one frame and wakes sleeping readers; returns its frame_seq (1-based,
    /// monotonic across writer restarts).
    ///
    /// ``data`` is any buffer-protocol object (bytes, bytearray, memoryview, a
    /// C-contiguous numpy array of any dtype); its bytes are copied straight into the
    /// ring, with the GIL released for large payloads. Do not change a mutable ``data``
    /// from another thread while ``write`` runs.
    ///
    /// Args:
    ///     data: the payload.
    ///     keyframe: True if a decoder can start at this frame.
    ///     codec: the payload's codec (a ``shmring.Codec`` or the application's own
    ///         number, 0 to 65535).
    ///     frame_id: the application's id for the frame (a timestamp, a camera frame
    ///         number); default: the frame_seq this frame gets.
    ///
    /// Raises:
    ///     FrameTooLargeError: ``data`` is larger than ``max_frame_size``.
    ///     TypeError: ``data`` does not support the buffer protocol.
    ///     BufferError: ``data`` is not contiguous.
    ///     ClosedError: the writer was closed.
    #[pyo3(signature = (data, *, keyframe = false, codec = 1, frame_id = None))]
    fn write(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        keyframe: bool,
        codec: u16,
        frame_id: Option<u64>,
    ) -> PyResult<u64> {
        self.with_ring(py, |ring| {
            let view = ByteView::get(data)?;
            let meta = FrameMeta {
                frame_id: frame_id.unwrap_or_else(|| ring.next_frame_seq()),
                keyframe,
                codec: Codec(codec),
            };
            let payload = view.as_slice();
            let result = if payload.len() >= DETACH_MIN {
                py.detach(|| ring.write(payload, meta))
            } else {
                ring.write(payload, meta)
            };
            result.map_err(|e| to_py(py, e))
        })
    }

    /// Records that the producer is alive without writing a frame (for idle producers;
    /// every write does this too). Readers see it in the ring's heartbeat age.
    fn heartbeat(&self, py: Python<'_>) -> PyResult<()> {
        self.with_ring(py, |ring| {
            ring.heartbeat();
            Ok(())
        })
    }

    /// Closes the ring and releases the writer lock (readers keep the frames already
    /// written). Closing twice is allowed.
    fn close(&self, py: Python<'_>) {
        *self.lock(py) = None;
    }

    /// True once :meth:`close` was called.
    #[getter]
    fn closed(&self, py: Python<'_>) -> bool {
        self.lock(py).is_none()
    }

    /// The ring file's path.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// ``"v1"`` or ``"legacy"``.
    #[getter]
    fn layout(&self, py: Python<'_>) -> PyResult<&'static str> {
        self.with_ring(py, |ring| {
            Ok(match ring.kind() {
                RingKind::V1(_) => "v1",
                RingKind::Legacy { .. } => "legacy",
            })
        })
    }

    /// Frame-region bytes (``"v1"``) or file length (``"legacy"``).
    #[getter]
    fn capacity(&self, py: Python<'_>) -> PyResult<usize> {
        self.with_ring(py, |ring| {
            Ok(match ring.kind() {
                RingKind::V1(g) => g.capacity,
                RingKind::Legacy { len } => len,
            })
        })
    }

    /// Largest payload :meth:`write` accepts.
    #[getter]
    fn max_frame_size(&self, py: Python<'_>) -> PyResult<usize> {
        self.with_ring(py, |ring| Ok(ring.max_frame_size()))
    }

    /// The frame_seq the next :meth:`write` returns.
    #[getter]
    fn next_frame_seq(&self, py: Python<'_>) -> PyResult<u64> {
        self.with_ring(py, |ring| Ok(ring.next_frame_seq()))
    }

    fn __enter__<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, Self>> {
        slf.get().with_ring(slf.py(), |_| Ok(()))?;
        Ok(slf)
    }

    #[pyo3(signature = (_exc_type = None, _exc = None, _tb = None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: Option<&Bound<'_, PyType>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) {
        self.close(py);
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let path = self.path.display().to_string();
        match self.lock(py).as_ref() {
            Some(ring) => format!(
                "<shmring.Writer {path:?} max_frame_size={} next_frame_seq={}>",
                ring.max_frame_size(),
                ring.next_frame_seq()
            ),
            None => format!("<shmring.Writer {path:?} closed>"),
        }
    }
}
