//! One Python exception class per `shmring_core::Error` variant, all subclasses of
//! `ShmringError`, each carrying the core's message (which names the file and says
//! what to do).

use std::path::Path;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use shmring_core::{Error, ReadError, WriteError};

create_exception!(
    shmring,
    ShmringError,
    PyException,
    "Base class of every error shmring raises."
);
create_exception!(
    shmring,
    RingIOError,
    ShmringError,
    "An operating-system call on the ring file failed (permissions, a directory in the way, out of memory)."
);
create_exception!(
    shmring,
    RingNotFoundError,
    ShmringError,
    "There is no ring file at the path (is the writer running, with the same path?)."
);
create_exception!(
    shmring,
    WriterExistsError,
    ShmringError,
    "Another process is writing the ring; `pid` is its process id when it could be found."
);
create_exception!(
    shmring,
    LayoutError,
    ShmringError,
    "The file is not a ring this shmring can use, or the requested geometry is invalid."
);
create_exception!(
    shmring,
    RingDamagedError,
    ShmringError,
    "The ring's live counters are impossible, so a writer cannot continue it."
);
create_exception!(
    shmring,
    FrameTooLargeError,
    ShmringError,
    "The payload is larger than the ring's max_frame_size; nothing was written."
);
create_exception!(
    shmring,
    CorruptFrameError,
    ShmringError,
    "A record with an impossible header was skipped (a damaged or foreign ring file); the next read continues after it."
);
create_exception!(
    shmring,
    CrcMismatchError,
    ShmringError,
    "A frame failed its CRC-32 check and was skipped (counted in stats.crc_errors); the next read continues after it."
);
create_exception!(
    shmring,
    ClosedError,
    ShmringError,
    "The Writer, Reader or VideoWriter was closed."
);
create_exception!(
    shmring,
    EncoderError,
    ShmringError,
    "VideoWriter could not open an encoder or encode a frame (the message says why: no NVENC, unknown encoder, bad size, ...)."
);
create_exception!(
    shmring,
    FeatureNotBuiltError,
    ShmringError,
    "This build of shmring lacks the cargo feature the call needs (the message says how to rebuild)."
);

/// Adds the exception classes to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    // A class-level default, so `err.pid` exists even on instances raised without one.
    py.get_type::<WriterExistsError>().setattr("pid", py.None())?;
    m.add("ShmringError", py.get_type::<ShmringError>())?;
    m.add("RingIOError", py.get_type::<RingIOError>())?;
    m.add("RingNotFoundError", py.get_type::<RingNotFoundError>())?;
    m.add("WriterExistsError", py.get_type::<WriterExistsError>())?;
    m.add("LayoutError", py.get_type::<LayoutError>())?;
    m.add("RingDamagedError", py.get_type::<RingDamagedError>())?;
    m.add("FrameTooLargeError", py.get_type::<FrameTooLargeError>())?;
    m.add("CorruptFrameError", py.get_type::<CorruptFrameError>())?;
    m.add("CrcMismatchError", py.get_type::<CrcMismatchError>())?;
    m.add("ClosedError", py.get_type::<ClosedError>())?;
    m.add("EncoderError", py.get_type::<EncoderError>())?;
    m.add("FeatureNotBuiltError", py.get_type::<FeatureNotBuiltError>())?;
    Ok(())
}

/// The Python exception for a core error.
pub(crate) fn to_py(py: Python<'_>, err: Error) -> PyErr {
    let msg = err.to_string();
    match err {
        Error::Io { .. } => RingIOError::new_err(msg),
        Error::NotFound { .. } => RingNotFoundError::new_err(msg),
        Error::WriterExists { pid, .. } => {
            let err = WriterExistsError::new_err(msg);
            // Setting an attribute on a fresh exception instance cannot fail in practice;
            // if it did, the message still names the pid.
            let _ = err.value(py).setattr("pid", pid);
            err
        }
        Error::Layout { .. } => LayoutError::new_err(msg),
        Error::Damaged { .. } | Error::Truncated { .. } => RingDamagedError::new_err(msg),
        // Something that is not a ring file, or another user's, at the path.
        Error::NotARingFile { .. } | Error::OtherOwner { .. } => RingIOError::new_err(msg),
        // A full file system: an OS-level failure like the other RingIOErrors.
        Error::NoSpace { .. } => RingIOError::new_err(msg),
        // No live ring at the path until a writer creates one.
        Error::Retired { .. } => RingNotFoundError::new_err(msg),
        Error::Write(WriteError::FrameTooLarge { .. }) => FrameTooLargeError::new_err(msg),
        Error::Read(ReadError::Corrupt { .. }) => CorruptFrameError::new_err(msg),
        Error::Read(ReadError::CrcMismatch { .. }) => CrcMismatchError::new_err(msg),
        // The reader always passes a buffer of the size the core asked for, so this never
        // reaches Python; if it ever did, it is still a ShmringError with the message.
        Error::Read(ReadError::BufferTooSmall { .. }) => ShmringError::new_err(msg),
    }
}

/// The error for using a closed object.
pub(crate) fn closed(what: &str, path: &Path) -> PyErr {
    ClosedError::new_err(format!("this {what} of {} is closed", path.display()))
}
