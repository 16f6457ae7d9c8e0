//! `shmring.Reader`, `shmring.Frame` and `shmring.ReaderStats`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyType};
use shmring_core::{
    Error, FrameInfo, LayoutChoice, ReadError, ReaderOptions, RingKind, RingReader, StartPosition, WakePolicy,
};

use crate::errors::{closed, to_py, ClosedError, ShmringError};
use crate::{DETACH_MIN, WAIT_SLICE};

/// One frame read from a ring.
///
/// ``payload`` is a ``bytes`` object the frame was copied into straight from the ring,
/// so ``numpy.frombuffer(frame.payload, dtype=numpy.uint8)`` and ``memoryview`` use it
/// without another copy.
#[pyclass(module = "shmring._shmring", frozen)]
pub struct Frame {
    payload: Py<PyBytes>,
    /// The writer's application id (a timestamp, a camera frame number, ...).
    #[pyo3(get)]
    frame_id: u64,
    /// Monotonic 1-based frame number; it continues across writer restarts.
    #[pyo3(get)]
    frame_seq: u64,
    /// True if a decoder can start at this frame.
    #[pyo3(get)]
    keyframe: bool,
    codec: u16,
    /// CRC-32 the writer stored (0 when it computed none).
    #[pyo3(get)]
    crc32: u32,
    /// Frames this reader lost immediately before this one (lapped, or skipped while
    /// waiting for a keyframe).
    #[pyo3(get)]
    lost_before: u64,
}

impl Frame {
    fn new(payload: Bound<'_, PyBytes>, info: &FrameInfo) -> Self {
        Frame {
            payload: payload.unbind(),
            frame_id: info.frame_id,
            frame_seq: info.frame_seq,
            keyframe: info.keyframe(),
            codec: info.codec.0,
            crc32: info.crc32,
            lost_before: info.lost_before,
        }
    }
}

/// `shmring.Codec`, looked up once.
static CODEC_ENUM: PyOnceLock<Py<PyType>> = PyOnceLock::new();

#[pymethods]
impl Frame {
    /// The payload (a ``bytes`` object; the same object on every access).
    #[getter]
    fn payload(&self, py: Python<'_>) -> Py<PyBytes> {
        self.payload.clone_ref(py)
    }

    /// The payload's codec: a ``shmring.Codec`` member for the codecs it names, else
    /// the plain number the writer stored.
    #[getter]
    fn codec<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let number = self.codec.into_pyobject(py)?.into_any();
        let codec = CODEC_ENUM.import(py, "shmring", "Codec")?;
        // `Codec(n)` raises ValueError for numbers it has no member for.
        Ok(codec.call1((&number,)).unwrap_or(number))
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        self.payload.bind(py).as_bytes().len()
    }

    fn __bytes__(&self, py: Python<'_>) -> Py<PyBytes> {
        self.payload.clone_ref(py)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "<shmring.Frame frame_seq={} frame_id={} keyframe={} codec={} size={}>",
            self.frame_seq,
            self.frame_id,
            if self.keyframe { "True" } else { "False" },
            self.codec,
            self.__len__(py)
        )
    }
}

/// A reader's accounting. Once the reader has caught up, ``delivered + lost`` equals
/// the frames written since its first frame.
#[pyclass(module = "shmring._shmring", frozen, get_all)]
pub struct ReaderStats {
    /// Frames returned.
    delivered: u64,
    /// Frames this reader will never return: overwritten before it got to them, skipped
    /// while waiting for a keyframe, or failed their CRC.
    lost: u64,
    /// Times the writer overwrote a record this reader had not finished with.
    lapped: u64,
    /// Frames that failed their CRC check (also counted in ``lost``).
    crc_errors: u64,
    /// Impossible records skipped (a damaged or foreign ring file).
    corrupt: u64,
}

#[pymethods]
impl ReaderStats {
    fn __repr__(&self) -> String {
        format!(
            "ReaderStats(delivered={}, lost={}, lapped={}, crc_errors={}, corrupt={})",
            self.delivered, self.lost, self.lapped, self.crc_errors, self.corrupt
        )
    }
}

