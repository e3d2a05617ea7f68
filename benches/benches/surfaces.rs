//! Criterion benchmarks of the surfaces' hot paths: HS256 verification (target < 10 µs) and
//! `/metrics` rendering (target < 200 µs) with every series populated.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use spiral_server::auth::Claims;
use spiral_server::metrics::{Metrics, Snapshot};
use spiral_server::test_support::keys;

const NOW_MS: u64 = 1_800_000_000_000;

fn hs256_verify(c: &mut Criterion) {
    let keys = keys();
    let claims = Claims::new("ada", "t1", NOW_MS / 1000 + 3600)
        .roles(&["user", "admin"])
        .scope("metacog.stream")
        .jti("0123456789abcdef0123456789abcdef")
        .issued_at(NOW_MS / 1000);
    let token = keys.mint(&claims).unwrap();
    c.bench_function("hs256_verify", |b| {
        b.iter(|| keys.verify(black_box(&token), NOW_MS).unwrap())
    });
}

fn metrics_render(c: &mut Criterion) {
    let m = Metrics::new();
    // Populate like a busy server: every labelled family with children, every histogram used.
    for status in [
        "ok",
        "expired",
        "bad_signature",
        "missing_token",
        "replayed",
    ] {
        m.ws_auth_attempts.inc(&[status]);
        m.http_auth_attempts.inc(&[status]);
    }
    for e in ["http", "store", "ws_message", "ws_handshake"] {
        m.rate_limit_exceeded.inc(&[e]);
    }
    for method in ["get", "set", "del", "del_many", "keys", "atomic_incr"] {
        for v in [0.1, 1.0, 10.0] {
            m.storage_latency_ms.observe(&[method, "redis"], v);
        }
    }
    for route in [
        "/health",
        "/metrics",
        "/v1/memories",
        "/v1/memories/{id}",
        "/v1/spirals",
        "/status",
    ] {
        for status in ["200", "401", "429"] {
            m.http_request_duration_seconds
                .observe(&[route, status], 0.001);
        }
    }
    for v in [0.2, 3.0, 40.0] {
        m.gc_pause_ms.observe(v);
        m.eventbus_publish_lag_ms.observe(v);
        m.analysis_latency_ms.observe(v);
    }
    let snap = Snapshot {
        heap_bytes: 10 << 20,
        rss_bytes: 20 << 20,
        memories_total: 2618,
        ..Snapshot::default()
    };
    c.bench_function("metrics_render", |b| {
        b.iter(|| black_box(m.render(black_box(&snap))))
    });
}

criterion_group!(benches, hs256_verify, metrics_render);
criterion_main!(benches);
