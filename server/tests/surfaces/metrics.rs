//! `/metrics` is refused without a token, carries every series of SPEC §1.7 with real values,
//! and passes `promtool check metrics`; the alert rules pass `promtool check rules` and their
//! unit tests (`promtool test rules`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use axum::http::Method;
use serde_json::json;
use spiral_server::api::ServerConfig;

use crate::support::*;

const SPEC_SERIES: &[&str] = &[
    "spiral_ws_auth_attempts_total",
    "spiral_ws_rate_limit_exceeded_total",
    "spiral_ws_active_connections",
    "spiral_ws_active_users",
    "spiral_store_allowed_total",
    "spiral_store_denied_total",
    "eventbus_backlog",
    "eventbus_publish_lag_ms",
    "process_heap_bytes",
    "process_rss_bytes",
    "ws_messages_in_total",
    "ws_messages_out_total",
    "ws_bytes_out_total",
    "spiral_storage_latency_ms",
    "spiral_gc_pause_ms",
    "spiral_gc_backlog",
    "spiral_memories_total",
    "heartbeat_skew_ms",
    "metacog_analysis_latency_ms",
    "ws_backpressure_drops_total",
    "ws_rate_limit_drops_total",
    "ws_scope_reject_total",
    "circuit_breaker_open_total",
    "breaker_state",
    "http_request_duration_seconds",
];

/// promtool's naming lints flag names the SPEC fixes (units spelled `_ms`, a `_total` gauge);
/// those and only those are tolerated. Anything else — a parse error above all — fails.
const TOLERATED_LINTS: &[&str] = &[
    "eventbus_publish_lag_ms metric names should not contain abbreviated units",
    "heartbeat_skew_ms metric names should not contain abbreviated units",
    "metacog_analysis_latency_ms metric names should not contain abbreviated units",
    "spiral_gc_pause_ms metric names should not contain abbreviated units",
    "spiral_storage_latency_ms metric names should not contain abbreviated units",
    "spiral_memories_total non-counter metrics should not have \"_total\" suffix",
];

fn promtool() -> PathBuf {
    let p = std::env::var_os("PROMTOOL").map_or_else(|| PathBuf::from("promtool"), PathBuf::from);
    let ok = Command::new(&p)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "promtool not found: install Debian's `prometheus` package (scripts/test.sh does) or set PROMTOOL"
    );
    p
}

/// Run `promtool check metrics` on `text`: Ok, or the problems it reported.
fn check_metrics(text: &str) -> Result<(), String> {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let untolerated: Vec<&str> = report
        .lines()
        .filter(|l| !l.trim().is_empty() && !TOLERATED_LINTS.contains(&l.trim()))
        .collect();
    match out.status.code() {
        Some(0) => Ok(()),
        // 3: lint problems only, all of them tolerated.
        Some(3) if untolerated.is_empty() => Ok(()),
        code => Err(format!(
            "promtool exit {code:?}: {}",
            untolerated.join("\n")
        )),
    }
}

#[tokio::test]
async fn metrics_need_a_token_and_pass_promtool() {
    let s = start(ServerConfig::default()).await;
    let r = s.http(Method::GET, "/metrics", None, None).await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    // Traffic, so that labelled series and histograms have children.
    let t = s.stream_token("ada", "t1");
    let mut ws = ws_ready(s.ws, &s.user_token("ada", "t1")).await;
    command(&mut ws, 1, "memory.store", json!({"content": 1})).await;
    command(&mut ws, 2, "spiral.stats", json!(null)).await;
    let _stream = ws_ready(s.stream, &t).await;
    let r = s.http(Method::GET, "/metrics", Some(&t), None).await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    for name in SPEC_SERIES {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
    }
    assert!(
        text.contains("spiral_ws_auth_attempts_total{status=\"ok\"} 2"),
        "{text}"
    );
    assert!(text.contains("spiral_memories_total 1\n"));
    assert!(text.contains("spiral_ws_active_connections 2\n"));
    assert!(text.contains("spiral_storage_latency_ms_count{method=\"set\",backend=\"memory\"}"));
    let rss = text
        .lines()
        .find_map(|l| l.strip_prefix("process_rss_bytes "))
        .unwrap();
    assert!(
        rss.parse::<u64>().unwrap() > 1 << 20,
        "RSS from the OS: {rss}"
    );
    check_metrics(&text).unwrap();
    s.stop().await;
}

#[test]
fn the_metrics_check_catches_a_broken_exposition() {
    // The check has teeth: a sample with a broken value, and a metric typed twice.
    assert!(check_metrics("# TYPE a counter\na_total x\n").is_err());
    assert!(check_metrics("# TYPE b gauge\n# TYPE b counter\nb 1\n").is_err());
    assert!(check_metrics("# HELP ok_total fine\n# TYPE ok_total counter\nok_total 1\n").is_ok());
}

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("prometheus")
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let rules = rules_dir().join("spiral-alerts.yml");
    let out = Command::new(promtool())
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&rules).unwrap();
    for alert in [
        "SpiralEventLagHigh",
        "GCBacklogTooLarge",
        "CircuitBreakerOpen",
        "RedisTLSDisabled",
        "WSClientsDroppedSpike",
        "HeapMemoryHigh",
        "RateLimitDenialsSurge",
        "HeartbeatSkewHigh",
        "BackpressureDropsHigh",
    ] {
        assert!(
            text.contains(&format!("alert: {alert}\n")),
            "{alert} missing"
        );
    }
    let out = Command::new(promtool())
        .args(["test", "rules", "spiral-alerts.test.yml"])
        .current_dir(rules_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
