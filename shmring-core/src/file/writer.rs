//! The writer of a ring file.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::{format, string::String};

use core::sync::atomic::Ordering;

use super::error::io_err;
use super::mapping::MappedWords;
use super::{monotonic_ns, unix_ns, Error, LayoutChoice, RingKind};
use crate::layout::{trailer, Geometry, LayoutError, WriterState};
use crate::wake;
use crate::{futex, lock, FrameMeta, LegacyWriter, RegionWriter};

/// Settings for [`RingWriter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterOptions {
    /// Layout of a ring the writer creates (`Auto` means v1); when opening an existing
    /// ring, which layouts to accept.
    pub layout: LayoutChoice,
    /// v1 frame-region bytes, a power of two (default 16 MiB).
    pub capacity: usize,
    /// v1 largest payload; `None` for the most the capacity allows (half of it, less
    /// the header).
    pub max_frame_size: Option<usize>,
    /// Legacy file length (default 4 MiB, as the SDR_OS writer).
    pub legacy_len: usize,
    /// Permission bits of a created file (default 0o600: only the writer's user).
    pub mode: u32,
    /// Compute CRC-32 of each payload (default true).
    pub crc: bool,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            layout: LayoutChoice::Auto,
            capacity: 16 << 20,
            max_frame_size: None,
            legacy_len: 4 << 20,
            mode: 0o600,
            crc: true,
        }
    }
}

impl WriterOptions {
    fn kind(&self) -> Result<RingKind, LayoutError> {
        Ok(match self.layout {
            LayoutChoice::Legacy => {
                if self.legacy_len < crate::layout::LEGACY_MIN_LEN {
                    return Err(LayoutError::TooShort {
                        len: self.legacy_len,
                        needed: crate::layout::LEGACY_MIN_LEN,
                    });
                }
                RingKind::Legacy { len: self.legacy_len }
            }
            _ => RingKind::V1(match self.max_frame_size {
                Some(max) => Geometry::new(self.capacity, max)?,
                None => Geometry::with_capacity(self.capacity)?,
            }),
        })
    }
}

enum WriterInner {
    V1(RegionWriter<MappedWords>),
    Legacy(LegacyWriter<MappedWords>),
}

/// The one writer of a ring file. Holds the file's writer lock until dropped; the
/// kernel releases it if the process dies, so a restarted writer can [`RingWriter::open`]
/// the ring and continue its frame_seq.
pub struct RingWriter {
    inner: WriterInner,
    kind: RingKind,
    path: PathBuf,
    _file: File,
    /// Heartbeat stamp of this writer's previous commit (0: none yet).
    last_commit_stamp: u64,
}

