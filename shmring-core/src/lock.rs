//! The single-writer lock: an exclusive open-file-description (OFD) lock on the ring
//! file. Like `flock` it belongs to the open file and the kernel drops it when the writer
//! dies, so a restarted writer can take over; unlike `flock` another process can test it
//! without taking it (F_OFD_GETLK), so readers and `shmring stat` probe liveness without
//! ever getting in a starting writer's way.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

#[cfg(target_os = "linux")]
fn whole_file(kind: libc::c_short) -> libc::flock {
    // SAFETY: `flock` is a plain C struct for which all-zero bytes are valid.
    let mut fl: libc::flock = unsafe { core::mem::zeroed() };
    fl.l_type = kind;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = 0;
    fl.l_len = 0;
    fl.l_pid = 0;
    fl
}

/// Takes the exclusive lock; `Ok(false)` if another open file holds it.
#[cfg(target_os = "linux")]
pub(crate) fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    let fl = whole_file(libc::F_WRLCK as libc::c_short);
    // SAFETY: valid fd owned by `file`; `fl` is a valid flock struct for F_OFD_SETLK.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(e),
    }
}

/// True if some open file holds the writer lock (a live writer).
#[cfg(target_os = "linux")]
pub(crate) fn is_locked(file: &File) -> io::Result<bool> {
    let mut fl = whole_file(libc::F_RDLCK as libc::c_short);
    // SAFETY: valid fd; F_OFD_GETLK only fills in `fl`.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

/// Takes the exclusive lock; `Ok(false)` if another open file holds it.
#[cfg(not(target_os = "linux"))]
pub(crate) fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    // SAFETY: valid fd owned by `file`.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// True if a writer holds the lock (probed by briefly taking a shared lock).
#[cfg(not(target_os = "linux"))]
pub(crate) fn is_locked(file: &File) -> io::Result<bool> {
    // SAFETY: valid fd owned by `file`.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    if r == 0 {
        // SAFETY: as above; releases the probe.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
        return Ok(false);
    }
    Ok(true)
}

/// The pid holding a lock on the file with inode `ino`, from /proc/locks (for rings
/// without a trailer that records it).
pub(crate) fn holder_pid_from_proc(ino: u64) -> Option<u32> {
    let text = std::fs::read_to_string("/proc/locks").ok()?;
    text.lines().find_map(|line| {
        let fields: std::vec::Vec<&str> = line.split_whitespace().collect();
        // "1: OFDLCK ADVISORY WRITE <pid> <maj:min:ino> <start> <end>"
        let (pid, dev_ino) = (fields.get(4)?, fields.get(5)?);
        let line_ino: u64 = dev_ino.rsplit(':').next()?.parse().ok()?;
        let pid: i64 = pid.parse().ok()?;
        (line_ino == ino && pid > 0).then_some(pid as u32)
    })
}
