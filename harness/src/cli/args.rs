//! The command line as clap sees it: the subcommands, their flags and help texts, and the
//! parsers of `--seeds A..B` and `--shard K/N`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use spiral_harness::EXIT_CODES_HELP;

/// Operations of an engine-only run unless `--steps` says otherwise.
pub const ENGINE_STEPS: usize = 400;

#[derive(Debug, Parser)]
#[command(
    name = "spiral-harness",
    version,
    about = "Deterministic simulation, sweeps, shrinking and load against the Spiral reference server",
    after_help = EXIT_CODES_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// One seeded run; prints the seed, what ran and the verdict. With a SCENARIO file, the
    /// simulated world (server and clients in turmoil, faults, checkers); without, the
    /// engine-only model.
    #[command(after_help = EXIT_CODES_HELP)]
    Sim(SimArgs),
    /// Many seeds; prints a summary table (faults fired, checks, failures with replay commands)
    /// and exits with the worst run's code. With SCENARIO files, each of them over the seed
    /// range; without, the engine-only model.
    #[command(after_help = EXIT_CODES_HELP)]
    Sweep(SweepArgs),
    /// Shrink a failing run: drop faults and truncate the operation stream while the same
    /// failure class remains; prints the minimal scenario.
    #[command(after_help = EXIT_CODES_HELP)]
    Shrink(ShrinkArgs),
    /// Open-loop WebSocket `memory.store` load against a running server (real sockets), one
    /// phase per rate; latency from the intended send time, an unanswered request recorded at
    /// --timeout-ms and counted as a timeout, the service time beside it, and the generator's own
    /// lag and CPU (a phase it fell behind in is inconclusive: exit 5).
    #[command(after_help = EXIT_CODES_HELP)]
    Load(LoadArgs),
    /// Serve the floor: the least a server on Spiral's stack can do for the load's workload —
    /// `/health`, and a WebSocket that parses each request frame and answers a store-shaped
    /// result envelope (no auth, no engine, no storage) — until stopped.
    #[command(after_help = EXIT_CODES_HELP)]
    Floor(FloorArgs),
    /// Merge `load --out` run directories of several generators over the same work into one:
    /// histograms added exactly from their interval logs, counters summed; runs of another
    /// commit, schema or phase configuration are refused.
    #[command(after_help = EXIT_CODES_HELP)]
    Merge(MergeArgs),
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Run directories written by `load --out`.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Write the merged summary (`summary.json`) here.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct FloorArgs {
    /// Where to listen (HTTP `/health` and the WebSocket on every other path).
    #[arg(long, default_value = "127.0.0.1:3101")]
    pub listen: String,
}

// The flag structs carry no doc comment of their own: the subcommand's help is its variant's.

#[derive(Debug, Args)]
pub struct SimArgs {
    /// A scenario file, e.g. `scenarios/smoke.toml`; leave it out for the engine-only model.
    pub scenario: Option<PathBuf>,
    /// The seed: it fixes the workload, the faults, the network and the server's RNG.
    #[arg(long)]
    pub seed: u64,
    /// Operations of the engine-only run (default 400); not for a SCENARIO.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Write the run's JSON-lines trace here (header line first); needs a SCENARIO.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Run twice and require byte-identical traces (exit 3 when they differ).
    #[arg(long)]
    pub check_determinism: bool,
    /// Refuse to run unless HEAD is this commit (a prefix of at least 7 characters). Replay
    /// commands printed by a failing run carry it.
    #[arg(long, value_name = "COMMIT")]
    pub commit: Option<String>,
    /// Refuse to run unless the SCENARIO file's SHA-256 starts with this (at least 8 hex
    /// characters). Replay commands printed by a failing run carry it.
    #[arg(long, value_name = "HEX")]
    pub scenario_sha256: Option<String>,
}

