//! `spiral-harness`: seeded simulation runs, sweeps and shrinking of scenarios against the
//! reference server, the engine-only model, and load on real sockets. Exit codes: see
//! [`spiral_harness::EXIT_CODES_HELP`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use spiral_harness::artifacts::{self, FailedRun};
use spiral_harness::engine_run;
use spiral_harness::provenance::{
    self, Checkout, ScenarioFile, TraceHeader, cargo_prefix, replay_command,
};
use spiral_harness::scenario::Scenario;
use spiral_harness::summary::{Request, Row, RunBrief, SeedRange, Shard, Summary, counts};
use spiral_harness::world::{self, RunResult};
use spiral_harness::{
    EXIT_CODES_HELP, EXIT_ERROR, EXIT_NONDETERMINISM, EXIT_PASS, EXIT_USAGE, say, say_text,
};
use spiral_history::{Failure, failure};

// A simulated run allocates and frees small objects all the time (messages, JSON, timers, trace
// lines); mimalloc makes a sweep noticeably cheaper than the system allocator.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Operations of an engine-only run unless `--steps` says otherwise.
const ENGINE_STEPS: usize = 400;

#[derive(Debug, Parser)]
#[command(
    name = "spiral-harness",
    version,
    about = "Deterministic simulation, sweeps, shrinking and load against the Spiral reference server",
    after_help = EXIT_CODES_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One seeded run; prints the seed, what ran and the verdict. With a SCENARIO file, the
    /// simulated world (server and clients in turmoil, faults, checkers); without, the
    /// engine-only model.
    #[command(after_help = EXIT_CODES_HELP)]
    Sim {
        /// A scenario file, e.g. `scenarios/smoke.toml`; leave it out for the engine-only model.
        scenario: Option<PathBuf>,
        /// The seed: it fixes the workload, the faults, the network and the server's RNG.
        #[arg(long)]
        seed: u64,
        /// Operations of the engine-only run (default 400); not for a SCENARIO.
        #[arg(long)]
        steps: Option<usize>,
        /// Write the run's JSON-lines trace here (header line first); needs a SCENARIO.
        #[arg(long, value_name = "FILE")]
        trace: Option<PathBuf>,
        /// Run twice and require byte-identical traces (exit 3 when they differ).
        #[arg(long)]
        check_determinism: bool,
        /// Refuse to run unless HEAD is this commit (a prefix of at least 7 characters). Replay
        /// commands printed by a failing run carry it.
        #[arg(long, value_name = "COMMIT")]
        commit: Option<String>,
        /// Refuse to run unless the SCENARIO file's SHA-256 starts with this (at least 8 hex
        /// characters). Replay commands printed by a failing run carry it.
        #[arg(long, value_name = "HEX")]
        scenario_sha256: Option<String>,
    },
    /// Many seeds; prints a summary table (faults fired, checks, failures with replay commands)
    /// and exits with the worst run's code. With SCENARIO files, each of them over the seed
    /// range; without, the engine-only model.
    #[command(after_help = EXIT_CODES_HELP)]
    Sweep {
        /// Scenario files, e.g. `scenarios/*.toml`; leave them out for the engine-only model.
        scenarios: Vec<PathBuf>,
        /// Seed range `A..B` (B exclusive).
        #[arg(long, default_value = "0..200", value_parser = parse_range)]
        seeds: std::ops::Range<u64>,
        /// Run only the seeds `s` with `s % N == K - 1` (CI matrix sharding).
        #[arg(long, default_value = "1/1", value_parser = parse_shard, value_name = "K/N")]
        shard: (u64, u64),
        /// Operations per engine-only run (default 400); not for SCENARIO files.
        #[arg(long)]
        steps: Option<usize>,
        /// Worker threads (default: one per core).
        #[arg(long)]
        jobs: Option<usize>,
        /// Also write the summary as a JSON object here (format: docs/simulation.md).
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Stop a scenario at the first batch of seeds (one per job) with a failure.
        #[arg(long)]
        fail_fast: bool,
        /// For every failing seed write its trace, the scenario as it ran, the shrunk minimal
        /// scenario and a replay.sh under DIR/<scenario>/seed-<N>/, and the summary as
        /// DIR/summary.json. Needs SCENARIO files.
        #[arg(long, value_name = "DIR")]
        artifacts: Option<PathBuf>,
        /// With --artifacts: shrink at most this many failing seeds per scenario (the rest get
        /// everything but minimal.toml).
        #[arg(long, value_name = "N")]
        shrink_limit: Option<usize>,
    },
    /// Shrink a failing run: drop faults and truncate the operation stream while the same
    /// failure class remains; prints the minimal scenario.
    #[command(after_help = EXIT_CODES_HELP)]
    Shrink {
        /// The scenario file of the failing run.
        scenario: PathBuf,
        /// The failing seed.
        #[arg(long)]
        seed: u64,
        /// Also write the minimal scenario here.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Open-loop WebSocket `memory.store` load against a running server (real sockets), one
    /// phase per rate; latency from the intended send time.
    #[command(after_help = EXIT_CODES_HELP)]
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
        /// WebSocket connections the load is spread over (one token each).
        #[arg(long, default_value_t = 8)]
        connections: usize,
        /// Bytes of content per store.
        #[arg(long, default_value_t = 64)]
        payload_bytes: usize,
        /// Report the highest rate whose p95 stays under this (µs).
        #[arg(long, default_value_t = 1000)]
        p95_target_us: u64,
        /// Also write the phases as JSON here.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
}

