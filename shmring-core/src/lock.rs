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

/// The pid of a process whose open file holds the writer lock on `file`'s inode, for
/// rings without a trailer that records it (legacy files).
///
/// `/proc/locks` and `F_OFD_GETLK` cannot say: an OFD lock belongs to an open file, not
/// a process, so both report its pid as -1. But Linux lists each lock again in the
/// `fdinfo` of every descriptor of the open file that holds it (a `lock:` line), so
/// the holder is the process with a descriptor of this inode whose `fdinfo` shows an
/// `OFDLCK ... WRITE` lock. Only processes this one may inspect are found (same user,
/// or root; same pid namespace): `None` otherwise. After a `fork` every process sharing
/// the open file holds the lock; the lowest pid found is reported. Walks every
/// process's descriptors, so it is for error paths only.
#[cfg(target_os = "linux")]
pub(crate) fn holder_pid(file: &File) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().ok()?;
    let (dev, ino) = (meta.dev(), meta.ino());
    let mut pids: std::vec::Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids.into_iter().find(|&pid| holds_write_lock(pid, dev, ino))
}

/// The pid of the process holding the writer lock (see the Linux version).
#[cfg(not(target_os = "linux"))]
pub(crate) fn holder_pid(_file: &File) -> Option<u32> {
    None
}

/// True if process `pid` has a descriptor of inode `(dev, ino)` whose open file holds an
/// OFD write lock. Unreadable entries (permissions, a process that just exited) count as
/// "no".
#[cfg(target_os = "linux")]
fn holds_write_lock(pid: u32, dev: u64, ino: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(fds) = std::fs::read_dir(std::format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok).any(|fd| {
        // metadata() follows the /proc/PID/fd/N link to the open file itself.
        let same_file = std::fs::metadata(fd.path()).is_ok_and(|m| m.dev() == dev && m.ino() == ino);
        same_file && {
            let fdinfo = std::format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy());
            std::fs::read_to_string(fdinfo).is_ok_and(|text| text.lines().any(is_ofd_write_lock))
        }
    })
}

/// True for an `fdinfo` line recording an OFD write lock, such as
/// `lock:\t1: OFDLCK ADVISORY  WRITE -1 00:1a:1234 0 EOF`.
#[cfg(target_os = "linux")]
fn is_ofd_write_lock(line: &str) -> bool {
    let mut fields = line.split_whitespace();
    fields.next() == Some("lock:") && {
        let rest: std::vec::Vec<&str> = fields.collect();
        rest.contains(&"OFDLCK") && rest.contains(&"WRITE")
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::is_ofd_write_lock;

    #[test]
    fn recognises_ofd_write_lock_lines() {
        assert!(is_ofd_write_lock(
            "lock:\t1: OFDLCK ADVISORY  WRITE -1 00:1a:1234 0 EOF"
        ));
        assert!(!is_ofd_write_lock(
            "lock:\t1: OFDLCK ADVISORY  READ -1 00:1a:1234 0 EOF"
        ));
        assert!(!is_ofd_write_lock(
            "lock:\t1: POSIX  ADVISORY  WRITE 4121 00:1a:1234 0 EOF"
        ));
        assert!(!is_ofd_write_lock("flags:\t0100002"));
    }
}
