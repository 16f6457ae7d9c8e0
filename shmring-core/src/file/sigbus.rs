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
//! 3. every other SIGBUS goes to the action that was installed before, exactly as if this
//!    handler were not there (see "Chaining" below).
//!
//! ## Chaining
//!
//! The previous action is read when the handler is installed and honoured as follows:
//! - a previous handler is called with the signals of its `sa_mask` blocked (this
//!   handler is installed with the same mask, and `SA_NODEFER` when it had it); one
//!   installed with `SA_RESETHAND` is called once, after which SIGBUS gets the default
//!   action, as the kernel would have done;
//! - `SIG_DFL`: the default action is restored, so the fault recurs when the
//!   instruction is retried and kills the process; a SIGBUS sent with `kill`/`raise` is
//!   raised again;
//! - `SIG_IGN`: a SIGBUS sent with `kill`/`raise` stays ignored. A real fault cannot be
//!   ignored (the instruction would fault again forever): Linux gives an ignored SIGBUS
//!   raised by a fault the default action, and so does this handler, so such a fault
//!   still kills the process, as it would have without shmring.
//!
//! A handler installed *after* this one (Python's `faulthandler.enable()`, for example)
//! sees ring faults first. `faulthandler` restores the action it replaced (this one)
//! and raises SIGBUS again with `raise`; that signal carries no fault address, so the
//! handler recognises it as a ring fault by checking with `fstat` whether a registered
//! ring file is now shorter than its mapping: it repairs that mapping and returns, the
//! faulting access is retried, and the process lives (having printed faulthandler's
//! "Fatal Python error: Bus error" traceback, and with faulthandler's SIGBUS handler
//! removed). A SIGBUS a process sends itself while one of its ring files is shorter than
//! its mapping is therefore taken for a ring fault.
//!
//! ## Opting out
//!
//! `SHMRING_NO_SIGBUS_GUARD=1` in the environment (read when the first ring is mapped)
//! leaves SIGBUS alone: the handler is never installed, and touching a truncated ring
//! kills the process with SIGBUS as it did before shmring had the guard. The size checks
//! below still report a shrink that happens while nothing touches the mapping.
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
    /// Length of the ring file when it was mapped (not rounded to pages).
    file_len: AtomicUsize,
    /// Descriptor of the mapped file, open while the slot is registered.
    fd: AtomicI32,
    /// Set by the handler when it replaced the mapping, or by the file layer when fstat
    /// shows the file shorter than the mapping.
    damaged: AtomicBool,
    /// Set by the handler when it replaced the mapping with zero pages.
    replaced: AtomicBool,
    /// Signal handlers using the slot right now (see `Registration::drop`).
    users: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    start: AtomicUsize::new(FREE),
    len: AtomicUsize::new(0),
    prot: AtomicI32::new(0),
    file_len: AtomicUsize::new(0),
    fd: AtomicI32::new(-1),
    damaged: AtomicBool::new(false),
    replaced: AtomicBool::new(false),
    users: AtomicUsize::new(0),
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
        self.0.start.store(FREE, Ordering::SeqCst);
        // SYNC POINT (handler use): SeqCst pairs with the handler's SeqCst increment of
        // `users` and load of `start` in `repair`: a handler that loaded the old start
        // is counted here, and the mapping and descriptor stay until it is done (a few
        // system calls; it never blocks).
        while self.0.users.load(Ordering::SeqCst) != 0 {
            core::hint::spin_loop();
        }
    }
}

/// Registers the mapping at `start` of `len` bytes of the file open as `fd` (`writable`:
/// mapped read-write), installing the handler on first use (unless the environment opts
/// out). `None` if the table is full. `fd` must stay open while the registration lives.
pub(crate) fn register(start: *const u8, len: usize, writable: bool, fd: i32) -> Option<Registration> {
    handler::install();
    let page = page_size();
    let file_len = len;
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
            slot.file_len.store(file_len, Ordering::Relaxed);
            slot.fd.store(fd, Ordering::Relaxed);
            slot.damaged.store(false, Ordering::Relaxed);
            slot.replaced.store(false, Ordering::Relaxed);
            // SYNC POINT (registration): Release pairs with the handler's Acquire load of
            // `start`: a handler that matches the range sees its length and protection.
            slot.start.store(start as usize, Ordering::Release);
            return Some(Registration(slot));
        }
    }
    None
}

