//! Locking the core object behind a Python object without deadlocking on the GIL.

use std::sync::{Mutex, MutexGuard, TryLockError};

use pyo3::Python;

/// Locks `mutex`, waiting with the GIL released if another thread holds it (that thread
/// may need the GIL to finish). A poisoned mutex is used anyway: a panic can only have
/// come from PyO3 or the allocator between complete calls into the core, which leave
/// its objects consistent.
pub(crate) fn lock<'a, T: Send>(py: Python<'_>, mutex: &'a Mutex<T>) -> MutexGuard<'a, T> {
    loop {
        match mutex.try_lock() {
            Ok(guard) => return guard,
            Err(TryLockError::Poisoned(poisoned)) => return poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => py.detach(|| drop(mutex.lock())),
        }
    }
}

/// Locks `mutex` if no other thread holds it (poisoned or not, as [`lock`]).
pub(crate) fn try_lock<T>(mutex: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match mutex.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}
