//! The engine's statistics against storage: rebuild-stats (scan every stored node and correct
//! the spirals), meta snapshots (`meta:latest` and the pruned `meta:snapshot:<unix_ms>` history
//! that boot loads before verifying), and the invariant check against what storage holds.

use serde_json::{Value, json};

use super::core::Tenant;
use super::rebuild::ScannedNode;
use super::records::{EngineEvent, META_LATEST, META_SNAPSHOT_PREFIX, NODE_PREFIX, RebuildReport};
use super::sigil::parse_sigil;
use super::spiral::{depth_to_ppm, parse_spiral_id, spiral_id};
use super::{Engine, Violation};
use crate::error::EngineError;

impl Engine {
    /// Scan every node in storage and recompute each spiral's statistics, reporting every
    /// correction. Safe to run while traffic flows, and safe to cancel: the rebuild runs to its
    /// end on its own.
    pub async fn rebuild_stats(&self) -> Result<RebuildReport, EngineError> {
        let engine = self.clone();
        self.detached(async move { engine.rebuild_here().await })
            .await
    }

    async fn rebuild_here(&self) -> Result<RebuildReport, EngineError> {
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
pub(super) fn parse_meta_counts(meta: &Value) -> Vec<(u32, u64, u64)> {
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

#[cfg(test)]
#[cfg(not(spiral_loom))]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::json;

    use super::super::tests::{engine, req};
    use super::*;
    use crate::engine::{Engine, EngineConfig, StoreRequest, node_key};

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
}
