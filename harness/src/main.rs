//! `spiral-harness`: seeded simulation runs, sweeps and shrinking of scenarios against the reference server, and load on real sockets.

use std::process::ExitCode;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use spiral_harness::engine_run::{Outcome, run};
use spiral_harness::scenario::Scenario;
use spiral_harness::sweep::sweep;
use spiral_harness::world::{self, RunResult, Verdict};

// A simulated run allocates and frees small objects all the time (messages, JSON, timers, trace
// lines); mimalloc makes a sweep noticeably cheaper than the system allocator.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "spiral-harness",
    version,
    about = "Deterministic simulation, sweeps, shrinking and load against the Spiral reference server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One seeded run; prints the seed, what ran and the verdict. With a SCENARIO file, the
    /// simulated world (server and clients in turmoil, faults, checkers); without, the
    /// engine-only run.
    Sim {
        /// A scenario file, e.g. `scenarios/smoke.toml`.
        scenario: Option<PathBuf>,
        #[arg(long)]
        seed: u64,
        /// Operations of the engine-only run.
        #[arg(long, default_value_t = 400)]
        steps: usize,
        /// Write the run's JSON-lines trace here.
        #[arg(long)]
        trace: Option<PathBuf>,
        /// Run twice and require byte-identical traces.
        #[arg(long)]
        check_determinism: bool,
    },
    /// Many seeds; prints a summary table (faults fired, checks, failures with replay commands)
    /// and exits with the worst run's code. With SCENARIO files, each of them over the seed
    /// range; without, the engine-only run.
    Sweep {
        scenarios: Vec<PathBuf>,
        /// Seed range `A..B` (B exclusive).
        #[arg(long, default_value = "0..200", value_parser = parse_range)]
        seeds: std::ops::Range<u64>,
        /// Run only the seeds `s` with `s % N == K - 1` (CI matrix sharding).
        #[arg(long, default_value = "1/1", value_parser = parse_shard)]
        shard: (u64, u64),
        /// Operations per engine-only run.
        #[arg(long, default_value_t = 400)]
        steps: usize,
        /// Worker threads (default: one per core).
        #[arg(long)]
        jobs: Option<usize>,
        /// Also write the summary as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Stop a scenario at the first failing batch of seeds.
        #[arg(long)]
        fail_fast: bool,
    },
    /// Shrink a failing run: drop faults and truncate the operation stream while the same
    /// failure class remains; prints the minimal scenario.
    Shrink {
        scenario: PathBuf,
        #[arg(long)]
        seed: u64,
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
        json: Option<PathBuf>,
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
    json: Option<PathBuf>,
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

fn scenario_replay(path: &Path, seed: u64) -> String {
    let planted = std::env::var("SPIRAL_PLANTED_BUG")
        .ok()
        .filter(|_| cfg!(feature = "planted-bugs"));
    match planted {
        Some(bug) => format!(
            "SPIRAL_PLANTED_BUG={bug} cargo run --release -p spiral-harness --features planted-bugs -- sim {} --seed {seed}",
            path.display()
        ),
        None => format!(
            "cargo run --release -p spiral-harness -- sim {} --seed {seed}",
            path.display()
        ),
    }
}

/// The checkout's commit, for failure reports (`git` at run time; a build may be older).
fn commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

fn load_scenario(path: &Path) -> Result<Scenario, ExitCode> {
    Scenario::load(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })
}

