//! The event stream: engine events per tenant, sanitized; heartbeat; frame-rate drops.

use std::time::Duration;

use axum::http::Method;
use serde_json::{Value, json};
use spiral_server::api::ServerConfig;

use crate::support::*;

/// The next event frame other than heartbeats.
async fn next_event(ws: &mut Ws) -> Value {
    loop {
        let v = next_json(ws).await;
        if v["event"] != "heartbeat" {
            return v;
        }
    }
}

#[tokio::test]
async fn stored_events_reach_their_tenant_sanitized_and_no_one_else() {
    let s = start(ServerConfig::default()).await;
    let mut mine = ws_ready(s.stream, &s.stream_token("ada", "t1")).await;
    let mut theirs = ws_ready(s.stream, &s.stream_token("bob", "t2")).await;
    let content = json!({
        "text": "kept",
        "reflection": "private",
        "insight": {"content": "private", "score": 0.9},
        "nested": [{"reflection": "private", "ok": true}],
    });
    let t = s.user_token("ada", "t1");
    let r = s
        .http(
            Method::POST,
            "/v1/memories",
            Some(&t),
            Some(json!({"content": content})),
        )
        .await;
    let id = r.json()["id"].clone();
    let ev = next_event(&mut mine).await;
    assert_eq!(
        (ev["type"].as_str(), ev["event"].as_str()),
        (Some("event"), Some("stored"))
    );
    assert_eq!(ev["data"]["id"], id);
    assert_eq!(
        ev["data"]["content"],
        json!({"text": "kept", "insight": {"score": 0.9}, "nested": [{"ok": true}]})
    );
    assert!(!ev.to_string().contains("private"));
    // Tenant t2 sees heartbeats only.
    for _ in 0..2 {
        assert_eq!(next_json(&mut theirs).await["event"], "heartbeat");
    }
    // A collect is an event too.
    s.http(
        Method::DELETE,
        &format!("/v1/memories/{}", id.as_str().unwrap()),
        Some(&t),
        None,
    )
    .await;
    let ev = next_event(&mut mine).await;
    assert_eq!(
        (ev["event"].as_str(), ev["data"]["by_gc"].as_bool()),
        (Some("collected"), Some(false))
    );
    s.stop().await;
}

#[tokio::test]
async fn the_stream_beats_every_second_and_counts_its_lag() {
    let s = start(ServerConfig::default()).await;
    let mut ws = ws_ready(s.stream, &s.stream_token("ada", "t1")).await;
    let a = next_json(&mut ws).await;
    let b = next_json(&mut ws).await;
    assert_eq!(
        (a["event"].as_str(), b["event"].as_str()),
        (Some("heartbeat"), Some("heartbeat"))
    );
    let gap = b["data"]["time_ms"].as_u64().unwrap() - a["data"]["time_ms"].as_u64().unwrap();
    assert!((800..=1500).contains(&gap), "{gap} ms between heartbeats");
    assert_eq!(
        b["data"]["seq"].as_u64().unwrap(),
        a["data"]["seq"].as_u64().unwrap() + 1
    );
    assert!(s.metric("eventbus_publish_lag_ms_count") >= 2.0);
    s.stop().await;
}

#[tokio::test]
async fn frames_over_the_per_client_rate_are_dropped_and_counted() {
    let s = start(ServerConfig {
        stream_frames_per_s: 2,
        store_rate: spiral_server::ratelimit::Limit::new(1000, 1000, 0),
        http_rate: spiral_server::ratelimit::Limit::new(1000, 1000, 0),
        ..ServerConfig::default()
    })
    .await;
    let mut ws = ws_ready(s.stream, &s.stream_token("ada", "t1")).await;
    let t = s.user_token("ada", "t1");
    for i in 0..10 {
        s.http(
            Method::POST,
            "/v1/memories",
            Some(&t),
            Some(json!({"content": i})),
        )
        .await;
    }
    let mut stored = 0;
    while let Ok(v) = tokio::time::timeout(Duration::from_millis(300), next_json(&mut ws)).await {
        stored += usize::from(v["event"] == "stored");
    }
    assert!(stored <= 3, "{stored} frames passed a 2/s limit");
    assert!(s.metric("ws_rate_limit_drops_total") >= 7.0);
    s.stop().await;
}
