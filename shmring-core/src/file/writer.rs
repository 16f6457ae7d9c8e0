//! The writer of a ring file.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::{format, string::String};

use super::error::io_err;
use super::mapping::{map_ring, MappedWords};
use super::sigbus::Damage;
use super::{monotonic_ns, open, unix_ns, Error, LayoutChoice, RingKind};
use crate::layout::{Geometry, LayoutError, WriterState};
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
    /// Accept an existing ring file that belongs to another user (default false: a
    /// writer refuses to write into another user's file).
    pub allow_other_owner: bool,
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
            allow_other_owner: false,
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
///
/// # The SIGBUS truncation guard
///
/// The first ring a process maps installs a process-wide SIGBUS handler: another process
/// truncating a mapped ring file (`truncate -s 0 RING`, a writer restarting with
/// `O_TRUNC`) would otherwise kill this process when it touches a vanished page. Faults
/// inside ring mappings are recovered and reported as [`Error::Truncated`]; every other
/// SIGBUS goes to the action installed before, honouring its `SIG_IGN`, signal mask and
/// `SA_RESETHAND` (see `docs/protocol.md` 6.1 for the exact rules). Set
/// `SHMRING_NO_SIGBUS_GUARD=1` ([`crate::NO_SIGBUS_GUARD_VAR`]) in the environment to
/// leave SIGBUS alone: a truncated ring then kills the process.
/// [`crate::sigbus_guard_installed`] says whether it is installed.
pub struct RingWriter {
    inner: WriterInner,
    kind: RingKind,
    path: PathBuf,
    /// (device, inode) of the ring file, to recognise it at the path.
    identity: (u64, u64),
    /// The mapping's damage flag (the file shrank under it).
    damage: Damage,
    _file: File,
    /// Heartbeat stamp of this writer's previous commit (0: none yet).
    last_commit_stamp: u64,
}

