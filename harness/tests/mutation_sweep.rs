//! Every shipped scenario over a small fixed seed range, through the harness's library: the test
//! command of the mutation measurement (`scripts/mutants.sh`, `.cargo/mutants.toml`), and an
//! ordinary test of the normal suite. A mutant of the server's decision code is killed when any
//! run fails (a checker's verdict, a crash, a hang cut short by the mutant's timeout).
//!
//! The seed range is `SPIRAL_MUTATION_SEEDS` (`a..b`) when set; otherwise it depends on the build:
//! an unoptimized test build (`debug_assertions` on) runs [`DEBUG_SEEDS`] so that the normal suite
//! stays quick, an optimized one (the `mutants` profile) runs [`OPTIMIZED_SEEDS`]. One test per
//! scenario, so nextest spreads them over the cores and stops at the first failure.

use std::ops::Range;
use std::path::{Path, PathBuf};

use spiral_harness::provenance::{ScenarioFile, replay_command};
use spiral_harness::scenario::Scenario;
use spiral_harness::world;

/// Seeds per scenario in an unoptimized build: one run of each story.
const DEBUG_SEEDS: Range<u64> = 0..1;
/// Seeds per scenario in an optimized build: what the mutation score is measured with (90 runs,
/// about 12 s on 2 cores: reaches compositions as rare as a server booting during an outage).
const OPTIMIZED_SEEDS: Range<u64> = 0..10;

fn seeds() -> Range<u64> {
    match std::env::var("SPIRAL_MUTATION_SEEDS") {
        Ok(s) => {
            let parse = |n: &str| {
                n.trim()
                    .parse::<u64>()
                    .unwrap_or_else(|_| panic!("SPIRAL_MUTATION_SEEDS: expected `a..b`, got {s:?}"))
            };
            let (a, b) = s
                .split_once("..")
                .unwrap_or_else(|| panic!("SPIRAL_MUTATION_SEEDS: expected `a..b`, got {s:?}"));
            let r = parse(a)..parse(b);
            assert!(!r.is_empty(), "SPIRAL_MUTATION_SEEDS: empty range {s:?}");
            r
        }
        Err(_) if cfg!(debug_assertions) => DEBUG_SEEDS,
        Err(_) => OPTIMIZED_SEEDS,
    }
}

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

/// Run `file` (in `scenarios/`) over the seed range; panic naming every failing seed, its
/// verdict and the command that replays it.
fn sweep(file: &str) {
    let path = scenarios_dir().join(file);
    let (mut provenance, text) = ScenarioFile::read(&path).unwrap();
    provenance.file = format!("scenarios/{file}");
    let scenario = Scenario::parse(&provenance.file, &text).unwrap();
    let seeds: Vec<u64> = seeds().collect();
    let runs = world::sweep(&scenario, &seeds, 1, &|_| {});
    assert_eq!(runs.len(), seeds.len());
    let failures: Vec<String> = runs
        .iter()
        .filter(|r| !r.passed())
        .map(|r| {
            format!(
                "seed {} (exit {}): {}\n  replay: {}",
                r.seed,
                r.exit_code(),
                r.describe(),
                replay_command(&provenance, r.seed)
            )
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{file}: {} of {} seeds failed\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n")
    );
}

macro_rules! scenarios {
    ($($test:ident => $file:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                sweep($file);
            }
        )*

        /// The files the tests above sweep.
        const SWEPT: &[&str] = &[$($file),*];
    };
}

scenarios! {
    bad_clients => "bad-clients.toml",
    chaos => "chaos.toml",
    clock_skew => "clock-skew.toml",
    gc_pressure => "gc-pressure.toml",
    multi_server => "multi-server.toml",
    partition_heal => "partition-heal.toml",
    redis_outage => "redis-outage.toml",
    server_crash_restart => "server-crash-restart.toml",
    smoke => "smoke.toml",
}

#[test]
fn every_shipped_scenario_is_swept() {
    let mut shipped: Vec<String> = std::fs::read_dir(scenarios_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    shipped.sort();
    assert_eq!(
        shipped, SWEPT,
        "a scenario in scenarios/ is missing from this sweep (or one listed here is gone)"
    );
}
