//! `spiral-harness merge DIR…`: load runs from several generators (machines, pods, processes)
//! over the same work, merged as if one generator had run them all. Histograms are added exactly
//! from each run's interval logs — never averaged percentiles — and counters are summed. Runs
//! that are not the same work are refused: another schema or schema version, another commit, or
//! another configuration of the phases (rates, durations, warm-up, timeout, payload).

use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::load::{
    LOAD_SCHEMA, LOAD_SCHEMA_VERSION, Percentiles, interval_histogram, read_intervals,
};

/// Configuration that must agree for runs to be the same work.
const SAME_WORK: [&str; 5] = [
    "rates",
    "duration_s",
    "warmup_s",
    "timeout_ms",
    "payload_bytes",
];

/// Counters summed over runs.
const COUNTS: [&str; 7] = [
    "scheduled",
    "sent",
    "answered",
    "errors",
    "timeouts",
    "late",
    "lost",
];

/// One phase (a label, a rate, its occurrence) over every run.
#[derive(Debug, Clone)]
pub struct MergedPhase {
    pub label: String,
    pub rate_per_s: u64,
    /// The interval log's name in each run (the same in all).
    pub log: String,
    /// Runs whose generator fell behind in this phase.
    pub inconclusive: u32,
    pub counts: serde_json::Map<String, Value>,
    /// Per second of the measured part: latency and service time, added over the runs.
    pub intervals: Vec<(Histogram<u64>, Histogram<u64>)>,
}

impl MergedPhase {
    fn totals(&self) -> (Histogram<u64>, Histogram<u64>) {
        let (mut l, mut s) = (interval_histogram(), interval_histogram());
        for (a, b) in &self.intervals {
            l.add(a).ok();
            s.add(b).ok();
        }
        (l, s)
    }

    pub fn latency(&self) -> Percentiles {
        Percentiles::of(&self.totals().0)
    }

    pub fn service(&self) -> Percentiles {
        Percentiles::of(&self.totals().1)
    }

    pub fn count(&self, name: &str) -> u64 {
        self.counts.get(name).and_then(Value::as_u64).unwrap_or(0)
    }
}

#[derive(Debug, Clone)]
pub struct Merged {
    pub runs: Vec<PathBuf>,
    pub commit: String,
    pub config: Value,
    pub phases: Vec<MergedPhase>,
}

fn read_summary(dir: &Path) -> anyhow::Result<Value> {
    let path = dir.join("summary.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e} (not a `load --out` run directory?)",
            path.display()
        )
    })?;
    Ok(serde_json::from_str(&text)?)
}

