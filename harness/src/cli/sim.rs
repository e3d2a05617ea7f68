//! `spiral-harness sim`: one seeded run — of a scenario in the simulated world, or of the
//! engine-only model — with its verdict, the failure report and the pinned replay command, and
//! `--check-determinism`.

use std::path::Path;
use std::process::ExitCode;

use spiral_harness::engine_run;
use spiral_harness::provenance::{self, Checkout, TraceHeader, cargo_prefix, replay_command};
use spiral_harness::summary::counts;
use spiral_harness::world::{self, RunResult};
use spiral_harness::{EXIT_ERROR, EXIT_NONDETERMINISM, say};

use super::args::{ENGINE_STEPS, SimArgs};
use super::{Loaded, load_scenario, stopwatch, usage};

pub fn main(a: SimArgs) -> ExitCode {
    let SimArgs {
        scenario,
        seed,
        steps,
        trace,
        check_determinism,
        commit,
        scenario_sha256,
    } = a;
    match scenario {
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
    }
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
    if !l.scenario.server.0.is_empty() {
        say!(
            "server {}",
            world::server_settings(&l.scenario, seed).describe()
        );
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

/// The command that replays an engine-only seed, pinned to this commit when it is known.
pub fn engine_replay(seed: u64, steps: usize) -> String {
    let co = Checkout::current();
    let pin = if co.known() {
        format!(" --commit {}", co.short())
    } else {
        String::new()
    };
    format!("{}sim --seed {seed} --steps {steps}{pin}", cargo_prefix())
}
