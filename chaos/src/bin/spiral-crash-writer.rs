//! `spiral-crash-writer DB_PATH`: writes `key-<n>` = `{"n": n}` to the embedded store forever,
//! printing `acked <n>` after each write returns. The crash test kills it with SIGKILL mid-stream
//! and checks that every acknowledged write survived.

use std::io::Write;

use serde_json::json;
use spiral_server::storage::Storage;
use spiral_server::storage::embedded::EmbeddedStorage;

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: spiral-crash-writer DB_PATH");
        std::process::exit(2);
    };
    let storage = match EmbeddedStorage::open(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("spiral-crash-writer: {e}");
            std::process::exit(1);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("spiral-crash-writer: {e}");
            std::process::exit(1);
        }
    };
    let mut out = std::io::stdout().lock();
    for n in 0u64.. {
        if let Err(e) = rt.block_on(storage.set(&format!("key-{n:08}"), &json!({"n": n}))) {
            eprintln!("spiral-crash-writer: write {n}: {e}");
            std::process::exit(1);
        }
        // Only now is the write acknowledged.
        if writeln!(out, "acked {n}")
            .and_then(|()| out.flush())
            .is_err()
        {
            return;
        }
    }
}
