//! The atomics every protocol module uses, switched between real `core` atomics and
//! loom's model-checked ones by `--cfg shmring_loom`. Protocol code imports only from here,
//! so the code loom checks is the code that ships.

#[cfg(all(not(shmring_loom), target_has_atomic = "64"))]
pub(crate) use core::sync::atomic::AtomicU64;
#[cfg(not(shmring_loom))]
pub(crate) use core::sync::atomic::{fence, Ordering};
// Targets without native 64-bit atomics (thumbv7m, for instance) get portable-atomic's,
// built on a critical section the final binary provides.
#[cfg(all(not(shmring_loom), not(target_has_atomic = "64")))]
pub(crate) use portable_atomic::AtomicU64;

#[cfg(shmring_loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU64, Ordering};
