//! The one seam for locks and atomics: std primitives normally, loom's under `--cfg spiral_loom`,
//! so loom explores every interleaving of the engine's critical sections without rebuilding tokio.
//!
//! Lock-protected state is plain synchronous code; no lock is ever held across an `.await`
//! (`clippy::await_holding_lock` is denied workspace-wide).

#[cfg(not(spiral_loom))]
pub use std::sync::{
    Arc, Mutex, MutexGuard,
    atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering},
};

#[cfg(spiral_loom)]
pub use loom::sync::{
    Arc, Mutex, MutexGuard,
    atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering},
};

/// Lock, recovering from poisoning: the state behind our locks is kept consistent by
/// construction (each critical section validates before it mutates), so a panic elsewhere must
/// not take the whole server down with it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Non-blocking attempt; `None` when another holder has it.
pub fn try_lock<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(g) => Some(g),
        #[cfg(not(spiral_loom))]
        Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
        #[cfg(spiral_loom)]
        Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}