/// Merge the run directories `dirs` (each written by `load --out`).
pub fn merge_load_runs(dirs: &[PathBuf]) -> anyhow::Result<Merged> {
    let Some(first) = dirs.first() else {
        anyhow::bail!("merge: no run directories given");
    };
    let base = read_summary(first)?;
    let mut phases: Vec<MergedPhase> = Vec::new();
    for dir in dirs {
        let s = read_summary(dir)?;
        let here = dir.display();
        if s["schema"] != LOAD_SCHEMA || s["schema_version"] != LOAD_SCHEMA_VERSION {
            anyhow::bail!(
                "merge: {here} holds schema {} version {}; this merge reads {LOAD_SCHEMA} version {LOAD_SCHEMA_VERSION}",
                s["schema"],
                s["schema_version"]
            );
        }
        if s["commit"] != base["commit"] {
            anyhow::bail!(
                "merge: {here} was run at commit {}, {} at {}: not the same server and generator",
                s["commit"],
                first.display(),
                base["commit"]
            );
        }
        for key in SAME_WORK {
            if s["config"][key] != base["config"][key] {
                anyhow::bail!(
                    "merge: {here} ran {key} = {}, {} ran {}: not the same work",
                    s["config"][key],
                    first.display(),
                    base["config"][key]
                );
            }
        }
        let mut i = 0;
        for label in ["server", "floor"] {
            let reports = s["results"][label].as_array().cloned().unwrap_or_default();
            let logs = s["logs"][label].as_array().cloned().unwrap_or_default();
            if logs.len() != reports.len() {
                anyhow::bail!(
                    "merge: {here}: {label} has {} phases but {} logs",
                    reports.len(),
                    logs.len()
                );
            }
            for (r, log) in reports.iter().zip(&logs) {
                let log = log.as_str().unwrap_or_default().to_owned();
                let text = std::fs::read(dir.join(&log))
                    .map_err(|e| anyhow::anyhow!("merge: {here}/{log}: {e}"))?;
                let latency = read_intervals(&text, "latency")?;
                let service = read_intervals(&text, "service")?;
                if phases.len() <= i {
                    phases.push(MergedPhase {
                        label: label.to_owned(),
                        rate_per_s: r["rate_per_s"].as_u64().unwrap_or(0),
                        log: log.clone(),
                        inconclusive: 0,
                        counts: serde_json::Map::new(),
                        intervals: Vec::new(),
                    });
                }
                let p = &mut phases[i];
                if p.log != log {
                    anyhow::bail!(
                        "merge: {here}: phase {} is {log}, {} has {}",
                        i + 1,
                        first.display(),
                        p.log
                    );
                }
                for name in COUNTS {
                    let sum = p.count(name) + r[name].as_u64().unwrap_or(0);
                    p.counts.insert(name.to_owned(), json!(sum));
                }
                if r["verdict"] != "measured" {
                    p.inconclusive += 1;
                }
                let n = latency.len().max(service.len());
                while p.intervals.len() < n {
                    p.intervals
                        .push((interval_histogram(), interval_histogram()));
                }
                for (k, h) in latency.iter().enumerate() {
                    p.intervals[k].0.add(h).ok();
                }
                for (k, h) in service.iter().enumerate() {
                    p.intervals[k].1.add(h).ok();
                }
                i += 1;
            }
        }
        if i != phases.len() {
            anyhow::bail!(
                "merge: {here} holds {i} phases, {} holds {}",
                first.display(),
                phases.len()
            );
        }
    }
    Ok(Merged {
        runs: dirs.to_vec(),
        commit: base["commit"].as_str().unwrap_or("unknown").to_owned(),
        config: base["config"].clone(),
        phases,
    })
}

/// A table row of one merged phase.
pub fn row(p: &MergedPhase) -> String {
    let l = p.latency();
    format!(
        "{:>7} {:>8}/s  sent {:>8}  ok {:>8}  err {:>5}  timeout {:>5}  p50 {:>7} µs  p95 {:>7} µs  p99 {:>7} µs  max {:>8} µs  service p95 {:>7} µs{}",
        p.label,
        p.rate_per_s,
        p.count("sent"),
        p.count("answered"),
        p.count("errors"),
        p.count("timeouts"),
        l.p50_us,
        l.p95_us,
        l.p99_us,
        l.max_us,
        p.service().p95_us,
        if p.inconclusive > 0 {
            format!("  ({} runs inconclusive)", p.inconclusive)
        } else {
            String::new()
        }
    )
}