/// A reader of a ring file. Maps the file read-only: a reader can never damage the ring.
///
/// Reads the v1 ring and the legacy single-slot layout. Every frame is validated after
/// it is copied, so a frame torn by the writer overwriting it is never returned. A
/// reader that falls a whole lap behind loses frames (counted in ``stats`` and in
/// ``Frame.lost_before``) and resumes at the newest keyframe.
///
/// Args:
///     path: the ring file.
///     start: ``"latest_keyframe"`` (default: the newest keyframe still in the ring, so
///         a decoder can start at once), ``"next"`` (the next frame written) or
///         ``"latest"`` (the newest frame, keyframe or not).
///     crc: check each payload against its CRC-32 when the writer stored one.
///     layout: ``"auto"`` (default: v1 if the file has a v1 descriptor, else legacy),
///         ``"v1"`` or ``"legacy"`` (``"ring"``, the former name of ``"v1"``, is accepted).
///     resync_at_keyframe: after losing frames, skip to a keyframe so a decoder never
///         sees a frame whose reference is missing (default True; turn off for streams
///         of independent messages).
///     wake: how a blocked ``read`` waits. ``"cadence"`` (default) learns the writer's
///         frame interval and spins only in a short window around the next expected
///         frame, sleeping otherwise, so a frame is seen microseconds after it lands
///         instead of after a wake-up or a poll interval; irregular messages never lock a
///         cadence and are waited for as with ``"sleep"`` (futex on v1 rings, a 500 µs
///         poll on legacy rings).
///     cadence_window: widest spin window either side of an expected frame, in seconds
///         (default 250 µs; only with ``wake="cadence"``).
///
/// Example::
///
///     with shmring.Reader("/dev/shm/cam0") as r:
///         for frame in r:
///             decoder.decode(frame.payload)
///
/// A reader belongs to one thread at a time: a second thread that calls ``read`` while
/// a read is in progress gets a ``ShmringError``. ``close()``, ``stats`` and ``closed``
/// work from any thread; closing wakes a read blocked in another thread within about
/// 50 ms (``read`` then raises ``ClosedError``; iteration stops).
///
/// The first ring the process opens installs a process-wide SIGBUS handler, so a ring
/// file truncated by another process raises ``RingDamagedError`` instead of killing the
/// interpreter; other SIGBUS go to the handler installed before. Set
/// ``SHMRING_NO_SIGBUS_GUARD=1`` in the environment to leave SIGBUS alone.
#[pyclass(module = "shmring._shmring", frozen)]
pub struct Reader {
    /// The ring; held by the thread that reads (through blocking waits, GIL released).
    ring: Mutex<Option<RingReader>>,
    /// Set by `close()`; a blocked read checks it between wait slices.
    closing: AtomicBool,
    /// What other threads may look at while a read holds `ring`.
    seen: Mutex<Seen>,
    path: PathBuf,
}

/// A snapshot of the reader's state, refreshed after every read.
#[derive(Clone, Copy)]
struct Seen {
    stats: shmring_core::ReaderStats,
    kind: RingKind,
}

impl Seen {
    fn of(ring: &RingReader) -> Self {
        Seen {
            stats: ring.stats(),
            kind: ring.kind(),
        }
    }
}

fn start_position(start: &str) -> PyResult<StartPosition> {
    match start {
        "latest_keyframe" => Ok(StartPosition::LatestKeyframe),
        "next" => Ok(StartPosition::Next),
        "latest" => Ok(StartPosition::Latest),
        other => Err(PyValueError::new_err(format!(
            "start must be \"latest_keyframe\", \"next\" or \"latest\", not {other:?}"
        ))),
    }
}

fn layout_choice(layout: &str) -> PyResult<LayoutChoice> {
    match layout {
        "auto" => Ok(LayoutChoice::Auto),
        // "ring": the former name of "v1", still accepted.
        "v1" | "ring" => Ok(LayoutChoice::V1),
        "legacy" => Ok(LayoutChoice::Legacy),
        other => Err(PyValueError::new_err(format!(
            "layout must be \"auto\", \"v1\" or \"legacy\", not {other:?}"
        ))),
    }
}

/// Largest `cadence_window` accepted: a wider one would spin most of a 60 fps frame.
const MAX_CADENCE_WINDOW: f64 = 0.005;

fn wake_policy(wake: &str, window: Option<f64>) -> PyResult<WakePolicy> {
    match (wake, window) {
        ("cadence", None) => Ok(WakePolicy::default()),
        ("cadence", Some(w)) if w > 0.0 && w <= MAX_CADENCE_WINDOW => Ok(WakePolicy::Cadence {
            max_window: Duration::from_secs_f64(w),
        }),
        ("cadence", Some(w)) => Err(PyValueError::new_err(format!(
            "cadence_window must be more than 0 and at most {MAX_CADENCE_WINDOW} seconds, not {w}"
        ))),
        ("sleep", None) => Ok(WakePolicy::Sleep),
        ("sleep", Some(_)) => Err(PyValueError::new_err(
            "cadence_window applies to wake=\"cadence\" only; drop it or use wake=\"cadence\"",
        )),
        (other, _) => Err(PyValueError::new_err(format!(
            "wake must be \"cadence\" or \"sleep\", not {other:?}"
        ))),
    }
}

