//! A sweep's summary: the table a person reads and the JSON object CI keeps (`sweep --json`),
//! one shape for the simulated world and the engine-only model. The JSON object is documented in
//! `docs/simulation.md` ("The sweep summary"); [`SCHEMA_VERSION`] names its version.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::provenance::{Checkout, HARNESS_VERSION, ScenarioFile, planted_bug};

/// Version of the summary's JSON object. Bump it when a field changes meaning or disappears
/// (adding a field is compatible).
pub const SCHEMA_VERSION: u32 = 1;

/// One run as a summary keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct RunBrief {
    pub seed: u64,
    pub exit_code: u8,
    /// `pass`, `crash`, `correctness:<checker>`, `liveness:<checker>`.
    pub class: String,
    pub verdict: String,
    /// Digest of the run's trace (FNV-1a, 16 hex digits; the header line is not part of it).
    pub trace_digest: String,
    #[serde(skip)]
    pub faults_fired: BTreeMap<String, u64>,
    #[serde(skip)]
    pub ops: BTreeMap<String, u64>,
    /// Fault-path markers the run reached, with hit counts.
    #[serde(skip)]
    pub reached: BTreeMap<String, u64>,
}

/// One scenario of a sweep (or the engine-only model) and its runs.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub file: Option<ScenarioFile>,
    pub runs: Vec<RunBrief>,
    pub checks: Vec<&'static str>,
    pub seconds: f64,
    /// `--fail-fast` stopped it before every seed ran.
    pub stopped_early: bool,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct SeedRange {
    pub start: u64,
    pub end: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

/// How the sweep was asked for.
#[derive(Debug, Clone)]
pub struct Request {
    /// `world` (scenario files in turmoil) or `engine` (the engine-only model).
    pub mode: &'static str,
    pub seeds: SeedRange,
    pub shard: Shard,
    pub jobs: usize,
    pub fail_fast: bool,
    /// Operations per engine-only run.
    pub steps: Option<usize>,
    pub artifacts: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ScenarioSummary {
    pub name: String,
    pub file: Option<String>,
    pub sha256: Option<String>,
    pub runs: usize,
    pub passed: usize,
    pub failed: usize,
    pub stopped_early: bool,
    pub faults_fired: BTreeMap<String, u64>,
    pub ops: BTreeMap<String, u64>,
    pub checks: Vec<&'static str>,
    pub seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct Failure {
    pub scenario: String,
    pub file: Option<String>,
    #[serde(flatten)]
    pub run: RunBrief,
    pub replay: String,
    /// The failure's artifact directory (`sweep --artifacts`), relative to where the sweep ran.
    pub artifacts: Option<String>,
}

/// The JSON object of `sweep --json`.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Always `spiral-harness/sweep`.
    pub schema: &'static str,
    pub schema_version: u32,
    pub harness_version: &'static str,
    pub commit: String,
    pub dirty: bool,
    pub planted_bug: Option<String>,
    pub mode: &'static str,
    pub seeds: SeedRange,
    pub shard: Shard,
    /// Seeds of the range this shard runs, per scenario.
    pub seeds_in_shard: usize,
    pub jobs: usize,
    pub fail_fast: bool,
    pub steps: Option<usize>,
    pub scenarios: Vec<ScenarioSummary>,
    pub failures: Vec<Failure>,
    pub runs: usize,
    pub passed: usize,
    pub failed: usize,
    pub artifacts: Option<String>,
    /// Fault-path coverage of the world's runs: runs per marker, and the required markers
    /// missed (`--coverage`). Absent for the engine-only model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage: Option<crate::coverage::Coverage>,
    /// The exit code of the sweep: the worst run's (SPEC §3); 4 when every run passed but a
    /// required coverage marker was missed; 1 when a report could not be written.
    pub exit_code: u8,
}

impl Summary {
    /// `replay(row, run)` gives the command that replays one failing run; `artifact(row, run)`
    /// its artifact directory, if one was written.
    pub fn new(
        req: &Request,
        seeds_in_shard: usize,
        rows: &[Row],
        replay: impl Fn(&Row, &RunBrief) -> String,
        artifact: impl Fn(&Row, &RunBrief) -> Option<String>,
    ) -> Self {
        let co = Checkout::current();
        let mut scenarios = Vec::new();
        let mut failures = Vec::new();
        let mut worst = 0u8;
        for row in rows {
            let mut faults_fired = BTreeMap::new();
            let mut ops = BTreeMap::new();
            for r in &row.runs {
                for (k, v) in &r.faults_fired {
                    *faults_fired.entry(k.clone()).or_default() += v;
                }
                for (k, v) in &r.ops {
                    *ops.entry(k.clone()).or_default() += v;
                }
                worst = worst.max(r.exit_code);
                if r.exit_code != crate::EXIT_PASS {
                    failures.push(Failure {
                        scenario: row.name.clone(),
                        file: row.file.as_ref().map(|f| f.file.clone()),
                        run: r.clone(),
                        replay: replay(row, r),
                        artifacts: artifact(row, r),
                    });
                }
            }
            let passed = row
                .runs
                .iter()
                .filter(|r| r.exit_code == crate::EXIT_PASS)
                .count();
            scenarios.push(ScenarioSummary {
                name: row.name.clone(),
                file: row.file.as_ref().map(|f| f.file.clone()),
                sha256: row.file.as_ref().map(|f| f.sha256.clone()),
                runs: row.runs.len(),
                passed,
                failed: row.runs.len() - passed,
                stopped_early: row.stopped_early,
                faults_fired,
                ops,
                checks: row.checks.clone(),
                seconds: (row.seconds * 10.0).round() / 10.0,
            });
        }
        let runs = scenarios.iter().map(|s| s.runs).sum();
        let passed = scenarios.iter().map(|s| s.passed).sum();
        Summary {
            schema: "spiral-harness/sweep",
            schema_version: SCHEMA_VERSION,
            harness_version: HARNESS_VERSION,
            commit: co.commit.clone(),
            dirty: co.dirty,
            planted_bug: planted_bug(),
            mode: req.mode,
            seeds: req.seeds,
            shard: req.shard,
            seeds_in_shard,
            jobs: req.jobs,
            fail_fast: req.fail_fast,
            steps: req.steps,
            scenarios,
            failures,
            runs,
            passed,
            failed: runs - passed,
            artifacts: req.artifacts.clone(),
            coverage: None,
            exit_code: worst,
        }
    }

    /// Add the world's fault-path coverage over `rows`, gated by `file` if given: a gap turns a
    /// passing sweep's exit code into [`EXIT_COVERAGE`](crate::EXIT_COVERAGE).
    pub fn with_coverage(
        mut self,
        rows: &[Row],
        file: Option<&crate::coverage::CoverageFile>,
    ) -> Self {
        let mut c = crate::coverage::Coverage::of(
            rows.iter().flat_map(|r| r.runs.iter().map(|b| &b.reached)),
        );
        if let Some(f) = file {
            c.gate(f);
            if !c.missed.is_empty() && self.exit_code == crate::EXIT_PASS {
                self.exit_code = crate::EXIT_COVERAGE;
            }
        }
        self.coverage = Some(c);
        self
    }

    /// The table printed at the end of a sweep, failures and their replay commands last.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n{:<22} {:>6} {:>6} {:>5} {:>8} {:>7}  faults fired",
            "scenario", "seeds", "pass", "fail", "ops", "secs"
        );
        for s in &self.scenarios {
            let _ = writeln!(
                out,
                "{:<22} {:>6} {:>6} {:>5} {:>8} {:>7.1}  {}{}",
                s.name,
                s.runs,
                s.passed,
                s.failed,
                s.ops.values().sum::<u64>(),
                s.seconds,
                counts(&s.faults_fired),
                if s.stopped_early {
                    "  (stopped at the first failure)"
                } else {
                    ""
                }
            );
        }
        if let Some(s) = self.scenarios.first() {
            let _ = writeln!(out, "checks: {}", s.checks.join(" "));
        }
        for f in &self.failures {
            let _ = writeln!(
                out,
                "FAIL {} seed {} (exit {}): {}",
                f.scenario,
                f.run.seed,
                f.run.exit_code,
                f.run.verdict.chars().take(240).collect::<String>()
            );
            let _ = writeln!(out, "  trace {}  replay: {}", f.run.trace_digest, f.replay);
            if let Some(dir) = &f.artifacts {
                let _ = writeln!(
                    out,
                    "  artifacts: {dir} (trace, minimal scenario, replay.sh)"
                );
            }
        }
        if let Some(c) = &self.coverage {
            let _ = writeln!(out, "{}", c.table(self.runs));
        }
        if self.failed == 0 {
            let _ = writeln!(out, "all {} runs passed", self.runs);
        } else {
            let _ = writeln!(out, "{} of {} runs failed", self.failed, self.runs);
        }
        out
    }
}