/// The environment variable that keeps the SIGBUS handler from being installed (any
/// value but empty or `0`), read when the first ring is mapped.
pub const NO_SIGBUS_GUARD_VAR: &str = "SHMRING_NO_SIGBUS_GUARD";

/// True if the environment asks for no SIGBUS handler.
fn opted_out() -> bool {
    std::env::var_os(NO_SIGBUS_GUARD_VAR).is_some_and(|v| !v.is_empty() && v != "0")
}

/// True if this process's SIGBUS truncation guard is installed: a ring was mapped and
/// the environment did not opt out (`SHMRING_NO_SIGBUS_GUARD`). See
/// [`RingReader`](crate::RingReader) for what the guard does.
pub fn sigbus_guard_installed() -> bool {
    handler::installed()
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
    use super::{find, opted_out, Slot, CLAIMED, TABLE};
    use core::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Once, OnceLock};

    /// The SIGBUS action that was installed before ours.
    static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
    static INSTALL: Once = Once::new();
    /// Ours is installed.
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    /// The previous handler was one-shot (`SA_RESETHAND`) and has been called.
    static PREVIOUS_SPENT: AtomicBool = AtomicBool::new(false);

    /// Installs the handler once per process, unless the environment opts out.
    pub(super) fn install() {
        INSTALL.call_once(|| {
            if opted_out() {
                return;
            }
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
                // threads do, for stack overflow reports). The previous action's mask and
                // SA_NODEFER are ours too, so the previous handler, called from ours, runs
                // with the signals blocked that it asked for.
                action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | (previous.sa_flags & libc::SA_NODEFER);
                action.sa_mask = previous.sa_mask;
                if libc::sigaction(libc::SIGBUS, &action, core::ptr::null_mut()) == 0 {
                    INSTALLED.store(true, Ordering::Relaxed);
                }
            }
        });
    }

    /// True once the handler is installed.
    pub(super) fn installed() -> bool {
        INSTALLED.load(Ordering::Relaxed)
    }

    /// The SIGBUS handler.
    extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        // SAFETY: `info` is the siginfo the kernel passed (SA_SIGINFO). Async-signal-safety:
        // this function only
        // - loads and stores lock-free atomics (the registration table, `PREVIOUS` through
        //   `OnceLock::get`, which is an atomic load once set: it was set before the
        //   handler was installed);
        // - calls mmap, fstat, getpid, sigaction and raise: system calls with no
        //   user-space state (fstat, getpid, sigaction and raise are async-signal-safe in
        //   POSIX; glibc's and musl's mmap are thin system-call wrappers that take no lock
        //   and only set errno);
        // - saves and restores errno, which those calls may change;
        // - calls the previous handler, which was written to be one.
        // It does not allocate, lock, print or unwind.
        unsafe {
            let errno = *libc::__errno_location();
            let code = (*info).si_code;
            let repaired = if code == libc::BUS_ADRERR {
                find((*info).si_addr() as usize).is_some_and(|slot| repair(slot, false))
            } else if code <= 0 && (*info).si_pid() == libc::getpid() {
                // Raised by this process: a handler installed after ours (Python's
                // faulthandler) that caught a ring fault, restored ours and re-raised.
                repair_shrunk()
            } else {
                false
            };
            if !repaired {
                chain(sig, info, ctx);
            }
            *libc::__errno_location() = errno;
        }
    }

    /// Replaces `slot`'s mapping with zero pages and flags it damaged; with `if_shrunk`,
    /// only if its file is now shorter than it was when mapped (and the mapping was not
    /// replaced yet). True if it replaced the mapping.
    ///
    /// # Safety
    /// Called only from the signal handler.
    unsafe fn repair(slot: &'static Slot, if_shrunk: bool) -> bool {
        // SYNC POINT (handler use): SeqCst pairs with the SeqCst store of FREE and load of
        // `users` in `Registration::drop`: either that drop sees this increment and waits
        // for the decrement below, or this load of `start` sees FREE and leaves the slot
        // alone; so the mapping and the descriptor stay valid while used here.
        slot.users.fetch_add(1, Ordering::SeqCst);
        let start = slot.start.load(Ordering::SeqCst);
        let mut replaced = false;
        if start > CLAIMED && !(if_shrunk && (slot.replaced.load(Ordering::Relaxed) || !shrunk(slot))) {
            // SYNC POINT (damage): Release pairs with `Damage::is_damaged`.
            slot.damaged.store(true, Ordering::Release);
            // The range is a live ring mapping, held by the check above. MAP_FIXED
            // replaces its pages atomically with zero pages of the same protection; the
            // owner unmaps the range later as usual.
            let len = slot.len.load(Ordering::Relaxed);
            let prot = slot.prot.load(Ordering::Relaxed);
            // SAFETY: the range is the registered mapping, kept mapped by the `users`
            // count; mmap has no other preconditions.
            let mapped = unsafe {
                libc::mmap(
                    start as *mut libc::c_void,
                    len,
                    prot,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            replaced = mapped != libc::MAP_FAILED;
            if replaced {
                slot.replaced.store(true, Ordering::Relaxed);
            }
        }
        slot.users.fetch_sub(1, Ordering::SeqCst);
        replaced
    }

    /// True if the slot's file is shorter than it was when mapped.
    fn shrunk(slot: &Slot) -> bool {
        let fd = slot.fd.load(Ordering::Relaxed);
        // SAFETY: `st` is a writable stat struct for which zero bytes are valid; `fd` is
        // the mapped file's descriptor, open while the slot is held (see `repair`).
        unsafe {
            let mut st: libc::stat = core::mem::zeroed();
            libc::fstat(fd, &mut st) == 0 && (st.st_size as u64) < slot.file_len.load(Ordering::Relaxed) as u64
        }
    }

    /// Repairs every registered mapping whose file shrank; true if there was one.
    ///
    /// # Safety
    /// Called only from the signal handler.
    unsafe fn repair_shrunk() -> bool {
        let mut any = false;
        for slot in TABLE.iter() {
            if slot.start.load(Ordering::Acquire) > CLAIMED {
                // SAFETY: called from the signal handler, as `repair` requires.
                any |= unsafe { repair(slot, true) };
            }
        }
        any
    }

    /// Passes a SIGBUS that is not a ring's on to the previous action, as the kernel
    /// would have (see the module docs, "Chaining").
    ///
    /// # Safety
    /// Called only from the signal handler, with its arguments.
    unsafe fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        let previous = PREVIOUS.get();
        let mut handler = previous.map_or(libc::SIG_DFL, |p| p.sa_sigaction);
        let flags = previous.map_or(0, |p| p.sa_flags);
        let is_function = handler != libc::SIG_DFL && handler != libc::SIG_IGN;
        // A one-shot handler runs once; afterwards SIGBUS has the default action.
        if is_function && flags & libc::SA_RESETHAND != 0 && PREVIOUS_SPENT.swap(true, Ordering::Relaxed) {
            handler = libc::SIG_DFL;
        }
        // SAFETY: `info` is the kernel's siginfo.
        let sent = unsafe { (*info).si_code } <= 0;
        if handler == libc::SIG_IGN {
            if sent {
                // Sent with kill/raise: ignored, as before.
                return;
            }
            // A fault cannot be ignored (it would recur forever): Linux gives an ignored
            // SIGBUS raised by a fault the default action, and so do we.
            handler = libc::SIG_DFL;
        }
        if handler == libc::SIG_DFL {
            // Restore the default action; a fault then recurs when the instruction is
            // retried and kills the process as it would have without us, and a SIGBUS
            // sent by kill(2) is raised again (delivered once this handler returns).
            // SAFETY: zeroed sigaction with SIG_DFL is the default action.
            unsafe {
                let mut default: libc::sigaction = core::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(libc::SIGBUS, &default, core::ptr::null_mut());
                if sent {
                    libc::raise(libc::SIGBUS);
                }
            }
            return;
        }
        // SAFETY: `handler` is the function pointer the previous sigaction installed, of
        // the three-argument type with SA_SIGINFO and the one-argument type without; it
        // runs with its own sa_mask blocked (ours is the same).
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

    /// Never installed elsewhere.
    pub(super) fn installed() -> bool {
        false
    }
}
