//! The engine's critical sections, as the async engine and the loom models both run them.
//!
//! Each method is one short synchronous critical section (or, for the planted bugs, the broken
//! sequence of sections; compiled only with feature `planted-bugs`). Entering waits at most
//! `lock_timeout_ms`, then fails with [`EngineError::LockTimeout`] instead of hanging. Nothing
//! here awaits, so no lock can be held across an `.await`.

use super::check::Violation;
use super::core::{Core, Reservation};
use super::gc::GcSelection;
use super::spiral::DepthPpm;
use crate::clock::SharedClock;
use crate::error::EngineError;
use crate::sync::{Mutex, MutexGuard};

#[derive(Debug)]
#[cfg_attr(spiral_loom, allow(dead_code))] // loom waits on its own lock, with no deadline
pub struct CoreHandle {
    core: Mutex<Core>,
    clock: SharedClock,
    lock_timeout_ms: u64,
}

impl CoreHandle {
    pub fn new(core: Core, clock: SharedClock) -> Self {
        let lock_timeout_ms = core.config().lock_timeout_ms;
        Self {
            core: Mutex::new(core),
            clock,
            lock_timeout_ms,
        }
    }

    /// Enter the critical section, or give up after the lock timeout.
    pub fn enter(&self) -> Result<MutexGuard<'_, Core>, EngineError> {
        #[cfg(spiral_loom)]
        {
            Ok(crate::sync::lock(&self.core))
        }
        #[cfg(not(spiral_loom))]
        {
            if let Some(g) = crate::sync::try_lock(&self.core) {
                return Ok(g);
            }
            // Sections are microseconds long and never await, so contention clears almost at
            // once; the deadline is the safety net the spec asks for, not the normal path.
            let deadline =
                self.clock.now() + std::time::Duration::from_millis(self.lock_timeout_ms);
            loop {
                std::thread::yield_now();
                if let Some(g) = crate::sync::try_lock(&self.core) {
                    return Ok(g);
                }
                if self.clock.now() >= deadline {
                    return Err(EngineError::LockTimeout(self.lock_timeout_ms));
                }
            }
        }
    }

    /// Run `f` inside the critical section.
    pub fn with<R>(&self, f: impl FnOnce(&mut Core) -> R) -> Result<R, EngineError> {
        let mut g = self.enter()?;
        Ok(f(&mut g))
    }

    pub fn reserve_store(
        &self,
        tenant: &str,
        depth_ppm: DepthPpm,
        priority: i64,
        created_ms: u64,
        content_digest: &[u8; 32],
    ) -> Result<Reservation, EngineError> {
        self.with(|c| c.reserve_store(tenant, depth_ppm, priority, created_ms, content_digest))
    }

    /// Count a durable store.
    pub fn commit_store(&self, id: &str) -> Result<bool, EngineError> {
        #[cfg(feature = "planted-bugs")]
        if crate::planted!(CountRace) {
            // Planted: the count is read in one section and written back in another, so two
            // commits that interleave lose an increment.
            let Some((spiral, depth)) = self.with(|c| c.commit_store_uncounted(id))? else {
                return Ok(false);
            };
            let read = self.with(|c| c.read_counts(spiral))?;
            self.with(|c| c.write_counts(spiral, depth, read))?;
            return Ok(true);
        }
        self.with(|c| c.commit_store(id))
    }

    /// [`CoreHandle::commit_store`] for async callers. Under the planted `count-race` bug the
    /// task can be switched out between the read and the write-back — what a thread switch does
    /// under loom — so concurrent stores in the simulator lose increments too.
    pub async fn commit_store_async(&self, id: &str) -> Result<bool, EngineError> {
        #[cfg(feature = "planted-bugs")]
        if crate::planted!(CountRace) {
            let Some((spiral, depth)) = self.with(|c| c.commit_store_uncounted(id))? else {
                return Ok(false);
            };
            let read = self.with(|c| c.read_counts(spiral))?;
            tokio::task::yield_now().await;
            self.with(|c| c.write_counts(spiral, depth, read))?;
            return Ok(true);
        }
        self.commit_store(id)
    }

    pub fn abort_store(&self, id: &str) -> Result<(), EngineError> {
        self.with(|c| c.abort_store(id))
    }

    pub fn touch(&self, tenant: &str, id: &str) -> Result<bool, EngineError> {
        self.with(|c| c.touch(tenant, id))
    }

    pub fn begin_collect(&self, tenant: &str, id: &str) -> Result<bool, EngineError> {
        self.with(|c| c.begin_collect(tenant, id))
    }

    pub fn commit_collect(&self, id: &str) -> Result<bool, EngineError> {
        self.with(|c| c.commit_collect(id))
    }

    pub fn abort_collect(&self, id: &str) -> Result<(), EngineError> {
        self.with(|c| c.abort_collect(id))
    }

    pub fn gc_select(&self, limit: usize) -> Result<GcSelection, EngineError> {
        self.with(|c| c.gc_select(limit))
    }

    /// Uncount a node GC deleted.
    pub fn gc_commit(&self, id: &str) -> Result<bool, EngineError> {
        #[cfg(feature = "planted-bugs")]
        if crate::planted!(DoubleCollect) {
            // Planted: GC never marked its candidates, so it takes them only now — after a user's
            // collect may already have removed the same node.
            return self.with(|c| {
                c.force_collecting(id);
                c.commit_collect(id)
            });
        }
        self.commit_collect(id)
    }

    pub fn check(&self) -> Result<(), Violation> {
        match self.with(|c| c.check()) {
            Ok(r) => r,
            Err(e) => Err(Violation(e.to_string())),
        }
    }
}

#[cfg(test)]
#[cfg(not(spiral_loom))]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::SystemClock;
    use crate::engine::EngineConfig;

    #[test]
    fn a_section_held_too_long_is_a_timeout_error_not_a_hang() {
        let cfg = EngineConfig {
            lock_timeout_ms: 30,
            ..EngineConfig::default()
        };
        let handle = CoreHandle::new(Core::new(cfg, 1), Arc::new(SystemClock));
        let held = handle.enter().unwrap();
        assert_eq!(
            handle.with(|c| c.total()).unwrap_err(),
            EngineError::LockTimeout(30)
        );
        drop(held);
        assert_eq!(handle.with(|c| c.total()), Ok(0));
    }
}
