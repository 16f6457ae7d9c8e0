//! File-backed rings: [`RingWriter`] and [`RingReader`] over a memory-mapped file
//! (usually in `/dev/shm`), with the single-writer lock, futex wake-ups, liveness and
//! reopening of replaced rings.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use std::vec;
use std::vec::Vec;
use std::{format, string::String};

use core::ops::Deref;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::layout::{trailer, Geometry, LayoutError, WriterState, NO_POSITION};
use crate::wake;
use crate::{
    futex, legacy_max_frame, lock, FrameInfo, FrameMeta, LegacyReader, LegacyWriter, ReadError, ReaderOptions,
    ReaderStats, RegionReader, RegionWriter, RingStateError, WriteError,
};

/// A shared mapping of a ring file, seen as words.
pub(crate) struct MappedWords {
    map: memmap2::MmapRaw,
    words: usize,
}

impl MappedWords {
    fn map(file: &File, writable: bool) -> io::Result<Self> {
        let mut options = memmap2::MmapOptions::new();
        // Pre-fault the whole mapping so the first frames do not pay for page faults.
        options.populate();
        let map = if writable {
            options.map_raw(file)?
        } else {
            options.map_raw_read_only(file)?
        };
        let words = map.len() / 8;
        Ok(MappedWords { map, words })
    }
}

impl Deref for MappedWords {
    type Target = [AtomicU64];
    fn deref(&self) -> &[AtomicU64] {
        // SAFETY:
        // - the pointer comes from mmap, so it is page aligned (>= align_of::<AtomicU64>())
        //   and valid for `map.len()` >= `words * 8` bytes while `self.map` lives, which
        //   outlives the returned borrow;
        // - `AtomicU64` has the size and alignment of `u64` and permits shared mutation,
        //   which is what other processes do to this memory; this crate only ever accesses
        //   it through these atomics;
        // - read-only mappings are only used by readers, which never store (atomic loads
        //   of read-only memory are allowed for lock-free 8-byte atomics).
        unsafe { core::slice::from_raw_parts(self.map.as_ptr() as *const AtomicU64, self.words) }
    }
}

/// Which layout to use when opening a ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LayoutChoice {
    /// v1 if the file ends with a v1 descriptor, otherwise legacy.
    #[default]
    Auto,
    /// Only v1.
    V1,
    /// Only the legacy single-slot layout.
    Legacy,
}

/// The layout of an open ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingKind {
    /// v1 broadcast ring.
    V1(Geometry),
    /// Legacy single slot in a file of `len` bytes.
    Legacy {
        /// File length.
        len: usize,
    },
}

impl RingKind {
    /// Largest payload the ring accepts.
    pub fn max_frame_size(&self) -> usize {
        match self {
            RingKind::V1(g) => g.max_frame_size,
            RingKind::Legacy { len } => legacy_max_frame(*len),
        }
    }

    fn detect(words: &[AtomicU64], choice: LayoutChoice) -> Result<Self, LayoutError> {
        let len = words.len() * 8;
        let legacy = || {
            if len < crate::layout::LEGACY_MIN_LEN {
                Err(LayoutError::TooShort {
                    len,
                    needed: crate::layout::LEGACY_MIN_LEN,
                })
            } else {
                Ok(RingKind::Legacy { len })
            }
        };
        match choice {
            LayoutChoice::Legacy => legacy(),
            LayoutChoice::V1 => crate::region::read_geometry(words).map(RingKind::V1),
            LayoutChoice::Auto => match crate::region::read_geometry(words) {
                Ok(g) => Ok(RingKind::V1(g)),
                Err(LayoutError::BadMagic) | Err(LayoutError::TooShort { .. }) => legacy(),
                Err(e) => Err(e),
            },
        }
    }
}

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
            Error::NotFound { .. } | Error::WriterExists { .. } => None,
        }
    }
}

fn io_err<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| {
        if source.kind() == io::ErrorKind::NotFound && action == "open" {
            Error::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            Error::Io {
                path: path.to_path_buf(),
                action,
                source,
            }
        }
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of the heartbeat word, shared by every
/// process on the machine (containers included).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

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

enum ReaderInner {
    V1(RegionReader<MappedWords>),
    Legacy(LegacyReader<MappedWords>),
}

/// A frame borrowed from the reader's buffer (valid until the next read).
#[derive(Debug)]
pub struct Frame<'a> {
    /// Header fields and loss count.
    pub info: FrameInfo,
    /// The payload.
    pub payload: &'a [u8],
}

