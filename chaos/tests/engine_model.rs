//! Model test of the engine (SPEC §1.5): random sequences of store, get, collect, GC, rebuild
//! and restart run against a reference model, with invariants 1–3 checked after every step.
//!
//! Instantiated for the memory, embedded (restart reopens the file) and Redis (restart
//! reconnects to the same namespace) adapters. The reference model is a map of acknowledged, not-yet-removed nodes;
//! GC removals are learned from the engine's events and must name a node the model holds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{Value, json};
use spiral_server::EngineError;
use spiral_server::clock::{ManualClock, SharedClock};
use spiral_server::engine::{Engine, EngineConfig, EngineEvent, StoreRequest, node_key};
use spiral_server::storage::SharedStorage;
use spiral_server::storage::embedded::EmbeddedStorage;
use spiral_server::storage::memory::MemoryStorage;

#[derive(Debug, Clone)]
enum Op {
    Store {
        tenant: u8,
        depth_milli: u16,
        priority: i8,
        content: Value,
    },
    Get {
        pick: usize,
        tenant: u8,
    },
    Collect {
        pick: usize,
        tenant: u8,
    },
    Gc,
    Rebuild,
    Restart,
}

fn content() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        "[a-zé☃😀]{0,12}".prop_map(Value::from),
        (any::<bool>(), "[a-z]{0,4}")
            .prop_map(|(b, s)| json!({"flag": b, "s": s, "n": [1, 2.5, null]})),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..2, 0u16..=1000, -2i8..3, content())
            .prop_map(|(tenant, depth_milli, priority, content)| Op::Store { tenant, depth_milli, priority, content }),
        3 => (any::<usize>(), 0u8..2).prop_map(|(pick, tenant)| Op::Get { pick, tenant }),
        3 => (any::<usize>(), 0u8..2).prop_map(|(pick, tenant)| Op::Collect { pick, tenant }),
        1 => Just(Op::Gc),
        1 => Just(Op::Rebuild),
        1 => Just(Op::Restart),
    ]
}

/// How a test opens (and after a restart, reopens) one adapter.
trait Backend {
    fn open(&mut self) -> SharedStorage;
}

struct Memory(Arc<MemoryStorage>);
impl Backend for Memory {
    fn open(&mut self) -> SharedStorage {
        self.0.clone()
    }
}

struct Embedded(tempfile::TempDir);
impl Backend for Embedded {
    fn open(&mut self) -> SharedStorage {
        let path: PathBuf = self.0.path().join("spiral.redb");
        Arc::new(EmbeddedStorage::open(path).expect("open redb"))
    }
}

/// Redis: a fresh namespace per case; a restart opens a new connection to the same namespace.
struct Redis(spiral_server::storage::redis::RedisConfig);
impl Backend for Redis {
    fn open(&mut self) -> SharedStorage {
        // `open` validates and builds without I/O; the first call dials.
        Arc::new(
            spiral_server::storage::redis::RedisStorage::open(self.0.clone())
                .expect("redis adapter"),
        )
    }
}

fn tenant(t: u8) -> String {
    format!("tenant-{t}")
}

fn config() -> EngineConfig {
    // Small capacity and a short trigger interval so GC runs often; one second chance.
    EngineConfig {
        max_nodes: 6,
        gc_trigger_interval: 4,
        gc_force_skip: 1,
        ..EngineConfig::default()
    }
}

async fn open(backend: &mut dyn Backend, clock: &SharedClock) -> Engine {
    let (engine, _) = Engine::open(backend.open(), config(), clock.clone(), 11)
        .await
        .expect("engine opens");
    engine
}