/// `None` waits forever; anything else must be a non-negative number of seconds.
fn deadline(timeout: Option<f64>) -> PyResult<Option<Instant>> {
    let Some(seconds) = timeout else {
        return Ok(None);
    };
    if seconds.is_nan() || seconds < 0.0 {
        return Err(PyValueError::new_err(format!(
            "timeout must be None or >= 0 seconds, not {seconds}"
        )));
    }
    // A timeout too large for an Instant is as good as forever.
    Ok(Duration::try_from_secs_f64(seconds)
        .ok()
        .and_then(|d| Instant::now().checked_add(d)))
}

/// Reads the next frame if one is there, copying its payload straight from the ring into
/// a new `bytes` object of exactly its size. The outer error is Python's (no memory for
/// the bytes object), the inner one the core's.
///
/// The payload size is learnt by offering a one-byte buffer first: the core answers
/// `BufferTooSmall { needed }` without consuming the frame. If the writer replaces the
/// frame between the two calls, the loop simply asks again.
fn next_frame(py: Python<'_>, ring: &mut RingReader) -> PyResult<Result<Option<Frame>, Error>> {
    let mut probe = [0u8; 1];
    let mut size = match ring.try_read_into(&mut probe) {
        Ok(None) => return Ok(Ok(None)),
        Ok(Some(info)) => return Ok(Ok(Some(Frame::new(PyBytes::new(py, &probe[..info.size]), &info)))),
        Err(Error::Read(ReadError::BufferTooSmall { needed })) => needed,
        Err(e) => return Ok(Err(e)),
    };
    loop {
        let mut outcome = Ok(None);
        let bytes = PyBytes::new_with(py, size, |buf| {
            outcome = if size >= DETACH_MIN {
                py.detach(|| ring.try_read_into(buf))
            } else {
                ring.try_read_into(buf)
            };
            Ok(())
        })?;
        return Ok(match outcome {
            Ok(Some(info)) if info.size == size => Ok(Some(Frame::new(bytes, &info))),
            // The frame was replaced by a smaller one between the calls (rare).
            Ok(Some(info)) => Ok(Some(Frame::new(
                PyBytes::new(py, &bytes.as_bytes()[..info.size]),
                &info,
            ))),
            Ok(None) => Ok(None),
            Err(Error::Read(ReadError::BufferTooSmall { needed })) => {
                size = needed;
                continue;
            }
            Err(e) => Err(e),
        });
    }
}

impl Reader {
    fn closed_error(&self) -> PyErr {
        closed("Reader", &self.path)
    }

    /// The ring, for a read. Never waits: another thread reading is an error.
    fn lock(&self) -> PyResult<MutexGuard<'_, Option<RingReader>>> {
        if self.closing.load(Ordering::Acquire) {
            return Err(self.closed_error());
        }
        crate::lock::try_lock(&self.ring).ok_or_else(|| {
            ShmringError::new_err(format!(
                "this Reader of {} is in use by another thread (a read is in progress); give each thread its own Reader",
                self.path.display()
            ))
        })
    }

    fn seen(&self) -> PyResult<Seen> {
        if self.closing.load(Ordering::Acquire) {
            return Err(self.closed_error());
        }
        let guard = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        Ok(*guard)
    }

    fn publish(&self, ring: &RingReader) {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Seen::of(ring);
    }

    /// The blocking read shared by `read` and iteration: tries, then waits in slices of
    /// at most `WAIT_SLICE` with the GIL released, checking for signals and `close()`
    /// between slices. `Ok(None)` on timeout; closing raises `ClosedError`.
    fn read_until(&self, py: Python<'_>, deadline: Option<Instant>, skip_damaged: bool) -> PyResult<Option<Frame>> {
        let mut guard = self.lock()?;
        let ring = guard.as_mut().ok_or_else(|| self.closed_error())?;
        loop {
            let got = next_frame(py, ring)?;
            self.publish(ring);
            match got {
                Ok(Some(frame)) => return Ok(Some(frame)),
                Ok(None) => {}
                Err(Error::Read(ReadError::Corrupt { .. } | ReadError::CrcMismatch { .. })) if skip_damaged => continue,
                Err(e) => return Err(to_py(py, e)),
            }
            let now = Instant::now();
            let slice = match deadline {
                Some(d) if now >= d => return Ok(None),
                Some(d) => (d - now).min(WAIT_SLICE),
                None => WAIT_SLICE,
            };
            py.detach(|| ring.wait(Some(slice))).map_err(|e| to_py(py, e))?;
            if self.closing.load(Ordering::Acquire) {
                // close() was called from another thread while this one waited.
                *guard = None;
                return Err(self.closed_error());
            }
            py.check_signals()?;
        }
    }
}

