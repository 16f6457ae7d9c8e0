//! `shmring._shmring`: the compiled half of the `shmring` Python package.
//!
//! Thin PyO3 wrappers over `shmring-core`'s file-backed [`shmring_core::RingWriter`] and
//! [`shmring_core::RingReader`]. The Python-facing documentation lives in the docstrings
//! below and in `python/shmring/_shmring.pyi`; the pure-Python half
//! (`python/shmring/__init__.py`) adds `Codec` and re-exports everything.
//!
//! Rules every method follows:
//! - long work (payload copies above [`DETACH_MIN`], blocking waits, creating and
//!   mapping files) runs inside `py.detach`, so other Python threads keep running;
//! - blocking waits are cut into slices of at most [`WAIT_SLICE`] with
//!   `py.check_signals()` between them, so Ctrl-C interrupts a read promptly;
//! - every core error becomes one exception class (see [`errors`]), a closed object
//!   raises `ClosedError`, and nothing a caller passes can panic or crash the process.

use std::time::Duration;

use pyo3::prelude::*;

mod buffer;
mod errors;
mod lock;
mod reader;
mod video;
mod writer;

/// Payloads at least this large are copied with the GIL released. Below it, releasing
/// and re-taking the GIL costs more than the copy itself.
pub(crate) const DETACH_MIN: usize = 64 * 1024;

/// Longest a blocking read sleeps before it checks for signals (Ctrl-C).
pub(crate) const WAIT_SLICE: Duration = Duration::from_millis(50);

/// The `shmring._shmring` extension module.
#[pymodule]
fn _shmring(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<writer::Writer>()?;
    m.add_class::<reader::Reader>()?;
    m.add_class::<reader::Frame>()?;
    m.add_class::<reader::ReaderStats>()?;
    m.add_class::<video::VideoWriter>()?;
    m.add("VIDEO_FEATURE", cfg!(feature = "video"))?;
    errors::register(m)?;
    Ok(())
}
