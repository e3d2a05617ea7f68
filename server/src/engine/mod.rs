//! The spiral memory engine (SPEC §1.5): spirals of memory nodes, a weighted spiral selection,
//! a time-budgeted garbage collector, rebuild-stats and meta snapshots, over any [`Storage`](crate::storage::Storage).
//!
//! Storage I/O never happens inside the critical section: a store reserves (Pending), persists,
//! then commits or aborts; a collect takes the node (Collecting), deletes, then commits or aborts.
//! See [`core`] for the state machine and [`handle`] for the critical sections.
//!
//! # Layout
//! The synchronous core, one lock around all of it:
//! - [`core`] — the [`Core`] with its node states and the store and collect sections.
//! - [`sigil`] — node ids: derive, parse, format.
//! - [`spiral`] — spiral selection, statistics and quantum links; depth in parts per million.
//! - [`gc`] — when a GC pass is due and which nodes it takes.
//! - [`rebuild`] — counts from a meta snapshot, reconciled with a storage scan.
//! - [`check`] — invariants 1 and 3 as far as the index can tell.
//! - [`handle`] — the critical sections around the core, with the lock timeout.
//!
//! The async shell around it, this module's [`Engine`]:
//! - `records` — the stored record, storage keys, requests, views, reports and events.
//! - `validate` — argument checks at the edge.
//! - `gc_pass` — the time-budgeted GC pass and its cumulative figures.
//! - `meta` — rebuild-stats, meta snapshots and the invariant check against storage.
//! - [`config`] — the engine's settings.

pub mod check;
pub mod config;
pub mod core;
pub mod gc;
pub mod handle;
pub mod rebuild;
pub mod sigil;
pub mod spiral;

mod gc_pass;
mod meta;
#[cfg(feature = "planted-bugs")]
mod planted;
mod records;
mod validate;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

pub use self::check::Violation;
pub use self::config::EngineConfig;
use self::core::{Core, NodeState};
use self::handle::CoreHandle;
use self::meta::parse_meta_counts;
pub use self::rebuild::Correction;
pub use self::records::{
    EngineEvent, GcReport, GcTotals, META_GENERATION, META_LATEST, META_SNAPSHOT_PREFIX,
    NODE_PREFIX, NodeRecord, RebuildReport, SpiralsView, StoreRequest, Stored, node_key,
};
pub use self::spiral::SpiralStats;
use self::spiral::{depth_to_ppm, ppm_to_depth, spiral_id};
pub use self::validate::PRIORITY_RANGE;
use self::validate::valid_sigil;
use crate::clock::SharedClock;
use crate::error::{EngineError, StorageError};
use crate::storage::SharedStorage;

#[derive(Debug)]
struct Inner {
    core: CoreHandle,
    storage: SharedStorage,
    clock: SharedClock,
    cfg: EngineConfig,
    events: broadcast::Sender<EngineEvent>,
    /// One GC pass and one rebuild at a time.
    gc_running: crate::sync::AtomicBool,
    rebuild_gate: tokio::sync::Mutex<()>,
    gc_stats: crate::sync::Mutex<GcTotals>,
    /// This open's boot generation (the storage counter `meta:generation`).
    generation: i64,
}

