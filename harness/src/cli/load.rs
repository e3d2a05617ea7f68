//! `spiral-harness load`: open-loop WebSocket `memory.store` load against a running server on
//! real sockets, one phase per rate, and the highest rate that kept p95 under the target.

use std::process::ExitCode;

use spiral_harness::load::{LoadConfig, Phase, Verdict, row, run_phase};
use spiral_harness::{EXIT_ERROR, EXIT_INCONCLUSIVE, EXIT_PASS, say};

use super::args::LoadArgs;

pub fn main(a: LoadArgs) -> ExitCode {
    match load(a) {
        Ok(true) => ExitCode::from(EXIT_PASS),
        Ok(false) => ExitCode::from(EXIT_INCONCLUSIVE),
        Err(e) => {
            eprintln!("spiral-harness load: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Run the phases; `false` when one of them was inconclusive.
fn load(a: LoadArgs) -> anyhow::Result<bool> {
    let LoadArgs {
        ws_url,
        jwt_secret,
        rates,
        duration_s,
        warmup_s,
        connections,
        payload_bytes,
        p95_target_us,
        timeout_ms,
        max_lag_ms,
        json,
    } = a;
    let cfg = LoadConfig {
        ws_url,
        jwt_secret,
        connections,
        warmup: std::time::Duration::from_secs(warmup_s),
        payload_bytes,
        timeout: std::time::Duration::from_millis(timeout_ms),
        max_lag: std::time::Duration::from_millis(max_lag_ms),
    };
    // One thread: the pacer wakes it for each send and it reads every answer; a second worker
    // would only add cross-thread wake-ups to what is measured.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut reports = Vec::new();
    for (i, rate) in rates.iter().enumerate() {
        let phase = Phase {
            rate_per_s: *rate,
            duration: std::time::Duration::from_secs(duration_s.max(warmup_s + 1)),
        };
        let r = rt.block_on(run_phase(
            &cfg,
            &phase,
            i as u64 + (std::process::id() as u64) * 1000,
        ))?;
        say!("{}", row(&r));
        reports.push(r);
    }
    let best = reports
        .iter()
        .filter(|r| {
            r.verdict == Verdict::Measured
                && r.latency.p95_us < p95_target_us
                && r.answered == r.scheduled
        })
        .map(|r| r.rate_per_s)
        .max();
    match best {
        Some(r) => say!("highest rate with p95 < {p95_target_us} µs: {r}/s"),
        None => say!("no rate kept p95 < {p95_target_us} µs"),
    }
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&reports)?)?;
    }
    let inconclusive = reports
        .iter()
        .filter(|r| r.verdict != Verdict::Measured)
        .count();
    if inconclusive > 0 {
        say!(
            "inconclusive: the generator fell behind its schedule in {inconclusive} of {} phases (exit {EXIT_INCONCLUSIVE})",
            reports.len()
        );
    }
    Ok(inconclusive == 0)
}
