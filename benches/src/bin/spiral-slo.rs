//! `spiral-slo`: measure the engine's service-level figures and check them against the targets.
//!
//! ```text
//! cargo run -p spiral-benches --release --bin spiral-slo -- [--nodes 100000] [--json FILE] [--skip-redis]
//! ```
//! Prints one line per figure with its target and PASS/MISS, writes all figures as JSON, and
//! exits 1 if any target is missed. Redis figures use the same real Redis the tests use.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use serde_json::json;
use spiral_benches::measure;
use spiral_benches::populate;
use spiral_server::storage::SharedStorage;
use spiral_server::storage::embedded::EmbeddedStorage;
use spiral_server::storage::memory::MemoryStorage;

/// Exit codes, for `--help`.
const EXIT_CODES: &str = "\
Exit codes:
  0  every figure met its target (also: --help, --version, or stdout closed early)
  1  at least one figure missed its target
  2  bad arguments, or a measurement could not run (e.g. no Redis and no --skip-redis)";

/// Measure the engine's service-level figures (rebuild speed per backend, store latency, GC
/// pauses) and check each against its target.
#[derive(Debug, Parser)]
#[command(name = "spiral-slo", version, after_help = EXIT_CODES)]
struct Args {
    /// Nodes written into each store before the rebuild and GC measurements.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    nodes: u64,
    /// Also write every figure as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Leave out the Redis figures (they need the Redis the tests use: REDIS_URL, a local
    /// image or `redis-server`).
    #[arg(long)]
    skip_redis: bool,
    /// Ignored: passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Print one line to stdout; a closed stdout (`spiral-slo | head -1`) ends the program quietly
/// with exit 0, any other write error with exit 2.
fn out(line: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("spiral-slo: writing to stdout: {e}");
        std::process::exit(2);
    }
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
        out(&line);
        self.lines.push(line);
    }
}

/// A fresh store of each kind, filled with `n` nodes: `(name, storage, writes in flight, reruns)`.
async fn stores(
    a: &Args,
    dir: &Path,
) -> anyhow::Result<Vec<(&'static str, SharedStorage, usize, usize)>> {
    let n = usize::try_from(a.nodes)?;
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
        skip_redis: true,
        json: None,
        ..*a
    };
    for (name, storage, _, _) in stores(&gc_args, dir.path()).await? {
        let g = measure::gc_pauses(storage, a.nodes, 10_000).await?;
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
    let a = Args::parse();
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
                eprintln!("spiral-slo: writing {}: {e}", path.display());
            }
            out(&format!(
                "{} figure(s), {} missed",
                gate.lines.len(),
                gate.missed
            ));
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
