//! The spiral memory engine (SPEC §1.5): spirals of memory nodes, a weighted spiral selection,
//! a time-budgeted garbage collector, rebuild-stats and meta snapshots, over any [`Storage`].
//!
//! Storage I/O never happens inside the critical section: a store reserves (Pending), persists,
//! then commits or aborts; a collect takes the node (Collecting), deletes, then commits or aborts.
//! See [`core`] for the state machine and [`handle`] for the critical sections.

pub mod config;
pub mod core;
pub mod handle;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

pub use self::config::EngineConfig;
use self::core::{
    Core, GcTrigger, ScannedNode, Tenant, depth_to_ppm, parse_sigil, parse_spiral_id, ppm_to_depth,
    spiral_id,
};
pub use self::core::{Correction, SpiralStats, Violation};
use self::handle::CoreHandle;
use crate::clock::SharedClock;
use crate::error::{EngineError, StorageError};
use crate::storage::SharedStorage;

/// Storage key prefix of memory nodes.
pub const NODE_PREFIX: &str = "node:";
pub const META_LATEST: &str = "meta:latest";
/// Counter bumped at every open; see `Core::set_generation`.
pub const META_GENERATION: &str = "meta:generation";
pub const META_SNAPSHOT_PREFIX: &str = "meta:snapshot:";

pub fn node_key(id: &str) -> String {
    format!("{NODE_PREFIX}{id}")
}

/// A memory node as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    pub tenant: String,
    pub spiral_id: String,
    pub content: Value,
    pub depth: f64,
    pub priority: i64,
    #[serde(default)]
    pub tags: Vec<String>,
    pub created_ms: u64,
}

/// Arguments of `store` (REST `POST /v1/memories`, WebSocket `memory.store`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreRequest {
    pub content: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// What an acknowledged store answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    pub id: String,
    pub spiral_id: String,
    pub depth: f64,
    pub priority: i64,
    pub created_ms: u64,
}

/// `GET /v1/spirals`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpiralsView {
    pub total_memories: u64,
    pub spirals: Vec<SpiralStats>,
}

/// One GC pass.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GcReport {
    pub reason: &'static str,
    pub excess: u64,
    pub selected: usize,
    pub collected: usize,
    pub skipped: u32,
    pub pause_ms: f64,
    pub budget_ms: u64,
    /// The pass stopped because its time budget ran out.
    pub out_of_time: bool,
    pub backlog: u64,
}

/// One rebuild-stats run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RebuildReport {
    pub scanned: u64,
    pub elapsed_ms: f64,
    pub nodes_per_s: f64,
    pub total_before: u64,
    pub total_after: u64,
    pub corrections: Vec<Correction>,
}

/// What the engine publishes on its event channel (the event stream relays these).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
pub enum EngineEvent {
    /// `content` is the stored JSON, carried only while somebody subscribes (the event stream
    /// relays it, sanitized, to the node's own tenant).
    Stored {
        id: String,
        tenant: String,
        spiral_id: String,
        content: Value,
    },
    Collected {
        id: String,
        tenant: String,
        by_gc: bool,
    },
    Gc(GcReport),
    Rebuild(RebuildReport),
}

/// Nodes one GC delete batch removes (one storage transaction or round trip).
const GC_BATCH: usize = 32;

/// Validation limits for store arguments.
const MAX_TAGS: usize = 64;
const MAX_TAG_LEN: usize = 128;

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
}