/// The merged run as `summary.json` (schema `spiral-harness/load-merged`).
pub fn summary(m: &Merged) -> Value {
    let phases: Vec<Value> = m
        .phases
        .iter()
        .map(|p| {
            json!({
                "label": p.label,
                "rate_per_s": p.rate_per_s,
                "counts": p.counts,
                "inconclusive_runs": p.inconclusive,
                "latency": p.latency(),
                "service": p.service(),
            })
        })
        .collect();
    json!({
        "schema": "spiral-harness/load-merged",
        "schema_version": LOAD_SCHEMA_VERSION,
        "commit": m.commit,
        "config": m.config,
        "merged_from": m.runs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>(),
        "phases": phases,
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::load::{PhaseReport, Verdict, write_run_dir};

    /// A phase whose latencies (µs) are `values`, 100 per second of the measured part.
    fn report(values: &[u64]) -> PhaseReport {
        let mut intervals = Vec::new();
        for chunk in values.chunks(100) {
            let (mut l, mut s) = (interval_histogram(), interval_histogram());
            for v in chunk {
                l.record(*v).unwrap();
                s.record((*v / 2).max(1)).unwrap();
            }
            intervals.push((l, s));
        }
        let mut all = interval_histogram();
        for (l, _) in &intervals {
            all.add(l).unwrap();
        }
        PhaseReport {
            rate_per_s: 100,
            scheduled: values.len() as u64,
            sent: values.len() as u64,
            answered: values.len() as u64,
            errors: 0,
            timeouts: 0,
            late: 0,
            lost: 0,
            timeout_us: 2_000_000,
            sent_per_s: 100.0,
            achieved_per_s: 100.0,
            latency: Percentiles::of(&all),
            service: Percentiles::default(),
            lag: Percentiles::default(),
            generator_cpu: 0.0,
            server_cpu_us_per_request: None,
            verdict: Verdict::Measured,
            intervals,
        }
    }

    fn summary_of(commit: &str, duration_s: u64) -> Value {
        json!({
            "schema": LOAD_SCHEMA,
            "schema_version": LOAD_SCHEMA_VERSION,
            "commit": commit,
            "config": {"rates": [100], "duration_s": duration_s, "warmup_s": 0, "timeout_ms": 2000, "payload_bytes": 64},
        })
    }

    fn write(dir: &Path, commit: &str, duration_s: u64, values: &[u64]) {
        let r = report(values);
        let mut s = summary_of(commit, duration_s);
        s["results"] = json!({"server": [r.clone()], "floor": []});
        write_run_dir(
            dir,
            s,
            &[r],
            &[],
            UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        )
        .unwrap();
    }

    #[test]
    fn three_shards_merged_equal_one_generator_over_the_same_work() {
        let root = std::env::temp_dir().join(format!("spiral-merge-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        // 3000 latencies with a long tail, dealt round-robin to three generators.
        let values: Vec<u64> = (0..3000u64)
            .map(|i| 100 + (i * 7919) % 5000 + (i % 97) * 311)
            .collect();
        let shards: Vec<Vec<u64>> = (0..3)
            .map(|k| values.iter().skip(k).step_by(3).copied().collect())
            .collect();
        let dirs: Vec<PathBuf> = (0..3).map(|k| root.join(format!("shard-{k}"))).collect();
        for (d, v) in dirs.iter().zip(&shards) {
            write(d, "abc", 10, v);
        }
        write(&root.join("one"), "abc", 10, &values);
        let merged = merge_load_runs(&dirs).unwrap();
        let one = merge_load_runs(&[root.join("one")]).unwrap();
        assert_eq!(merged.phases.len(), 1);
        let (m, o) = (&merged.phases[0], &one.phases[0]);
        assert_eq!(m.count("sent"), 3000);
        assert_eq!(m.latency().count, 3000);
        for (name, a, b) in [
            ("p50", m.latency().p50_us, o.latency().p50_us),
            ("p95", m.latency().p95_us, o.latency().p95_us),
            ("p99", m.latency().p99_us, o.latency().p99_us),
            ("max", m.latency().max_us, o.latency().max_us),
            ("service p95", m.service().p95_us, o.service().p95_us),
        ] {
            assert_eq!(
                a, b,
                "{name}: three shards merged differ from one generator"
            );
        }
        // Averaging the shards' p99s instead would not give the whole's p99 here.
        let avg: u64 = dirs
            .iter()
            .map(|d| {
                merge_load_runs(std::slice::from_ref(d)).unwrap().phases[0]
                    .latency()
                    .p99_us
            })
            .sum::<u64>()
            / 3;
        assert_ne!(avg, o.latency().p99_us);
        // Not the same work: refused, naming why.
        write(&root.join("other-commit"), "def", 10, &shards[0]);
        write(&root.join("other-length"), "abc", 20, &shards[0]);
        let e = merge_load_runs(&[dirs[0].clone(), root.join("other-commit")]).unwrap_err();
        assert!(e.to_string().contains("commit"), "{e}");
        let e = merge_load_runs(&[dirs[0].clone(), root.join("other-length")]).unwrap_err();
        assert!(e.to_string().contains("duration_s"), "{e}");
        let e = merge_load_runs(&[root.join("absent")]).unwrap_err();
        assert!(e.to_string().contains("summary.json"), "{e}");
        let _ = std::fs::remove_dir_all(&root);
    }
}