impl RingWriter {
    /// Creates a new, empty ring at `path` (parent directories too), replacing any ring
    /// there that no writer holds: the new file is built beside it and renamed into
    /// place, and the old one is marked retired, so readers reopen. Fails with
    /// [`Error::WriterExists`] if a writer holds the existing ring.
    pub fn create(path: impl AsRef<Path>, options: &WriterOptions) -> Result<Self, Error> {
        let path = path.as_ref();
        let kind = options.kind().map_err(|source| Error::Layout {
            path: path.to_path_buf(),
            source,
        })?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&dir).map_err(io_err(path, "create the directory of"))?;
        let old = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => {
                if !lock::try_lock_exclusive(&file).map_err(io_err(path, "lock"))? {
                    return Err(writer_exists(path, &file));
                }
                Some(file)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(path, "open")(e)),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| String::from("ring"));
        let tmp = dir.join(format!(".{name}.{}.{}.tmp", std::process::id(), unix_ns()));
        let result = Self::build(path, &tmp, kind, options, old.as_ref());
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn build(
        path: &Path,
        tmp: &Path,
        kind: RingKind,
        options: &WriterOptions,
        old: Option<&File>,
    ) -> Result<Self, Error> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(options.mode)
            .open(tmp)
            .map_err(io_err(path, "create"))?;
        // The mode given to open() is filtered by the umask; set exactly what was asked.
        file.set_permissions(fs::Permissions::from_mode(options.mode))
            .map_err(io_err(path, "set the mode of"))?;
        let len = match kind {
            RingKind::V1(g) => g.file_len(),
            RingKind::Legacy { len } => len,
        };
        file.set_len(len as u64).map_err(io_err(path, "size"))?;
        if !lock::try_lock_exclusive(&file).map_err(io_err(path, "lock"))? {
            return Err(Error::WriterExists {
                path: path.to_path_buf(),
                pid: None,
            });
        }
        let words = MappedWords::map(&file, true).map_err(io_err(path, "map"))?;
        let inner = match kind {
            RingKind::V1(g) => {
                let w = RegionWriter::format(words, g, unix_ns()).map_err(|source| Error::Layout {
                    path: path.to_path_buf(),
                    source,
                })?;
                WriterInner::V1(w)
            }
            RingKind::Legacy { .. } => {
                WriterInner::Legacy(LegacyWriter::format(words).map_err(|source| Error::Layout {
                    path: path.to_path_buf(),
                    source,
                })?)
            }
        };
        let writer = RingWriter::assemble(inner, kind, path, file, options);
        match old {
            Some(old) => {
                fs::rename(tmp, path).map_err(io_err(path, "replace"))?;
                retire_file(old);
            }
            None => {
                // link() refuses to replace, so of two processes creating the same new
                // ring at once exactly one succeeds.
                let linked = fs::hard_link(tmp, path);
                let _ = fs::remove_file(tmp);
                match linked {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        return Err(Error::WriterExists {
                            path: path.to_path_buf(),
                            pid: None,
                        })
                    }
                    Err(e) => return Err(io_err(path, "create")(e)),
                }
            }
        }
        Ok(writer)
    }

    /// The writer over a formatted or resumed region: records this process as the
    /// writer (pid, heartbeat) and applies the options' CRC setting.
    fn assemble(inner: WriterInner, kind: RingKind, path: &Path, file: File, options: &WriterOptions) -> Self {
        if let WriterInner::V1(w) = &inner {
            w.set_writer_pid(std::process::id() as u64);
            w.heartbeat(monotonic_ns());
        }
        let mut writer = RingWriter {
            inner,
            kind,
            path: path.to_path_buf(),
            _file: file,
            last_commit_stamp: 0,
        };
        writer.set_crc(options.crc);
        writer
    }

    /// Opens an existing ring and continues its stream: frame_seq carries on, and bytes
    /// a crashed writer left half-written are covered before anything is written.
    pub fn open(path: impl AsRef<Path>, options: &WriterOptions) -> Result<Self, Error> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err(path, "open"))?;
        if !lock::try_lock_exclusive(&file).map_err(io_err(path, "lock"))? {
            return Err(writer_exists(path, &file));
        }
        let words = MappedWords::map(&file, true).map_err(io_err(path, "map"))?;
        let kind = RingKind::detect(&words, options.layout).map_err(|source| Error::Layout {
            path: path.to_path_buf(),
            source,
        })?;
        let inner = match kind {
            RingKind::V1(_) => {
                let w = RegionWriter::resume(words).map_err(|source| Error::Damaged {
                    path: path.to_path_buf(),
                    source,
                })?;
                WriterInner::V1(w)
            }
            RingKind::Legacy { .. } => {
                WriterInner::Legacy(LegacyWriter::resume(words).map_err(|source| Error::Layout {
                    path: path.to_path_buf(),
                    source,
                })?)
            }
        };
        let writer = RingWriter::assemble(inner, kind, path, file, options);
        Ok(writer)
    }

    /// Continues the ring at `path` if it exists with the layout and geometry `options`
    /// ask for, and creates (or replaces) it otherwise. What a writer that may be
    /// restarting should call.
    pub fn open_or_create(path: impl AsRef<Path>, options: &WriterOptions) -> Result<Self, Error> {
        let path = path.as_ref();
        let wanted = options.kind().map_err(|source| Error::Layout {
            path: path.to_path_buf(),
            source,
        })?;
        match Self::open(path, options) {
            Ok(w)
                if w.kind == wanted
                    || (options.layout == LayoutChoice::Legacy && matches!(w.kind, RingKind::Legacy { .. })) =>
            {
                Ok(w)
            }
            Ok(w) => {
                drop(w);
                Self::create(path, options)
            }
            Err(Error::NotFound { .. }) | Err(Error::Layout { .. }) | Err(Error::Damaged { .. }) => {
                Self::create(path, options)
            }
            Err(e) => Err(e),
        }
    }

    /// Writes one frame and wakes sleeping readers; returns its frame_seq. A commit that
    /// closely follows the previous one skips the `FUTEX_WAKE` system call; sleeping
    /// readers bound their sleep instead (see the wake module).
    pub fn write(&mut self, payload: &[u8], meta: FrameMeta) -> Result<u64, Error> {
        match &mut self.inner {
            WriterInner::V1(w) => {
                let stamp = monotonic_ns();
                // SYNC POINT (wake gap): this relaxed heartbeat store precedes the commit's
                // Release store of notify, so a reader that Acquire-loads this commit's
                // notify value then reads a heartbeat of at least `stamp` (its load in
                // `RingReader::wait_until`).
                w.heartbeat(stamp);
                let seq = w.write(payload, meta).map_err(Error::Write)?;
                if wake::writer_must_wake(self.last_commit_stamp, monotonic_ns()) {
                    futex::wake_all(w.notify_word());
                }
                self.last_commit_stamp = stamp;
                Ok(seq)
            }
            WriterInner::Legacy(w) => w.write(payload, meta).map_err(Error::Write),
        }
    }

    /// Records that the writer is alive without writing a frame (for idle producers;
    /// every write does this too).
    pub fn heartbeat(&self) {
        if let WriterInner::V1(w) = &self.inner {
            w.heartbeat(monotonic_ns());
        }
    }

    /// Turns CRC computation on or off.
    pub fn set_crc(&mut self, compute: bool) {
        match &mut self.inner {
            WriterInner::V1(w) => w.set_crc(compute),
            WriterInner::Legacy(w) => w.set_crc(compute),
        }
    }

    /// The ring's layout and geometry.
    pub fn kind(&self) -> RingKind {
        self.kind
    }

    /// Largest payload [`Self::write`] accepts.
    pub fn max_frame_size(&self) -> usize {
        self.kind.max_frame_size()
    }

    /// frame_seq the next write will get.
    pub fn next_frame_seq(&self) -> u64 {
        match &self.inner {
            WriterInner::V1(w) => w.next_frame_seq(),
            WriterInner::Legacy(w) => w.next_frame_seq(),
        }
    }

    /// The ring file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Marks the ring retired (readers reopen the path) and closes it.
    pub fn retire(self) {
        if let WriterInner::V1(w) = &self.inner {
            w.set_state(WriterState::Retired);
            futex::wake_all(w.notify_word());
        }
    }
}