fn counts(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "-".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The failure report: seed, scenario, commit, faults, the violated invariant with the trace
/// lines that led to it, and the replay command.
fn report_failure(path: &Path, sc: &Scenario, r: &RunResult) {
    println!("FAIL {}", r.verdict.describe());
    println!(
        "  scenario {} ({})  seed {}  commit {}",
        sc.name,
        path.display(),
        r.seed,
        commit()
    );
    println!("  faults fired: {}", counts(&r.faults_fired));
    println!("  leading up to it (trace):");
    for line in r.leading_lines(12) {
        println!("    {line}");
    }
    println!("  replay: {}", scenario_replay(path, r.seed));
}

fn write_trace(path: &Path, r: &RunResult) {
    let mut text = r.trace.join("\n");
    text.push('\n');
    if let Err(e) = std::fs::write(path, text) {
        eprintln!("cannot write the trace to {}: {e}", path.display());
    }
}

fn sim_scenario(path: &Path, seed: u64, trace: Option<&Path>, check_determinism: bool) -> ExitCode {
    let sc = match load_scenario(path) {
        Ok(s) => s,
        Err(code) => return code,
    };
    println!("seed {seed}");
    println!("scenario {} ({})", sc.name, sc.description);
    let t0 = stopwatch();
    let r = world::run(&sc, seed);
    if let Some(t) = trace {
        write_trace(t, &r);
    }
    println!("ops {}", counts(&r.ops));
    println!("faults fired {}", counts(&r.faults_fired));
    println!("checks {}", r.checks.join(" "));
    println!(
        "trace {:016x} ({} lines, {:.2} s)",
        r.digest(),
        r.trace.len(),
        t0.elapsed().as_secs_f64()
    );
    if check_determinism {
        let again = world::run(&sc, seed);
        if again.trace != r.trace {
            let at = r
                .trace
                .iter()
                .zip(&again.trace)
                .position(|(a, b)| a != b)
                .unwrap_or(r.trace.len().min(again.trace.len()));
            println!(
                "FAIL determinism: the two runs' traces differ from line {} on",
                at + 1
            );
            println!(
                "  first:  {}",
                r.trace.get(at).map_or("(end)", String::as_str)
            );
            println!(
                "  second: {}",
                again.trace.get(at).map_or("(end)", String::as_str)
            );
            return ExitCode::from(spiral_harness::EXIT_CORRECTNESS);
        }
        println!(
            "determinism: two runs, identical traces ({:016x})",
            again.digest()
        );
    }
    match &r.verdict {
        Verdict::Pass => println!("PASS"),
        _ => report_failure(path, &sc, &r),
    }
    ExitCode::from(r.verdict.exit_code())
}

#[derive(serde::Serialize)]
struct SweepRow {
    scenario: String,
    file: String,
    seeds: usize,
    passed: usize,
    faults_fired: BTreeMap<String, u64>,
    ops: BTreeMap<String, u64>,
    checks: Vec<&'static str>,
    failures: Vec<SweepFailure>,
    seconds: f64,
}

#[derive(serde::Serialize)]
struct SweepFailure {
    seed: u64,
    exit_code: u8,
    verdict: String,
    trace_digest: String,
    replay: String,
}

struct SweepArgs<'a> {
    seeds: std::ops::Range<u64>,
    shard: (u64, u64),
    jobs: usize,
    json: Option<&'a Path>,
    fail_fast: bool,
}

