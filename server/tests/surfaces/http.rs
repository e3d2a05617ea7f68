//! HTTP: probes, REST, rate-limit headers and 429, status, admin.

use axum::http::Method;
use serde_json::json;
use spiral_server::api::ServerConfig;
use spiral_server::ratelimit::Limit;

use crate::support::*;

#[tokio::test]
async fn probes_need_no_token() {
    let s = start(ServerConfig::default()).await;
    let h = s.http(Method::GET, "/health", None, None).await;
    assert_eq!((h.status, h.json()), (200, json!({"status": "ok"})));
    let r = s.http(Method::GET, "/ready", None, None).await;
    assert_eq!((r.status, r.json()["ready"].as_bool()), (200, Some(true)));
    assert_eq!(
        s.http(Method::GET, "/version", None, None).await.json()["name"],
        "spiral"
    );
    let nf = s.http(Method::GET, "/nope", None, None).await;
    assert_eq!(
        (nf.status, nf.json()["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    s.stop().await;
}

#[tokio::test]
async fn rest_stores_reads_lists_and_deletes() {
    let s = start(ServerConfig::default()).await;
    let t = s.user_token("ada", "t1");
    let r = s
        .http(
            Method::POST,
            "/v1/memories",
            Some(&t),
            Some(json!({"content": [1, "two", {"3": null}], "priority": 5})),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    for field in ["spiral_id", "depth", "priority", "created_ms"] {
        assert!(r.json().get(field).is_some(), "{field}");
    }
    let g = s
        .http(Method::GET, &format!("/v1/memories/{id}"), Some(&t), None)
        .await;
    assert_eq!(g.json()["content"], json!([1, "two", {"3": null}]));
    let sp = s
        .http(Method::GET, "/v1/spirals", Some(&t), None)
        .await
        .json();
    assert_eq!(sp["total_memories"], 1);
    let first = &sp["spirals"][0];
    for field in ["id", "node_count", "avg_depth", "radius", "turns"] {
        assert!(first.get(field).is_some(), "{field}: {first}");
    }
    assert_eq!(
        s.http(
            Method::DELETE,
            &format!("/v1/memories/{id}"),
            Some(&t),
            None
        )
        .await
        .status,
        204
    );
    assert_eq!(
        s.http(Method::GET, &format!("/v1/memories/{id}"), Some(&t), None)
            .await
            .status,
        404
    );
    // Bad bodies are 400 with the JSON error.
    for bad in [
        json!({"depth": 2.0, "content": 1}),
        json!({"content": 1, "extra": true}),
        json!([1]),
    ] {
        let r = s
            .http(Method::POST, "/v1/memories", Some(&t), Some(bad.clone()))
            .await;
        assert_eq!(
            (r.status, r.json()["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{bad}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn every_answer_carries_rate_headers_and_the_limit_is_a_429_then_a_block() {
    let s = start(ServerConfig {
        http_rate: Limit::new(3, 10_000, 60_000),
        ..ServerConfig::default()
    })
    .await;
    let t = s.user_token("ada", "t1");
    for remaining in [2, 1, 0] {
        let r = s.http(Method::GET, "/v1/spirals", Some(&t), None).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-ratelimit-limit"), Some("3"));
        assert_eq!(
            r.header("x-ratelimit-remaining"),
            Some(remaining.to_string().as_str())
        );
        let reset: u64 = r.header("x-ratelimit-reset").unwrap().parse().unwrap();
        assert!(reset >= now_s() && reset <= now_s() + 11, "{reset}");
    }
    let r = s.http(Method::GET, "/metrics", Some(&t), None).await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (429, Some("rate_limited"))
    );
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (59..=60).contains(&retry),
        "blocked for RATE_LIMIT_BLOCK_SECONDS: {retry}"
    );
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert!(r.json()["error"]["retry_after_ms"].as_u64().unwrap() > 59_000);
    // Another user has their own budget; probes are never limited.
    assert_eq!(
        s.http(
            Method::GET,
            "/v1/spirals",
            Some(&s.user_token("bob", "t1")),
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(s.http(Method::GET, "/health", None, None).await.status, 200);
    assert_eq!(
        s.metric("spiral_ws_rate_limit_exceeded_total{endpoint=\"http\"}"),
        1.0
    );
    s.stop().await;
}

#[tokio::test]
async fn store_operations_have_their_own_bucket_and_counters() {
    let s = start(ServerConfig {
        store_rate: Limit::new(2, 10_000, 0),
        ..ServerConfig::default()
    })
    .await;
    let t = s.user_token("ada", "t1");
    for _ in 0..2 {
        let r = s
            .http(
                Method::POST,
                "/v1/memories",
                Some(&t),
                Some(json!({"content": 1})),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    let r = s
        .http(
            Method::POST,
            "/v1/memories",
            Some(&t),
            Some(json!({"content": 1})),
        )
        .await;
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
    assert_eq!(s.metric("spiral_store_allowed_total"), 2.0);
    assert_eq!(s.metric("spiral_store_denied_total"), 1.0);
    s.stop().await;
}

#[tokio::test]
async fn status_reports_connections_storage_breaker_gc_and_memories() {
    let s = start(ServerConfig::default()).await;
    let _ws = ws_ready(s.ws, &s.user_token("ada", "t1")).await;
    let t = s.user_token("bob", "t1");
    s.http(
        Method::POST,
        "/v1/memories",
        Some(&t),
        Some(json!({"content": 1})),
    )
    .await;
    let st = s.http(Method::GET, "/status", Some(&t), None).await.json();
    assert_eq!(st["connections"], 1);
    assert_eq!(st["users"], 1);
    assert_eq!(st["memories"], 1);
    assert_eq!(st["storage"]["backend"], "memory");
    assert_eq!(st["storage"]["breaker_state"], "closed");
    assert_eq!(st["storage"]["journal_len"], 0);
    assert!(st["gc"]["passes"].is_u64());
    s.stop().await;
}

#[tokio::test]
async fn admin_routes_need_the_admin_role() {
    let s = start(ServerConfig::default()).await;
    let user = s.user_token("ada", "t1");
    for path in ["/admin/gc", "/admin/rebuild-stats"] {
        let r = s.http(Method::POST, path, Some(&user), None).await;
        assert_eq!(
            (r.status, r.json()["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{path}"
        );
        let r = s
            .http(Method::POST, path, Some(&s.admin_token()), None)
            .await;
        assert_eq!(r.status, 200, "{path}: {:?}", r.json());
    }
    let r = s
        .http(
            Method::POST,
            "/admin/rebuild-stats",
            Some(&s.admin_token()),
            None,
        )
        .await;
    assert!(r.json()["scanned"].is_u64());
    let r = s
        .http(
            Method::POST,
            "/admin/tokens/revoke",
            Some(&s.admin_token()),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, 400);
    s.stop().await;
}
