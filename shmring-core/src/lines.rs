//! Test support (the `test-hooks` feature, for this crate's own tests): which cache lines
//! of a region the protocol code touches.
//!
//! [`trace`] runs a closure with recording on for the calling thread and returns every
//! word access it made through the protocol's word functions, in order, as the 64-byte
//! line of the region it fell in (byte offset / 64: a mapped ring file starts on a page,
//! so these are the machine's cache lines). A line one side stores to and the other
//! loads from, per message, moves between their cores once per message.

use std::cell::RefCell;
use std::vec::Vec;

/// One recorded access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Touch {
    /// Region byte offset / 64.
    pub line: usize,
    /// True for a store, false for a load.
    pub store: bool,
}

std::thread_local! {
    static TRACE: RefCell<Option<Vec<Touch>>> = const { RefCell::new(None) };
}

/// Runs `f` and returns its result with the accesses it made on this thread, in order
/// (consecutive accesses to the same line in the same direction are recorded once).
pub fn trace<R>(f: impl FnOnce() -> R) -> (R, Vec<Touch>) {
    TRACE.with(|t| *t.borrow_mut() = Some(Vec::new()));
    let r = f();
    let touches = TRACE.with(|t| t.borrow_mut().take()).unwrap_or_default();
    (r, touches)
}

/// Records an access of `len` bytes at region byte offset `off`, if this thread traces.
pub(crate) fn note(off: usize, len: usize, store: bool) {
    if len == 0 {
        return;
    }
    TRACE.with(|t| {
        if let Some(v) = t.borrow_mut().as_mut() {
            for line in off / 64..=(off + len - 1) / 64 {
                let touch = Touch { line, store };
                if v.last() != Some(&touch) {
                    v.push(touch);
                }
            }
        }
    });
}