/// What the writer side of a ring looks like from a reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterStatus {
    /// True if a process holds the writer lock (`None` if the probe failed).
    pub alive: Option<bool>,
    /// pid recorded by the last writer (v1 only).
    pub pid: Option<u32>,
    /// Time since the writer's last commit or heartbeat (v1 only).
    pub heartbeat_age: Option<Duration>,
    /// How many writers have opened the ring (v1 only).
    pub epoch: Option<u64>,
    /// What the last writer said (v1 only).
    pub state: Option<WriterState>,
}

/// A snapshot of a ring's counters (for `shmring stat` and health checks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingStatus {
    /// Layout and geometry.
    pub kind: RingKind,
    /// Frames committed (the seed's commit marker).
    pub sequence_number: u64,
    /// Write position.
    pub write_index: u64,
    /// Position of the newest frame (v1).
    pub latest_record: Option<u64>,
    /// Position of the newest keyframe (v1).
    pub latest_keyframe: Option<u64>,
    /// The writer's side.
    pub writer: WriterStatus,
}

/// How long a blocked reader spins before it sleeps on the futex.
const DEFAULT_SPIN: Duration = Duration::from_micros(20);
/// How often an idle reader checks whether its ring was replaced or retired.
const REPLACED_CHECK: Duration = Duration::from_millis(100);
/// Sleep between polls of a legacy ring (it has no futex word).
const LEGACY_POLL: Duration = Duration::from_micros(500);

/// A reader of a ring file. Maps the file read-only: a reader can never damage the ring.
pub struct RingReader {
    inner: ReaderInner,
    kind: RingKind,
    path: PathBuf,
    file: File,
    identity: (u64, u64),
    options: ReaderOptions,
    layout: LayoutChoice,
    buf: Vec<u8>,
    spin: Duration,
    last_replaced_check: Instant,
    reopens: u64,
}

impl RingReader {
    /// Opens the ring at `path`, detecting its layout.
    pub fn open(path: impl AsRef<Path>, options: &ReaderOptions) -> Result<Self, Error> {
        Self::open_layout(path, options, LayoutChoice::Auto)
    }

    /// Opens the ring at `path` with an explicit layout choice.
    pub fn open_layout(path: impl AsRef<Path>, options: &ReaderOptions, layout: LayoutChoice) -> Result<Self, Error> {
        let path = path.as_ref();
        let file = OpenOptions::new().read(true).open(path).map_err(io_err(path, "open"))?;
        let meta = file.metadata().map_err(io_err(path, "stat"))?;
        if meta.is_dir() {
            // A directory opens read-only; mapping it would fail with "No such device".
            return Err(Error::Io {
                path: path.to_path_buf(),
                action: "open",
                source: io::Error::new(
                    io::ErrorKind::IsADirectory,
                    "it is a directory: give the ring file inside it (such as .../frames)",
                ),
            });
        }
        let words = MappedWords::map(&file, false).map_err(io_err(path, "map"))?;
        let layout_err = |source| Error::Layout {
            path: path.to_path_buf(),
            source,
        };
        let kind = RingKind::detect(&words, layout).map_err(layout_err)?;
        let inner = match kind {
            RingKind::V1(_) => ReaderInner::V1(RegionReader::new(words, *options).map_err(layout_err)?),
            RingKind::Legacy { .. } => ReaderInner::Legacy(LegacyReader::new(words, *options).map_err(layout_err)?),
        };
        Ok(RingReader {
            inner,
            kind,
            path: path.to_path_buf(),
            file,
            identity: (meta.dev(), meta.ino()),
            options: *options,
            layout,
            buf: vec![0; kind.max_frame_size()],
            spin: DEFAULT_SPIN,
            last_replaced_check: Instant::now(),
            reopens: 0,
        })
    }

