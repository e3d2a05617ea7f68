//! `spiral-harness sweep`: many seeds of each scenario (or of the engine-only model) in batches,
//! the summary table and JSON object, the artifacts of every failing seed (`--artifacts`), and
//! the worst run's exit code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use spiral_harness::artifacts::{self, FailedRun};
use spiral_harness::coverage::CoverageFile;
use spiral_harness::engine_run;
use spiral_harness::provenance::replay_command;
use spiral_harness::summary::{Request, Row, RunBrief, SeedRange, Shard, Summary};
use spiral_harness::world::{self, RunResult};
use spiral_harness::{EXIT_ERROR, say, say_text};
use spiral_history::{Failure, failure};

use super::args::{ENGINE_STEPS, SweepArgs};
use super::progress::Progress;
use super::sim::engine_replay;
use super::{Loaded, load_scenario, stopwatch, usage};

pub fn main(a: SweepArgs) -> ExitCode {
    let SweepArgs {
        scenarios,
        seeds,
        shard,
        steps,
        jobs,
        json,
        fail_fast,
        artifacts,
        shrink_limit,
        coverage,
    } = a;
    let plan = Plan {
        seeds,
        shard,
        jobs: jobs.unwrap_or_else(default_jobs).max(1),
        json,
        fail_fast,
        artifacts,
        shrink_limit: shrink_limit.unwrap_or(10),
        coverage,
    };
    if scenarios.is_empty() {
        if plan.coverage.is_some() {
            return usage("--coverage needs SCENARIO files: the engine-only model has no markers");
        }
        if plan.artifacts.is_some() || shrink_limit.is_some() {
            return usage(
                "--artifacts and --shrink-limit need SCENARIO files: the engine-only \
                 model keeps no trace to save (replay a failing seed with `sim --seed N`)",
            );
        }
        sweep_engine(steps.unwrap_or(ENGINE_STEPS), &plan)
    } else {
        if steps.is_some() {
            return usage("--steps is for the engine-only model (sweep without SCENARIO files)");
        }
        if shrink_limit.is_some() && plan.artifacts.is_none() {
            return usage("--shrink-limit applies to --artifacts");
        }
        sweep_scenarios(&scenarios, &plan)
    }
}

fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// How a sweep runs, its flags resolved: which seeds, how many jobs, where its reports go.
struct Plan {
    seeds: std::ops::Range<u64>,
    shard: (u64, u64),
    jobs: usize,
    json: Option<PathBuf>,
    fail_fast: bool,
    artifacts: Option<PathBuf>,
    shrink_limit: usize,
    coverage: Option<PathBuf>,
}

impl Plan {
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

fn brief(r: &RunResult) -> RunBrief {
    RunBrief {
        seed: r.seed,
        exit_code: r.exit_code(),
        class: r.class(),
        verdict: r.describe(),
        trace_digest: format!("{:016x}", r.digest()),
        faults_fired: r.faults_fired.clone(),
        ops: r.ops.clone(),
        reached: r.reached.clone(),
    }
}

fn sweep_scenarios(paths: &[PathBuf], a: &Plan) -> ExitCode {
    let seeds = a.seeds();
    let coverage = match a.coverage.as_deref().map(CoverageFile::load).transpose() {
        Ok(c) => c,
        Err(e) => return usage(&e),
    };
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
    )
    .with_coverage(&rows, coverage.as_ref());
    finish(&summary, a, io_failed)
}

/// Shrink (up to the limit per scenario, in parallel) and write every failing run's artifacts;
/// the directory of each, by (scenario index, seed).
fn write_artifacts(
    root: &Path,
    loaded: &[Loaded],
    failing: &[(usize, RunResult)],
    a: &Plan,
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
fn finish(summary: &Summary, a: &Plan, mut io_failed: bool) -> ExitCode {
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

fn sweep_engine(steps: usize, a: &Plan) -> ExitCode {
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
                reached: BTreeMap::new(),
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