impl Drop for RingWriter {
    fn drop(&mut self) {
        if let WriterInner::V1(w) = &self.inner {
            if crate::region::load_state(w.words(), &w.geometry()) != WriterState::Retired {
                w.set_state(WriterState::Closed);
            }
        }
    }
}

fn writer_exists(path: &Path, file: &File) -> Error {
    let pid = MappedWords::map(file, false)
        .ok()
        .and_then(|words| match RingKind::detect(&words, LayoutChoice::Auto) {
            Ok(RingKind::V1(g)) => {
                let pid = words[(g.trailer_offset() + trailer::WRITER_PID) / 8].load(Ordering::Relaxed);
                u32::try_from(pid).ok().filter(|p| *p != 0)
            }
            _ => None,
        })
        .or_else(|| lock::holder_pid(file));
    Error::WriterExists {
        path: path.to_path_buf(),
        pid,
    }
}

/// Marks a v1 ring file retired (best effort: the file is being replaced anyway).
fn retire_file(file: &File) {
    if let Ok(words) = MappedWords::map(file, true) {
        if let Ok(RingKind::V1(g)) = RingKind::detect(&words, LayoutChoice::V1) {
            let at = g.trailer_offset();
            // SYNC POINT (state): Release pairs with the reader's Acquire load of
            // writer_state in `RingReader::check_replaced`.
            words[(at + trailer::WRITER_STATE) / 8].store(WriterState::Retired.to_word(), Ordering::Release);
            futex::wake_all(&words[(at + trailer::NOTIFY) / 8]);
        }
    }
}
