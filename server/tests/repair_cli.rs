//! `spiral repair` as an operator runs it: the real binary against an embedded database whose
//! meta snapshot has drifted from the nodes it describes.

use std::process::Command;
use std::sync::Arc;

use serde_json::json;
use spiral_server::clock::{ManualClock, SharedClock};
use spiral_server::engine::{Engine, EngineConfig, META_LATEST, StoreRequest};
use spiral_server::storage::Storage;
use spiral_server::storage::embedded::EmbeddedStorage;

#[tokio::test]
async fn repair_reports_every_corrected_spiral_with_before_and_after() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spiral.redb");
    {
        let storage = Arc::new(EmbeddedStorage::open(&path).unwrap());
        let clock: SharedClock = Arc::new(ManualClock::new(1_700_000_000_000));
        let (engine, _) = Engine::open(storage.clone(), EngineConfig::default(), clock, 1)
            .await
            .unwrap();
        for i in 0..40 {
            let req = StoreRequest {
                content: json!(i),
                depth: Some(f64::from(i) / 40.0),
                ..Default::default()
            };
            engine.store("acme", req).await.unwrap();
        }
        engine.snapshot_meta().await.unwrap();
        // Drift: the snapshot claims one spiral holds 7 more nodes than it does.
        let mut meta = storage.get(META_LATEST).await.unwrap().unwrap();
        let row = &mut meta["counts"][0];
        row[1] = json!(row[1].as_u64().unwrap() + 7);
        storage.set(META_LATEST, &meta).await.unwrap();
    }

    let out = Command::new(env!("CARGO_BIN_EXE_spiral"))
        .args(["repair", "--verbose", "--db-path"])
        .arg(&path)
        .env_remove("REDIS_URL")
        .env_remove("SPIRAL_STORAGE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "repair failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("storage embedded ("), "{stdout}");
    assert!(stdout.contains("scanned 40 nodes in"), "{stdout}");
    assert!(stdout.contains("nodes/s"), "{stdout}");
    assert!(stdout.contains("totalMemories 47 -> 40"), "{stdout}");
    assert!(stdout.contains("corrected 1 spiral(s):"), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.contains("node_count") && l.contains("->"))
        .unwrap();
    for field in ["node_count", "avg_depth", "radius", "turns"] {
        assert!(line.contains(field), "{line}");
    }
    assert!(stdout.contains("spirals after the rebuild"), "{stdout}");

    // A second run finds nothing left to correct.
    let again = Command::new(env!("CARGO_BIN_EXE_spiral"))
        .args(["repair", "--db-path"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(stdout.contains("no corrections"), "{stdout}");
}

#[test]
fn a_bad_setting_stops_repair_with_the_variable_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_spiral"))
        .args(["repair"])
        .env("CB_FAILURES", "lots")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("CB_FAILURES"), "{stderr}");
}
