//! The atomics every protocol module uses, switched between real `core` atomics and
//! loom's model-checked ones by `--cfg shmring_loom`. Protocol code imports only from here,
//! so the code loom checks is the code that ships.

#[cfg(not(shmring_loom))]
#[cfg(not(shmring_loom))]
pub(crate) use core::sync::atomic::{fence, AtomicU64, Ordering};

#[cfg(shmring_loom)]
#[cfg(shmring_loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU64, Ordering};
