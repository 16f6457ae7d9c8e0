//! FFmpeg's log lines, forwarded to Python's `logging` (logger `shmring.ffmpeg`).
//!
//! Nothing is captured, and FFmpeg's process-wide log callback and level stay as they
//! are, until the application asks for the lines: the `shmring.ffmpeg` logger has a
//! level of its own, or is enabled for DEBUG (e.g. `logging.basicConfig(level=DEBUG)`)
//! when a `VideoWriter` is opened. Until then the encoders' lines are not printed and
//! cost nothing (see `shmring_nvenc::log`), and PyAV or OpenCV in the same process log
//! as they always do.
//!
//! FFmpeg logs from its own threads with no interpreter attached, so its callback
//! (in `shmring_nvenc::log`) only queues lines; [`forward`], called with the GIL held
//! after every `VideoWriter` call, empties the queue into the logger. The logger's
//! effective level decides which lines are formatted at all.

use pyo3::prelude::*;
use shmring_nvenc::ffmpeg_next::ffi;
use shmring_nvenc::log;

/// The logger FFmpeg's lines go to.
pub(crate) const LOGGER: &str = "shmring.ffmpeg";

/// Python's level for an FFmpeg level.
fn python_level(av_level: i32) -> i32 {
    match av_level {
        l if l <= ffi::AV_LOG_ERROR => 40,
        l if l <= ffi::AV_LOG_WARNING => 30,
        l if l <= ffi::AV_LOG_INFO => 20,
        _ => 10,
    }
}

/// The most verbose FFmpeg level worth formatting for a Python logger at `level`.
fn ffmpeg_level(python_level: i32) -> i32 {
    match python_level {
        l if l > 40 => ffi::AV_LOG_FATAL,
        l if l > 30 => ffi::AV_LOG_ERROR,
        l if l > 20 => ffi::AV_LOG_WARNING,
        l if l > 10 => ffi::AV_LOG_INFO,
        _ => ffi::AV_LOG_DEBUG,
    }
}

/// Starts capturing FFmpeg's log (idempotent) at the logger's current level, if the
/// application asked for the lines (see the module docs).
pub(crate) fn start(py: Python<'_>) -> PyResult<()> {
    let logger = logger(py)?;
    let own_level: i32 = logger.getattr("level")?.extract()?;
    let debug: bool = logger.call_method1("isEnabledFor", (10,))?.extract()?;
    if own_level != 0 || debug {
        log::capture();
    }
    let level: i32 = logger.call_method0("getEffectiveLevel")?.extract()?;
    log::set_max_level(ffmpeg_level(level));
    Ok(())
}

fn logger(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    py.import("logging")?.call_method1("getLogger", (LOGGER,))
}

/// Hands the queued lines to the logger and follows its level for the next ones.
pub(crate) fn forward(py: Python<'_>) -> PyResult<()> {
    let taken = log::take();
    let logger = logger(py)?;
    for line in taken.lines {
        logger.call_method1("log", (python_level(line.level), "%s", line.message))?;
    }
    if taken.dropped > 0 {
        logger.call_method1(
            "warning",
            (
                "%d FFmpeg log lines were dropped (more than the queue holds between two VideoWriter calls)",
                taken.dropped,
            ),
        )?;
    }
    let level: i32 = logger.call_method0("getEffectiveLevel")?.extract()?;
    log::set_max_level(ffmpeg_level(level));
    Ok(())
}