#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Scenario files, e.g. `scenarios/*.toml`; leave them out for the engine-only model.
    pub scenarios: Vec<PathBuf>,
    /// Seed range `A..B` (B exclusive).
    #[arg(long, default_value = "0..200", value_parser = parse_range)]
    pub seeds: std::ops::Range<u64>,
    /// Run only the seeds `s` with `s % N == K - 1` (CI matrix sharding).
    #[arg(long, default_value = "1/1", value_parser = parse_shard, value_name = "K/N")]
    pub shard: (u64, u64),
    /// Operations per engine-only run (default 400); not for SCENARIO files.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Also write the summary as a JSON object here (format: docs/simulation.md).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Stop a scenario at the first batch of seeds (one per job) with a failure.
    #[arg(long)]
    pub fail_fast: bool,
    /// For every failing seed write its trace, the scenario as it ran, the shrunk minimal
    /// scenario and a replay.sh under DIR/<scenario>/seed-<N>/, and the summary as
    /// DIR/summary.json. Needs SCENARIO files.
    #[arg(long, value_name = "DIR")]
    pub artifacts: Option<PathBuf>,
    /// With --artifacts: shrink at most this many failing seeds per scenario (the rest get
    /// everything but minimal.toml).
    #[arg(long, value_name = "N")]
    pub shrink_limit: Option<usize>,
    /// Fault-path coverage gate: print runs per server marker and exit 4 when a marker this
    /// file requires was reached by no run (scenarios/coverage/ci.toml). Needs SCENARIO files.
    #[arg(long, value_name = "FILE")]
    pub coverage: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ShrinkArgs {
    /// The scenario file of the failing run.
    pub scenario: PathBuf,
    /// The failing seed.
    #[arg(long)]
    pub seed: u64,
    /// Also write the minimal scenario here.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The server's WebSocket command channel.
    #[arg(long, default_value = "ws://127.0.0.1:3001")]
    pub ws_url: String,
    /// The server's HS256 secret, to mint one token per connection.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
    /// Comma-separated arrival rates (messages/s), one phase each.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    pub rates: Vec<u64>,
    /// Length of each phase (s).
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
    /// Start of each phase left out of the figures (s).
    #[arg(long, default_value_t = 2)]
    pub warmup_s: u64,
    /// WebSocket connections the load is spread over (one token each).
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Bytes of content per store.
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: usize,
    /// Report the highest rate whose p95 stays under this (µs).
    #[arg(long, default_value_t = 1000)]
    pub p95_target_us: u64,
    /// A request unanswered this long after its intended send time is a timeout, recorded at
    /// this latency (ms).
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
    /// The generator's own schedule lag (p99, ms) past which a phase is inconclusive (exit 5).
    #[arg(long, default_value_t = 10)]
    pub max_lag_ms: u64,
    /// Also run every phase against a floor (the least a server on the same stack can do,
    /// started in this process), alternating with the target, and print each figure as a ratio
    /// to the floor's.
    #[arg(long)]
    pub vs_floor: bool,
    /// The target server's process id on this machine: each phase also reports its CPU per
    /// request (and, with --vs-floor, as a ratio to the floor's).
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// A pass/fail criterion judged on every measured phase, k6 style: `METRIC < VALUE` or
    /// `METRIC <= VALUE`, METRIC one of p50_ms, p95_ms, p99_ms, max_ms, service_p95_ms,
    /// error_rate, timeout_rate (over the requests scheduled). Repeatable. A breach exits 99.
    #[arg(long = "threshold", value_name = "EXPR")]
    pub thresholds: Vec<spiral_harness::thresholds::Threshold>,
    /// Stop after the first phase that breaches a threshold.
    #[arg(long)]
    pub abort_on_fail: bool,
    /// Instead of --rates: find the highest arrival rate in LO..HI whose phases meet every
    /// --threshold (without any: p95 under --p95-target-us, no timeout, no error), by bisection;
    /// a rate passes only when all --repeats phases pass. Exit 0 with a rate found, 99 when none
    /// in the range passes, 5 when the generator fell behind below any rate the server failed.
    #[arg(long, value_name = "LO..HI", value_parser = parse_range, conflicts_with_all = ["rates", "vs_floor"])]
    pub find_max_rate: Option<std::ops::Range<u64>>,
    /// Phases per rate tried by --find-max-rate.
    #[arg(long, default_value_t = 3)]
    pub repeats: u32,
    /// --find-max-rate stops when its bracket is this narrow (% of the rate).
    #[arg(long, default_value_t = 5.0)]
    pub resolution_pct: f64,
    /// Write a run directory here: `summary.json` (schema, commit, machine and load average,
    /// configuration, every phase's figures, the threshold verdicts, the exit code) and one
    /// HdrHistogram interval log per phase (`server-RATE.hlog`, `floor-RATE.hlog`).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Also write the phases as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

fn parse_shard(s: &str) -> Result<(u64, u64), String> {
    let (k, n) = s.split_once('/').ok_or("expected K/N")?;
    let k: u64 = k.parse().map_err(|_| format!("bad K {k:?}"))?;
    let n: u64 = n.parse().map_err(|_| format!("bad N {n:?}"))?;
    if n == 0 || k == 0 || k > n {
        return Err("need 1 <= K <= N".into());
    }
    Ok((k, n))
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
