//! The GC pass: triggered after an operation (every `gc_trigger_interval` operations, or over
//! capacity) or run on demand, it takes the nodes [`Core::gc_select`] picks and deletes them in
//! batches within its time budget, giving back whatever it could not delete. Cumulative figures
//! feed `/status` and the metrics.
//!
//! [`Core::gc_select`]: super::core::Core::gc_select

use std::time::Duration;

use super::Engine;
use super::core::Tenant;
use super::gc::GcTrigger;
use super::records::{EngineEvent, GcReport, GcTotals, node_key};
use crate::error::{EngineError, StorageError};

/// Nodes one GC delete batch removes (one storage transaction or round trip).
const GC_BATCH: usize = 32;

impl Engine {
    pub fn gc_backlog(&self) -> Result<u64, EngineError> {
        self.inner.core.with(|c| c.gc_backlog())
    }

    pub fn gc_totals(&self) -> GcTotals {
        crate::sync::lock(&self.inner.gc_stats).clone()
    }

    /// After a store or collect: run a GC pass if one is due, and write a meta snapshot when the
    /// operation count (not capacity) made it due.
    pub(super) async fn after_op(&self) {
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

    /// Run one GC pass now. `None` if a pass is already running. Safe to cancel: the pass runs
    /// to its end on its own.
    pub async fn gc(&self, reason: &'static str) -> Result<Option<GcReport>, EngineError> {
        let engine = self.clone();
        self.detached(async move { engine.gc_here(reason).await })
            .await
    }

    async fn gc_here(&self, reason: &'static str) -> Result<Option<GcReport>, EngineError> {
        use crate::sync::Ordering;
        if self.inner.gc_running.swap(true, Ordering::AcqRel) {
            crate::reached!("gc.already_running");
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
                crate::reached!("gc.out_of_time");
                out_of_time = true;
                self.abort_all(batch)?;
                break;
            }
            let keys: Vec<String> = batch.iter().map(|id| node_key(id)).collect();
            let t0 = clock.now();
            // A batch left in doubt but kept to land (StorageError::InDoubt) is deleted as far
            // as the index goes; the pass still ends, storage being in trouble.
            let deleted = self.inner.storage.del_many(&keys).await;
            if let Err(e) = &deleted
                && !matches!(e, StorageError::InDoubt(_))
            {
                crate::reached!("gc.batch_failed");
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
            if deleted.is_err() {
                break;
            }
        }
        // Whatever was taken but not deleted goes back.
        for batch in batches {
            self.abort_all(batch)?;
        }
        let pause = clock.now().saturating_duration_since(started);
        if collected > 0 {
            crate::reached!("gc.pass");
        }
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
            share: sel.share,
            tenants: sel.tenants,
        })
    }

    fn abort_all(&self, ids: &[String]) -> Result<(), EngineError> {
        for id in ids {
            self.inner.core.abort_collect(id)?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[cfg(not(spiral_loom))]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::super::tests::{engine, req};
    use super::*;
    use crate::clock::{ManualClock, SharedClock};
    use crate::engine::{EngineConfig, StoreRequest};

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
}
