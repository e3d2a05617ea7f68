//! `spiral-harness`: seeded runs and sweeps against the reference server's engine.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use spiral_harness::engine_run::{Outcome, run};
use spiral_harness::sweep::sweep;

#[derive(Debug, Parser)]
#[command(
    name = "spiral-harness",
    version,
    about = "Seeded runs and sweeps against the Spiral engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One seeded run; prints the seed, what ran and the verdict.
    Sim {
        #[arg(long)]
        seed: u64,
        /// Operations in the run.
        #[arg(long, default_value_t = 400)]
        steps: usize,
    },
    /// Many seeds; prints a summary table and exits with the worst run's code.
    Sweep {
        /// Seed range `A..B` (B exclusive).
        #[arg(long, default_value = "0..200", value_parser = parse_range)]
        seeds: std::ops::Range<u64>,
        #[arg(long, default_value_t = 400)]
        steps: usize,
        /// Worker threads (default: one per core).
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Open-loop WebSocket `memory.store` load against a running server (real sockets), one
    /// phase per rate; latency from the intended send time.
    Load {
        /// The server's WebSocket command channel.
        #[arg(long, default_value = "ws://127.0.0.1:3001")]
        ws_url: String,
        /// The server's HS256 secret, to mint one token per connection.
        #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
        jwt_secret: String,
        /// Comma-separated arrival rates (messages/s), one phase each.
        #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
        rates: Vec<u64>,
        /// Length of each phase (s).
        #[arg(long, default_value_t = 10)]
        duration_s: u64,
        /// Start of each phase left out of the figures (s).
        #[arg(long, default_value_t = 2)]
        warmup_s: u64,
        #[arg(long, default_value_t = 8)]
        connections: usize,
        /// Bytes of content per store.
        #[arg(long, default_value_t = 64)]
        payload_bytes: usize,
        /// Report the highest rate whose p95 stays under this (µs).
        #[arg(long, default_value_t = 1000)]
        p95_target_us: u64,
        /// Also write the phases as JSON here.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
}

#[allow(clippy::too_many_arguments)]
fn load(
    ws_url: String,
    jwt_secret: String,
    rates: Vec<u64>,
    duration_s: u64,
    warmup_s: u64,
    connections: usize,
    payload_bytes: usize,
    p95_target_us: u64,
    json: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    use spiral_harness::load::{LoadConfig, Phase, row, run_phase};
    let cfg = LoadConfig {
        ws_url,
        jwt_secret,
        connections,
        warmup: std::time::Duration::from_secs(warmup_s),
        payload_bytes,
    };
    // One thread: the pacer wakes it for each send and it reads every answer; a second worker
    // would only add cross-thread wake-ups to what is measured.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut reports = Vec::new();
    for (i, rate) in rates.iter().enumerate() {
        let phase = Phase {
            rate_per_s: *rate,
            duration: std::time::Duration::from_secs(duration_s.max(warmup_s + 1)),
        };
        let r = rt.block_on(run_phase(
            &cfg,
            &phase,
            i as u64 + (std::process::id() as u64) * 1000,
        ))?;
        println!("{}", row(&r));
        reports.push(r);
    }
    let best = reports
        .iter()
        .filter(|r| r.p95_us < p95_target_us && r.errors == 0 && r.answered == r.sent)
        .map(|r| r.rate_per_s)
        .max();
    match best {
        Some(r) => println!("highest rate with p95 < {p95_target_us} µs: {r}/s"),
        None => println!("no rate kept p95 < {p95_target_us} µs"),
    }
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&reports)?)?;
    }
    Ok(())
}

fn parse_range(s: &str) -> Result<std::ops::Range<u64>, String> {
    let (a, b) = s.split_once("..").ok_or("expected A..B")?;
    let a: u64 = a.parse().map_err(|_| format!("bad start {a:?}"))?;
    let b: u64 = b.parse().map_err(|_| format!("bad end {b:?}"))?;
    if a >= b {
        return Err("empty range".into());
    }
    Ok(a..b)
}

fn replay(seed: u64, steps: usize) -> String {
    // A run with a planted bug replays only with the same bug planted.
    let planted = std::env::var("SPIRAL_PLANTED_BUG")
        .ok()
        .filter(|_| cfg!(feature = "planted-bugs"));
    match planted {
        Some(bug) => format!(
            "SPIRAL_PLANTED_BUG={bug} cargo run --release -p spiral-harness --features planted-bugs -- sim --seed {seed} --steps {steps}"
        ),
        None => {
            format!("cargo run --release -p spiral-harness -- sim --seed {seed} --steps {steps}")
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Sim { seed, steps } => {
            println!("seed {seed}");
            let r = run(seed, steps);
            println!(
                "steps {}  ops {:?}  trace {:016x}",
                r.steps, r.counts, r.trace_digest
            );
            match &r.outcome {
                Outcome::Pass => println!("PASS"),
                Outcome::Correctness { step, violation } => {
                    println!("FAIL correctness at step {step}: {violation}");
                    println!("replay: {}", replay(seed, steps));
                }
                Outcome::Crash(msg) => {
                    println!("FAIL crash: {msg}");
                    println!("replay: {}", replay(seed, steps));
                }
            }
            ExitCode::from(r.outcome.exit_code())
        }
        Command::Load {
            ws_url,
            jwt_secret,
            rates,
            duration_s,
            warmup_s,
            connections,
            payload_bytes,
            p95_target_us,
            json,
        } => match load(
            ws_url,
            jwt_secret,
            rates,
            duration_s,
            warmup_s,
            connections,
            payload_bytes,
            p95_target_us,
            json,
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("spiral-harness load: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Sweep { seeds, steps, jobs } => {
            let jobs =
                jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            println!(
                "sweep: engine on the embedded store, seeds {}..{}, {steps} steps each, {jobs} jobs",
                seeds.start, seeds.end
            );
            let summary = sweep(seeds, steps, jobs, |_| {});
            print!("{}", summary.render(|s| replay(s, steps)));
            ExitCode::from(summary.worst_exit_code())
        }
    }
}