impl RingWriter {
    /// Creates a new, empty ring at `path`, replacing any ring there that no writer
    /// holds: the new file is built beside it and renamed into place, and the old one is
    /// marked retired, so readers reopen. Missing parent directories are created 0700
    /// (0750 or 0755 when `options.mode` shares the file with the group or others).
    ///
    /// Fails with [`Error::WriterExists`] if a writer holds the existing ring, with
    /// [`Error::NotARingFile`] if the path is a symbolic link, a directory, a FIFO or
    /// anything but a regular file, and with [`Error::OtherOwner`] if the existing file
    /// belongs to another user (unless `options.allow_other_owner`).
    ///
    /// Every page of the new file is allocated before it is formatted, so the ring uses
    /// its full size in memory (`/dev/shm` is a tmpfs) from the start; a file system with
    /// less room fails with [`Error::NoSpace`], leaving whatever was at the path as it was
    /// and no temporary file behind.
    pub fn create(path: impl AsRef<Path>, options: &WriterOptions) -> Result<Self, Error> {
        let path = path.as_ref();
        let kind = options.kind().map_err(Error::layout(path))?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        open::create_dirs(&dir, options.mode).map_err(io_err(path, "create the directory of"))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| String::from("ring"));
        for _ in 0..OPEN_ATTEMPTS {
            // A ring another writer holds was refused by lock_at_path; one nobody holds is
            // replaced.
            let old = match lock_at_path(path, options)? {
                Locked::Held(file, meta) => Some((file, meta)),
                Locked::Replaced => continue,
                Locked::Missing => None,
            };
            let tmp = dir.join(format!(".{name}.{}.{}.tmp", std::process::id(), unix_ns()));
            let result = Self::build(path, &tmp, kind, options, old.as_ref());
            if result.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            match result {
                Err(Error::WriterExists { pid: None, .. }) if old.is_none() => continue,
                other => return other,
            }
        }
        Err(Error::WriterExists {
            path: path.to_path_buf(),
            pid: None,
        })
    }

    fn build(
        path: &Path,
        tmp: &Path,
        kind: RingKind,
        options: &WriterOptions,
        old: Option<&(File, Metadata)>,
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
        let len = kind.file_len();
        reserve(&file, path, tmp, len as u64)?;
        if !lock::try_lock_exclusive(&file).map_err(io_err(path, "lock"))? {
            return Err(Error::WriterExists {
                path: path.to_path_buf(),
                pid: None,
            });
        }
        let meta = file.metadata().map_err(io_err(path, "stat"))?;
        let words = MappedWords::map(&file, true, len).map_err(io_err(path, "map"))?;
        let damage = words.damage();
        let inner = match kind {
            RingKind::V1(g) => {
                let w = RegionWriter::format(words, g, unix_ns()).map_err(Error::layout(path))?;
                WriterInner::V1(w)
            }
            RingKind::Legacy { .. } => WriterInner::Legacy(LegacyWriter::format(words).map_err(Error::layout(path))?),
        };
        // The pages were reserved, so formatting cannot fault; if the file shrank under
        // us anyway (another process truncated the temporary file), it must not replace
        // the ring at the path.
        if damage.is_damaged() {
            return Err(Error::Truncated {
                path: path.to_path_buf(),
            });
        }
        let writer = RingWriter::assemble(inner, kind, path, file, &meta, damage, options);
        match old {
            Some((old, old_meta)) => {
                // Holding the old file's lock, and having checked after taking it that
                // the path still names it, no other writer can replace it meanwhile:
                // every writer checks the path the same way after locking.
                fs::rename(tmp, path).map_err(io_err(path, "replace"))?;
                retire_file(path, old, old_meta);
            }
            None => {
                // link() refuses to replace, so of two processes creating the same new
                // ring at once exactly one succeeds; the other retries and finds it.
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
    fn assemble(
        inner: WriterInner,
        kind: RingKind,
        path: &Path,
        file: File,
        meta: &Metadata,
        damage: Damage,
        options: &WriterOptions,
    ) -> Self {
        if let WriterInner::V1(w) = &inner {
            w.set_writer_pid(std::process::id() as u64);
            w.heartbeat(monotonic_ns());
        }
        let mut writer = RingWriter {
            inner,
            kind,
            path: path.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
            damage,
            _file: file,
            last_commit_stamp: 0,
        };
        writer.set_crc(options.crc);
        writer
    }

    /// Opens an existing ring and continues its stream: frame_seq carries on, and bytes
    /// a crashed writer left half-written are covered before anything is written.
    ///
    /// Refuses what [`Self::create`] refuses (symbolic links, non-regular files, other
    /// users' files), a ring its writer retired ([`Error::Retired`]: create a new one),
    /// and a file with neither a v1 descriptor nor a plausible legacy header.
    pub fn open(path: impl AsRef<Path>, options: &WriterOptions) -> Result<Self, Error> {
        let path = path.as_ref();
        for _ in 0..OPEN_ATTEMPTS {
            let (file, meta) = match lock_at_path(path, options)? {
                Locked::Held(file, meta) => (file, meta),
                Locked::Replaced => continue,
                Locked::Missing => return Err(Error::not_found(path)),
            };
            let (kind, words) = map_ring(path, &file, meta.len(), options.layout, true)?;
            let damage = words.damage();
            let inner = match kind {
                RingKind::V1(g) => {
                    if crate::region::load_state(&words, &g) == WriterState::Retired {
                        return Err(Error::retired(path));
                    }
                    let w = RegionWriter::resume(words).map_err(|source| Error::Damaged {
                        path: path.to_path_buf(),
                        source,
                    })?;
                    WriterInner::V1(w)
                }
                RingKind::Legacy { .. } => {
                    WriterInner::Legacy(LegacyWriter::resume(words).map_err(Error::layout(path))?)
                }
            };
            return Ok(RingWriter::assemble(inner, kind, path, file, &meta, damage, options));
        }
        Err(Error::WriterExists {
            path: path.to_path_buf(),
            pid: None,
        })
    }

    /// Continues the ring at `path` if it exists with the layout and geometry `options`
    /// ask for, and creates (or replaces) it otherwise. What a writer that may be
    /// restarting should call.
    pub fn open_or_create(path: impl AsRef<Path>, options: &WriterOptions) -> Result<Self, Error> {
        let path = path.as_ref();
        let wanted = options.kind().map_err(Error::layout(path))?;
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
            Err(Error::NotFound { .. })
            | Err(Error::Layout { .. })
            | Err(Error::Damaged { .. })
            | Err(Error::Retired { .. }) => Self::create(path, options),
            Err(e) => Err(e),
        }
    }

    /// Writes one frame and wakes sleeping readers; returns its frame_seq. Fails with
    /// [`Error::Truncated`] once another process has shrunk the ring file: the writer
    /// survives, but nothing it writes reaches readers any more; create the ring again. A commit that
    /// closely follows the previous one skips the `FUTEX_WAKE` system call; sleeping
    /// readers bound their sleep instead (see the wake module).
    pub fn write(&mut self, payload: &[u8], meta: FrameMeta) -> Result<u64, Error> {
        let seq = match &mut self.inner {
            WriterInner::V1(w) => {
                // The heartbeat stamp is read after the frame is committed and stored
                // before the commit's Release store of notify (`write_stamped`), so a
                // reader that Acquire-loads this commit's notify value reads a heartbeat
                // of at least `stamp` (its load in `RingReader::wait_until`), and a
                // spinning reader has the frame without waiting for the clock.
                let (seq, stamp) = w
                    .write_stamped(payload, meta, || Some(monotonic_ns()))
                    .map_err(Error::Write)?;
                let stamp = stamp.unwrap_or_default();
                if wake::writer_must_wake(self.last_commit_stamp, monotonic_ns()) {
                    futex::wake_all(w.notify_word());
                }
                self.last_commit_stamp = stamp;
                seq
            }
            WriterInner::Legacy(w) => w.write(payload, meta).map_err(Error::Write)?,
        };
        // The file shrank under the mapping (the write went to the zero pages that
        // replaced it, which no reader sees): say so on this and every later write.
        if self.damage.is_damaged() {
            return Err(Error::Truncated {
                path: self.path.clone(),
            });
        }
        Ok(seq)
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

    /// Marks the ring retired and closes it: readers reopen the path when another ring
    /// replaces it, and until then report [`Error::Retired`] once and wait.
    pub fn retire(self) {
        if let WriterInner::V1(w) = &self.inner {
            w.set_state(WriterState::Retired);
            futex::wake_all(w.notify_word());
        }
    }

    /// Retires the ring and deletes its file, if the path still names the file this
    /// writer opened (same device and inode): a file put there by someone else since (a
    /// new ring, or anything else) is left alone. True if the file was removed. For
    /// writers that own their ring's lifetime (a demo, a test).
    pub fn remove(self) -> Result<bool, Error> {
        let path = self.path.clone();
        let identity = self.identity;
        self.retire();
        let at_path = match fs::symlink_metadata(&path) {
            Ok(m) => (m.dev(), m.ino()) == identity,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(io_err(&path, "stat")(e)),
        };
        if !at_path {
            return Ok(false);
        }
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(&path, "remove")(e)),
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

/// How often `create` and `open` try again when the path was replaced between opening
/// and locking it (each retry means another writer made progress).
const OPEN_ATTEMPTS: usize = 8;

/// What [`lock_at_path`] found.
enum Locked {
    /// The file at the path, locked by this process, and still at the path after the lock
    /// was taken.
    Held(File, Metadata),
    /// The file was locked, but by then another writer had replaced it at the path.
    Replaced,
    /// Nothing at the path.
    Missing,
}

/// Opens the file at `path` and takes its writer lock, then checks that the path still
/// names that file (fstat of the descriptor against lstat of the path: device and
/// inode). Without that check a writer that opened a ring just before another writer
/// replaced it would lock the old, unlinked file and write where no reader looks.
fn lock_at_path(path: &Path, options: &WriterOptions) -> Result<Locked, Error> {
    let (file, meta) = match open::open_for_writing(path, options.allow_other_owner) {
        Ok(opened) => opened,
        Err(Error::NotFound { .. }) => return Ok(Locked::Missing),
        Err(e) => return Err(e),
    };
    #[cfg(feature = "test-hooks")]
    race_hook::run(path);
    if !lock::try_lock_exclusive(&file).map_err(io_err(path, "lock"))? {
        return Err(writer_exists(path, &file, &meta));
    }
    if !open::still_at_path(&meta, path) {
        return Ok(Locked::Replaced);
    }
    Ok(Locked::Held(file, meta))
}

#[cfg(feature = "test-hooks")]
/// Test support: a function run once, between a writer opening the file at a ring path
/// and locking it, so a test can replay the create/replace race deterministically.
pub mod race_hook {
    use std::path::Path;
    use std::sync::Mutex;

    static HOOK: Mutex<Option<fn(&Path)>> = Mutex::new(None);

    /// Runs `hook` the next time a writer of this process has opened a ring path and is
    /// about to lock it.
    pub fn run_once_before_lock(hook: fn(&Path)) {
        *HOOK.lock().unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }

    pub(crate) fn run(path: &Path) {
        let hook = HOOK.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(hook) = hook {
            hook(path);
        }
    }
}

fn writer_exists(path: &Path, file: &File, meta: &Metadata) -> Error {
    let pid = map_ring(path, file, meta.len(), LayoutChoice::V1, false)
        .ok()
        .and_then(|(kind, words)| match kind {
            RingKind::V1(g) => {
                let pid = crate::region::load_counters(&words, &g).writer_pid;
                u32::try_from(pid).ok().filter(|p| *p != 0)
            }
            RingKind::Legacy { .. } => None,
        })
        .or_else(|| lock::holder_pid(file));
    Error::WriterExists {
        path: path.to_path_buf(),
        pid,
    }
}

/// Sizes a new ring file to `len` bytes with every page allocated (`posix_fallocate`), so
/// that a full file system (a small `/dev/shm`) is [`Error::NoSpace`] here instead of a
/// SIGBUS at the first access of a page tmpfs cannot supply. `tmp` is the file's own
/// path, whose file system is the one measured for the error.
fn reserve(file: &File, path: &Path, tmp: &Path, len: u64) -> Result<(), Error> {
    let Ok(off_len) = libc::off_t::try_from(len) else {
        return Err(Error::NoSpace {
            path: path.to_path_buf(),
            needed: len,
            available: free_bytes(tmp),
        });
    };
    // SAFETY: the descriptor is open for writing (`file` owns it); posix_fallocate only
    // reads its arguments and returns an error number instead of setting errno.
    let rc = unsafe { libc::posix_fallocate(std::os::fd::AsRawFd::as_raw_fd(file), 0, off_len) };
    match rc {
        0 => Ok(()),
        libc::ENOSPC | libc::EFBIG => Err(Error::NoSpace {
            path: path.to_path_buf(),
            needed: len,
            available: free_bytes(tmp),
        }),
        // A file system that cannot allocate ahead (glibc then writes the blocks itself;
        // this is left for systems where even that is refused): a sparse file, as before.
        libc::EOPNOTSUPP | libc::EINVAL => file.set_len(len).map_err(io_err(path, "size")),
        errno => Err(io_err(path, "size")(io::Error::from_raw_os_error(errno))),
    }
}

/// Bytes free for an unprivileged user on the file system holding `path` (0 if it cannot
/// be measured).
fn free_bytes(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return 0;
    };
    // SAFETY: `c_path` is a NUL-terminated string and `stat` a writable statvfs struct for
    // which zero bytes are valid; statvfs only writes into it.
    unsafe {
        let mut stat: libc::statvfs = core::mem::zeroed();
        if libc::statvfs(c_path.as_ptr(), &mut stat) != 0 {
            return 0;
        }
        (stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64)
    }
}

/// Marks a v1 ring file retired (best effort: the file is being replaced anyway).
fn retire_file(path: &Path, file: &File, meta: &Metadata) {
    if let Ok((RingKind::V1(g), words)) = map_ring(path, file, meta.len(), LayoutChoice::V1, true) {
        futex::wake_all(crate::region::mark_retired(&words, &g));
    }
}