/// A usage error: the message on stderr, exit 2.
fn usage(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(EXIT_USAGE)
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
        say!("{}", row(&r));
        reports.push(r);
    }
    let best = reports
        .iter()
        .filter(|r| r.p95_us < p95_target_us && r.errors == 0 && r.answered == r.sent)
        .map(|r| r.rate_per_s)
        .max();
    match best {
        Some(r) => say!("highest rate with p95 < {p95_target_us} µs: {r}/s"),
        None => say!("no rate kept p95 < {p95_target_us} µs"),
    }
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&reports)?)?;
    }
    Ok(())
}

/// A scenario file read and parsed, with its digest.
struct Loaded {
    file: ScenarioFile,
    text: String,
    scenario: Scenario,
}

fn load_scenario(path: &Path) -> Result<Loaded, ExitCode> {
    let (file, text) = ScenarioFile::read(path).map_err(|e| usage(&e))?;
    let scenario = Scenario::parse(&file.file, &text).map_err(|e| usage(&e))?;
    Ok(Loaded {
        file,
        text,
        scenario,
    })
}

/// The failure report: seed, scenario, commit, faults, the violated invariant with the trace
/// lines that led to it, and the pinned replay command.
fn report_failure(l: &Loaded, r: &RunResult) {
    let co = Checkout::current();
    say!("FAIL {}", r.describe());
    say!(
        "  scenario {} ({}, sha256 {})  seed {}  commit {}{}",
        l.scenario.name,
        l.file.file,
        l.file.short_digest(),
        r.seed,
        co.short(),
        if co.dirty {
            " (uncommitted changes)"
        } else {
            ""
        }
    );
    say!("  faults fired: {}", counts(&r.faults_fired));
    say!("  leading up to it (trace):");
    for line in r.leading_lines(12) {
        say!("    {line}");
    }
    say!("  replay: {}", replay_command(&l.file, r.seed));
}

