//! Every 401 reason of SPEC §1.2, the 403 scope check, replay, revocation, rotation, RS256.

use axum::http::Method;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use spiral_server::api::ServerConfig;
use spiral_server::auth::{KeyConfig, Keys, Shared};
use spiral_server::storage::redis::{RedisConfig, RedisStorage};
use std::sync::Arc;

use crate::support::*;

fn forge(header: Value, payload: Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

fn hmac_sign(secret: &[u8], header: Value, payload: Value) -> String {
    let h = jsonwebtoken::Header {
        alg: jsonwebtoken::Algorithm::HS256,
        ..serde_json::from_value(header).unwrap()
    };
    jsonwebtoken::encode(
        &h,
        &payload,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

/// Expect a refused handshake with `status` and, for 401, the reason counted under `label`.
async fn refused(s: &TestServer, token: Option<&str>, status: u16, label: &str) {
    let before = s.metric(&format!(
        "spiral_ws_auth_attempts_total{{status=\"{label}\"}}"
    ));
    let (code, body) = ws_connect(s.ws, token).await.expect_err("refused");
    assert_eq!(code, status, "{label}: {body}");
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    let after = s.metric(&format!(
        "spiral_ws_auth_attempts_total{{status=\"{label}\"}}"
    ));
    assert_eq!(after, before + 1.0, "{label} counted");
    // HTTP refuses the same token with the same status (single use is for handshakes only).
    if label != "replayed" {
        let r = s.http(Method::GET, "/status", token, None).await;
        assert_eq!(r.status, status, "HTTP {label}");
    }
}

#[tokio::test]
async fn every_rejection_reason_is_a_counted_401() {
    let s = start(ServerConfig {
        blocked_users: vec!["mallory".into()],
        ..ServerConfig::default()
    })
    .await;
    let good = serde_json::to_value(claims("ada", "t1")).unwrap();

    refused(&s, None, 401, "missing_token").await;
    refused(&s, Some("not-a-jwt"), 401, "malformed").await;
    let other = mint_with(
        b"some-other-secret-some-other-secret!",
        &claims("ada", "t1"),
    );
    refused(&s, Some(&other), 401, "bad_signature").await;
    let none = forge(json!({"alg": "none", "typ": "JWT"}), good.clone(), b"");
    refused(&s, Some(&none), 401, "bad_algorithm").await;

    let mut expired = claims("ada", "t1");
    expired.exp = now_s() - 61;
    refused(&s, Some(&s.token(&expired)), 401, "expired").await;
    let mut early = claims("ada", "t1");
    early.nbf = Some(now_s() + 120);
    refused(&s, Some(&s.token(&early)), 401, "not_yet_valid").await;

    let mut no_tenant = good.clone();
    no_tenant.as_object_mut().unwrap().remove("tenant");
    let t = hmac_sign(SECRET.as_bytes(), json!({"alg": "HS256"}), no_tenant);
    refused(&s, Some(&t), 401, "missing_claims").await;

    refused(&s, Some(&s.user_token("mallory", "t1")), 401, "blocked").await;

    let victim = s.user_token("eve", "t1");
    let r = s
        .http(
            Method::POST,
            "/admin/tokens/revoke",
            Some(&s.admin_token()),
            Some(json!({"sub": "eve"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    refused(&s, Some(&victim), 401, "revoked").await;

    // Within the leeway an expired token still passes.
    let mut recent = claims("ada", "t1");
    recent.exp = now_s() - 30;
    assert!(ws_connect(s.ws, Some(&s.token(&recent))).await.is_ok());
    s.stop().await;
}

#[tokio::test]
async fn hs256_signed_with_the_rs256_public_key_is_refused() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let keys = Keys::from_config(&KeyConfig {
        jwk: Some(dir.join("rs256-test-jwks.json").display().to_string()),
        jwt_private_key: Some(dir.join("rs256-test-key.pem")),
        ..KeyConfig::default()
    })
    .unwrap();
    let s = start_with(ServerConfig::default(), keys, Arc::new(Shared::memory())).await;
    // A genuine RS256 token (signed with the private key, `kid` test-1) is accepted…
    let good = s.user_token("ada", "t1");
    assert!(good.starts_with(
        &URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"RS256","kid":"test-1"}"#)[..10]
    ));
    ws_ready(s.ws, &good).await;
    // …an HS256 token whose HMAC key is the public key is not: the algorithm is refused.
    let public_pem = std::fs::read(dir.join("rs256-test-pub.pem")).unwrap();
    let payload = serde_json::to_value(claims("ada", "t1")).unwrap();
    let confused = hmac_sign(
        &public_pem,
        json!({"alg": "HS256", "kid": "test-1"}),
        payload,
    );
    refused(&s, Some(&confused), 401, "bad_algorithm").await;
    s.stop().await;
}

#[tokio::test]
async fn the_stream_without_its_scope_is_403() {
    let s = start(ServerConfig::default()).await;
    let (code, body) = ws_connect(s.stream, Some(&s.user_token("ada", "t1")))
        .await
        .err()
        .unwrap();
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    assert_eq!(s.metric("ws_scope_reject_total"), 1.0);
    ws_ready(s.stream, &s.stream_token("ada", "t1")).await;
    s.stop().await;
}

#[tokio::test]
async fn a_handshake_token_is_single_use_but_http_may_reuse_it() {
    let s = start(ServerConfig::default()).await;
    let t = s.user_token("ada", "t1");
    ws_ready(s.ws, &t).await;
    refused(&s, Some(&t), 401, "replayed").await;
    let r = s.http(Method::GET, "/v1/spirals", Some(&t), None).await;
    assert_eq!(r.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn the_token_may_come_from_the_protocol_header_or_the_query() {
    let s = start(ServerConfig::default()).await;
    let t = s.user_token("ada", "t1");
    let mut ws = ws_connect_with(
        s.ws,
        Some(("sec-websocket-protocol", format!("spiral, {t}"))),
        "/ws",
    )
    .await
    .expect("admitted via Sec-WebSocket-Protocol");
    assert_eq!(next_json(&mut ws).await["user"], "ada");
    let t = s.user_token("bob", "t1");
    let mut ws = ws_connect_with(s.ws, None, &format!("/?token={t}"))
        .await
        .expect("admitted via ?token=");
    assert_eq!(next_json(&mut ws).await["user"], "bob");
    let r = s
        .http(
            Method::GET,
            &format!("/v1/spirals?token={}", s.user_token("c", "t")),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn anonymous_websockets_only_when_allowed() {
    let s = start(ServerConfig {
        allow_anonymous_ws: true,
        ..ServerConfig::default()
    })
    .await;
    let mut ws = ws_connect(s.ws, None).await.expect("anonymous admitted");
    assert_eq!(next_json(&mut ws).await["user"], "anonymous");
    // A bad token is still refused, and HTTP still needs a token.
    assert_eq!(ws_connect(s.ws, Some("x.y.z")).await.err().unwrap().0, 401);
    assert_eq!(s.http(Method::GET, "/status", None, None).await.status, 401);
    s.stop().await;
}

#[tokio::test]
async fn rotation_accepts_the_previous_secret_and_refresh_issues_a_fresh_token() {
    let old = "old-secret-old-secret-old-secret-00";
    let new = "new-secret-new-secret-new-secret-00";
    let keys = Keys::from_config(&KeyConfig {
        jwt_secret: Some(new.into()),
        jwt_secret_previous: Some(old.into()),
        ..KeyConfig::default()
    })
    .unwrap();
    let s = start_with(ServerConfig::default(), keys, Arc::new(Shared::memory())).await;
    let old_token = mint_with(old.as_bytes(), &claims("ada", "t1"));
    let r = s
        .http(Method::POST, "/auth/refresh", Some(&old_token), None)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let fresh = r.json()["token"].as_str().unwrap().to_owned();
    assert_ne!(fresh, old_token);
    // The fresh one is signed with the new secret alone.
    let c = Keys::hs256(new.as_bytes())
        .verify(
            &fresh,
            spiral_server::clock::Clock::unix_ms(&spiral_server::clock::SystemClock),
        )
        .unwrap();
    assert_eq!((c.sub.as_str(), c.tenant.as_str()), ("ada", "t1"));
    s.stop().await;
}

/// The claims of a token, unverified (the test trusts its own server).
fn peek(token: &str) -> Value {
    let body = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap()
}

#[tokio::test]
async fn a_refresh_chain_keeps_its_start_ends_by_the_max_lifetime_and_is_covered_by_revocation() {
    let s = start(ServerConfig {
        refresh_max_lifetime_s: 600,
        ..ServerConfig::default()
    })
    .await;
    let began = now_s() - 100;
    let first = mint(&claims("ada", "t1").issued_at(began));
    let r = s
        .http(Method::POST, "/auth/refresh", Some(&first), None)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let second = r.json()["token"].as_str().unwrap().to_owned();
    let c = peek(&second);
    assert_eq!(c["auth_time"], began, "the chain keeps its start");
    assert!(c["exp"].as_u64().unwrap() <= began + 600, "{c}");
    // Refreshing the refreshed token does not move the end.
    let r = s
        .http(Method::POST, "/auth/refresh", Some(&second), None)
        .await;
    let third = r.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(peek(&third)["auth_time"], began);
    assert_eq!(peek(&third)["exp"], c["exp"]);
    let ids: std::collections::BTreeSet<_> = [&c, &peek(&third)]
        .iter()
        .map(|c| c["jti"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 2, "every refresh mints a new id");
    // A chain that began longer ago than the max lifetime cannot be refreshed at all.
    let stale = mint(&claims("ada", "t1").issued_at(now_s() - 601));
    let r = s
        .http(Method::POST, "/auth/refresh", Some(&stale), None)
        .await;
    assert_eq!(r.status, 401, "{:?}", r.json());
    // Revoking the subject now covers the refreshed token minted a moment ago: its chain
    // began before the revocation.
    let r = s
        .http(
            Method::POST,
            "/admin/tokens/revoke",
            Some(&s.admin_token()),
            Some(json!({"sub": "ada"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(
        s.http(Method::GET, "/v1/spirals", Some(&third), None)
            .await
            .status,
        401
    );
    s.stop().await;
}

#[tokio::test]
async fn revocation_closes_open_sockets_with_4003_and_refuses_new_requests() {
    let s = start(ServerConfig::default()).await;
    let t = s.user_token("eve", "t1");
    let mut ws = ws_ready(s.ws, &t).await;
    let other = s.user_token("ada", "t1");
    let mut bystander = ws_ready(s.ws, &other).await;
    let r = s
        .http(
            Method::POST,
            "/admin/tokens/revoke",
            Some(&s.admin_token()),
            Some(json!({"sub": "eve"})),
        )
        .await;
    assert_eq!(r.json()["closed_connections"], 1);
    assert_eq!(
        close_code(&mut ws, std::time::Duration::from_secs(5)).await,
        Some(4003)
    );
    assert_eq!(
        s.http(Method::GET, "/v1/spirals", Some(&t), None)
            .await
            .status,
        401
    );
    // Not an admin: 403. Revoking by jti works the same way.
    let r = s
        .http(
            Method::POST,
            "/admin/tokens/revoke",
            Some(&other),
            Some(json!({"sub": "x"})),
        )
        .await;
    assert_eq!(r.status, 403);
    let c = claims("bob", "t1");
    let bob = s.token(&c);
    let mut bob_ws = ws_ready(s.ws, &bob).await;
    let r = s
        .http(
            Method::POST,
            "/admin/tokens/revoke",
            Some(&s.admin_token()),
            Some(json!({"jti": c.jti})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        close_code(&mut bob_ws, std::time::Duration::from_secs(5)).await,
        Some(4003)
    );
    assert!(answers_ping(&mut bystander, 1).await);
    s.stop().await;
}

/// A Redis that refuses every connection: a loopback port nothing listens on.
fn unreachable_redis() -> Arc<RedisStorage> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    Arc::new(RedisStorage::open(RedisConfig::new(format!("redis://127.0.0.1:{port}"))).unwrap())
}

#[tokio::test]
async fn a_token_redis_cannot_check_is_refused_with_503_when_failing_closed() {
    let shared = Shared::redis(unreachable_redis()).fail_closed(true);
    let s = start_with(ServerConfig::default(), keys(), Arc::new(shared)).await;
    let token = s.user_token("ada", "t1");
    let (code, body) = ws_connect(s.ws, Some(&token)).await.expect_err("refused");
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["error"]["code"], "storage_unavailable", "{body}");
    assert_eq!(
        s.metric("spiral_ws_auth_attempts_total{status=\"unavailable\"}"),
        1.0
    );
    // HTTP too: a revocation that cannot be checked is not taken as "not revoked".
    let r = s.http(Method::GET, "/status", Some(&token), None).await;
    assert_eq!(r.status, 503);
    s.stop().await;
}

#[tokio::test]
async fn a_token_redis_cannot_check_is_decided_locally_and_counted_when_failing_open() {
    let shared = Arc::new(Shared::redis(unreachable_redis()));
    let s = start_with(ServerConfig::default(), keys(), shared.clone()).await;
    let token = s.user_token("ada", "t1");
    let ws = ws_connect(s.ws, Some(&token)).await;
    assert!(ws.is_ok(), "admitted from the instance's own memory");
    assert!(s.metric("spiral_auth_shared_state_fallbacks_total") >= 2.0);
    // The instance remembers what it admitted alone: the same token again is a replay.
    refused(&s, Some(&token), 401, "replayed").await;
    s.stop().await;
}
