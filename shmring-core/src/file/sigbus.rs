//! Surviving a ring file that shrinks under its mapping.
//!
//! When another process truncates a mapped file, touching a page past the new end raises
//! SIGBUS, whose default action kills the process: one `truncate -s 100 RING` would take
//! down the writer, every reader and the transport server with all its viewers. A
//! process-wide SIGBUS handler, installed once, recovers faults inside ring mappings:
//!
//! 1. every ring mapping is registered (start, length, protection) in a fixed table of
//!    atomics before it is first touched, and unregistered before it is unmapped;
//! 2. on SIGBUS with `si_code == BUS_ADRERR` (access past the end of a mapped file) at an
//!    address inside a registered mapping, the handler flags that mapping damaged and maps
//!    anonymous zero pages over the whole of it (`MAP_FIXED`), then returns: the faulting
//!    access is retried and reads zeros (or writes into memory no one else sees);
//! 3. every other SIGBUS goes to the handler that was installed before (Rust's own stack
//!    overflow handler, or the application's), or, if there was none, restores the
//!    default action so the fault kills the process as it would have.
//!
//! The file layer checks the damage flag after each read and write (frames read while
//! it was raised are discarded: they may contain the zero pages) and compares the file's
//! size (fstat) with the mapping on its periodic checks, so a shrink is noticed even
//! before anything faults.
//!
//! The whole mapping is replaced, not only the faulting page, so the damaged ring faults
//! once, and no later access sees a mix of file pages and zero pages.

use core::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

/// Most ring mappings a process can have registered at once.
const SLOTS: usize = 1024;
/// `Slot::start` of a free slot.
const FREE: usize = 0;
/// `Slot::start` while a registration fills the slot in.
const CLAIMED: usize = 1;

/// One registered mapping. Only atomics: the signal handler reads them.
struct Slot {
    /// Start address, or `FREE` / `CLAIMED`.
    start: AtomicUsize,
    /// Length in bytes, a whole number of pages.
    len: AtomicUsize,
    /// `PROT_*` bits of the mapping.
    prot: AtomicI32,
    /// Set by the handler when it replaced the mapping, or by the file layer when fstat
    /// shows the file shorter than the mapping.
    damaged: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    start: AtomicUsize::new(FREE),
    len: AtomicUsize::new(0),
    prot: AtomicI32::new(0),
    damaged: AtomicBool::new(false),
};

static TABLE: [Slot; SLOTS] = [EMPTY; SLOTS];

