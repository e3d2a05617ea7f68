//! The simulated world end to end (short scenarios, so the debug build stays quick): a seed
//! replays to the identical trace, a failure names its checker and exit code, the shrinker keeps
//! the failure while removing what it does not need, and the CLI reports bad scenario files by
//! line and shards sweeps.

use std::process::Command;

use spiral_harness::scenario::Scenario;
use spiral_harness::shrink::shrink;
use spiral_harness::world::run;
use spiral_history::Failure;

const SHORT: &str = r#"
name = "short"
[world]
clients = 3
duration_s = 12
[workload]
ops_per_s = 4.0
[[faults]]
at_s = 4
kind = "partition"
a = "client-0"
b = "server-0"
[[faults]]
at_s = 6
kind = "repair"
a = "client-0"
b = "server-0"
"#;

fn short() -> Scenario {
    Scenario::parse("short.toml", SHORT).unwrap()
}

#[test]
fn a_seed_replays_to_the_identical_trace_and_another_seed_differs() {
    let sc = short();
    let a = run(&sc, 11);
    let b = run(&sc, 11);
    assert!(a.passed(), "{:?}", a.leading_lines(10));
    assert!(a.trace.len() > 50, "a run this short still traces its work");
    assert_eq!(a.trace, b.trace);
    assert_eq!(a.digest(), b.digest());
    assert_eq!(a.faults_fired.get("partition"), Some(&1));
    let c = run(&sc, 12);
    assert_ne!(a.digest(), c.digest());
}

#[test]
fn a_missed_slo_is_a_liveness_failure_and_the_shrinker_keeps_only_what_it_needs() {
    let mut sc = short();
    sc.slo.store_p95_ms = Some(0.0);
    let r = run(&sc, 3);
    match &r.failure {
        Some(Failure::Liveness {
            checker: "slo",
            detail,
        }) => assert!(detail.contains("p95"), "{detail}"),
        v => panic!("expected an SLO miss, got {v:?}"),
    }
    assert_eq!(r.exit_code(), 128);
    let s = shrink(&sc, 3, |_| {}).expect("it fails");
    assert_eq!(s.result.class(), "liveness:slo");
    assert!(
        s.scenario.faults.is_empty(),
        "faults are not needed for this failure"
    );
    assert_eq!(s.scenario.world.clients, 1);
    assert!(
        s.scenario
            .workload
            .max_ops_per_client
            .is_some_and(|n| n <= 2)
    );
    // The printed scenario replays the same failure.
    let again = Scenario::parse("shrunk.toml", &s.scenario.to_toml()).unwrap();
    assert_eq!(run(&again, 3).class(), "liveness:slo");
}

fn harness(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_spiral-harness"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn the_cli_names_the_bad_line_and_shards_a_sweep() {
    let dir = std::env::temp_dir().join(format!("spiral-world-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"x\"\n[world]\nclients = 2\nduration_s = 5\nspeed = 9\n",
    )
    .unwrap();
    let (code, text) = harness(&["sim", bad.to_str().unwrap(), "--seed", "1"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("line 5") && text.contains("speed"), "{text}");

    let good = dir.join("short.toml");
    std::fs::write(&good, SHORT).unwrap();
    let json = dir.join("summary.json");
    let (code, text) = harness(&[
        "sweep",
        good.to_str().unwrap(),
        "--seeds",
        "0..4",
        "--shard",
        "2/2",
        "--jobs",
        "1",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("seeds 0..4 shard 2/2 (2 each)"), "{text}");
    assert!(text.contains("all 2 runs passed"), "{text}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(summary["schema"], "spiral-harness/sweep");
    assert_eq!(summary["schema_version"], 1);
    assert_eq!(summary["mode"], "world");
    assert_eq!(summary["seeds"], serde_json::json!({"start": 0, "end": 4}));
    assert_eq!(
        summary["shard"],
        serde_json::json!({"index": 2, "count": 2})
    );
    assert_eq!(summary["seeds_in_shard"], 2);
    assert_eq!(summary["exit_code"], 0);
    assert_eq!(
        (summary["runs"].clone(), summary["failed"].clone()),
        (2.into(), 0.into())
    );
    assert!(summary["commit"].as_str().is_some_and(|c| !c.is_empty()));
    let row = &summary["scenarios"][0];
    assert_eq!(row["runs"], 2);
    assert_eq!(row["faults_fired"]["partition"], 2);
    assert_eq!(row["sha256"].as_str().map(str::len), Some(64));
    assert_eq!(summary["failures"], serde_json::json!([]));
    std::fs::remove_dir_all(&dir).ok();
}
