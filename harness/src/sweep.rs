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

/// Run every seed in `seeds` on `jobs` worker threads (each run owns its own runtime, so runs
/// share nothing) and return the reports in seed order, whatever order they finished in.
pub fn sweep(
    seeds: std::ops::Range<u64>,
    steps: usize,
    jobs: usize,
    progress: impl Fn(&RunReport) + Sync,
) -> SweepSummary {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};

    let next = AtomicU64::new(seeds.start);
    let done = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= seeds.end {
                        break;
                    }
                    let r = run(seed, steps);
                    progress(&r);
                    done.lock().unwrap_or_else(|p| p.into_inner()).push(r);
                }
            });
        }
    });
    let mut runs = done.into_inner().unwrap_or_else(|p| p.into_inner());
    runs.sort_by_key(|r| r.seed);
    SweepSummary { runs }
}