fn sweep_scenarios(paths: &[PathBuf], a: &SweepArgs<'_>) -> ExitCode {
    use std::io::IsTerminal;
    let (k, n) = a.shard;
    let seeds: Vec<u64> = a.seeds.clone().filter(|s| s % n == k - 1).collect();
    let mut scenarios = Vec::new();
    for p in paths {
        match load_scenario(p) {
            Ok(s) => scenarios.push((p.clone(), s)),
            Err(code) => return code,
        }
    }
    println!(
        "sweep: {} scenario(s), seeds {}..{}{} ({} each), {} jobs",
        scenarios.len(),
        a.seeds.start,
        a.seeds.end,
        if n > 1 {
            format!(" shard {k}/{n}")
        } else {
            String::new()
        },
        seeds.len(),
        a.jobs
    );
    let tty = std::io::stderr().is_terminal();
    let mut rows = Vec::new();
    let mut worst = 0u8;
    for (path, sc) in &scenarios {
        let t0 = stopwatch();
        let done = std::sync::atomic::AtomicUsize::new(0);
        let failed = std::sync::atomic::AtomicUsize::new(0);
        let progress = |r: &RunResult| {
            let d = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if r.verdict != Verdict::Pass {
                failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if tty {
                let f = failed.load(std::sync::atomic::Ordering::Relaxed);
                let width = 30;
                let fill = d * width / seeds.len().max(1);
                eprint!(
                    "\r{:<22} [{}{}] {d}/{} failed {f}",
                    sc.name,
                    "#".repeat(fill),
                    " ".repeat(width - fill),
                    seeds.len()
                );
            }
        };
        let runs = if a.fail_fast {
            // Seed by seed in batches of `jobs`, stopping at the first batch with a failure.
            let mut out = Vec::new();
            for chunk in seeds.chunks(a.jobs.max(1)) {
                let batch = world::sweep(sc, chunk, a.jobs, &progress);
                let stop = batch.iter().any(|r| r.verdict != Verdict::Pass);
                out.extend(batch);
                if stop {
                    break;
                }
            }
            out
        } else {
            world::sweep(sc, &seeds, a.jobs, &progress)
        };
        if tty {
            eprint!("\r{:<70}\r", "");
        }
        let mut row = SweepRow {
            scenario: sc.name.clone(),
            file: path.display().to_string(),
            seeds: runs.len(),
            passed: 0,
            faults_fired: BTreeMap::new(),
            ops: BTreeMap::new(),
            checks: runs.first().map(|r| r.checks.clone()).unwrap_or_default(),
            failures: Vec::new(),
            seconds: t0.elapsed().as_secs_f64(),
        };
        for r in &runs {
            for (k, v) in &r.faults_fired {
                *row.faults_fired.entry(k.clone()).or_default() += v;
            }
            for (k, v) in &r.ops {
                *row.ops.entry(k.clone()).or_default() += v;
            }
            worst = worst.max(r.verdict.exit_code());
            if r.verdict == Verdict::Pass {
                row.passed += 1;
            } else {
                row.failures.push(SweepFailure {
                    seed: r.seed,
                    exit_code: r.verdict.exit_code(),
                    verdict: r.verdict.describe(),
                    trace_digest: format!("{:016x}", r.digest()),
                    replay: scenario_replay(path, r.seed),
                });
            }
        }
        rows.push(row);
    }
    println!(
        "\n{:<22} {:>6} {:>6} {:>5} {:>8} {:>7}  faults fired",
        "scenario", "seeds", "pass", "fail", "ops", "secs"
    );
    for r in &rows {
        println!(
            "{:<22} {:>6} {:>6} {:>5} {:>8} {:>7.1}  {}",
            r.scenario,
            r.seeds,
            r.passed,
            r.failures.len(),
            r.ops.values().sum::<u64>(),
            r.seconds,
            counts(&r.faults_fired)
        );
    }
    if let Some(r) = rows.first() {
        println!("checks: {}", r.checks.join(" "));
    }
    let failures: usize = rows.iter().map(|r| r.failures.len()).sum();
    for r in &rows {
        for f in &r.failures {
            println!(
                "FAIL {} seed {} (exit {}): {}",
                r.scenario,
                f.seed,
                f.exit_code,
                f.verdict.chars().take(240).collect::<String>()
            );
            println!("  trace {}  replay: {}", f.trace_digest, f.replay);
        }
    }
    let total: usize = rows.iter().map(|r| r.seeds).sum();
    if failures == 0 {
        println!("all {total} runs passed");
    } else {
        println!("{failures} of {total} runs failed");
    }
    if let Some(p) = a.json {
        match serde_json::to_string_pretty(&rows) {
            Ok(text) => {
                if let Err(e) = std::fs::write(p, text) {
                    eprintln!("cannot write {}: {e}", p.display());
                }
            }
            Err(e) => eprintln!("cannot render the summary: {e}"),
        }
    }
    ExitCode::from(worst)
}

fn shrink_scenario(path: &Path, seed: u64) -> ExitCode {
    let sc = match load_scenario(path) {
        Ok(s) => s,
        Err(code) => return code,
    };
    println!("shrinking {} seed {seed}", sc.name);
    let Some(s) = spiral_harness::shrink::shrink(&sc, seed, |step| println!("  {step}")) else {
        println!("seed {seed} passes: nothing to shrink");
        return ExitCode::SUCCESS;
    };
    println!(
        "after {} runs, still failing: {}",
        s.runs,
        s.result.verdict.describe()
    );
    println!("minimal scenario (save it and replay with `sim FILE --seed {seed}`):\n");
    print!("{}", s.scenario.to_toml());
    ExitCode::from(s.result.verdict.exit_code())
}

/// Wall time, for the reports' seconds columns only: nothing simulated reads it.
#[allow(clippy::disallowed_methods)]
fn stopwatch() -> std::time::Instant {
    std::time::Instant::now()
}

fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
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
        Command::Sim {
            scenario: Some(path),
            seed,
            trace,
            check_determinism,
            ..
        } => sim_scenario(&path, seed, trace.as_deref(), check_determinism),
        Command::Sweep {
            scenarios,
            seeds,
            shard,
            jobs,
            json,
            fail_fast,
            ..
        } if !scenarios.is_empty() => sweep_scenarios(
            &scenarios,
            &SweepArgs {
                seeds,
                shard,
                jobs: jobs.unwrap_or_else(default_jobs),
                json: json.as_deref(),
                fail_fast,
            },
        ),
        Command::Shrink { scenario, seed } => shrink_scenario(&scenario, seed),
        Command::Sim { seed, steps, .. } => {
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
        Command::Sweep {
            seeds, steps, jobs, ..
        } => {
            let jobs = jobs.unwrap_or_else(default_jobs);
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
