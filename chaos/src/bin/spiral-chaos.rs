//! `spiral-chaos`: the scenarios of the simulated world against real processes.
//!
//! - `spiral-chaos run SCENARIO --seed N` — real `spiral` servers, a real Redis, a fault proxy on
//!   every link; the history judged by the simulator's checkers. Exits as `spiral-harness sim`
//!   does (0 pass, 129 correctness, 128 liveness, 127 crash; 64: not set up) and leaves a run directory.
//! - `spiral-chaos diff SCENARIO --seed N` — the same seed in the simulator and for real, each
//!   checker's verdict side by side; exits 0 when every verdict agrees, 6 on a divergence.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use spiral_chaos::world::{self, RunOptions};
use spiral_harness::scenario::Scenario;

/// A checker passed in one world and failed in the other.
const EXIT_DIVERGENCE: u8 = 6;
/// The run could not be set up (a field this world cannot honour, a missing binary).
const EXIT_SETUP: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "spiral-chaos",
    about = "Spiral's scenarios against real processes, a real Redis and a fault proxy on every link"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct Common {
    /// The scenario file (the simulator's format).
    scenario: PathBuf,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The release `spiral` binary; default `$CARGO_TARGET_DIR/release/spiral`, else
    /// `target/release/spiral`.
    #[arg(long, env = "SPIRAL_BIN")]
    spiral_bin: Option<PathBuf>,
    /// The run directory; default target/chaos-runs/NAME-seedN.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run without a scenario field this world cannot honour (named in the error).
    #[arg(long)]
    accept: Vec<String>,
    /// Each server process's open-file limit (RLIMIT_NOFILE, via util-linux's `prlimit`): for a
    /// slowloris or a connection flood against a server that runs out of descriptors.
    #[arg(long, value_name = "N")]
    fd_limit: Option<u64>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario for real.
    Run(Common),
    /// Run a scenario in the simulator and for real; compare each checker's verdict.
    Diff(Common),
}

fn default_bin() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
        .join("release/spiral")
}

fn options(c: &Common, suffix: &str) -> anyhow::Result<RunOptions> {
    let name = Scenario::load(&c.scenario)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .name;
    // `diff` keeps its two worlds apart: OUT/sim and OUT/real.
    let out = match &c.out {
        Some(o) if suffix.is_empty() => o.clone(),
        Some(o) => o.join(suffix.trim_start_matches('-')),
        None => PathBuf::from(format!("target/chaos-runs/{name}-seed{}{suffix}", c.seed)),
    };
    let spiral_bin = c.spiral_bin.clone().unwrap_or_else(default_bin);
    Ok(RunOptions {
        scenario: c.scenario.clone(),
        seed: c.seed,
        out,
        spiral_bin,
        accept: c.accept.clone(),
        fd_limit: c.fd_limit,
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let outcome = match &args.command {
        Command::Run(c) => run(c),
        Command::Diff(c) => diff(c),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("spiral-chaos: {e:#}");
            ExitCode::from(EXIT_SETUP)
        }
    }
}

fn run(c: &Common) -> anyhow::Result<u8> {
    let opts = options(c, "")?;
    println!(
        "run {} seed {} for real, in {}",
        opts.scenario.display(),
        opts.seed,
        opts.out.display()
    );
    let out = world::run(&opts)?;
    let r = &out.result;
    println!("verdict {}: {}", r.class(), r.describe());
    println!("run directory {}", out.dir.display());
    Ok(r.exit_code())
}

fn diff(c: &Common) -> anyhow::Result<u8> {
    let scenario = Scenario::load(&c.scenario).map_err(|e| anyhow::anyhow!("{e}"))?;
    let sim = spiral_harness::world::run(&scenario, c.seed);
    let sim_dir = options(c, "-sim")?.out;
    std::fs::create_dir_all(&sim_dir)?;
    std::fs::write(sim_dir.join("history.jsonl"), sim.trace.join("\n") + "\n")?;
    let opts = options(c, "-real")?;
    let real = world::run(&opts)?;
    let (s, r) = (
        world::verdicts(&sim.trace),
        world::verdicts(&real.result.trace),
    );
    println!("{:<22} {:<10} {:<10}", "checker", "simulated", "real");
    let mut divergent = Vec::new();
    let names: std::collections::BTreeSet<&String> = s.keys().chain(r.keys()).collect();
    for name in names {
        let show = |v: Option<&bool>| match v {
            Some(true) => "held",
            Some(false) => "VIOLATED",
            None => "-",
        };
        let (a, b) = (s.get(name), r.get(name));
        let mark = if a == b { "" } else { "  <- divergence" };
        if a != b {
            divergent.push(name.clone());
        }
        println!("{name:<22} {:<10} {:<10}{mark}", show(a), show(b));
    }
    println!(
        "simulated: {} (trace in {})",
        sim.describe(),
        sim_dir.display()
    );
    println!(
        "real:      {} (run directory {})",
        real.result.describe(),
        real.dir.display()
    );
    if divergent.is_empty() {
        println!("identical verdicts");
        Ok(0)
    } else {
        println!("DIVERGENCE in {}", divergent.join(", "));
        Ok(EXIT_DIVERGENCE)
    }
}