/// The engine. Cheap to clone: clones share one state.
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// Open the engine over `storage`: initialise it, load `meta:latest`, then verify it with a
    /// rebuild (whose corrections the caller may print) and write a fresh snapshot.
    pub async fn open(
        storage: SharedStorage,
        cfg: EngineConfig,
        clock: SharedClock,
        seed: u64,
    ) -> Result<(Engine, RebuildReport), EngineError> {
        cfg.validate().map_err(EngineError::BadRequest)?;
        storage.init().await?;
        let generation = storage.atomic_incr(META_GENERATION, 1).await?;
        let mut core = Core::new(cfg.clone(), seed);
        core.set_generation(generation);
        let (events, _) = broadcast::channel(1024);
        let engine = Engine {
            inner: Arc::new(Inner {
                core: CoreHandle::new(core, clock.clone()),
                storage,
                clock,
                cfg,
                events,
                gc_running: crate::sync::AtomicBool::new(false),
                rebuild_gate: tokio::sync::Mutex::new(()),
                gc_stats: crate::sync::Mutex::new(GcTotals::default()),
                generation,
            }),
        };
        if let Some(meta) = engine.inner.storage.get(META_LATEST).await? {
            let counts = parse_meta_counts(&meta);
            engine.inner.core.with(|c| c.load_counts(&counts))?;
        }
        let report = engine.rebuild_stats().await?;
        Ok((engine, report))
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.cfg
    }

    pub fn storage(&self) -> &SharedStorage {
        &self.inner.storage
    }

    pub fn subscribe(&self) -> broadcast::Receiver<EngineEvent> {
        self.inner.events.subscribe()
    }

    fn publish(&self, event: EngineEvent) {
        // Nobody listening is fine.
        let _ = self.inner.events.send(event);
    }

    /// Run one engine operation to its end even if its caller goes away — a client hanging up
    /// mid-request drops its handler — as a task of its own whose result the caller awaits.
    /// Dropping the caller then leaves nothing half-done: no GC pass marked running forever, no
    /// store left Pending, no collect left Collecting. Every public operation that changes state
    /// goes through here.
    async fn detached<T, F>(&self, op: F) -> Result<T, EngineError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, EngineError>> + Send + 'static,
    {
        if crate::planted!(CancelUnsafe) {
            // Planted: the operation runs in its caller's task and dies with it.
            return op.await;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            if tx.send(op.await).is_err() {
                crate::reached!("engine.caller_gone");
            }
        });
        rx.await
            .map_err(|_| EngineError::Internal("engine task ended without an answer".into()))?
    }

    /// Store a node for `tenant`. Acknowledged (Ok) only once the node is durable. Safe to
    /// cancel: the store completes (or fails) on its own.
    pub async fn store(&self, tenant: &str, req: StoreRequest) -> Result<Stored, EngineError> {
        let (engine, tenant) = (self.clone(), tenant.to_owned());
        self.detached(async move { engine.store_here(&tenant, req).await })
            .await
    }

    async fn store_here(&self, tenant: &str, req: StoreRequest) -> Result<Stored, EngineError> {
        let depth = validate::store_args(tenant, &req)?;
        let depth_ppm = depth_to_ppm(depth);
        let priority = req.priority.unwrap_or(0);
        let content_bytes = serde_json::to_vec(&req.content).unwrap_or_default();
        let digest: [u8; 32] = Sha256::digest(&content_bytes).into();
        let created_ms = self.inner.clock.unix_ms();

        let r = self
            .inner
            .core
            .reserve_store(tenant, depth_ppm, priority, created_ms, &digest)?;
        let record = NodeRecord {
            id: r.id.clone(),
            tenant: tenant.to_owned(),
            spiral_id: spiral_id(r.spiral),
            content: req.content,
            depth: ppm_to_depth(depth_ppm),
            priority,
            tags: req.tags,
            created_ms,
        };
        let stored = Stored {
            id: r.id.clone(),
            spiral_id: record.spiral_id.clone(),
            depth: record.depth,
            priority,
            created_ms,
        };
        let value =
            serde_json::to_value(&record).map_err(|e| EngineError::Internal(e.to_string()))?;
        // Copy the content for the event stream only when somebody listens.
        let event_content = if self.inner.events.receiver_count() > 0 {
            record.content
        } else {
            Value::Null
        };
        let key = node_key(&r.id);

        if crate::planted!(AckBeforePersist) {
            // Planted: count and acknowledge first, write later in the background.
            self.inner.core.commit_store(&r.id)?;
            let storage = self.inner.storage.clone();
            tokio::spawn(async move {
                tokio::task::yield_now().await;
                let _ = storage.set(&key, &value).await;
            });
        } else {
            match self.inner.storage.set(&key, &value).await {
                Ok(()) => {
                    self.inner.core.commit_store_async(&r.id).await?;
                }
                Err(e @ StorageError::InDoubt(_)) => {
                    // It lands when storage returns: count it, though the caller hears `timeout`.
                    self.inner.core.commit_store_async(&r.id).await?;
                    return Err(e.into());
                }
                Err(e) => {
                    crate::reached!("store.rolled_back");
                    self.inner.core.abort_store(&r.id)?;
                    // A timed-out write may still have landed; take it back so storage and the
                    // index agree (best effort: a rebuild settles anything left).
                    if matches!(e, StorageError::Timeout(_)) {
                        let _ = self.inner.storage.del(&key).await;
                    }
                    return Err(e.into());
                }
            }
        }
        self.publish(EngineEvent::Stored {
            id: stored.id.clone(),
            tenant: tenant.to_owned(),
            spiral_id: stored.spiral_id.clone(),
            content: event_content,
        });
        self.after_op().await;
        Ok(stored)
    }

    /// Read a node of `tenant`. Another tenant's node is `NotFound`, exactly like a missing one.
    pub async fn get(&self, tenant: &str, id: &str) -> Result<NodeRecord, EngineError> {
        if !valid_sigil(id) || !self.inner.core.touch(tenant, id)? {
            return Err(EngineError::NotFound);
        }
        let value = self
            .inner
            .storage
            .get(&node_key(id))
            .await?
            .ok_or(EngineError::NotFound)?;
        let record: NodeRecord = serde_json::from_value(value)
            .map_err(|e| EngineError::Internal(format!("node {id} is not a valid record: {e}")))?;
        if record.tenant != tenant {
            return Err(EngineError::NotFound);
        }
        Ok(record)
    }

    /// Remove a node of `tenant`. Safe to cancel: the collect completes (or fails) on its own.
    pub async fn collect(&self, tenant: &str, id: &str) -> Result<(), EngineError> {
        let (engine, tenant, id) = (self.clone(), tenant.to_owned(), id.to_owned());
        self.detached(async move { engine.collect_here(&tenant, &id).await })
            .await
    }

    async fn collect_here(&self, tenant: &str, id: &str) -> Result<(), EngineError> {
        if !valid_sigil(id) {
            return Err(EngineError::NotFound);
        }
        // A node a GC pass is deleting is neither there (a read still finds it) nor gone (the
        // pass may give it back): wait for the pass to decide, then answer from what it decided.
        // Another collect of the same node holding it past the lock timeout is a timeout, never
        // a premature `not_found`.
        let deadline =
            self.inner.clock.now() + Duration::from_millis(self.inner.cfg.lock_timeout_ms);
        while !self.inner.core.begin_collect(tenant, id)? {
            let being_collected = self.inner.core.with(|c| {
                c.node_state(id) == Some(NodeState::Collecting)
                    && c.tenant_of(id).is_some_and(|t| &*t == tenant)
            })?;
            if !being_collected || crate::planted!(CollectDuringGc) {
                return Err(EngineError::NotFound);
            }
            if self.inner.clock.now() >= deadline {
                return Err(EngineError::LockTimeout(self.inner.cfg.lock_timeout_ms));
            }
            crate::reached!("collect.waits_for_gc");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        match self.inner.storage.del(&node_key(id)).await {
            Ok(()) => {
                self.inner.core.commit_collect(id)?;
            }
            Err(e @ StorageError::InDoubt(_)) => {
                // The delete lands when storage returns: the node is gone as far as the index goes.
                self.inner.core.commit_collect(id)?;
                return Err(e.into());
            }
            Err(e) => {
                self.inner.core.abort_collect(id)?;
                return Err(e.into());
            }
        }
        self.publish(EngineEvent::Collected {
            id: id.to_owned(),
            tenant: tenant.to_owned(),
            by_gc: false,
        });
        self.after_op().await;
        Ok(())
    }

    /// A tenant's node ids, in id order.
    pub fn list(&self, tenant: &str, limit: usize) -> Result<Vec<String>, EngineError> {
        self.inner.core.with(|c| c.tenant_ids(tenant, limit))
    }

    pub fn spirals(&self) -> Result<SpiralsView, EngineError> {
        self.inner.core.with(|c| SpiralsView {
            total_memories: c.total(),
            spirals: c.spiral_stats(),
        })
    }

    pub fn total(&self) -> Result<u64, EngineError> {
        self.inner.core.with(|c| c.total())
    }

    /// Stores reserved but not committed, and removals not finished (see [`Core::in_flight`]).
    pub fn in_flight(&self) -> Result<(u64, u64), EngineError> {
        self.inner.core.with(|c| c.in_flight())
    }

    /// The nodes a GC pass or a collect is removing right now; empty if the engine lock cannot
    /// be had.
    pub fn removals_in_flight(&self) -> Vec<String> {
        self.inner
            .core
            .with(|c| c.removals_in_flight())
            .unwrap_or_default()
    }

    /// The boot generation of this open: a storage counter bumped by every open, so it differs
    /// between restarts (and between instances sharing storage).
    pub fn generation(&self) -> i64 {
        self.inner.generation
    }
}

