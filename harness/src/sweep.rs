//! Many seeds of the engine-only model (the summary table is [`crate::summary`]'s).

use crate::engine_run::{RunReport, run};

pub struct SweepSummary {
    pub runs: Vec<RunReport>,
}

impl SweepSummary {
    pub fn worst_exit_code(&self) -> u8 {
        self.runs
            .iter()
            .map(RunReport::exit_code)
            .max()
            .unwrap_or(0)
    }

    pub fn failures(&self) -> impl Iterator<Item = &RunReport> {
        self.runs.iter().filter(|r| !r.passed())
    }
}

/// Run every seed in `seeds` on `jobs` worker threads (each run owns its own runtime, so runs
/// share nothing) and return the reports in seed order, whatever order they finished in.
pub fn sweep(
    seeds: &[u64],
    steps: usize,
    jobs: usize,
    progress: impl Fn(&RunReport) + Sync,
) -> SweepSummary {
    let runs = crate::pool::map(seeds, jobs, |&seed| {
        let r = run(seed, steps);
        progress(&r);
        r
    });
    SweepSummary { runs }
}
