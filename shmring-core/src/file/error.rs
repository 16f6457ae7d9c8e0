//! Errors of file-backed rings.

use std::io;
use std::path::{Path, PathBuf};

use crate::layout::LayoutError;
use crate::{ReadError, RingStateError, WriteError};

/// Everything that can go wrong with a ring file. Display texts name the file and say
/// what to do.
#[derive(Debug)]
pub enum Error {
    /// An operating-system call failed.
    Io {
        /// The ring file.
        path: PathBuf,
        /// What was being done ("open", "map", ...).
        action: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// There is no ring file at the path.
    NotFound {
        /// The path.
        path: PathBuf,
    },
    /// Another process is writing the ring.
    WriterExists {
        /// The ring file.
        path: PathBuf,
        /// The writer's pid, when it could be found.
        pid: Option<u32>,
    },
    /// The file is not a ring this crate can read.
    Layout {
        /// The ring file.
        path: PathBuf,
        /// What is wrong with it.
        source: LayoutError,
    },
    /// The ring's live counters are impossible, so a writer cannot continue it.
    Damaged {
        /// The ring file.
        path: PathBuf,
        /// What is wrong with it.
        source: RingStateError,
    },
    /// The path names something that is not a regular file (a directory, a FIFO, a
    /// device, a socket), or, for a writer, a symbolic link.
    NotARingFile {
        /// The path.
        path: PathBuf,
        /// What is there ("a directory", "a FIFO", "a symbolic link", ...).
        what: &'static str,
    },
    /// The ring file belongs to another user; a writer refuses it unless
    /// [`crate::WriterOptions::allow_other_owner`] is set.
    OtherOwner {
        /// The ring file.
        path: PathBuf,
        /// The file's owner.
        owner: u32,
        /// This process's effective user.
        uid: u32,
    },
    /// The ring was retired (its writer abandoned it, or a new ring replaced it) and no
    /// other ring is at the path.
    Retired {
        /// The ring file.
        path: PathBuf,
    },
    /// The ring file was truncated (or otherwise shrunk) while it was mapped: another
    /// process damaged it. Frames read or written meanwhile are discarded; a reader
    /// reopens the path as soon as a valid ring is there again.
    Truncated {
        /// The ring file.
        path: PathBuf,
    },
    /// The file system of the ring (usually the `/dev/shm` tmpfs) has too little free space
    /// for a new ring: its pages are reserved when it is created, so a full file system is
    /// this error at creation rather than a fault at the first write. Nothing was changed
    /// at the path (a ring that was there is left in place).
    NoSpace {
        /// The ring file.
        path: PathBuf,
        /// Bytes the ring needs.
        needed: u64,
        /// Bytes free for this user on the file system when the creation failed.
        available: u64,
    },
    /// A frame could not be written.
    Write(WriteError),
    /// A record was skipped while reading (the reader continues after it).
    Read(ReadError),
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Io { path, action, source } => {
                write!(f, "cannot {action} ring {}: {source}", path.display())?;
                if source.kind() == io::ErrorKind::PermissionDenied {
                    f.write_str(" (rings are created 0600 by default: run as the writer's user, or create the ring with a wider mode such as 0o660)")?;
                }
                Ok(())
            }
            Error::NotFound { path } => write!(
                f,
                "no ring at {} (is the writer running, and is the path the same in both processes?)",
                path.display()
            ),
            Error::WriterExists { path, pid: Some(pid) } => {
                write!(
                    f,
                    "ring {} already has a writer (pid {pid}); stop it first, or use another path",
                    path.display()
                )
            }
            Error::WriterExists { path, pid: None } => {
                write!(
                    f,
                    "ring {} already has a writer (pid unknown); stop it first, or use another path",
                    path.display()
                )
            }
            Error::Layout { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Damaged { path, source } => write!(f, "{}: {source}", path.display()),
            Error::NotARingFile { path, what: "a symbolic link" } => write!(
                f,
                "{} is a symbolic link; ring writers do not follow links (one could point at another ring): give the path of the ring file itself",
                path.display()
            ),
            Error::NotARingFile { path, what: "a directory" } => write!(
                f,
                "{} is a directory, not a ring file; give the path of a ring file (for example {}/ring)",
                path.display(),
                path.display()
            ),
            Error::NotARingFile { path, what } => write!(
                f,
                "{} is {what}, not a ring file (rings are regular files, usually in /dev/shm); remove it or use another path",
                path.display()
            ),
            Error::OtherOwner { path, owner, uid } => write!(
                f,
                "ring {} belongs to user {owner}, not to this process's user {uid}; a writer refuses to write into another user's file (run as its owner, remove the file, or set WriterOptions::allow_other_owner)",
                path.display()
            ),
            Error::Retired { path } => write!(
                f,
                "ring {} was retired by its writer and nothing has replaced it; start a writer that creates a new ring at this path",
                path.display()
            ),
            Error::Truncated { path } => write!(
                f,
                "ring {} was truncated by another process while it was mapped; frames in flight were discarded (find what rewrote the file; a reader reopens it once a valid ring is there, a writer must create the ring again)",
                path.display()
            ),
            Error::NoSpace { path, needed, available } => write!(
                f,
                "no space for ring {}: it needs {needed} bytes ({} MiB) and its file system has {available} bytes ({} MiB) free (free space in it, for example by removing old rings, make it larger (Docker: --shm-size), or ask for a smaller capacity); any ring already at the path was left in place",
                path.display(),
                needed >> 20,
                available >> 20
            ),
            Error::Write(e) => e.fmt(f),
            Error::Read(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for Error {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Layout { source, .. } => Some(source),
            Error::Damaged { source, .. } => Some(source),
            Error::Write(e) => Some(e),
            Error::Read(e) => Some(e),
            Error::NotFound { .. }
            | Error::WriterExists { .. }
            | Error::NotARingFile { .. }
            | Error::OtherOwner { .. }
            | Error::Retired { .. }
            | Error::Truncated { .. }
            | Error::NoSpace { .. } => None,
        }
    }
}

pub(crate) fn io_err<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| {
        if source.kind() == io::ErrorKind::NotFound && action == "open" {
            Error::not_found(path)
        } else {
            Error::Io {
                path: path.to_path_buf(),
                action,
                source,
            }
        }
    }
}

/// The errors that name a ring path, made from a borrowed one (each owns a copy).
impl Error {
    /// [`Error::NotFound`] at `path`.
    pub(crate) fn not_found(path: &Path) -> Error {
        Error::NotFound {
            path: path.to_path_buf(),
        }
    }

    /// [`Error::Retired`] at `path`.
    pub(crate) fn retired(path: &Path) -> Error {
        Error::Retired {
            path: path.to_path_buf(),
        }
    }

    /// A `map_err` function: a [`LayoutError`] of the ring at `path`.
    pub(crate) fn layout(path: &Path) -> impl FnOnce(LayoutError) -> Error + '_ {
        move |source| Error::Layout {
            path: path.to_path_buf(),
            source,
        }
    }
}
