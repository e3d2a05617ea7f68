//! `spiral-harness shrink`: cut a failing run down to the fewest faults, clients and operations
//! that still fail the same way, and print (and optionally save) the minimal scenario.

use std::process::ExitCode;

use spiral_harness::{EXIT_ERROR, EXIT_PASS, say, say_text};

use super::args::ShrinkArgs;
use super::load_scenario;

pub fn main(a: ShrinkArgs) -> ExitCode {
    let ShrinkArgs {
        scenario,
        seed,
        output,
    } = a;
    let l = match load_scenario(&scenario) {
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
        && let Err(e) = std::fs::write(&p, &text)
    {
        eprintln!("cannot write {}: {e}", p.display());
        return ExitCode::from(EXIT_ERROR);
    }
    ExitCode::from(s.result.exit_code())
}
