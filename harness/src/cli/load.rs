//! `spiral-harness load`: open-loop WebSocket `memory.store` load against a running server on
//! real sockets, one phase per rate, and the highest rate that kept p95 under the target.

use std::process::ExitCode;

use spiral_harness::load::{
    FLOOR_THREADS, LoadConfig, Phase, ServerCpu, Verdict, ratio_row, row, run_phase, write_run_dir,
};
use spiral_harness::load::{LOAD_SCHEMA, LOAD_SCHEMA_VERSION};
use spiral_harness::maxrate::{Probe, Search, find_max_rate as find_max_rate_by};
use spiral_harness::provenance::{Checkout, HARNESS_VERSION};
use spiral_harness::thresholds::{self, EXIT_THRESHOLD, Judged, Threshold};
use spiral_harness::{EXIT_ERROR, EXIT_INCONCLUSIVE, EXIT_PASS, EXIT_USAGE, say};

use super::args::{FloorArgs, LoadArgs, MergeArgs};

pub fn main(a: LoadArgs) -> ExitCode {
    match load(a) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("spiral-harness load: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Run the phases; the exit code: a breached threshold (99) before an inconclusive phase (5).
fn load(a: LoadArgs) -> anyhow::Result<u8> {
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
        vs_floor,
        server_pid,
        thresholds,
        abort_on_fail,
        find_max_rate,
        repeats,
        resolution_pct,
        out,
        json,
    } = a;
    let loadavg_before = loadavg();
    let started_ms = spiral_server::clock::Clock::unix_ms(&spiral_server::clock::SystemClock);
    let config = serde_json::json!({
        "ws_url": ws_url,
        "rates": rates,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "connections": connections,
        "payload_bytes": payload_bytes,
        "p95_target_us": p95_target_us,
        "timeout_ms": timeout_ms,
        "max_lag_ms": max_lag_ms,
        "vs_floor": vs_floor,
        "server_pid": server_pid,
        "thresholds": thresholds.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
        "abort_on_fail": abort_on_fail,
        "find_max_rate": find_max_rate.as_ref().map(|r| [r.start, r.end]),
        "repeats": repeats,
        "resolution_pct": resolution_pct,
    });
    let cfg = LoadConfig {
        ws_url,
        jwt_secret,
        connections,
        warmup: std::time::Duration::from_secs(warmup_s),
        payload_bytes,
        timeout: std::time::Duration::from_millis(timeout_ms),
        max_lag: std::time::Duration::from_millis(max_lag_ms),
        server_cpu: server_pid.map(ServerCpu::Process),
    };
    // One thread: the pacer wakes it for each send and it reads every answer; a second worker
    // would only add cross-thread wake-ups to what is measured.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let floor_cfg = if vs_floor {
        let addr = spiral_harness::floor::spawn_on_loopback()?;
        say!("floor: ws://{addr} (alternating with the target, phase by phase)");
        Some(LoadConfig {
            ws_url: format!("ws://{addr}"),
            server_cpu: Some(ServerCpu::Threads(FLOOR_THREADS)),
            ..cfg.clone()
        })
    } else {
        None
    };
    let mut reports = Vec::new();
    let mut floors = Vec::new();
    let mut judged = Vec::new();
    let mut max_rate = None;
    if let Some(range) = find_max_rate {
        // Without thresholds of its own, a rate passes when its p95 is under --p95-target-us
        // and nothing timed out or failed.
        let criteria: Vec<Threshold> = if thresholds.is_empty() {
            [
                format!("p95_ms < {}", p95_target_us as f64 / 1000.0),
                "timeout_rate <= 0".to_owned(),
                "error_rate <= 0".to_owned(),
            ]
            .iter()
            .map(|t| t.parse().map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<_>>()?
        } else {
            thresholds.clone()
        };
        let shown: Vec<String> = criteria.iter().map(|t| t.to_string()).collect();
        say!(
            "finding the highest rate in {}..={} meeting {} ({repeats} phases each)",
            range.start,
            range.end,
            shown.join(", ")
        );
        let search = Search {
            lo: range.start,
            hi: range.end,
            resolution_pct,
            repeats,
        };
        let mut n = 0u64;
        let found = find_max_rate_by(search, |rate, _| {
            let phase = Phase {
                rate_per_s: rate,
                duration: std::time::Duration::from_secs(duration_s.max(warmup_s + 1)),
            };
            n += 1;
            let r = rt.block_on(run_phase(
                &cfg,
                &phase,
                n + (std::process::id() as u64) * 1000,
            ))?;
            let verdicts: Vec<Judged> = criteria.iter().map(|t| t.judge(&r)).collect();
            let probe = if r.verdict != Verdict::Measured {
                Probe::Inconclusive
            } else if verdicts.iter().all(|j| j.ok == Some(true)) {
                Probe::Pass
            } else {
                Probe::Fail
            };
            say!("{}  {probe:?}", row(&r));
            judged.extend(verdicts);
            reports.push(r);
            Ok(probe)
        })?;
        match (found.max_rate, found.failed_at) {
            (Some(m), Some(f)) => say!("highest rate meeting them: {m}/s (failed at {f}/s)"),
            (Some(m), None) => say!("highest rate meeting them: {m}/s (the top of the range)"),
            (None, _) => say!("no rate in the range meets them"),
        }
        if found.generator_bound() {
            say!(
                "the generator fell behind at {}/s: what the server can do above {}/s is unknown (exit {EXIT_INCONCLUSIVE})",
                found.inconclusive_at.unwrap_or_default(),
                found.max_rate.unwrap_or_default()
            );
        }
        max_rate = Some(found);
    }
    let rates = if max_rate.is_some() {
        Vec::new()
    } else {
        rates
    };
    for (i, rate) in rates.iter().enumerate() {
        let phase = Phase {
            rate_per_s: *rate,
            duration: std::time::Duration::from_secs(duration_s.max(warmup_s + 1)),
        };
        let run = i as u64 + (std::process::id() as u64) * 1000;
        // Against a floor the order alternates (target first on even phases), so neither side
        // always runs on the warmer machine.
        let floor_first = i % 2 == 1;
        let mut floor_report = None;
        if let (Some(fc), true) = (&floor_cfg, floor_first) {
            floor_report = Some(rt.block_on(run_phase(fc, &phase, run))?);
        }
        let r = rt.block_on(run_phase(&cfg, &phase, run))?;
        if let (Some(fc), false) = (&floor_cfg, floor_first) {
            floor_report = Some(rt.block_on(run_phase(fc, &phase, run))?);
        }
        say!("{}", row(&r));
        if let Some(f) = floor_report {
            say!("   floor {}", row(&f));
            say!("{}", ratio_row(&r, &f));
            floors.push(f);
        }
        let verdicts: Vec<Judged> = thresholds.iter().map(|t| t.judge(&r)).collect();
        let breached = verdicts.iter().any(|j| j.ok == Some(false));
        judged.extend(verdicts);
        reports.push(r);
        if breached && abort_on_fail {
            say!("a threshold was breached: --abort-on-fail skips the remaining phases");
            break;
        }
    }
    if !judged.is_empty() {
        say!("thresholds:");
        for j in &judged {
            say!("{}", thresholds::row(j));
        }
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
        _ if max_rate.is_some() => {}
        Some(r) => say!("highest rate with p95 < {p95_target_us} µs: {r}/s"),
        None => say!("no rate kept p95 < {p95_target_us} µs"),
    }
    if let Some(path) = json {
        let body = if vs_floor {
            serde_json::json!({"server": reports, "floor": floors, "thresholds": judged})
        } else if !judged.is_empty() {
            serde_json::json!({"server": reports, "thresholds": judged})
        } else {
            serde_json::to_value(&reports)?
        };
        std::fs::write(&path, serde_json::to_string_pretty(&body)?)?;
    }
    let inconclusive = reports
        .iter()
        .chain(&floors)
        .filter(|r| r.verdict != Verdict::Measured)
        .count();
    if inconclusive > 0 {
        say!(
            "inconclusive: the generator fell behind its schedule in {inconclusive} of {} phases (exit {EXIT_INCONCLUSIVE})",
            reports.len() + floors.len()
        );
    }
    let breached = judged.iter().filter(|j| j.ok == Some(false)).count();
    let code = if let Some(found) = &max_rate {
        // A search's failing phases are how it brackets the rate: it fails (99) only when no
        // rate met the thresholds, and is inconclusive when the generator bounded its answer.
        if found.generator_bound() {
            EXIT_INCONCLUSIVE
        } else if found.max_rate.is_none() {
            EXIT_THRESHOLD
        } else {
            EXIT_PASS
        }
    } else if breached > 0 {
        say!("{breached} threshold verdicts breached (exit {EXIT_THRESHOLD})");
        EXIT_THRESHOLD
    } else if inconclusive > 0 {
        EXIT_INCONCLUSIVE
    } else {
        EXIT_PASS
    };
    if let Some(dir) = out {
        let checkout = Checkout::current();
        let summary = serde_json::json!({
            "schema": LOAD_SCHEMA,
            "schema_version": LOAD_SCHEMA_VERSION,
            "harness_version": HARNESS_VERSION,
            "commit": checkout.commit,
            "dirty": checkout.dirty,
            "started_unix_ms": started_ms,
            "machine": {
                "hostname": std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_owned())
                    .unwrap_or_default(),
                "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
                "loadavg_before": loadavg_before,
                "loadavg_after": loadavg(),
            },
            "config": config,
            "results": {"server": reports, "floor": floors, "thresholds": judged, "max_rate": max_rate},
            "exit_code": code,
        });
        let measured_from = std::time::UNIX_EPOCH
            + std::time::Duration::from_millis(started_ms)
            + std::time::Duration::from_secs(warmup_s);
        write_run_dir(&dir, summary, &reports, &floors, measured_from)?;
        say!("run directory: {}", dir.display());
    }
    Ok(code)
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`), where they can be read.
fn loadavg() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut f = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([f.next()??, f.next()??, f.next()??])
}

/// `spiral-harness floor`: serve the floor until stopped.
pub fn floor(a: FloorArgs) -> ExitCode {
    let served = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            rt.block_on(async {
                let listener = tokio::net::TcpListener::bind(&a.listen).await?;
                say!("floor: listening on {}", listener.local_addr()?);
                spiral_harness::floor::serve(listener).await?;
                Ok(())
            })
        });
    match served {
        Ok(()) => ExitCode::from(EXIT_PASS),
        Err(e) => {
            eprintln!("spiral-harness floor: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// `spiral-harness merge`: load runs of several generators as one.
pub fn merge(a: MergeArgs) -> ExitCode {
    let merged = spiral_harness::merge::merge_load_runs(&a.runs).and_then(|m| {
        say!(
            "{} runs at commit {}",
            m.runs.len(),
            &m.commit[..m.commit.len().min(12)]
        );
        for p in &m.phases {
            say!("{}", spiral_harness::merge::row(p));
        }
        if let Some(dir) = &a.out {
            std::fs::create_dir_all(dir)?;
            let text = serde_json::to_string_pretty(&spiral_harness::merge::summary(&m))?;
            std::fs::write(dir.join("summary.json"), text + "\n")?;
            say!("merged summary: {}", dir.join("summary.json").display());
        }
        Ok(())
    });
    match merged {
        Ok(()) => ExitCode::from(EXIT_PASS),
        Err(e) => {
            // The error names the merge itself ("merge: …").
            eprintln!("spiral-harness {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}