/// A registered mapping; unregisters it when dropped (which must happen before the
/// mapping is unmapped).
pub(crate) struct Registration(&'static Slot);

/// Read access to a registered mapping's damage flag, for the writer and reader that
/// own the mapping (valid while the [`Registration`] lives).
#[derive(Clone, Copy)]
pub(crate) struct Damage(&'static Slot);

impl Damage {
    /// True if the mapping was replaced by zero pages or found longer than its file.
    pub(crate) fn is_damaged(&self) -> bool {
        // SYNC POINT (damage): Acquire pairs with the Release store in the handler or in
        // `mark`; the handler runs on the faulting thread, so a reader that faulted sees
        // its own flag in program order.
        self.0.damaged.load(Ordering::Acquire)
    }

    /// Records damage found without a fault (the file is shorter than the mapping).
    pub(crate) fn mark(&self) {
        // SYNC POINT (damage): Release pairs with the Acquire load in `is_damaged`.
        self.0.damaged.store(true, Ordering::Release);
    }
}

impl Registration {
    /// The mapping's damage flag.
    pub(crate) fn damage(&self) -> Damage {
        Damage(self.0)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // SYNC POINT (registration): Release pairs with the handler's Acquire load of
        // `start`; after this the handler no longer matches the range, and only then is
        // it unmapped (the owner drops the registration first).
        self.0.start.store(FREE, Ordering::Release);
    }
}

/// Registers the mapping at `start` of `len` bytes (`writable`: mapped read-write),
/// installing the handler on first use. `None` if the table is full.
pub(crate) fn register(start: *const u8, len: usize, writable: bool) -> Option<Registration> {
    handler::install();
    let page = page_size();
    let len = len.div_ceil(page) * page;
    for slot in TABLE.iter() {
        // SYNC POINT (registration): claiming a free slot needs no ordering with other
        // registrations beyond the CAS itself.
        if slot
            .start
            .compare_exchange(FREE, CLAIMED, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            slot.len.store(len, Ordering::Relaxed);
            let prot = if writable {
                libc::PROT_READ | libc::PROT_WRITE
            } else {
                libc::PROT_READ
            };
            slot.prot.store(prot, Ordering::Relaxed);
            slot.damaged.store(false, Ordering::Relaxed);
            // SYNC POINT (registration): Release pairs with the handler's Acquire load of
            // `start`: a handler that matches the range sees its length and protection.
            slot.start.store(start as usize, Ordering::Release);
            return Some(Registration(slot));
        }
    }
    None
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(page).ok().filter(|p| *p > 0).unwrap_or(4096)
}

/// The slot whose range holds `addr` (async-signal-safe: atomic loads only).
fn find(addr: usize) -> Option<&'static Slot> {
    TABLE.iter().find(|slot| {
        // SYNC POINT (registration): Acquire pairs with the Release store of `start` in
        // `register`.
        let start = slot.start.load(Ordering::Acquire);
        start > CLAIMED && addr >= start && addr - start < slot.len.load(Ordering::Relaxed)
    })
}

#[cfg(target_os = "linux")]
mod handler {
    use super::find;
    use core::sync::atomic::Ordering;
    use std::sync::{Once, OnceLock};

    /// The SIGBUS action that was installed before ours.
    static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
    static INSTALL: Once = Once::new();

    /// Installs the handler once per process.
    pub(super) fn install() {
        INSTALL.call_once(|| {
            // SAFETY: both sigaction structs are plain C structs for which zero bytes are
            // valid; the first call only reads the current action into `previous`.
            unsafe {
                let mut previous: libc::sigaction = core::mem::zeroed();
                if libc::sigaction(libc::SIGBUS, core::ptr::null(), &mut previous) != 0 {
                    return;
                }
                // Stored before ours is installed, so the handler always finds it.
                let _ = PREVIOUS.set(previous);
                let mut action: libc::sigaction = core::mem::zeroed();
                action.sa_sigaction = on_sigbus as *const () as libc::sighandler_t;
                // SA_ONSTACK: run on the thread's alternate stack if it has one (Rust's
                // threads do, for stack overflow reports). SIGBUS stays blocked while the
                // handler runs (no SA_NODEFER).
                action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(libc::SIGBUS, &action, core::ptr::null_mut());
            }
        });
    }

    /// The SIGBUS handler.
    extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        // SAFETY: `info` is the siginfo the kernel passed (SA_SIGINFO). Async-signal-safety:
        // this function only
        // - loads and stores lock-free atomics (the registration table, `PREVIOUS` through
        //   `OnceLock::get`, which is an atomic load once set: it was set before the
        //   handler was installed);
        // - calls mmap, sigaction and raise: system calls with no user-space state
        //   (sigaction and raise are async-signal-safe in POSIX; glibc's and musl's mmap
        //   are thin system-call wrappers that take no lock and only set errno);
        // - saves and restores errno, which those calls may change;
        // - calls the previous handler, which was written to be one.
        // It does not allocate, lock, print or unwind.
        unsafe {
            let errno = *libc::__errno_location();
            if (*info).si_code == libc::BUS_ADRERR {
                let addr = (*info).si_addr() as usize;
                if let Some(slot) = find(addr) {
                    // SYNC POINT (damage): Release pairs with `Damage::is_damaged`.
                    slot.damaged.store(true, Ordering::Release);
                    // The range is a live ring mapping: the faulting thread
                    // was accessing it through a borrow of the mapping's owner, which
                    // unregisters before unmapping and cannot do so while borrowed.
                    // MAP_FIXED replaces its pages atomically with zero pages of the
                    // same protection; the owner unmaps the range later as usual.
                    let start = slot.start.load(Ordering::Acquire);
                    let len = slot.len.load(Ordering::Relaxed);
                    let prot = slot.prot.load(Ordering::Relaxed);
                    let mapped = libc::mmap(
                        start as *mut libc::c_void,
                        len,
                        prot,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                        -1,
                        0,
                    );
                    if mapped != libc::MAP_FAILED {
                        *libc::__errno_location() = errno;
                        return;
                    }
                }
            }
            chain(sig, info, ctx);
            *libc::__errno_location() = errno;
        }
    }

    /// Passes a SIGBUS that is not a ring's on to the previous action.
    ///
    /// # Safety
    /// Called only from the signal handler, with its arguments.
    unsafe fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        let previous = PREVIOUS.get();
        let handler = previous.map_or(libc::SIG_DFL, |p| p.sa_sigaction);
        if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
            // Restore the default action; a fault then recurs when the instruction is
            // retried and kills the process as it would have without us, and a SIGBUS
            // sent by kill(2) is raised again (delivered once this handler returns).
            // SAFETY: zeroed sigaction with SIG_DFL is the default action.
            unsafe {
                let mut default: libc::sigaction = core::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(libc::SIGBUS, &default, core::ptr::null_mut());
                if (*info).si_code <= 0 {
                    libc::raise(libc::SIGBUS);
                }
            }
            return;
        }
        let flags = previous.map_or(0, |p| p.sa_flags);
        // SAFETY: `handler` is the function pointer the previous sigaction installed, of
        // the three-argument type with SA_SIGINFO and the one-argument type without.
        unsafe {
            if flags & libc::SA_SIGINFO != 0 {
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    core::mem::transmute(handler);
                f(sig, info, ctx);
            } else {
                let f: extern "C" fn(libc::c_int) = core::mem::transmute(handler);
                f(sig);
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod handler {
    /// Elsewhere only the fstat size checks detect a shrunk file.
    pub(super) fn install() {}
}
