//! The embedded store is crash-safe (SPEC §1.6): a process killed with SIGKILL in the middle of a
//! write stream loses no write it had acknowledged, and the database opens cleanly afterwards.
//! (A process crash, not a power cut: the kernel keeps what was written but not yet fsynced, so
//! this proves commit-before-acknowledge and a consistent file; redb's fsync on commit covers the rest.)

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::json;
use spiral_server::storage::Storage;
use spiral_server::storage::embedded::EmbeddedStorage;

#[tokio::test]
async fn sigkill_mid_stream_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.redb");
    let mut total_acked = 0u64;
    // Three crashes in a row, each resuming on the database the last one left.
    for round in 0..3 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_spiral-crash-writer"))
            .arg(&path)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the writer");
        let stdout = child.stdout.take().unwrap();
        let mut last = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let n: u64 = line.strip_prefix("acked ").unwrap().parse().unwrap();
            last = Some(n);
            if n >= 150 {
                break;
            }
        }
        child.kill().expect("SIGKILL the writer");
        let _ = child.wait();
        let last = last.unwrap_or_else(|| panic!("round {round}: the writer acknowledged nothing"));

        let store = EmbeddedStorage::open(&path).expect("the database opens after a crash");
        for n in 0..=last {
            let got = store.get(&format!("key-{n:08}")).await.unwrap();
            assert_eq!(
                got,
                Some(json!({"n": n})),
                "round {round}: acknowledged write {n} lost"
            );
        }
        total_acked += last + 1;
    }
    assert!(total_acked >= 3 * 151);
}
