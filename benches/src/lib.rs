//! `spiral-benches`: workloads shared by the criterion benchmarks (`benches/`) and the SLO gate
//! (`spiral-slo`), which records tail latencies in HdrHistogram and checks them against targets.
//!
//! # Layout
//! - [`populate`] — write N valid node records straight into an adapter (the state a rebuild scans).
//! - [`measure`] — the measured scenarios: rebuild, engine store latency, GC pause.
//! - `src/bin/spiral-slo.rs` — runs them, prints a table, writes JSON, exits non-zero on a miss.

pub mod measure;

use futures_util::stream::{self, StreamExt};
use serde_json::json;
use spiral_server::engine::{NodeRecord, node_key};
use spiral_server::storage::SharedStorage;

/// Write `n` node records (spread over 89 spirals, depths and priorities varied) in batches of
/// 500 through `set_many`, with up to `in_flight` batches outstanding, so every adapter is filled
/// at its bulk speed (one transaction per batch embedded, concurrent round trips on Redis).
pub async fn populate(storage: &SharedStorage, n: usize, in_flight: usize) -> anyhow::Result<()> {
    let batches = (0..n).step_by(500).map(|start| {
        let storage = storage.clone();
        async move {
            let mut entries = Vec::with_capacity(500);
            for i in start..(start + 500).min(n) {
                let id = format!(
                    "{:010x}",
                    (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 24
                );
                let record = NodeRecord {
                    id: id.clone(),
                    tenant: format!("tenant-{}", i % 4),
                    spiral_id: format!("s{:02}", i % 89),
                    content: json!({"text": "a memory of moderate length", "n": i}),
                    depth: (i % 1000) as f64 / 1000.0,
                    priority: (i % 7) as i64,
                    tags: vec![],
                    created_ms: 1_700_000_000_000 + i as u64,
                };
                entries.push((node_key(&id), serde_json::to_value(&record)?));
            }
            storage.set_many(&entries).await?;
            anyhow::Ok(())
        }
    });
    let mut results = stream::iter(batches).buffer_unordered(in_flight.max(1));
    while let Some(r) = results.next().await {
        r?;
    }
    Ok(())
}