#[pymethods]
impl Reader {
    #[new]
    #[pyo3(signature = (path, *, start = "latest_keyframe", crc = true, layout = "auto", resync_at_keyframe = true, wake = "cadence", cadence_window = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        start: &str,
        crc: bool,
        layout: &str,
        resync_at_keyframe: bool,
        wake: &str,
        cadence_window: Option<f64>,
    ) -> PyResult<Self> {
        let options = ReaderOptions {
            start: start_position(start)?,
            verify_crc: crc,
            resync_at_keyframe,
            wake: wake_policy(wake, cadence_window)?,
        };
        let layout = layout_choice(layout)?;
        let ring = py
            .detach(|| RingReader::open_layout(&path, &options, layout))
            .map_err(|e| to_py(py, e))?;
        Ok(Reader {
            seen: Mutex::new(Seen::of(&ring)),
            ring: Mutex::new(Some(ring)),
            closing: AtomicBool::new(false),
            path,
        })
    }

    /// Returns the next frame, waiting up to ``timeout`` seconds for one (``None``:
    /// forever; ``0``: do not wait). Returns ``None`` on timeout.
    ///
    /// The GIL is released while waiting, and Ctrl-C (any signal handler that raises)
    /// interrupts the wait within about 50 ms.
    ///
    /// Raises:
    ///     CrcMismatchError: the next frame failed its CRC check and was skipped.
    ///     CorruptFrameError: an impossible record was skipped (damaged or foreign file).
    ///     ClosedError: the reader was closed.
    ///
    /// After either of the first two, the reader has moved on: call ``read`` again.
    #[pyo3(signature = (timeout = None))]
    fn read(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Frame>> {
        let deadline = deadline(timeout)?;
        self.read_until(py, deadline, false)
    }

    /// "Latest wins": the newest frame, skipping (and counting as lost) any frames in
    /// between; ``None`` if nothing is newer than the last frame read. Never waits.
    fn read_latest(&self, py: Python<'_>) -> PyResult<Option<Frame>> {
        let mut guard = self.lock()?;
        let ring = guard.as_mut().ok_or_else(|| self.closed_error())?;
        let frame = match ring.read_latest() {
            Ok(Some(frame)) => Some(Frame::new(PyBytes::new(py, frame.payload), &frame.info)),
            Ok(None) => None,
            Err(e) => {
                self.publish(ring);
                return Err(to_py(py, e));
            }
        };
        self.publish(ring);
        Ok(frame)
    }

    /// Iterating yields frames forever, waiting for each; frames that fail their CRC or
    /// are corrupt are skipped (they are counted in ``stats``). Iteration stops when the
    /// reader is closed, also from another thread.
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Frame>> {
        match self.read_until(py, None, true) {
            Err(e) if e.is_instance_of::<ClosedError>(py) => Ok(None),
            other => other,
        }
    }

    /// This reader's accounting (a snapshot; readable from any thread, also while
    /// another thread reads).
    #[getter]
    fn stats(&self) -> PyResult<ReaderStats> {
        let s = self.seen()?.stats;
        Ok(ReaderStats {
            delivered: s.delivered,
            lost: s.lost,
            lapped: s.lapped,
            crc_errors: s.crc_errors,
            corrupt: s.corrupt,
        })
    }

    /// Largest payload the ring holds.
    #[getter]
    fn max_frame_size(&self) -> PyResult<usize> {
        Ok(self.seen()?.kind.max_frame_size())
    }

    /// ``"v1"`` or ``"legacy"``: the layout found.
    #[getter]
    fn layout(&self) -> PyResult<&'static str> {
        Ok(match self.seen()?.kind {
            RingKind::V1(_) => "v1",
            RingKind::Legacy { .. } => "legacy",
        })
    }

    /// The ring file's path.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// True once :meth:`close` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Unmaps the ring. Closing twice is allowed. Called from another thread while a
    /// read blocks, it wakes that read within about 50 ms (the read raises
    /// ``ClosedError``, iteration stops) and the ring is unmapped by the reading thread.
    fn close(&self) {
        self.closing.store(true, Ordering::Release);
        if let Some(mut guard) = crate::lock::try_lock(&self.ring) {
            *guard = None;
        }
    }

    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        if slf.get().closed() {
            return Err(slf.get().closed_error());
        }
        Ok(slf)
    }

    #[pyo3(signature = (_exc_type = None, _exc = None, _tb = None))]
    fn __exit__(
        &self,
        _exc_type: Option<&Bound<'_, PyType>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) {
        self.close();
    }

    fn __repr__(&self) -> String {
        let state = if self.closed() { "closed" } else { "open" };
        format!("<shmring.Reader {:?} {state}>", self.path.display().to_string())
    }
}
