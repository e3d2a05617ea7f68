//! `spiral-slo`: measure the engine's service-level figures and check them against the targets.
//!
//! ```text
//! cargo run -p spiral-benches --release --bin spiral-slo -- [--nodes 100000] [--json FILE] [--skip-redis]
//! ```
//! Prints one line per figure with its target and PASS/MISS, writes all figures as JSON, and
//! exits 1 if any target is missed. Redis figures use the same real Redis the tests use.

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

async fn run(a: &Args) -> anyhow::Result<(Gate, serde_json::Value)> {
    let mut gate = Gate {
        lines: vec![],
        missed: 0,
    };
    let mut figures = serde_json::Map::new();
    let n = a.nodes;

    let memory: SharedStorage = Arc::new(MemoryStorage::new());
    populate(&memory, n, 1).await?;
    let r = measure::rebuild(memory, 5).await?;
    gate.check(
        &format!("rebuild {} nodes, memory", r.nodes),
        r.nodes_per_s,
        "nodes/s",
        "≥ 1,000,000",
        r.nodes_per_s >= 1_000_000.0,
    );
    figures.insert("rebuild_memory".into(), serde_json::to_value(&r)?);

    let dir = tempfile::tempdir()?;
    let embedded: SharedStorage = Arc::new(EmbeddedStorage::open(dir.path().join("bench.redb"))?);
    populate(&embedded, n, 1).await?;
    let r = measure::rebuild(embedded, 3).await?;
    gate.check(
        &format!("rebuild {} nodes, embedded", r.nodes),
        r.nodes_per_s,
        "nodes/s",
        "≥ 200,000",
        r.nodes_per_s >= 200_000.0,
    );
    figures.insert("rebuild_embedded".into(), serde_json::to_value(&r)?);

    if !a.skip_redis {
        let redis = spiral_chaos::redis_fixture::fresh_storage().await?;
        populate(&redis, n, 64).await?;
        let r = measure::rebuild(redis, 3).await?;
        gate.check(
            &format!("rebuild {} nodes, redis", r.nodes),
            r.nodes_per_s,
            "nodes/s",
            "≥ 100,000",
            r.nodes_per_s >= 100_000.0,
        );
        figures.insert("rebuild_redis".into(), serde_json::to_value(&r)?);
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

    let memory: SharedStorage = Arc::new(MemoryStorage::new());
    populate(&memory, n, 1).await?;
    let g = measure::gc_pauses(memory, n as u64, 10_000).await?;
    gate.check(
        &format!("GC pause p99 over budget, {} eligible, memory", g.eligible),
        g.p99_overrun_ms,
        "ms",
        &format!("≤ 1 (budget {} ms)", g.budget_ms),
        g.p99_overrun_ms <= 1.0,
    );
    figures.insert("gc_memory".into(), serde_json::to_value(&g)?);

    let dir = tempfile::tempdir()?;
    let embedded: SharedStorage = Arc::new(EmbeddedStorage::open(dir.path().join("gc.redb"))?);
    populate(&embedded, n, 1).await?;
    let g = measure::gc_pauses(embedded, n as u64, 10_000).await?;
    gate.check(
        &format!(
            "GC pause p99 over budget, {} eligible, embedded",
            g.eligible
        ),
        g.p99_overrun_ms,
        "ms",
        &format!("≤ 1 (budget {} ms)", g.budget_ms),
        g.p99_overrun_ms <= 1.0,
    );
    figures.insert("gc_embedded".into(), serde_json::to_value(&g)?);

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
