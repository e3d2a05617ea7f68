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