fn sim_scenario(
    path: &Path,
    seed: u64,
    trace: Option<&Path>,
    check_determinism: bool,
    pins: (Option<&str>, Option<&str>),
) -> ExitCode {
    let l = match load_scenario(path) {
        Ok(l) => l,
        Err(code) => return code,
    };
    if let Err(e) = provenance::check_pins(pins.0, pins.1, Some(&l.file)) {
        return usage(&e);
    }
    if pins.0.is_some() && Checkout::current().dirty {
        eprintln!("note: the working tree has uncommitted changes; the replay may differ");
    }
    say!("seed {seed}");
    say!("scenario {} ({})", l.scenario.name, l.scenario.description);
    let t0 = stopwatch();
    let r = world::run(&l.scenario, seed);
    if let Some(t) = trace {
        let text = TraceHeader::new(&l.scenario.name, &l.file, seed).file_text(&r.trace);
        if let Err(e) = std::fs::write(t, text) {
            eprintln!("cannot write the trace to {}: {e}", t.display());
            return ExitCode::from(EXIT_ERROR);
        }
    }
    say!("ops {}", counts(&r.ops));
    say!("faults fired {}", counts(&r.faults_fired));
    say!("checks {}", r.checks.join(" "));
    say!(
        "trace {:016x} ({} lines, {:.2} s)",
        r.digest(),
        r.trace.len(),
        t0.elapsed().as_secs_f64()
    );
    if check_determinism {
        let again = world::run(&l.scenario, seed);
        if again.trace != r.trace {
            let at = r
                .trace
                .iter()
                .zip(&again.trace)
                .position(|(a, b)| a != b)
                .unwrap_or(r.trace.len().min(again.trace.len()));
            say!(
                "FAIL determinism: the two runs' traces differ from line {} on",
                at + 1
            );
            say!(
                "  first:  {}",
                r.trace.get(at).map_or("(end)", String::as_str)
            );
            say!(
                "  second: {}",
                again.trace.get(at).map_or("(end)", String::as_str)
            );
            say!(
                "  replay: {} --check-determinism",
                replay_command(&l.file, seed)
            );
            return ExitCode::from(EXIT_NONDETERMINISM);
        }
        say!(
            "determinism: two runs, identical traces ({:016x})",
            again.digest()
        );
    }
    if r.passed() {
        say!("PASS");
    } else {
        report_failure(&l, &r);
    }
    ExitCode::from(r.exit_code())
}

fn sim_engine(seed: u64, steps: usize, check_determinism: bool) -> ExitCode {
    say!("seed {seed}");
    let r = engine_run::run(seed, steps);
    say!(
        "steps {}  ops {:?}  trace {:016x}",
        r.steps,
        r.counts,
        r.trace_digest
    );
    if check_determinism {
        let again = engine_run::run(seed, steps);
        if again != r {
            say!(
                "FAIL determinism: two runs differ (traces {:016x} and {:016x})",
                r.trace_digest,
                again.trace_digest
            );
            return ExitCode::from(EXIT_NONDETERMINISM);
        }
        say!(
            "determinism: two runs, identical traces ({:016x})",
            again.trace_digest
        );
    }
    match &r.failure {
        None => say!("PASS"),
        Some(f) => {
            say!("FAIL {}", f.describe());
            say!("replay: {}", engine_replay(seed, steps));
        }
    }
    ExitCode::from(r.exit_code())
}

fn engine_replay(seed: u64, steps: usize) -> String {
    let co = Checkout::current();
    let pin = if co.known() {
        format!(" --commit {}", co.short())
    } else {
        String::new()
    };
    format!("{}sim --seed {seed} --steps {steps}{pin}", cargo_prefix())
}

struct SweepArgs {
    seeds: std::ops::Range<u64>,
    shard: (u64, u64),
    jobs: usize,
    json: Option<PathBuf>,
    fail_fast: bool,
    artifacts: Option<PathBuf>,
    shrink_limit: usize,
}

impl SweepArgs {
    fn seeds(&self) -> Vec<u64> {
        let (k, n) = self.shard;
        self.seeds.clone().filter(|s| s % n == k - 1).collect()
    }

    fn request(&self, mode: &'static str, steps: Option<usize>) -> Request {
        Request {
            mode,
            seeds: SeedRange {
                start: self.seeds.start,
                end: self.seeds.end,
            },
            shard: Shard {
                index: self.shard.0,
                count: self.shard.1,
            },
            jobs: self.jobs,
            fail_fast: self.fail_fast,
            steps,
            artifacts: self.artifacts.as_ref().map(|p| p.display().to_string()),
        }
    }

    fn banner(&self, what: &str, per: usize) {
        let (k, n) = self.shard;
        say!(
            "sweep: {what}, seeds {}..{}{} ({per} each), {} jobs",
            self.seeds.start,
            self.seeds.end,
            if n > 1 {
                format!(" shard {k}/{n}")
            } else {
                String::new()
            },
            self.jobs
        );
    }

