//! The simulated Redis against the real Redis adapter (redis-rs underneath), over loopback
//! sockets: the same answers as the in-memory adapter for a seeded stream of operations, and
//! faults that the adapter sees as a real Redis's would look.

use std::net::SocketAddr;

use serde_json::{Value, json};
use spiral_harness::sim_redis::{Faults, Outage, SimRedis};
use spiral_server::StorageError;
use spiral_server::rng::SplitMix64;
use spiral_server::storage::Storage;
use spiral_server::storage::memory::MemoryStorage;
use spiral_server::storage::redis::{RedisConnectionInfo, RedisStorage, dial_stream};
use tokio::net::{TcpListener, TcpStream};

async fn start(sim: SimRedis) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            // Request/response on loopback: without NODELAY, Nagle and delayed ACKs add ~40 ms a call.
            let _ = stream.set_nodelay(true);
            let sim = sim.clone();
            tokio::spawn(async move {
                let _ = sim.serve_connection(stream).await;
            });
        }
    });
    addr
}

fn adapter(addr: SocketAddr) -> RedisStorage {
    RedisStorage::with_dialer("sim", move || async move {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        dial_stream(&RedisConnectionInfo::default(), stream).await
    })
    .with_timeouts(300, 300)
}

#[tokio::test]
async fn answers_like_the_memory_adapter_for_a_seeded_operation_stream() {
    let addr = start(SimRedis::new(1)).await;
    let sim = adapter(addr);
    let model = MemoryStorage::new();
    sim.init().await.unwrap();
    let mut rng = SplitMix64::new(42);
    let keys = [
        "node:a",
        "node:ab",
        "node:b",
        "meta:latest",
        "meta:snapshot:1",
        "x",
    ];
    for step in 0..600 {
        let key = keys[(rng.next_u64() % keys.len() as u64) as usize];
        let value = json!({"step": step, "s": "ü😀", "f": 0.1 + step as f64, "n": [null, true]});
        match rng.next_u64() % 8 {
            0 | 1 => {
                sim.set(key, &value).await.unwrap();
                model.set(key, &value).await.unwrap();
            }
            2 => assert_eq!(
                sim.get(key).await.unwrap(),
                model.get(key).await.unwrap(),
                "step {step} get {key}"
            ),
            3 => {
                sim.del(key).await.unwrap();
                model.del(key).await.unwrap();
            }
            4 => {
                let prefix = &key[..(rng.next_u64() as usize % (key.len() + 1))];
                assert_eq!(
                    sim.keys(prefix).await.unwrap(),
                    model.keys(prefix).await.unwrap(),
                    "step {step} keys {prefix:?}"
                );
            }
            5 => {
                let delta = (rng.next_u64() % 7) as i64 - 3;
                let a = sim.atomic_incr("ctr:ops", delta).await.unwrap();
                assert_eq!(
                    a,
                    model.atomic_incr("ctr:ops", delta).await.unwrap(),
                    "step {step} incr"
                );
            }
            6 => {
                let entries: Vec<(String, Value)> = keys[..3]
                    .iter()
                    .map(|k| (k.to_string(), value.clone()))
                    .collect();
                sim.set_many(&entries).await.unwrap();
                model.set_many(&entries).await.unwrap();
            }
            _ => assert_eq!(
                sim.scan_prefix("node:").await.unwrap(),
                model.scan_prefix("node:").await.unwrap(),
                "step {step} scan"
            ),
        }
    }
    assert_eq!(sim.keys("").await.unwrap(), model.keys("").await.unwrap());
}

#[tokio::test]
async fn a_hung_server_times_out_and_a_refusing_one_is_unavailable_then_both_recover() {
    let sim = SimRedis::new(2);
    let addr = start(sim.clone()).await;
    let storage = adapter(addr);
    storage.set("k", &json!(1)).await.unwrap();

    sim.set_faults(Faults {
        outage: Outage::Hang,
        ..Faults::default()
    });
    let err = storage.get("k").await.unwrap_err();
    assert!(matches!(err, StorageError::Timeout(_)), "{err:?}");

    sim.set_faults(Faults {
        outage: Outage::Refuse,
        ..Faults::default()
    });
    let err = storage.get("k").await.unwrap_err();
    assert!(err.is_outage(), "{err:?}");

    sim.set_faults(Faults::default());
    assert_eq!(
        storage.get("k").await.unwrap(),
        Some(json!(1)),
        "the adapter re-dials after the outage"
    );
}

#[tokio::test]
async fn an_error_rate_of_one_fails_every_call_and_zero_none() {
    let sim = SimRedis::new(3);
    let addr = start(sim.clone()).await;
    let storage = adapter(addr);
    storage.set("k", &json!("v")).await.unwrap();
    sim.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    for _ in 0..5 {
        assert!(storage.get("k").await.is_err());
    }
    sim.set_faults(Faults::default());
    assert_eq!(storage.get("k").await.unwrap(), Some(json!("v")));
    assert_eq!(sim.dbsize(), 1);
}
