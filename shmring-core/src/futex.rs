//! Sleeping until the writer commits: a futex on the low 32 bits of the trailer's notify
//! word on Linux, short sleeps elsewhere.

use core::sync::atomic::AtomicU64;
use std::time::Duration;

/// Address of the 32 bits of `word` that change with every increment.
#[cfg(target_os = "linux")]
fn futex_addr(word: &AtomicU64) -> *const u32 {
    let base = word.as_ptr() as *const u32;
    if cfg!(target_endian = "little") {
        base
    } else {
        base.wrapping_add(1)
    }
}

/// Sleeps until the notify word's low 32 bits differ from `seen`, a wake-up arrives, or
/// `timeout` passes. Spurious returns are possible; callers re-check.
#[cfg(target_os = "linux")]
pub(crate) fn wait(word: &AtomicU64, seen: u64, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: the address points into a live shared mapping (the word borrowed for this
    // call), is 4-byte aligned (an 8-byte aligned word), and FUTEX_WAIT only reads it.
    // The operation is not FUTEX_PRIVATE because writer and readers are different
    // processes. `ts` outlives the call. Errors (EAGAIN: value changed; EINTR;
    // ETIMEDOUT) all mean "re-check", which the caller does.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            futex_addr(word),
            libc::FUTEX_WAIT,
            seen as u32,
            &ts as *const libc::timespec,
            core::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes every reader sleeping on the notify word.
#[cfg(target_os = "linux")]
pub(crate) fn wake_all(word: &AtomicU64) {
    // SAFETY: as in `wait`; FUTEX_WAKE does not access the memory beyond resolving the
    // address, and `i32::MAX` wakes all waiters.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            futex_addr(word),
            libc::FUTEX_WAKE,
            i32::MAX,
            0usize,
            0usize,
            0u32,
        );
    }
}

/// Polling fallback: sleeps a short while.
#[cfg(not(target_os = "linux"))]
pub(crate) fn wait(_word: &AtomicU64, _seen: u64, timeout: Duration) {
    std::thread::sleep(timeout.min(Duration::from_micros(500)));
}

/// Polling fallback: nothing to wake.
#[cfg(not(target_os = "linux"))]
pub(crate) fn wake_all(_word: &AtomicU64) {}
