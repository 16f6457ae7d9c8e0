//! Opening ring paths without surprises: no blocking on a FIFO, no ring in a directory,
//! no writing through a symbolic link or into another user's file, parent directories
//! with exactly the mode asked for.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::vec::Vec;

use super::error::io_err;
use super::Error;

/// Opens `path` read-only for a reader. `O_NONBLOCK` keeps a FIFO at the path from
/// blocking the open (it has no effect on regular files); anything but a regular file
/// is refused. Readers follow symbolic links: they only ever read.
pub(crate) fn open_for_reading(path: &Path) -> Result<(File, Metadata), Error> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(open_err(path))?;
    let meta = file.metadata().map_err(io_err(path, "stat"))?;
    check_regular(path, &meta)?;
    Ok((file, meta))
}

/// Opens `path` read-write for a writer: `O_NOFOLLOW` (a link could point at another
/// ring), `O_NONBLOCK` (a FIFO must not block), regular files only, and only files of
/// this process's user unless `allow_other_owner`.
pub(crate) fn open_for_writing(path: &Path, allow_other_owner: bool) -> Result<(File, Metadata), Error> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(open_err(path))?;
    let meta = file.metadata().map_err(io_err(path, "stat"))?;
    check_regular(path, &meta)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if meta.uid() != uid && !allow_other_owner {
        return Err(Error::OtherOwner {
            path: path.to_path_buf(),
            owner: meta.uid(),
            uid,
        });
    }
    Ok((file, meta))
}

/// Maps the errors of open(2) that mean "not a ring file" to [`Error::NotARingFile`].
fn open_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |e| match e.raw_os_error() {
        Some(libc::ELOOP) if is_symlink(path) => not_a_ring_file(path, "a symbolic link"),
        Some(libc::EISDIR) => not_a_ring_file(path, "a directory"),
        // Opening a FIFO for writing without a reader, or a device without its driver.
        Some(libc::ENXIO) | Some(libc::ENODEV) => not_a_ring_file(path, what_is_at(path)),
        _ => io_err(path, "open")(e),
    }
}

fn is_symlink(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

fn not_a_ring_file(path: &Path, what: &'static str) -> Error {
    Error::NotARingFile {
        path: path.to_path_buf(),
        what,
    }
}

fn what_is_at(path: &Path) -> &'static str {
    fs::symlink_metadata(path).map_or("not a regular file", |m| describe(&m))
}

fn describe(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

fn check_regular(path: &Path, meta: &Metadata) -> Result<(), Error> {
    if meta.file_type().is_file() {
        Ok(())
    } else {
        Err(not_a_ring_file(path, describe(meta)))
    }
}

/// True if `path` still names the file `meta` describes (same device and inode; a
/// symbolic link at the path is not the file).
pub(crate) fn still_at_path(meta: &Metadata, path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino()))
}

/// Mode of the parent directories a writer creates for a ring file of `file_mode`: only
/// the owner (0700), plus read and search for the group or others the file is shared
/// with (0750 for a 0660 ring).
pub(crate) fn dir_mode(file_mode: u32) -> u32 {
    let mut mode = 0o700;
    if file_mode & 0o060 != 0 {
        mode |= 0o050;
    }
    if file_mode & 0o006 != 0 {
        mode |= 0o005;
    }
    mode
}

/// Creates the missing directories of `dir` with [`dir_mode`]`(file_mode)`, set
/// explicitly whatever the umask. Existing directories are left as they are.
pub(crate) fn create_dirs(dir: &Path, file_mode: u32) -> io::Result<()> {
    let mode = dir_mode(file_mode);
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at {
        if d.as_os_str().is_empty() || fs::symlink_metadata(d).is_ok() {
            break;
        }
        missing.push(d.to_path_buf());
        at = d.parent();
    }
    for d in missing.iter().rev() {
        match fs::DirBuilder::new().mode(mode).create(d) {
            Ok(()) => fs::set_permissions(d, fs::Permissions::from_mode(mode))?,
            // Another process made it meanwhile: leave its mode alone.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    if !fs::metadata(dir)?.is_dir() {
        return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
    }
    Ok(())
}
