//! Criterion benchmarks of the engine's hot paths. The SLO gate (`spiral-slo`) measures the same
//! workloads for tail latencies; these give criterion's confidence intervals and regressions.

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use spiral_benches::populate;
use spiral_server::clock::{SharedClock, SystemClock};
use spiral_server::engine::{Engine, EngineConfig, StoreRequest};
use spiral_server::storage::SharedStorage;
use spiral_server::storage::embedded::EmbeddedStorage;
use spiral_server::storage::memory::MemoryStorage;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn clock() -> SharedClock {
    Arc::new(SystemClock)
}

fn store(c: &mut Criterion) {
    let rt = runtime();
    let (engine, _) = rt
        .block_on(Engine::open(
            Arc::new(MemoryStorage::new()),
            EngineConfig::default(),
            clock(),
            1,
        ))
        .expect("engine");
    let mut i = 0u64;
    c.bench_function("engine_store_memory", |b| {
        b.iter(|| {
            i += 1;
            let req = StoreRequest {
                content: json!({"n": i}),
                depth: Some((i % 1000) as f64 / 1000.0),
                ..Default::default()
            };
            rt.block_on(engine.store("bench", req)).expect("store")
        })
    });
}

fn rebuild(c: &mut Criterion) {
    let rt = runtime();
    let nodes = 100_000;
    let mut group = c.benchmark_group("rebuild_100k");
    group.sample_size(10);
    group.throughput(Throughput::Elements(nodes as u64));
    let dir = tempfile::tempdir().expect("tempdir");
    let backends: Vec<(&str, SharedStorage)> = vec![
        ("memory", Arc::new(MemoryStorage::new())),
        (
            "embedded",
            Arc::new(EmbeddedStorage::open(dir.path().join("b.redb")).expect("redb")),
        ),
    ];
    for (name, storage) in backends {
        rt.block_on(populate(&storage, nodes, 1)).expect("populate");
        let (engine, _) = rt
            .block_on(Engine::open(storage, EngineConfig::default(), clock(), 1))
            .expect("engine");
        group.bench_with_input(BenchmarkId::from_parameter(name), &engine, |b, e| {
            b.iter(|| rt.block_on(e.rebuild_stats()).expect("rebuild"))
        });
    }
    group.finish();
}

criterion_group!(benches, store, rebuild);
criterion_main!(benches);