    /// Run `one` over the seeds, in batches of `jobs` that stop at the first failure with
    /// `--fail-fast`; returns the runs and whether it stopped early.
    fn runs<R: Send>(
        &self,
        seeds: &[u64],
        failed: impl Fn(&R) -> bool,
        batch: impl Fn(&[u64]) -> Vec<R>,
    ) -> (Vec<R>, bool) {
        if !self.fail_fast {
            return (batch(seeds), false);
        }
        let mut out = Vec::new();
        for (i, chunk) in seeds.chunks(self.jobs.max(1)).enumerate() {
            let b = batch(chunk);
            let stop = b.iter().any(&failed);
            out.extend(b);
            if stop {
                return (out, (i + 1) * self.jobs.max(1) < seeds.len());
            }
        }
        (out, false)
    }
}

/// A progress bar on stderr when it is a terminal.
struct Progress {
    tty: bool,
    total: usize,
    done: std::sync::atomic::AtomicUsize,
    failed: std::sync::atomic::AtomicUsize,
}

impl Progress {
    fn new(total: usize) -> Self {
        use std::io::IsTerminal;
        Progress {
            tty: std::io::stderr().is_terminal(),
            total,
            done: 0.into(),
            failed: 0.into(),
        }
    }

    fn tick(&self, name: &str, failed: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        let d = self.done.fetch_add(1, Relaxed) + 1;
        if failed {
            self.failed.fetch_add(1, Relaxed);
        }
        if self.tty {
            let width = 30;
            let fill = d * width / self.total.max(1);
            eprint!(
                "\r{name:<22} [{}{}] {d}/{} failed {}",
                "#".repeat(fill),
                " ".repeat(width - fill),
                self.total,
                self.failed.load(Relaxed)
            );
        }
    }

    fn clear(&self) {
        if self.tty {
            eprint!("\r{:<70}\r", "");
        }
    }
}

fn brief(r: &RunResult) -> RunBrief {
    RunBrief {
        seed: r.seed,
        exit_code: r.exit_code(),
        class: r.class(),
        verdict: r.describe(),
        trace_digest: format!("{:016x}", r.digest()),
        faults_fired: r.faults_fired.clone(),
        ops: r.ops.clone(),
    }
}

fn sweep_scenarios(paths: &[PathBuf], a: &SweepArgs) -> ExitCode {
    let seeds = a.seeds();
    let mut loaded = Vec::new();
    for p in paths {
        match load_scenario(p) {
            Ok(l) => loaded.push(l),
            Err(code) => return code,
        }
    }
    a.banner(&format!("{} scenario(s)", loaded.len()), seeds.len());
    let mut rows = Vec::new();
    let mut failing: Vec<(usize, RunResult)> = Vec::new();
    for (i, l) in loaded.iter().enumerate() {
        let t0 = stopwatch();
        let progress = Progress::new(seeds.len());
        let tick = |r: &RunResult| progress.tick(&l.scenario.name, !r.passed());
        let (runs, stopped_early) = a.runs(
            &seeds,
            |r: &RunResult| !r.passed(),
            |chunk| world::sweep(&l.scenario, chunk, a.jobs, &tick),
        );
        progress.clear();
        rows.push(Row {
            name: l.scenario.name.clone(),
            file: Some(l.file.clone()),
            runs: runs.iter().map(brief).collect(),
            checks: world::checks(&l.scenario),
            seconds: t0.elapsed().as_secs_f64(),
            stopped_early,
        });
        failing.extend(runs.into_iter().filter(|r| !r.passed()).map(|r| (i, r)));
    }
    let mut io_failed = false;
    let mut dirs: BTreeMap<(usize, u64), String> = BTreeMap::new();
    if let Some(root) = &a.artifacts {
        match write_artifacts(root, &loaded, &failing, a) {
            Ok(d) => dirs = d,
            Err(e) => {
                eprintln!("cannot write the artifacts: {e}");
                io_failed = true;
            }
        }
    }
    let index: BTreeMap<&str, usize> = loaded
        .iter()
        .enumerate()
        .map(|(i, l)| (l.file.file.as_str(), i))
        .collect();
    let row_index = |row: &Row| {
        row.file
            .as_ref()
            .and_then(|f| index.get(f.file.as_str()).copied())
            .unwrap_or(0)
    };
    let summary = Summary::new(
        &a.request("world", None),
        seeds.len(),
        &rows,
        |row, r| {
            row.file
                .as_ref()
                .map_or_else(String::new, |f| replay_command(f, r.seed))
        },
        |row, r| dirs.get(&(row_index(row), r.seed)).cloned(),
    );
    finish(&summary, a, io_failed)
}

