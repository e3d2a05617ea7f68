//! The command line of `spiral-harness`, one module per subcommand, and what they share:
//! reading a scenario file, usage errors, the wall-clock stopwatch of the reports.
//!
//! - [`args`] — the subcommands and flags as clap parses them.
//! - [`sim`] — `sim`: one seeded run of a scenario or of the engine-only model.
//! - [`sweep`] — `sweep`: many seeds, the summary table and JSON, the artifacts of failures.
//! - [`progress`] — the progress bar a sweep draws on a terminal.
//! - [`shrink`] — `shrink`: a failing run cut down to a minimal scenario.
//! - [`load`] — `load`: open-loop WebSocket load against a running server (and a floor beside
//!   it); `floor`: the floor on its own.

pub mod args;
pub mod load;
pub mod progress;
pub mod shrink;
pub mod sim;
pub mod sweep;

use std::path::Path;
use std::process::ExitCode;

use spiral_harness::EXIT_USAGE;
use spiral_harness::provenance::ScenarioFile;
use spiral_harness::scenario::Scenario;

/// A usage error: the message on stderr, exit 2.
pub fn usage(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(EXIT_USAGE)
}

/// A scenario file read and parsed, with its digest.
pub struct Loaded {
    pub file: ScenarioFile,
    pub text: String,
    pub scenario: Scenario,
}

/// Read and parse a scenario file; a file that cannot be read or parsed is a usage error.
pub fn load_scenario(path: &Path) -> Result<Loaded, ExitCode> {
    let (file, text) = ScenarioFile::read(path).map_err(|e| usage(&e))?;
    let scenario = Scenario::parse(&file.file, &text).map_err(|e| usage(&e))?;
    Ok(Loaded {
        file,
        text,
        scenario,
    })
}

/// Wall time, for the reports' seconds columns only: nothing simulated reads it.
#[allow(clippy::disallowed_methods)]
pub fn stopwatch() -> std::time::Instant {
    std::time::Instant::now()
}
