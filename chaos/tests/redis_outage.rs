//! A real Redis goes away in the middle of a write workload and comes back (SPEC §1.6):
//! the breaker opens, writes go to the degraded journal, the journal replays when Redis returns,
//! and afterwards every acknowledged write is in Redis and invariant 1 holds.
//!
//! The outage is real: the Redis process (or container) is frozen with SIGSTOP (`docker pause`),
//! so its connections stay open and every call times out — the hardest kind of outage to see.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use spiral_chaos::redis_fixture::{self, RedisFixture, in_ci, loud};
use spiral_server::clock::{Clock, SharedClock, SystemClock};
use spiral_server::engine::{Engine, EngineConfig, StoreRequest, node_key};
use spiral_server::resilience::{ResilienceConfig, ResilientStorage};
use spiral_server::storage::redis::RedisStorage;
use spiral_server::storage::{SharedStorage, Storage};

/// Resumes the frozen Redis whatever happens to the test, so one failure cannot cascade.
struct Thaw(&'static RedisFixture);

impl Drop for Thaw {
    fn drop(&mut self) {
        let _ = self.0.resume();
    }
}

fn fixture() -> Option<&'static RedisFixture> {
    let Some(fx) = redis_fixture::redis() else {
        loud("SKIPPED redis_outage: no Redis");
        return None;
    };
    if !fx.can_pause() {
        assert!(
            !in_ci(),
            "redis_outage: {} cannot be paused, and CI needs this test",
            fx.describe()
        );
        loud(&format!(
            "SKIPPED redis_outage: {} cannot be paused (REDIS_URL given)",
            fx.describe()
        ));
        return None;
    }
    Some(fx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_loses_no_acknowledged_write() {
    let Some(fx) = fixture() else { return };
    let mut rcfg = fx.config();
    rcfg.response_timeout_ms = 200;
    rcfg.connect_timeout_ms = 200;
    let inner: SharedStorage =
        Arc::new(RedisStorage::connect(rcfg.clone()).await.expect("adapter"));
    let clock: SharedClock = Arc::new(SystemClock);
    let cfg = ResilienceConfig {
        failures: 3,
        window_ms: 300,
        timeout_ms: 250,
        journal_max: 10_000,
    };
    let resilient = Arc::new(ResilientStorage::new(inner, cfg, clock.clone()));
    let storage: SharedStorage = resilient.clone();
    let engine_cfg = EngineConfig {
        max_nodes: 100_000,
        ..EngineConfig::default()
    };
    let (engine, _) = Engine::open(storage, engine_cfg, clock, 5)
        .await
        .expect("engine opens");

    let mut acked: BTreeMap<String, Value> = BTreeMap::new();
    let mut refused = 0;
    let mut thaw = None;
    let mut paused_at = None;
    let wall = SystemClock;
    // The outage lasts 1.5 s: five breaker windows, so probes fail and replays are interrupted.
    for i in 0..400 {
        if i == 40 {
            fx.pause().expect("pause redis");
            thaw = Some(Thaw(fx));
            paused_at = Some(wall.now());
        }
        if paused_at
            .is_some_and(|t| wall.now().saturating_duration_since(t) >= Duration::from_millis(1500))
        {
            drop(thaw.take());
            paused_at = None;
        }
        let content = json!({"i": i, "text": format!("write {i}")});
        let req = StoreRequest {
            content: content.clone(),
            ..StoreRequest::default()
        };
        match engine.store("tenant", req).await {
            Ok(s) => {
                acked.insert(s.id, content);
            }
            Err(_) => refused += 1,
        }
        // Spread the workload so the outage spans several breaker windows (probes fail too).
        tokio::time::sleep(Duration::from_millis(4)).await;
    }
    drop(thaw);

    let status = resilient.status();
    assert!(
        status.opens_total >= 2,
        "the breaker should open, and reopen on a failed probe: {status:?}"
    );

    // Redis is back: replay until the journal is empty.
    let mut drained = false;
    for _ in 0..200 {
        resilient.recover().await;
        let s = resilient.status();
        if s.journal_len == 0 && !s.degraded {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(drained, "journal never drained: {:?}", resilient.status());

    // Every acknowledged write is in Redis itself, read by a fresh connection.
    let direct = RedisStorage::connect(rcfg).await.expect("direct adapter");
    for (id, content) in &acked {
        let stored = direct.get(&node_key(id)).await.expect("direct read");
        assert_eq!(
            stored.as_ref().and_then(|v| v.get("content")),
            Some(content),
            "acknowledged write {id} is not in Redis"
        );
    }
    let stored = direct.keys("node:").await.expect("list").len();
    assert_eq!(
        stored,
        acked.len(),
        "Redis holds writes that were never acknowledged"
    );
    engine
        .check_against_storage()
        .await
        .expect("invariant 1 after the outage");
    assert!(
        acked.len() > 300,
        "too few writes acknowledged: {} (refused {refused})",
        acked.len()
    );
    loud(&format!(
        "redis_outage: {} acknowledged, {refused} refused, breaker opened {} time(s), all present",
        acked.len(),
        status.opens_total
    ));
}
