//! File-backed rings: [`RingWriter`] and [`RingReader`] over a memory-mapped file
//! (usually in `/dev/shm`), with the single-writer lock, futex wake-ups, liveness and
//! reopening of replaced rings.
//!
//! - `mapping`: the shared mapping of a ring file, seen as words;
//! - `kind`: layout detection ([`LayoutChoice`], [`RingKind`]);
//! - `error`: [`Error`], what can go wrong with a ring file;
//! - `writer`: [`RingWriter`] and [`WriterOptions`];
//! - `reader`: [`RingReader`] and [`Frame`];
//! - `status`: [`RingStatus`] and [`WriterStatus`], a reader's view of the counters.

mod error;
mod kind;
mod mapping;
mod open;
mod reader;
mod sigbus;
mod status;
mod writer;

pub use error::Error;
pub use kind::{LayoutChoice, RingKind};
pub use reader::{Frame, RingReader};
pub use sigbus::{sigbus_guard_installed, NO_SIGBUS_GUARD_VAR};
pub use status::{RingStatus, WriterStatus};
#[cfg(feature = "test-hooks")]
pub use writer::race_hook;
pub use writer::{RingWriter, WriterOptions};

/// CLOCK_MONOTONIC in nanoseconds: the clock of the heartbeat word, shared by every
/// process on the machine (containers included).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub(crate) fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
