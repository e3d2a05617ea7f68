//! Shared state in a real Redis (SPEC §1.2, §1.3): the rate-limit script passes the same vectors
//! as the in-memory limiter; two server instances sharing the Redis share one budget, one set of
//! used handshake `jti`s and one set of revocations.

use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use serde_json::json;
use spiral_chaos::redis_fixture::{self, RedisFixture, loud};
use spiral_server::api::client::request;
use spiral_server::api::{ServerBuilder, ServerConfig};
use spiral_server::auth::{Claims, Shared};
use spiral_server::clock::{Clock, SharedClock, SystemClock};
use spiral_server::ratelimit::{Limit, VECTORS};
use spiral_server::resilience::{ResilienceConfig, ResilientStorage};
use spiral_server::storage::redis::{RedisConfig, RedisStorage};
use spiral_server::test_support::{
    Serving, close_code, keys, mint, now_s, serve_local, ws_connect,
};

fn fixture(test: &str) -> Option<&'static RedisFixture> {
    let fx = redis_fixture::redis();
    if fx.is_none() {
        loud(&format!("SKIPPED {test}: no Redis"));
    }
    fx
}

fn shared(cfg: &RedisConfig) -> Arc<Shared> {
    Arc::new(Shared::redis(Arc::new(
        RedisStorage::open(cfg.clone()).unwrap(),
    )))
}

#[tokio::test]
async fn the_redis_script_passes_every_rate_limit_vector() {
    let Some(fx) = fixture("the_redis_script_passes_every_rate_limit_vector") else {
        return;
    };
    let s = shared(&fx.config());
    for (n, v) in VECTORS.iter().enumerate() {
        let key = format!("vector-{n}");
        for (i, step) in v.steps.iter().enumerate() {
            let d = s
                .rate_on(&key, &v.limit, Some(step.at_ms), step.at_ms)
                .await;
            let got = (d.allowed, d.remaining, d.retry_after_ms, d.reset_after_ms);
            let want = (
                step.allowed,
                step.remaining,
                step.retry_after_ms,
                step.reset_after_ms,
            );
            assert_eq!(got, want, "{}: step {i} at {} ms", v.name, step.at_ms);
        }
    }
    assert_eq!(s.fallbacks(), 0, "every decision came from Redis");
}

#[tokio::test]
async fn instances_sharing_redis_share_one_budget() {
    let Some(fx) = fixture("instances_sharing_redis_share_one_budget") else {
        return;
    };
    let cfg = fx.config();
    let (a, b) = (shared(&cfg), shared(&cfg));
    let limit = Limit::new(10, 60_000, 0);
    let now = SystemClock.unix_ms();
    let mut allowed = 0;
    for i in 0..40 {
        let s = if i % 2 == 0 { &a } else { &b };
        // On Redis's own clock, as the server decides.
        allowed += usize::from(s.rate("ws:ada", &limit, 0, now).await.allowed);
    }
    assert_eq!(allowed, 10);
}

struct Server {
    ws: std::net::SocketAddr,
    http: std::net::SocketAddr,
    _serving: Serving,
}

async fn server(cfg: &RedisConfig, ping_ms: u64) -> Server {
    let clock: SharedClock = Arc::new(SystemClock);
    let redis = Arc::new(RedisStorage::open(cfg.clone()).unwrap());
    let storage = Arc::new(ResilientStorage::new(
        redis.clone(),
        ResilienceConfig::default(),
        clock.clone(),
    ));
    let (state, _) = ServerBuilder::new(keys(), clock)
        .storage(storage)
        .shared(Arc::new(Shared::redis(redis)))
        .config(ServerConfig {
            ws_ping_interval_ms: ping_ms,
            ..ServerConfig::default()
        })
        .seed(1)
        .redis_tls_disabled(Some(true))
        .open()
        .await
        .unwrap();
    let serving = serve_local(state).await;
    Server {
        ws: serving.ws,
        http: serving.http,
        _serving: serving,
    }
}

/// A token for `sub` in tenant `t1` with `roles`, valid for ten minutes, with the given `jti`
/// (the tests decide which tokens share one).
fn token(sub: &str, jti: &str, roles: &[&str]) -> String {
    let now = now_s();
    let c = Claims::new(sub, "t1", now + 600)
        .roles(roles)
        .jti(jti)
        .issued_at(now);
    mint(&c)
}

/// The handshake's HTTP refusal status, `None` if admitted.
async fn refusal(addr: std::net::SocketAddr, token: &str) -> Option<u16> {
    ws_connect(addr, Some(token))
        .await
        .err()
        .map(|(code, _)| code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jti_used_on_one_instance_is_a_replay_on_another() {
    let Some(fx) = fixture("a_jti_used_on_one_instance_is_a_replay_on_another") else {
        return;
    };
    let cfg = fx.config();
    let (a, b) = (server(&cfg, 30_000).await, server(&cfg, 30_000).await);
    let t = token("ada", "jti-once", &["user"]);
    assert_eq!(refusal(a.ws, &t).await, None);
    assert_eq!(refusal(b.ws, &t).await, Some(401));
    assert_eq!(refusal(a.ws, &t).await, Some(401));
}

/// Many handshakes with one token at once, spread over two instances: exactly one is admitted.
/// (The planted `replay-window` bug — check and insert as two round trips — admits several.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_handshakes_with_one_jti_across_instances_admit_exactly_one() {
    let Some(fx) = fixture("concurrent_handshakes_with_one_jti_across_instances_admit_exactly_one")
    else {
        return;
    };
    let cfg = fx.config();
    let (a, b) = (server(&cfg, 30_000).await, server(&cfg, 30_000).await);
    for round in 0..5 {
        let t = token(&format!("user{round}"), &format!("race-{round}"), &["user"]);
        let attempts = (0..16).map(|i| {
            let addr = if i % 2 == 0 { a.ws } else { b.ws };
            let t = t.clone();
            tokio::spawn(async move { ws_connect(addr, Some(&t)).await.is_ok() })
        });
        let admitted = futures_util::future::join_all(attempts)
            .await
            .into_iter()
            .filter(|r| *r.as_ref().unwrap())
            .count();
        assert_eq!(
            admitted, 1,
            "round {round}: one token admitted {admitted} times"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_instance_holds_on_the_other_and_closes_its_sockets() {
    let Some(fx) =
        fixture("a_revocation_on_one_instance_holds_on_the_other_and_closes_its_sockets")
    else {
        return;
    };
    let cfg = fx.config();
    // Instance b re-checks revocation at every ping (100 ms here).
    let (a, b) = (server(&cfg, 30_000).await, server(&cfg, 100).await);
    let victim = token("eve", "eve-1", &["user"]);
    let mut open_on_b = ws_connect(b.ws, Some(&victim)).await.expect("admitted");
    let admin = token("root", "root-1", &["admin"]);
    let stream = tokio::net::TcpStream::connect(a.http).await.unwrap();
    let body = json!({"sub": "eve"}).to_string().into_bytes();
    let r = request(
        stream,
        Method::POST,
        "a",
        "/admin/tokens/revoke",
        Some(&admin),
        Some(body),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    // New requests on b are refused at once…
    let stream = tokio::net::TcpStream::connect(b.http).await.unwrap();
    let r = request(stream, Method::GET, "b", "/v1/spirals", Some(&victim), None)
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    // …and b closes the open socket with 4003 at its next ping.
    assert_eq!(
        close_code(&mut open_on_b, Duration::from_secs(5)).await,
        Some(4003)
    );
}