/// Shrink (up to the limit per scenario, in parallel) and write every failing run's artifacts;
/// the directory of each, by (scenario index, seed).
fn write_artifacts(
    root: &Path,
    loaded: &[Loaded],
    failing: &[(usize, RunResult)],
    a: &SweepArgs,
) -> Result<BTreeMap<(usize, u64), String>, String> {
    std::fs::create_dir_all(root).map_err(|e| format!("{}: {e}", root.display()))?;
    let mut per_scenario: BTreeMap<usize, usize> = BTreeMap::new();
    let work: Vec<(&(usize, RunResult), bool)> = failing
        .iter()
        .map(|f| {
            let n = per_scenario.entry(f.0).or_default();
            *n += 1;
            (f, *n <= a.shrink_limit)
        })
        .collect();
    if !work.is_empty() {
        say!(
            "artifacts: {} failing run(s), shrinking {} ...",
            work.len(),
            work.iter().filter(|w| w.1).count()
        );
    }
    let limit_note = format!("beyond --shrink-limit {}", a.shrink_limit);
    let written = spiral_harness::pool::map(&work, a.jobs, |((i, r), shrink)| {
        let l = &loaded[*i];
        let shrunk = shrink
            .then(|| spiral_harness::shrink::shrink(&l.scenario, r.seed, |_| {}))
            .flatten();
        let why_not = if *shrink {
            "the failure did not reproduce when shrinking began"
        } else {
            limit_note.as_str()
        };
        artifacts::write(
            root,
            &FailedRun {
                scenario: &l.scenario,
                file: &l.file,
                text: &l.text,
                run: r,
                shrunk: shrunk.as_ref().ok_or(why_not),
            },
        )
        .map(|dir| ((*i, r.seed), dir.display().to_string()))
    });
    written.into_iter().collect()
}

/// Print the table, write the JSON summaries, and the exit code.
fn finish(summary: &Summary, a: &SweepArgs, mut io_failed: bool) -> ExitCode {
    say_text!("{}", summary.table());
    let text = match serde_json::to_string_pretty(summary) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot render the summary: {e}");
            return ExitCode::from(summary.exit_code.max(EXIT_ERROR));
        }
    };
    let targets = a
        .json
        .iter()
        .cloned()
        .chain(a.artifacts.iter().map(|d| d.join("summary.json")));
    for p in targets {
        if let Err(e) = std::fs::write(&p, &text) {
            eprintln!("cannot write {}: {e}", p.display());
            io_failed = true;
        }
    }
    let code = if io_failed {
        summary.exit_code.max(EXIT_ERROR)
    } else {
        summary.exit_code
    };
    ExitCode::from(code)
}

fn sweep_engine(steps: usize, a: &SweepArgs) -> ExitCode {
    let seeds = a.seeds();
    a.banner(
        &format!("engine on the embedded store, {steps} steps"),
        seeds.len(),
    );
    let t0 = stopwatch();
    let progress = Progress::new(seeds.len());
    let (runs, stopped_early) = a.runs(
        &seeds,
        |r: &engine_run::RunReport| !r.passed(),
        |chunk| {
            spiral_harness::sweep::sweep(chunk, steps, a.jobs, |r| {
                progress.tick("engine", !r.passed());
            })
            .runs
        },
    );
    progress.clear();
    let row = Row {
        name: "engine".into(),
        file: None,
        runs: runs
            .iter()
            .map(|r| RunBrief {
                seed: r.seed,
                exit_code: r.exit_code(),
                class: failure::class(r.failure.as_ref()),
                verdict: r
                    .failure
                    .as_ref()
                    .map_or_else(|| "pass".into(), Failure::describe),
                trace_digest: format!("{:016x}", r.trace_digest),
                faults_fired: BTreeMap::new(),
                ops: r
                    .counts
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), *v))
                    .collect(),
            })
            .collect(),
        checks: vec!["engine_invariants"],
        seconds: t0.elapsed().as_secs_f64(),
        stopped_early,
    };
    let summary = Summary::new(
        &a.request("engine", Some(steps)),
        seeds.len(),
        &[row],
        |_, r| engine_replay(r.seed, steps),
        |_, _| None,
    );
    finish(&summary, a, false)
}

