//! The measured scenarios. Each returns plain figures; judging them against targets is the
//! caller's business, so criterion and the SLO gate share one definition of each workload.

use std::sync::Arc;

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;
use spiral_server::clock::{SharedClock, SystemClock};
use spiral_server::engine::{Engine, EngineConfig, StoreRequest};
use spiral_server::storage::SharedStorage;

/// Percentiles of a latency histogram recorded in nanoseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Tail {
    pub count: u64,
    pub p50_us: f64,
    pub p95_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

impl Tail {
    pub fn of(h: &Histogram<u64>) -> Tail {
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Tail {
            count: h.len(),
            p50_us: us(0.50),
            p95_us: us(0.95),
            p99_us: us(0.99),
            max_us: h.max() as f64 / 1000.0,
        }
    }
}

fn histogram() -> Histogram<u64> {
    // 1 ns .. 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

fn clock() -> SharedClock {
    Arc::new(SystemClock)
}

/// Rebuild of a storage already holding `nodes` records.
#[derive(Debug, Clone, Serialize)]
pub struct RebuildFigures {
    pub backend: String,
    pub nodes: u64,
    pub elapsed_ms: f64,
    pub nodes_per_s: f64,
}

/// Open the engine over a populated storage (which rebuilds), then rebuild `runs` more times;
/// report the median run.
pub async fn rebuild(storage: SharedStorage, runs: usize) -> anyhow::Result<RebuildFigures> {
    let backend = storage.backend().to_owned();
    let (engine, first) = Engine::open(storage, EngineConfig::default(), clock(), 1).await?;
    let mut reports = vec![first];
    for _ in 0..runs {
        reports.push(engine.rebuild_stats().await?);
    }
    reports.sort_by(|a, b| a.elapsed_ms.total_cmp(&b.elapsed_ms));
    let median = &reports[reports.len() / 2];
    Ok(RebuildFigures {
        backend,
        nodes: median.scanned,
        elapsed_ms: median.elapsed_ms,
        nodes_per_s: median.nodes_per_s,
    })
}

/// Latency of `engine.store` on a fresh engine with the default configuration (so once full,
/// every store also pays for the GC pass that makes room), after `warmup` unmeasured stores.
pub async fn store_latency(
    storage: SharedStorage,
    warmup: usize,
    ops: usize,
) -> anyhow::Result<Tail> {
    let c = clock();
    let (engine, _) = Engine::open(storage, EngineConfig::default(), c.clone(), 2).await?;
    let mut h = histogram();
    for i in 0..warmup + ops {
        let req = StoreRequest {
            content: json!({"text": "a memory of moderate length", "n": i}),
            depth: Some((i % 1000) as f64 / 1000.0),
            priority: Some((i % 5) as i64),
            tags: vec![],
        };
        let t0 = c.now();
        engine.store("bench", req).await?;
        let ns = c.now().saturating_duration_since(t0).as_nanos() as u64;
        if i >= warmup {
            h.record(ns.max(1))?;
        }
    }
    Ok(Tail::of(&h))
}

/// GC passes over `eligible` nodes above capacity.
#[derive(Debug, Clone, Serialize)]
pub struct GcFigures {
    pub backend: String,
    pub eligible: u64,
    pub passes: u64,
    pub budget_ms: u64,
    pub pause: Tail,
    /// How far the p99 pause lies beyond the budget (ms; ≤ 0 means within it).
    pub p99_overrun_ms: f64,
    pub passes_out_of_time: u64,
}

/// Open an engine with capacity 0 over a storage holding `eligible` nodes, then run GC passes
/// until nothing is left or `max_passes` ran, recording each pass's pause.
pub async fn gc_pauses(
    storage: SharedStorage,
    eligible: u64,
    max_passes: usize,
) -> anyhow::Result<GcFigures> {
    let backend = storage.backend().to_owned();
    let cfg = EngineConfig {
        max_nodes: 0,
        ..EngineConfig::default()
    };
    let budget_ms = cfg.gc_time_budget_ms;
    let (engine, _) = Engine::open(storage, cfg, clock(), 3).await?;
    let mut h = histogram();
    let mut out_of_time = 0;
    for _ in 0..max_passes {
        let Some(report) = engine.gc("bench").await? else {
            continue;
        };
        if report.selected == 0 {
            break;
        }
        h.record(((report.pause_ms * 1e6) as u64).max(1))?;
        out_of_time += u64::from(report.out_of_time);
    }
    let pause = Tail::of(&h);
    Ok(GcFigures {
        backend,
        eligible,
        passes: h.len(),
        budget_ms,
        p99_overrun_ms: pause.p99_us / 1000.0 - budget_ms as f64,
        pause,
        passes_out_of_time: out_of_time,
    })
}