    /// Reads the next frame if one is there, without waiting.
    pub fn try_read(&mut self) -> Result<Option<Frame<'_>>, Error> {
        Ok(self.try_read_info()?.map(|info| Frame {
            info,
            payload: &self.buf[..info.size],
        }))
    }

    /// Reads the next frame, waiting up to `timeout` (`None`: forever) for one. Spins
    /// briefly, then sleeps on the ring's futex; `Ok(None)` on timeout. Reopens the path
    /// if the ring was replaced or retired meanwhile.
    pub fn read_timeout(&mut self, timeout: Option<Duration>) -> Result<Option<Frame<'_>>, Error> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(info) = self.try_read_info()? {
                return Ok(Some(Frame {
                    info,
                    payload: &self.buf[..info.size],
                }));
            }
            if !self.wait_until(deadline)? {
                return Ok(None);
            }
        }
    }

    /// "Latest wins": the newest frame, skipping (and counting as lost) any in between.
    pub fn read_latest(&mut self) -> Result<Option<Frame<'_>>, Error> {
        let info = match &mut self.inner {
            ReaderInner::V1(r) => r.read_latest(&mut self.buf),
            ReaderInner::Legacy(r) => r.read_latest(&mut self.buf),
        }
        .map_err(Error::Read)?;
        Ok(info.map(|info| Frame {
            info,
            payload: &self.buf[..info.size],
        }))
    }

    /// Reads the next frame into `buf`, returning its description (for callers that keep
    /// their own buffers).
    pub fn try_read_into(&mut self, buf: &mut [u8]) -> Result<Option<FrameInfo>, Error> {
        match &mut self.inner {
            ReaderInner::V1(r) => r.try_read(buf),
            ReaderInner::Legacy(r) => r.try_read(buf),
        }
        .map_err(Error::Read)
    }

    fn try_read_info(&mut self) -> Result<Option<FrameInfo>, Error> {
        match &mut self.inner {
            ReaderInner::V1(r) => r.try_read(&mut self.buf),
            ReaderInner::Legacy(r) => r.try_read(&mut self.buf),
        }
        .map_err(Error::Read)
    }

    /// Waits until there is something unread, up to `timeout` (`None`: forever); false on
    /// timeout.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<bool, Error> {
        self.wait_until(timeout.map(|t| Instant::now() + t))
    }

    fn has_unread(&self) -> bool {
        match &self.inner {
            ReaderInner::V1(r) => r.has_unread(),
            ReaderInner::Legacy(r) => r.has_unread(),
        }
    }

    fn wait_until(&mut self, deadline: Option<Instant>) -> Result<bool, Error> {
        let spin_end = Instant::now() + self.spin;
        while Instant::now() < spin_end {
            for _ in 0..32 {
                if self.has_unread() {
                    return Ok(true);
                }
                core::hint::spin_loop();
            }
        }
        loop {
            if self.has_unread() {
                return Ok(true);
            }
            let now = Instant::now();
            if now.duration_since(self.last_replaced_check) >= REPLACED_CHECK {
                self.last_replaced_check = now;
                if self.check_replaced()? {
                    return Ok(true);
                }
            }
            let mut slice = REPLACED_CHECK;
            if let Some(deadline) = deadline {
                if now >= deadline {
                    return Ok(false);
                }
                slice = slice.min(deadline - now);
            }
            match &self.inner {
                ReaderInner::V1(r) => {
                    let word = r.notify_word();
                    // SYNC POINT (notify): Acquire pairs with the writer's Release store of
                    // notify after write_index; re-checking write_index after this load
                    // means a commit is either seen here or changes the futex word first.
                    let seen = word.load(Ordering::Acquire);
                    if r.has_unread() {
                        return Ok(true);
                    }
                    // SYNC POINT (wake gap): loaded after the Acquire load of notify, so it
                    // is at least the stamp the writer stored before that commit (its
                    // heartbeat store in `RingWriter::write`). A recent commit means the
                    // writer may skip the wake for the next one: sleep only until the gap
                    // has passed.
                    let heartbeat = r.words()[(r.trailer_offset() + trailer::HEARTBEAT_NS) / 8].load(Ordering::Relaxed);
                    if let Some(bound) = wake::reader_sleep_bound(heartbeat, monotonic_ns()) {
                        slice = slice.min(bound);
                    }
                    futex::wait(word, seen, slice);
                }
                ReaderInner::Legacy(_) => std::thread::sleep(slice.min(LEGACY_POLL)),
            }
        }
    }

    /// Checks whether the file at the path was replaced (another inode) or the ring was
    /// retired, and if so reopens the path, starting at its newest keyframe. True if it
    /// reopened. A missing path is not an error: the old ring is kept until a new one
    /// appears.
    pub fn check_replaced(&mut self) -> Result<bool, Error> {
        let retired = matches!(self.status_state(), Some(WriterState::Retired));
        let replaced = match fs::metadata(&self.path) {
            Ok(m) => (m.dev(), m.ino()) != self.identity,
            Err(_) => false,
        };
        if !(retired || replaced) {
            return Ok(false);
        }
        match Self::open_layout(
            &self.path,
            &ReaderOptions {
                start: crate::StartPosition::LatestKeyframe,
                ..self.options
            },
            self.layout,
        ) {
            Ok(mut fresh) => {
                fresh.reopens = self.reopens + 1;
                fresh.spin = self.spin;
                *self = fresh;
                Ok(true)
            }
            Err(Error::NotFound { .. }) => Ok(false),
            // Retired but not yet replaced: keep waiting on the old ring.
            Err(_) if retired && !replaced => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn status_state(&self) -> Option<WriterState> {
        match (&self.inner, self.kind) {
            (ReaderInner::V1(r), RingKind::V1(g)) => Some(crate::region::load_state(r.words(), &g)),
            _ => None,
        }
    }

    /// Sets how long a blocked read spins before sleeping (default 20 µs; zero never spins).
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }

    /// Per-reader accounting.
    pub fn stats(&self) -> ReaderStats {
        match &self.inner {
            ReaderInner::V1(r) => r.stats(),
            ReaderInner::Legacy(r) => r.stats(),
        }
    }

    /// Times the reader reopened a replaced or retired ring.
    pub fn reopens(&self) -> u64 {
        self.reopens
    }

    /// Layout and geometry.
    pub fn kind(&self) -> RingKind {
        self.kind
    }

    /// The ring file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Largest payload the ring holds.
    pub fn max_frame_size(&self) -> usize {
        self.kind.max_frame_size()
    }

    /// A snapshot of the ring's counters and its writer's liveness.
    pub fn status(&self) -> RingStatus {
        let alive = lock::is_locked(&self.file).ok();
        match (&self.inner, self.kind) {
            (ReaderInner::V1(r), RingKind::V1(g)) => {
                let w = r.words();
                let at = g.trailer_offset();
                // SYNC POINT (status): Acquire loads pair with the writer's Release stores of the
                // same words (W3-W6 in docs/protocol.md); a snapshot, not a consistent cut.
                let load = |off: usize| w[off / 8].load(Ordering::Acquire);
                let pos = |v: u64| (v != NO_POSITION).then_some(v);
                let heartbeat = load(at + trailer::HEARTBEAT_NS);
                RingStatus {
                    kind: self.kind,
                    sequence_number: load(0),
                    write_index: load(8),
                    latest_record: pos(load(at + trailer::LATEST_RECORD)),
                    latest_keyframe: pos(load(at + trailer::LATEST_KEYFRAME)),
                    writer: WriterStatus {
                        alive,
                        pid: u32::try_from(load(at + trailer::WRITER_PID)).ok().filter(|p| *p != 0),
                        heartbeat_age: (heartbeat != 0)
                            .then(|| Duration::from_nanos(monotonic_ns().saturating_sub(heartbeat))),
                        epoch: Some(load(at + trailer::WRITER_EPOCH)),
                        state: Some(WriterState::from_word(load(at + trailer::WRITER_STATE))),
                    },
                }
            }
            (ReaderInner::Legacy(r), _) => RingStatus {
                kind: self.kind,
                sequence_number: r.sequence_number(),
                write_index: r.write_index(),
                latest_record: None,
                latest_keyframe: None,
                writer: WriterStatus {
                    alive,
                    pid: None,
                    heartbeat_age: None,
                    epoch: None,
                    state: None,
                },
            },
            _ => unreachable!("reader kind and layout always agree"),
        }
    }
}
