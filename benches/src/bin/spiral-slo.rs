//! `spiral-slo`: measure the engine's service-level figures and check them against the targets.
//!
//! ```text
//! cargo run -p spiral-benches --release --bin spiral-slo -- [--nodes 100000] [--json FILE] [--skip-redis]
//! ```
//! Prints one line per figure with its target and PASS/MISS, writes all figures as JSON, and
//! exits 1 if any target is missed. Redis figures use the same real Redis the tests use.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use serde_json::json;
use spiral_benches::measure;
use spiral_benches::populate;
use spiral_server::storage::SharedStorage;
use spiral_server::storage::embedded::EmbeddedStorage;
use spiral_server::storage::memory::MemoryStorage;

struct Args {
    nodes: usize,
    json: Option<String>,
    skip_redis: bool,
}

fn args() -> Result<Args, String> {
    let mut out = Args {
        nodes: 100_000,
        json: None,
        skip_redis: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--nodes" => {
                out.nodes = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--nodes takes a number")?
            }
            "--json" => out.json = Some(it.next().ok_or("--json takes a file")?),
            "--skip-redis" => out.skip_redis = true,
            "--bench" => {} // passed by `cargo bench`; harmless here
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(out)
}

struct Gate {
    lines: Vec<String>,
    missed: usize,
}

impl Gate {
    fn check(&mut self, name: &str, value: f64, unit: &str, target: &str, ok: bool) {
        let verdict = if ok { "PASS" } else { "MISS" };
        self.missed += usize::from(!ok);
        let line = format!("{verdict}  {name:<44} {value:>14.1} {unit:<8} target {target}");
        println!("{line}");
        self.lines.push(line);
    }
}

/// A fresh store of each kind, filled with `n` nodes: `(name, storage, writes in flight, reruns)`.
async fn stores(
    a: &Args,
    dir: &Path,
) -> anyhow::Result<Vec<(&'static str, SharedStorage, usize, usize)>> {
    let n = a.nodes;
    let mut out: Vec<(&'static str, SharedStorage, usize, usize)> = vec![
        ("memory", Arc::new(MemoryStorage::new()), 1, 5),
        (
            "embedded",
            Arc::new(EmbeddedStorage::open(
                dir.join(format!("{}.redb", fresh())),
            )?),
            1,
            3,
        ),
    ];
    if !a.skip_redis {
        out.push((
            "redis",
            spiral_chaos::redis_fixture::fresh_storage().await?,
            64,
            3,
        ));
    }
    for (_, storage, in_flight, _) in &out {
        populate(storage, n, *in_flight).await?;
    }
    Ok(out)
}

fn fresh() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

async fn run(a: &Args) -> anyhow::Result<(Gate, serde_json::Value)> {
    let mut gate = Gate {
        lines: vec![],
        missed: 0,
    };
    let mut figures = serde_json::Map::new();
    let dir = tempfile::tempdir()?;

    for (name, storage, _, reruns) in stores(a, dir.path()).await? {
        let target = match name {
            "memory" => 1_000_000.0,
            "embedded" => 200_000.0,
            _ => 100_000.0,
        };
        let r = measure::rebuild(storage, reruns).await?;
        let what = format!("rebuild {} nodes, {name}", r.nodes);
        gate.check(
            &what,
            r.nodes_per_s,
            "nodes/s",
            &format!("≥ {target}"),
            r.nodes_per_s >= target,
        );
        figures.insert(format!("rebuild_{name}"), serde_json::to_value(&r)?);
    }

    let t = measure::store_latency(Arc::new(MemoryStorage::new()), 5_000, 50_000).await?;
    gate.check(
        "engine store p95, memory",
        t.p95_us,
        "µs",
        "< 50",
        t.p95_us < 50.0,
    );
    figures.insert("store_memory".into(), serde_json::to_value(&t)?);

    // The GC budget is checked where it bites: in process, and with an fsync per delete batch.
    let gc_args = Args {
        nodes: a.nodes,
        json: None,
        skip_redis: true,
    };
    for (name, storage, _, _) in stores(&gc_args, dir.path()).await? {
        let g = measure::gc_pauses(storage, a.nodes as u64, 10_000).await?;
        let what = format!("GC pause p99 over budget, {} eligible, {name}", g.eligible);
        let target = format!("≤ 1 (budget {} ms)", g.budget_ms);
        gate.check(
            &what,
            g.p99_overrun_ms,
            "ms",
            &target,
            g.p99_overrun_ms <= 1.0,
        );
        figures.insert(format!("gc_{name}"), serde_json::to_value(&g)?);
    }

    Ok((gate, json!(figures)))
}

fn main() -> ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("spiral-slo: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("spiral-slo: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(&a)) {
        Ok((gate, figures)) => {
            if let Some(path) = &a.json
                && let Err(e) = std::fs::write(
                    path,
                    serde_json::to_string_pretty(&figures).unwrap_or_default(),
                )
            {
                eprintln!("spiral-slo: writing {path}: {e}");
            }
            println!("{} figure(s), {} missed", gate.lines.len(), gate.missed);
            if gate.missed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("spiral-slo: {e:#}");
            ExitCode::from(2)
        }
    }
}