#[cfg(test)]
#[cfg(not(spiral_loom))]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::clock::ManualClock;
    use crate::storage::memory::MemoryStorage;

    pub(super) async fn engine(cfg: EngineConfig) -> (Engine, Arc<MemoryStorage>, ManualClock) {
        let storage = Arc::new(MemoryStorage::new());
        let clock = ManualClock::new(1_700_000_000_000);
        let (e, _) = Engine::open(storage.clone(), cfg, Arc::new(clock.clone()), 7)
            .await
            .unwrap();
        (e, storage, clock)
    }

    pub(super) fn req(content: Value) -> StoreRequest {
        StoreRequest {
            content,
            ..StoreRequest::default()
        }
    }

    #[tokio::test]
    async fn store_get_collect_round_trip() {
        let (e, _, _) = engine(EngineConfig::default()).await;
        let s = e
            .store(
                "acme",
                StoreRequest {
                    depth: Some(0.3),
                    ..req(json!({"a": [1, "ü"]}))
                },
            )
            .await
            .unwrap();
        let got = e.get("acme", &s.id).await.unwrap();
        assert_eq!(got.content, json!({"a": [1, "ü"]}));
        assert_eq!(got.depth, 0.3);
        assert_eq!(e.get("other", &s.id).await, Err(EngineError::NotFound));
        assert_eq!(e.collect("other", &s.id).await, Err(EngineError::NotFound));
        e.collect("acme", &s.id).await.unwrap();
        assert_eq!(e.get("acme", &s.id).await, Err(EngineError::NotFound));
        assert_eq!(e.collect("acme", &s.id).await, Err(EngineError::NotFound));
        e.check_against_storage().await.unwrap();
    }

    #[tokio::test]
    async fn same_seed_same_ids() {
        let ids = |seed| async move {
            let storage = Arc::new(MemoryStorage::new());
            let clock: SharedClock = Arc::new(ManualClock::new(0));
            let (e, _) = Engine::open(storage, EngineConfig::default(), clock, seed)
                .await
                .unwrap();
            let mut out = Vec::new();
            for i in 0..10 {
                out.push(e.store("t", req(json!(i))).await.unwrap());
            }
            out
        };
        assert_eq!(ids(3).await, ids(3).await);
        assert_ne!(ids(3).await, ids(4).await);
    }
}
