//! A lossy single-writer, many-reader broadcast ring for encoded video frames (or any
//! byte messages) in shared memory.
//!
//! One writer publishes frames into a ring file (usually in `/dev/shm`); any number of
//! reader processes copy them out. The writer never waits for readers. A reader that
//! falls a whole lap behind loses frames, is told how many, and resumes at the newest
//! keyframe. No torn frame is ever delivered, with or without CRC: every copy is
//! validated against the writer's published intent after it is made.
//!
//! The byte layout (the seed's control block and 32-byte frame header, plus a v1 trailer)
//! and the protocol are specified in `docs/protocol.md`.
//!
//! # Layers
//! - `no_std`, no allocation: [`RegionWriter`] and [`RegionReader`] over any
//!   `Deref<Target = [Word]>` (a heap slice, or a mapping), and the legacy single-slot
//!   [`LegacyWriter`] / [`LegacyReader`].
//! - `std` (default feature): [`RingWriter`] / [`RingReader`] over files, with the
//!   single-writer lock, futex wake-ups, liveness and reopening of replaced rings.
//!
//! ```
//! # #[cfg(feature = "std")] {
//! use shmring_core::{RingWriter, RingReader, WriterOptions, ReaderOptions, FrameMeta};
//! let dir = std::env::temp_dir().join(format!("shmring-doc-{}", std::process::id()));
//! let path = dir.join("ring");
//! let mut writer = RingWriter::create(&path, &WriterOptions::default()).unwrap();
//! let mut reader = RingReader::open(&path, &ReaderOptions::default()).unwrap();
//! writer.write(b"an access unit", FrameMeta::keyframe(42)).unwrap();
//! let frame = reader.read_timeout(Some(std::time::Duration::from_secs(1))).unwrap().unwrap();
//! assert_eq!(frame.payload, b"an access unit");
//! assert_eq!(frame.info.frame_id, 42);
//! # drop((writer, reader)); std::fs::remove_dir_all(dir).unwrap();
//! # }
//! ```
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod error;
mod frame;
pub mod layout;
mod legacy;
#[cfg(feature = "test-hooks")]
pub mod lines;
mod reader;
mod reading;
mod region;
mod sync;
mod tally;
mod words;
mod writer;

#[cfg(all(feature = "std", not(shmring_loom)))]
mod cadence;
#[cfg(all(feature = "std", not(shmring_loom)))]
mod file;
#[cfg(all(feature = "std", not(shmring_loom)))]
mod futex;
#[cfg(all(feature = "std", not(shmring_loom)))]
mod lock;
#[cfg(all(feature = "std", not(shmring_loom)))]
mod wake;

pub use error::{ReadError, RingStateError, WriteError};
pub use frame::{Codec, FrameInfo, FrameMeta};
pub use layout::{FrameHeader, Geometry, LayoutError, WriterState};
pub use legacy::{LegacyReader, LegacyWriter};
pub use reader::RegionReader;
pub use reading::{ReaderOptions, ReaderStats, StartPosition, WakePolicy};
pub use writer::RegionWriter;

/// Test support (the `test-hooks` feature, for this crate's own tests): a function run
/// between a writer opening a ring path and locking it.
#[cfg(all(feature = "std", feature = "test-hooks", not(shmring_loom)))]
pub use file::race_hook;
#[cfg(all(feature = "std", not(shmring_loom)))]
pub use file::{
    monotonic_ns, sigbus_guard_installed, Error, Frame, LayoutChoice, RingKind, RingReader, RingStatus, RingWriter,
    WriterOptions, WriterStatus, NO_SIGBUS_GUARD_VAR,
};

/// The word type regions are made of: `core`'s `AtomicU64`, or loom's under
/// `--cfg shmring_loom`.
#[cfg(all(not(shmring_loom), target_has_atomic = "64"))]
pub use core::sync::atomic::AtomicU64 as Word;
/// The word type regions are made of: `core`'s `AtomicU64`, or loom's under
/// `--cfg shmring_loom`.
#[cfg(shmring_loom)]
pub use loom::sync::atomic::AtomicU64 as Word;
/// The word type regions are made of (portable-atomic's on targets without native 64-bit
/// atomics).
#[cfg(all(not(shmring_loom), not(target_has_atomic = "64")))]
pub use portable_atomic::AtomicU64 as Word;

/// The repository README's Rust example (`cargo add shmring-core`), run by
/// `cargo test --doc` so the README cannot drift from the API.
#[cfg(all(doctest, feature = "std"))]
#[doc = include_str!("../../README.md")]
pub struct RepositoryReadme;

/// This crate's README example (the crates.io page), run by `cargo test --doc`.
#[cfg(all(doctest, feature = "std"))]
#[doc = include_str!("../README.md")]
pub struct CrateReadme;
