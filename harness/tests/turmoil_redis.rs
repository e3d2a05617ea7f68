//! The real Redis adapter, circuit breaker and engine inside the turmoil network simulator,
//! against the simulated Redis on its own host: a partition in the middle of a write workload
//! loses no acknowledged write, and one seed replays the identical run.

use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use serde_json::json;
use spiral_harness::sim_redis::SimRedis;
use spiral_server::clock::{EpochClock, SharedClock};
use spiral_server::engine::{Engine, EngineConfig, StoreRequest, node_key};
use spiral_server::resilience::{ResilienceConfig, ResilientStorage};
use spiral_server::storage::Storage;
use spiral_server::storage::redis::{RedisConnectionInfo, RedisStorage, dial_stream};

const EPOCH_MS: u64 = 1_750_000_000_000;

fn adapter() -> RedisStorage {
    RedisStorage::with_dialer("sim", || async {
        let stream = turmoil::net::TcpStream::connect("redis:6379").await?;
        dial_stream(&RedisConnectionInfo::default(), stream).await
    })
    .with_timeouts(200, 200)
}

/// One run; returns its trace (every acknowledged id and every breaker state seen, in order).
fn run(seed: u64) -> Vec<String> {
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(UNIX_EPOCH + Duration::from_millis(EPOCH_MS))
        .simulation_duration(Duration::from_secs(300))
        .build();
    let redis = SimRedis::new(seed);
    sim.host("redis", move || {
        let redis = redis.clone();
        async move {
            redis.listen(6379).await?;
            Ok(())
        }
    });
    let trace = Arc::new(Mutex::new(Vec::new()));
    let out = trace.clone();
    sim.client("engine", async move {
        let clock: SharedClock = Arc::new(EpochClock::new(EPOCH_MS));
        let cfg = ResilienceConfig {
            failures: 3,
            window_ms: 500,
            timeout_ms: 300,
            journal_max: 10_000,
        };
        let resilient = Arc::new(ResilientStorage::new(
            Arc::new(adapter()),
            cfg,
            clock.clone(),
        ));
        let (engine, _) =
            Engine::open(resilient.clone(), EngineConfig::default(), clock, seed).await?;
        let mut acked = Vec::new();
        for i in 0..150 {
            if i == 40 {
                turmoil::partition("engine", "redis");
            }
            if i == 110 {
                turmoil::repair("engine", "redis");
            }
            let req = StoreRequest {
                content: json!({"i": i}),
                ..StoreRequest::default()
            };
            let stored = engine.store("tenant", req).await?;
            out.lock().unwrap().push(format!(
                "{i} {} breaker={}",
                stored.id,
                resilient.status().breaker_state
            ));
            acked.push((stored.id, i));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for _ in 0..100 {
            resilient.recover().await;
            let s = resilient.status();
            if s.journal_len == 0 && !s.degraded {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let status = resilient.status();
        assert_eq!(status.journal_len, 0, "journal never drained: {status:?}");
        assert!(
            status.opens_total >= 1,
            "the partition never opened the breaker: {status:?}"
        );
        engine
            .check_against_storage()
            .await
            .map_err(|v| v.to_string())?;
        // Read back through a fresh connection: every acknowledged write reached the Redis host.
        let direct = adapter();
        for (id, i) in &acked {
            let stored = direct.get(&node_key(id)).await?;
            assert_eq!(
                stored.and_then(|v| v.get("content").cloned()),
                Some(json!({"i": i})),
                "{id} lost"
            );
        }
        out.lock().unwrap().push(format!(
            "opens={} acked={}",
            status.opens_total,
            acked.len()
        ));
        Ok(())
    });
    sim.run().expect("the simulation runs to completion");
    let lines = trace.lock().unwrap();
    lines.clone()
}

#[test]
fn a_partition_mid_workload_loses_no_acknowledged_write() {
    let trace = run(7);
    assert_eq!(
        trace.last().map(|l| l.ends_with("acked=150")),
        Some(true),
        "{trace:?}"
    );
}

#[test]
fn one_seed_replays_the_identical_run() {
    assert_eq!(run(11), run(11));
}

#[test]
fn the_trace_shows_the_breaker_opening_during_the_partition() {
    let trace = run(7);
    let open: Vec<&String> = trace.iter().filter(|l| l.ends_with("breaker=1")).collect();
    assert!(
        !open.is_empty(),
        "no store ran with the breaker open: {trace:?}"
    );
    assert_ne!(run(7), run(8), "different seeds should differ");
}