/// `k=v k=v`, or `-` for none.
pub fn counts(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "-".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brief(seed: u64, exit_code: u8) -> RunBrief {
        RunBrief {
            seed,
            exit_code,
            class: if exit_code == 0 {
                "pass".into()
            } else {
                "correctness:acked_writes".into()
            },
            verdict: "v".into(),
            trace_digest: format!("{seed:016x}"),
            faults_fired: BTreeMap::from([("crash".to_owned(), 1)]),
            ops: BTreeMap::from([("store".to_owned(), 3)]),
            reached: BTreeMap::new(),
        }
    }

    #[test]
    fn the_summary_object_carries_its_provenance_and_the_worst_exit_code() {
        let req = Request {
            mode: "world",
            seeds: SeedRange { start: 0, end: 8 },
            shard: Shard { index: 2, count: 4 },
            jobs: 2,
            fail_fast: false,
            steps: None,
            artifacts: Some("out".into()),
        };
        let rows = vec![Row {
            name: "smoke".into(),
            file: Some(ScenarioFile {
                file: "scenarios/smoke.toml".into(),
                sha256: "ab".repeat(32),
            }),
            runs: vec![brief(1, 0), brief(5, 129)],
            checks: vec!["acked_writes"],
            seconds: 1.26,
            stopped_early: false,
        }];
        let s = Summary::new(
            &req,
            2,
            &rows,
            |_, r| format!("replay {}", r.seed),
            |_, r| Some(format!("out/smoke/seed-{}", r.seed)),
        );
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["schema"], "spiral-harness/sweep");
        assert_eq!(v["schema_version"], SCHEMA_VERSION);
        assert_eq!(v["exit_code"], 129);
        assert_eq!(v["shard"]["index"], 2);
        assert_eq!(v["seeds"]["end"], 8);
        assert_eq!(v["scenarios"][0]["sha256"], "ab".repeat(32));
        assert_eq!(v["scenarios"][0]["faults_fired"]["crash"], 2);
        assert_eq!(v["scenarios"][0]["failed"], 1);
        assert_eq!(v["failures"][0]["seed"], 5);
        assert_eq!(v["failures"][0]["replay"], "replay 5");
        assert_eq!(v["failures"][0]["artifacts"], "out/smoke/seed-5");
        assert_eq!(
            (v["runs"].as_u64(), v["failed"].as_u64()),
            (Some(2), Some(1))
        );
        assert!(s.table().contains("1 of 2 runs failed"));
    }
}