fn shrink_scenario(path: &Path, seed: u64, output: Option<&Path>) -> ExitCode {
    let l = match load_scenario(path) {
        Ok(l) => l,
        Err(code) => return code,
    };
    say!("shrinking {} seed {seed}", l.scenario.name);
    let Some(s) = spiral_harness::shrink::shrink(&l.scenario, seed, |step| say!("  {step}")) else {
        say!("seed {seed} passes: nothing to shrink");
        return ExitCode::from(EXIT_PASS);
    };
    say!(
        "after {} runs, still failing: {}",
        s.runs,
        s.result.describe()
    );
    say!("minimal scenario (save it and replay with `sim FILE --seed {seed}`):\n");
    let text = s.scenario.to_toml();
    say_text!("{text}");
    if let Some(p) = output
        && let Err(e) = std::fs::write(p, &text)
    {
        eprintln!("cannot write {}: {e}", p.display());
        return ExitCode::from(EXIT_ERROR);
    }
    ExitCode::from(s.result.exit_code())
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

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Sim {
            scenario,
            seed,
            steps,
            trace,
            check_determinism,
            commit,
            scenario_sha256,
        } => match scenario {
            Some(path) => {
                if steps.is_some() {
                    return usage("--steps is for the engine-only model (sim without a SCENARIO)");
                }
                sim_scenario(
                    &path,
                    seed,
                    trace.as_deref(),
                    check_determinism,
                    (commit.as_deref(), scenario_sha256.as_deref()),
                )
            }
            None => {
                if trace.is_some() {
                    return usage(
                        "--trace needs a SCENARIO: the engine-only model keeps only a trace digest",
                    );
                }
                if scenario_sha256.is_some() {
                    return usage("--scenario-sha256 needs a SCENARIO");
                }
                if let Err(e) = provenance::check_pins(commit.as_deref(), None, None) {
                    return usage(&e);
                }
                sim_engine(seed, steps.unwrap_or(ENGINE_STEPS), check_determinism)
            }
        },
        Command::Sweep {
            scenarios,
            seeds,
            shard,
            steps,
            jobs,
            json,
            fail_fast,
            artifacts,
            shrink_limit,
        } => {
            let args = SweepArgs {
                seeds,
                shard,
                jobs: jobs.unwrap_or_else(default_jobs).max(1),
                json,
                fail_fast,
                artifacts,
                shrink_limit: shrink_limit.unwrap_or(10),
            };
            if scenarios.is_empty() {
                if args.artifacts.is_some() || shrink_limit.is_some() {
                    return usage(
                        "--artifacts and --shrink-limit need SCENARIO files: the engine-only \
                         model keeps no trace to save (replay a failing seed with `sim --seed N`)",
                    );
                }
                sweep_engine(steps.unwrap_or(ENGINE_STEPS), &args)
            } else {
                if steps.is_some() {
                    return usage(
                        "--steps is for the engine-only model (sweep without SCENARIO files)",
                    );
                }
                if shrink_limit.is_some() && args.artifacts.is_none() {
                    return usage("--shrink-limit applies to --artifacts");
                }
                sweep_scenarios(&scenarios, &args)
            }
        }
        Command::Shrink {
            scenario,
            seed,
            output,
        } => shrink_scenario(&scenario, seed, output.as_deref()),
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
            Ok(()) => ExitCode::from(EXIT_PASS),
            Err(e) => {
                eprintln!("spiral-harness load: {e:#}");
                ExitCode::from(EXIT_ERROR)
            }
        },
    }
}
