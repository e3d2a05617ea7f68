//! Many seeds: a summary table and the worst exit code.

use std::collections::BTreeMap;

use crate::engine_run::{Outcome, RunReport, run};

pub struct SweepSummary {
    pub runs: Vec<RunReport>,
}

impl SweepSummary {
    pub fn worst_exit_code(&self) -> u8 {
        self.runs
            .iter()
            .map(|r| r.outcome.exit_code())
            .max()
            .unwrap_or(0)
    }

    pub fn failures(&self) -> impl Iterator<Item = &RunReport> {
        self.runs.iter().filter(|r| r.outcome != Outcome::Pass)
    }

    /// The table printed at the end of a sweep.
    pub fn render(&self, replay: impl Fn(u64) -> String) -> String {
        let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
        for r in &self.runs {
            for (k, v) in &r.counts {
                *totals.entry(k).or_default() += v;
            }
        }
        let passed = self
            .runs
            .iter()
            .filter(|r| r.outcome == Outcome::Pass)
            .count();
        let mut out = String::new();
        out.push_str(&format!("{:<12} {:>10}\n", "seeds", self.runs.len()));
        out.push_str(&format!("{:<12} {:>10}\n", "passed", passed));
        out.push_str(&format!(
            "{:<12} {:>10}\n",
            "failed",
            self.runs.len() - passed
        ));
        for (k, v) in &totals {
            out.push_str(&format!("{:<12} {:>10}\n", format!("{k}s"), v));
        }
        for r in self.failures() {
            let (class, what) = match &r.outcome {
                Outcome::Correctness { step, violation } => {
                    ("correctness", format!("step {step}: {violation}"))
                }
                Outcome::Crash(msg) => ("crash", msg.clone()),
                Outcome::Pass => continue,
            };
            out.push_str(&format!(
                "FAIL seed {} ({class}, exit {}): {what}\n",
                r.seed,
                r.outcome.exit_code()
            ));
            out.push_str(&format!("  replay: {}\n", replay(r.seed)));
        }
        out
    }
}

pub fn sweep(
    seeds: std::ops::Range<u64>,
    steps: usize,
    mut progress: impl FnMut(&RunReport),
) -> SweepSummary {
    let mut runs = Vec::new();
    for seed in seeds {
        let r = run(seed, steps);
        progress(&r);
        runs.push(r);
    }
    SweepSummary { runs }
}