/// Cumulative GC figures for `/status` and metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GcTotals {
    pub passes: u64,
    pub collected: u64,
    pub skipped: u64,
    pub out_of_time: u64,
    pub last_pause_ms: f64,
    pub max_pause_ms: f64,
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

    /// Store a node for `tenant`. Acknowledged (Ok) only once the node is durable.
    pub async fn store(&self, tenant: &str, req: StoreRequest) -> Result<Stored, EngineError> {
        validate_tenant(tenant)?;
        let depth = req.depth.unwrap_or(0.5);
        if !depth.is_finite() || !(0.0..=1.0).contains(&depth) {
            return Err(EngineError::BadRequest(
                "depth must be a number between 0.0 and 1.0".into(),
            ));
        }
        if req.tags.len() > MAX_TAGS || req.tags.iter().any(|t| t.len() > MAX_TAG_LEN) {
            return Err(EngineError::BadRequest(format!(
                "at most {MAX_TAGS} tags of at most {MAX_TAG_LEN} bytes"
            )));
        }
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
                Err(e) => {
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

    /// Remove a node of `tenant`.
    pub async fn collect(&self, tenant: &str, id: &str) -> Result<(), EngineError> {
        if !valid_sigil(id) || !self.inner.core.begin_collect(tenant, id)? {
            return Err(EngineError::NotFound);
        }
        match self.inner.storage.del(&node_key(id)).await {
            Ok(()) => {
                self.inner.core.commit_collect(id)?;
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

    pub fn gc_backlog(&self) -> Result<u64, EngineError> {
        self.inner.core.with(|c| c.gc_backlog())
    }

    pub fn gc_totals(&self) -> GcTotals {
        crate::sync::lock(&self.inner.gc_stats).clone()
    }

    async fn after_op(&self) {
        let due = self.inner.core.with(|c| c.gc_due()).unwrap_or(None);
        let Some(trigger) = due else { return };
        // A failed pass leaves a backlog the next trigger retries; the operation that triggered
        // it has already succeeded.
        let _ = self.gc(trigger.reason()).await;
        if trigger == GcTrigger::Interval {
            // Snapshots follow the operation count, not every capacity-driven pass.
            let _ = self.snapshot_meta().await;
        }
    }

    /// Run one GC pass now. `None` if a pass is already running.
    pub async fn gc(&self, reason: &'static str) -> Result<Option<GcReport>, EngineError> {
        use crate::sync::Ordering;
        if self.inner.gc_running.swap(true, Ordering::AcqRel) {
            return Ok(None);
        }
        let result = self.gc_pass(reason).await;
        self.inner.gc_running.store(false, Ordering::Release);
        let report = result?;
        {
            let mut t = crate::sync::lock(&self.inner.gc_stats);
            t.passes += 1;
            t.collected += report.collected as u64;
            t.skipped += u64::from(report.skipped);
            t.out_of_time += u64::from(report.out_of_time);
            t.last_pause_ms = report.pause_ms;
            t.max_pause_ms = t.max_pause_ms.max(report.pause_ms);
        }
        if report.selected > 0 || report.skipped > 0 {
            self.publish(EngineEvent::Gc(report.clone()));
        }
        Ok(Some(report))
    }

    async fn gc_pass(&self, reason: &'static str) -> Result<GcReport, EngineError> {
        let clock = &self.inner.clock;
        let budget = Duration::from_millis(self.inner.cfg.gc_time_budget_ms);
        let started = clock.now();
        let sel = self.inner.core.gc_select(self.inner.cfg.gc_node_limit())?;
        let mut collected = 0;
        let mut out_of_time = false;
        // Deletes go in batches (one transaction or round trip each). A batch starts only if the
        // time used so far plus what a batch has been taking fits the budget, so a pass ends
        // close to its budget instead of one slow write past it.
        let mut batch_estimate = Duration::ZERO;
        let mut batches = sel.ids.chunks(GC_BATCH);
        for batch in batches.by_ref() {
            let elapsed = clock.now().saturating_duration_since(started);
            if elapsed + batch_estimate >= budget {
                out_of_time = true;
                self.abort_all(batch)?;
                break;
            }
            let keys: Vec<String> = batch.iter().map(|id| node_key(id)).collect();
            let t0 = clock.now();
            if self.inner.storage.del_many(&keys).await.is_err() {
                self.abort_all(batch)?;
                break;
            }
            let took = clock.now().saturating_duration_since(t0);
            batch_estimate = if batch_estimate.is_zero() {
                took
            } else {
                (batch_estimate * 3 + took) / 4
            };
            let tenants: Vec<Option<Tenant>> = self
                .inner
                .core
                .with(|c| batch.iter().map(|id| c.tenant_of(id)).collect())?;
            for (id, tenant) in batch.iter().zip(tenants) {
                if self.inner.core.gc_commit(id)? {
                    collected += 1;
                    self.publish(EngineEvent::Collected {
                        id: id.clone(),
                        tenant: tenant.as_deref().unwrap_or_default().to_owned(),
                        by_gc: true,
                    });
                }
            }
        }
        // Whatever was taken but not deleted goes back.
        for batch in batches {
            self.abort_all(batch)?;
        }
        let pause = clock.now().saturating_duration_since(started);
        Ok(GcReport {
            reason,
            excess: sel.excess,
            selected: sel.ids.len(),
            collected,
            skipped: sel.skipped,
            pause_ms: pause.as_secs_f64() * 1000.0,
            budget_ms: self.inner.cfg.gc_time_budget_ms,
            out_of_time,
            backlog: self.inner.core.with(|c| c.gc_backlog())?,
        })
    }

    fn abort_all(&self, ids: &[String]) -> Result<(), EngineError> {
        for id in ids {
            self.inner.core.abort_collect(id)?;
        }
        Ok(())
    }

    /// Scan every node in storage and recompute each spiral's statistics, reporting every
    /// correction. Safe to run while traffic flows.
    pub async fn rebuild_stats(&self) -> Result<RebuildReport, EngineError> {
        let _gate = self.inner.rebuild_gate.lock().await;
        let clock = &self.inner.clock;
        let started = clock.now();
        let total_before = self.inner.core.with(|c| c.total())?;
        self.inner.core.with(|c| c.begin_rebuild())?;
        let width = self.inner.cfg.sigil_hash_slice;
        let mut nodes: Vec<ScannedNode> = Vec::new();
        let mut tenants: Vec<Tenant> = Vec::new();
        let mut visit = |k: &str, v: &Value| {
            if let Some(n) = scanned_node(k, v, width, &mut tenants) {
                nodes.push(n);
            }
        };
        let count = match self
            .inner
            .storage
            .visit_prefix(NODE_PREFIX, &mut visit)
            .await
        {
            Ok(n) => n,
            Err(e) => {
                self.inner.core.with(|c| c.cancel_rebuild())?;
                return Err(e.into());
            }
        };
        if crate::planted!(RebuildSkip) {
            nodes.pop();
        }
        let corrections = self.inner.core.with(|c| c.apply_rebuild(nodes))?;
        let total_after = self.inner.core.with(|c| c.total())?;
        let elapsed = clock.now().saturating_duration_since(started).as_secs_f64();
        let report = RebuildReport {
            scanned: count,
            elapsed_ms: elapsed * 1000.0,
            nodes_per_s: if elapsed > 0.0 {
                count as f64 / elapsed
            } else {
                0.0
            },
            total_before,
            total_after,
            corrections,
        };
        drop(_gate);
        self.snapshot_meta().await?;
        self.publish(EngineEvent::Rebuild(report.clone()));
        Ok(report)
    }

    /// Write the spiral statistics to `meta:latest` and `meta:snapshot:<unix_ms>`, keeping the
    /// newest `meta_snapshots_kept` snapshots.
    pub async fn snapshot_meta(&self) -> Result<(), EngineError> {
        let unix_ms = self.inner.clock.unix_ms();
        let (total, counts, stats) = self
            .inner
            .core
            .with(|c| (c.total(), c.raw_counts(), c.spiral_stats()))?;
        let counts: Vec<Value> = counts
            .into_iter()
            .filter(|(_, n, _)| *n > 0)
            .map(|(i, n, d)| json!([spiral_id(i), n, d]))
            .collect();
        let meta = json!({
            "unix_ms": unix_ms,
            "total_memories": total,
            "counts": counts,
            "spirals": stats,
        });
        let storage = &self.inner.storage;
        storage
            .set(&format!("{META_SNAPSHOT_PREFIX}{unix_ms:013}"), &meta)
            .await?;
        storage.set(META_LATEST, &meta).await?;
        let snapshots = storage.keys(META_SNAPSHOT_PREFIX).await?;
        let excess = snapshots
            .len()
            .saturating_sub(self.inner.cfg.meta_snapshots_kept);
        for old in snapshots.iter().take(excess) {
            storage.del(old).await?;
        }
        Ok(())
    }

    /// Invariants 1 and 3 inside the engine.
    pub fn check_invariants(&self) -> Result<(), Violation> {
        self.inner.core.check()
    }

    /// Invariant 1 against storage: the engine counts exactly the nodes storage holds. Meaningful
    /// only when no operation is in flight.
    pub async fn check_against_storage(&self) -> Result<(), Violation> {
        self.check_invariants()?;
        let stored = self
            .inner
            .storage
            .keys(NODE_PREFIX)
            .await
            .map_err(|e| Violation(format!("cannot list storage: {e}")))?;
        let counted = self
            .inner
            .core
            .with(|c| c.counted_ids())
            .map_err(|e| Violation(e.to_string()))?;
        let stored: Vec<String> = stored
            .into_iter()
            .map(|k| k[NODE_PREFIX.len()..].to_owned())
            .collect();
        if stored != counted {
            let missing: Vec<_> = counted
                .iter()
                .filter(|id| !stored.contains(id))
                .take(5)
                .collect();
            let extra: Vec<_> = stored
                .iter()
                .filter(|id| !counted.contains(id))
                .take(5)
                .collect();
            return Err(Violation(format!(
                "invariant 1: engine counts {} nodes, storage holds {} (counted but not stored: {missing:?}; stored but not counted: {extra:?})",
                counted.len(),
                stored.len()
            )));
        }
        Ok(())
    }
}

fn validate_tenant(tenant: &str) -> Result<(), EngineError> {
    if tenant.is_empty() || tenant.len() > 256 {
        return Err(EngineError::BadRequest(
            "tenant must be 1 to 256 bytes".into(),
        ));
    }
    Ok(())
}

/// Sigils are short lowercase hex; anything else cannot name a node.
fn valid_sigil(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Read the fields a rebuild needs straight from the stored JSON, without copying the content:
/// this is the hot loop of a 100k-node rebuild. One pass over the record's fields touches each
/// key once (keyed lookups would chase every key's heap string several times).
fn scanned_node(
    key: &str,
    value: &Value,
    sigil_width: u32,
    tenants: &mut Vec<Tenant>,
) -> Option<ScannedNode> {
    let id = key.strip_prefix(NODE_PREFIX)?;
    let (mut same_id, mut tenant, mut spiral, mut depth, mut priority, mut created) =
        (false, None, None, None, None, None);
    for (field, v) in value.as_object()? {
        match field.as_str() {
            "id" => same_id = v.as_str() == Some(id),
            "tenant" => tenant = v.as_str(),
            "spiral_id" => spiral = v.as_str().and_then(parse_spiral_id),
            "depth" => depth = v.as_f64(),
            "priority" => priority = v.as_i64(),
            "created_ms" => created = v.as_u64(),
            _ => {}
        }
    }
    if !same_id {
        return None;
    }
    Some(ScannedNode {
        key: parse_sigil(id, sigil_width)?,
        tenant: intern(tenants, tenant?),
        spiral: spiral?,
        depth_ppm: depth_to_ppm(depth?),
        priority: priority?,
        created_ms: created?,
    })
}

/// A rebuild sees the same few tenants over and over: share one allocation per tenant. Past a
/// handful of tenants a linear search stops paying, so the rest are simply allocated.
fn intern(tenants: &mut Vec<Tenant>, name: &str) -> Tenant {
    if let Some(t) = tenants.iter().find(|t| &***t == name) {
        return t.clone();
    }
    let t = Tenant::from(name);
    if tenants.len() < 16 {
        tenants.push(t.clone());
    }
    t
}

/// `counts` of a meta snapshot: `[[spiral_id, node_count, depth_sum_ppm], …]`.
fn parse_meta_counts(meta: &Value) -> Vec<(u32, u64, u64)> {
    meta.get("counts")
        .and_then(Value::as_array)
        .map(|rows| {
            rows.iter()
                .filter_map(|row| {
                    let id = parse_spiral_id(row.get(0)?.as_str()?)?;
                    Some((id, row.get(1)?.as_u64()?, row.get(2)?.as_u64()?))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(all(test, not(spiral_loom)))]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::storage::memory::MemoryStorage;

    async fn engine(cfg: EngineConfig) -> (Engine, Arc<MemoryStorage>, ManualClock) {
        let storage = Arc::new(MemoryStorage::new());
        let clock = ManualClock::new(1_700_000_000_000);
        let (e, _) = Engine::open(storage.clone(), cfg, Arc::new(clock.clone()), 7)
            .await
            .unwrap();
        (e, storage, clock)
    }

    fn req(content: Value) -> StoreRequest {
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
    async fn bad_arguments_are_rejected_without_side_effects() {
        let (e, storage, _) = engine(EngineConfig::default()).await;
        let before = storage.len();
        for depth in [-0.1, 1.5, f64::NAN] {
            let r = e
                .store(
                    "t",
                    StoreRequest {
                        depth: Some(depth),
                        ..req(json!(1))
                    },
                )
                .await;
            assert!(matches!(r, Err(EngineError::BadRequest(_))), "{depth}");
        }
        assert!(matches!(
            e.store("", req(json!(1))).await,
            Err(EngineError::BadRequest(_))
        ));
        assert_eq!(e.get("t", "../../etc").await, Err(EngineError::NotFound));
        assert_eq!(storage.len(), before);
        assert_eq!(e.total().unwrap(), 0);
    }

    #[tokio::test]
    async fn over_capacity_triggers_gc_down_to_capacity() {
        let (e, _, _) = engine(EngineConfig {
            max_nodes: 20,
            ..EngineConfig::default()
        })
        .await;
        for i in 0..50 {
            e.store(
                "t",
                StoreRequest {
                    priority: Some(i),
                    ..req(json!(i))
                },
            )
            .await
            .unwrap();
        }
        assert_eq!(e.total().unwrap(), 20);
        assert!(e.gc_totals().collected >= 30);
        e.check_against_storage().await.unwrap();
    }

    #[tokio::test]
    async fn gc_pass_stops_at_its_node_limit_and_reports_backlog() {
        let cfg = EngineConfig {
            max_nodes: 1000,
            gc_time_budget_ms: 2,
            gc_budget_scale: 5,
            ..EngineConfig::default()
        };
        let (e, _, _) = engine(cfg).await;
        for i in 0..100 {
            e.store("t", req(json!(i))).await.unwrap();
        }
        e.inner.core.with(|c| c.load_counts(&[])).unwrap();
        // Shrink capacity by reopening the view of the same nodes with a lower max.
        let storage = e.storage().clone();
        let clock: SharedClock = Arc::new(ManualClock::new(0));
        let cfg = EngineConfig {
            max_nodes: 10,
            gc_time_budget_ms: 2,
            gc_budget_scale: 5,
            ..EngineConfig::default()
        };
        let (e, report) = Engine::open(storage, cfg, clock, 1).await.unwrap();
        assert_eq!(report.scanned, 100);
        let r = e.gc("test").await.unwrap().unwrap();
        assert_eq!(r.selected, 10, "2 ms × 5 nodes/ms");
        assert_eq!(r.collected, 10);
        assert_eq!(r.backlog, 80);
        e.check_against_storage().await.unwrap();
    }

    #[tokio::test]
    async fn restart_reloads_meta_and_rebuild_finds_every_node() {
        let (e, storage, clock) = engine(EngineConfig::default()).await;
        let mut ids = Vec::new();
        for i in 0..30 {
            ids.push(
                e.store(
                    "t",
                    StoreRequest {
                        depth: Some(f64::from(i) / 30.0),
                        ..req(json!(i))
                    },
                )
                .await
                .unwrap()
                .id,
            );
        }
        let before = e.spirals().unwrap();
        // The last snapshot predates these stores: a restart now must correct every spiral.
        let (_, stale) = Engine::open(
            storage.clone(),
            EngineConfig::default(),
            Arc::new(clock.clone()),
            7,
        )
        .await
        .unwrap();
        assert_eq!(
            stale
                .corrections
                .iter()
                .map(|c| c.after.node_count)
                .sum::<u64>(),
            30
        );
        e.snapshot_meta().await.unwrap();
        drop(e);
        let (e2, report) = Engine::open(
            storage.clone(),
            EngineConfig::default(),
            Arc::new(clock.clone()),
            7,
        )
        .await
        .unwrap();
        assert_eq!(report.scanned, 30);
        assert!(
            report.corrections.is_empty(),
            "meta was up to date: {:?}",
            report.corrections
        );
        assert_eq!(e2.spirals().unwrap(), before);
        for id in &ids {
            e2.get("t", id).await.unwrap();
        }
        e2.check_against_storage().await.unwrap();
    }

    #[tokio::test]
    async fn rebuild_reports_drift_after_storage_changed_behind_the_engine() {
        let (e, storage, _) = engine(EngineConfig::default()).await;
        let s = e.store("t", req(json!("x"))).await.unwrap();
        crate::storage::Storage::del(storage.as_ref(), &node_key(&s.id))
            .await
            .unwrap();
        let report = e.rebuild_stats().await.unwrap();
        assert_eq!(report.corrections.len(), 1);
        assert_eq!(report.corrections[0].before.node_count, 1);
        assert_eq!(report.corrections[0].after.node_count, 0);
        assert_eq!(report.total_after, 0);
        e.check_against_storage().await.unwrap();
    }

    #[tokio::test]
    async fn meta_snapshots_are_written_and_pruned() {
        let (e, storage, clock) = engine(EngineConfig {
            meta_snapshots_kept: 3,
            ..EngineConfig::default()
        })
        .await;
        for _ in 0..6 {
            clock.advance(Duration::from_millis(5));
            e.snapshot_meta().await.unwrap();
        }
        let snaps = crate::storage::Storage::keys(storage.as_ref(), META_SNAPSHOT_PREFIX)
            .await
            .unwrap();
        assert_eq!(snaps.len(), 3);
        assert!(
            crate::storage::Storage::get(storage.as_ref(), META_LATEST)
                .await
                .unwrap()
                .is_some()
        );
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