/// Run one sequence; `Err` names the first broken invariant and the step.
async fn run(backend: &mut dyn Backend, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let clock: SharedClock = Arc::new(ManualClock::new(1_750_000_000_000));
    let mut engine = open(backend, &clock).await;
    let mut events = engine.subscribe();
    // id → (tenant, content) of every acknowledged node not yet collected.
    let mut live: BTreeMap<String, (String, Value)> = BTreeMap::new();
    let mut removed: BTreeSet<String> = BTreeSet::new();
    let mut known: Vec<String> = Vec::new();

    for (step, op) in ops.into_iter().enumerate() {
        match &op {
            Op::Store {
                tenant: t,
                depth_milli,
                priority,
                content,
            } => {
                let req = StoreRequest {
                    content: content.clone(),
                    depth: Some(f64::from(*depth_milli) / 1000.0),
                    priority: Some(i64::from(*priority)),
                    tags: vec![],
                };
                let stored = engine.store(&tenant(*t), req).await;
                let stored = stored
                    .map_err(|e| TestCaseError::fail(format!("step {step}: store failed: {e}")))?;
                prop_assert!(
                    !known.contains(&stored.id),
                    "step {step}: sigil {} reused",
                    stored.id
                );
                known.push(stored.id.clone());
                live.insert(stored.id, (tenant(*t), content.clone()));
            }
            Op::Get { pick, tenant: t } if !known.is_empty() => {
                let id = &known[pick % known.len()];
                let got = engine.get(&tenant(*t), id).await;
                match live.get(id) {
                    Some((owner, content)) if *owner == tenant(*t) => {
                        let got = got.map_err(|e| {
                            TestCaseError::fail(format!(
                                "step {step}: invariant 2: acknowledged {id} unreadable: {e}"
                            ))
                        })?;
                        prop_assert_eq!(
                            &got.content,
                            content,
                            "step {}: {} content changed",
                            step,
                            id
                        );
                    }
                    _ => prop_assert_eq!(
                        got.map(|_| ()),
                        Err(EngineError::NotFound),
                        "step {}: {} visible",
                        step,
                        id
                    ),
                }
            }
            Op::Collect { pick, tenant: t } if !known.is_empty() => {
                let id = known[pick % known.len()].clone();
                let result = engine.collect(&tenant(*t), &id).await;
                match live.get(&id) {
                    Some((owner, _)) if *owner == tenant(*t) => {
                        prop_assert_eq!(
                            result,
                            Ok(()),
                            "step {}: collect of live {} failed",
                            step,
                            &id
                        );
                    }
                    _ => prop_assert_eq!(
                        result,
                        Err(EngineError::NotFound),
                        "step {}: collect {}",
                        step,
                        &id
                    ),
                }
            }
            Op::Get { .. } | Op::Collect { .. } => {}
            Op::Gc => {
                engine
                    .gc("model")
                    .await
                    .map_err(|e| TestCaseError::fail(format!("step {step}: gc: {e}")))?;
            }
            Op::Rebuild => {
                engine
                    .rebuild_stats()
                    .await
                    .map_err(|e| TestCaseError::fail(format!("step {step}: rebuild: {e}")))?;
            }
            Op::Restart => {
                // Settle the old engine's removals before it goes away.
                drain(&mut events, &mut live, &mut removed, step)?;
                drop(engine);
                engine = open(backend, &clock).await;
                events = engine.subscribe();
            }
        }
        drain(&mut events, &mut live, &mut removed, step)?;

        // Invariants 1 and 3, engine against storage.
        if let Err(v) = engine.check_against_storage().await {
            return Err(TestCaseError::fail(format!(
                "step {step} after {op:?}: {v}"
            )));
        }
        prop_assert_eq!(
            engine.total().unwrap(),
            live.len() as u64,
            "step {}: engine total vs model",
            step
        );
        // Invariant 2: every acknowledged, not-removed node is durable with its content.
        for (id, (_, content)) in &live {
            let stored = engine.storage().get(&node_key(id)).await;
            let stored = stored
                .map_err(|e| TestCaseError::fail(format!("step {step}: storage get: {e}")))?;
            prop_assert!(
                stored.as_ref().and_then(|v| v.get("content")) == Some(content),
                "step {}: invariant 2: acknowledged node {} lost or changed after {:?}",
                step,
                id,
                op
            );
        }
    }
    Ok(())
}

/// Apply the engine's removal events to the model; a removal of anything the model does not hold
/// is a double collect (invariant 3).
fn drain(
    events: &mut tokio::sync::broadcast::Receiver<EngineEvent>,
    live: &mut BTreeMap<String, (String, Value)>,
    removed: &mut BTreeSet<String>,
    step: usize,
) -> Result<(), TestCaseError> {
    while let Ok(ev) = events.try_recv() {
        if let EngineEvent::Collected { id, by_gc, .. } = ev {
            prop_assert!(
                removed.insert(id.clone()),
                "step {}: invariant 3: {} collected twice",
                step,
                id
            );
            prop_assert!(
                live.remove(&id).is_some(),
                "step {}: removed {} (gc={}) it never held",
                step,
                id,
                by_gc
            );
        }
    }
    Ok(())
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

proptest! {
    // Regressions live beside this file; cases come from PROPTEST_CASES (default 256).
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_model_memory(ops in proptest::collection::vec(op(), 1..60)) {
        let mut b = Memory(Arc::new(MemoryStorage::new()));
        block_on(run(&mut b, ops))?;
    }

    #[test]
    fn engine_model_redis(ops in proptest::collection::vec(op(), 1..40)) {
        // Without a Redis the fixture has said so once, loudly (and under CI it panicked).
        let Some(fx) = spiral_chaos::redis_fixture::redis() else { return Ok(()) };
        let mut b = Redis(fx.config());
        block_on(run(&mut b, ops))?;
    }

    #[test]
    fn engine_model_embedded(ops in proptest::collection::vec(op(), 1..40)) {
        let mut b = Embedded(tempfile::tempdir().expect("tempdir"));
        block_on(run(&mut b, ops))?;
    }
}
