//! One seeded engine run: the seed fixes the operation stream, the clock and the engine's RNG,
//! so the same seed always produces the same trace.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use spiral_server::EngineError;
use spiral_server::clock::{ManualClock, SharedClock};
use spiral_server::engine::{Engine, EngineConfig, EngineEvent, StoreRequest, node_key};
use spiral_server::rng::SplitMix64;
use spiral_server::storage::SharedStorage;
use spiral_server::storage::embedded::EmbeddedStorage;

use spiral_history::{Failure, failure};

/// The checker name of the engine-only model's invariants (SPEC §1.5) in a [`Failure`].
pub const CHECKER: &str = "engine";

/// What a run did, and a digest of its trace (equal digests ⇔ identical traces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    pub seed: u64,
    pub steps: usize,
    pub counts: BTreeMap<&'static str, u64>,
    pub trace_digest: u64,
    /// Why the run failed (`None`: it passed); a correctness failure names the step.
    pub failure: Option<Failure>,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }

    pub fn exit_code(&self) -> u8 {
        failure::exit_code(self.failure.as_ref())
    }
}

fn config() -> EngineConfig {
    // Small capacity so GC, second chances and backlog all happen within a few hundred steps.
    EngineConfig {
        max_nodes: 64,
        gc_trigger_interval: 16,
        ..EngineConfig::default()
    }
}

struct Trace(u64);

impl Trace {
    fn record(&mut self, line: &str) {
        for b in line.bytes().chain(std::iter::once(b'\n')) {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3);
        }
    }
}

/// Run `steps` operations derived from `seed`.
pub fn run(seed: u64, steps: usize) -> RunReport {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return crash(seed, format!("runtime: {e}")),
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(drive(seed, steps))
    }));
    match outcome {
        Ok(report) => report,
        Err(panic) => crash(seed, crate::world::panics::message(&*panic)),
    }
}

fn crash(seed: u64, msg: String) -> RunReport {
    RunReport {
        seed,
        steps: 0,
        counts: BTreeMap::new(),
        trace_digest: 0,
        failure: Some(Failure::Crash(msg)),
    }
}

async fn open(
    storage: &SharedStorage,
    clock: &SharedClock,
    seed: u64,
) -> Result<Engine, EngineError> {
    Ok(Engine::open(storage.clone(), config(), clock.clone(), seed)
        .await?
        .0)
}

async fn drive(seed: u64, steps: usize) -> RunReport {
    let rng = SplitMix64::new(seed);
    let mut ops_rng = rng.fork("ops");
    let engine_seed = rng.fork("engine").next_u64();
    let manual = ManualClock::new(1_750_000_000_000);
    let clock: SharedClock = Arc::new(manual.clone());
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut trace = Trace(0xcbf2_9ce4_8422_2325);
    let fail = |step, violation: String, counts, trace: &Trace| RunReport {
        seed,
        steps: step,
        counts,
        trace_digest: trace.0,
        failure: Some(Failure::Correctness {
            checker: CHECKER,
            detail: format!("at step {step}: {violation}"),
        }),
    };

    let storage: SharedStorage = match EmbeddedStorage::in_memory() {
        Ok(s) => Arc::new(s),
        Err(e) => return crash(seed, e.to_string()),
    };
    let mut engine = match open(&storage, &clock, engine_seed).await {
        Ok(e) => e,
        Err(e) => return fail(0, format!("open: {e}"), counts, &trace),
    };
    let mut events = engine.subscribe();
    let mut live: BTreeMap<String, (String, Value)> = BTreeMap::new();
    let mut known: Vec<String> = Vec::new();

    for step in 0..steps {
        manual.advance(Duration::from_millis(ops_rng.next_u64() % 50));
        let tenant = format!("tenant-{}", ops_rng.next_u64() % 3);
        let roll = ops_rng.next_u64() % 100;
        let line = match roll {
            0..=49 => {
                let content =
                    json!({"step": step, "note": format!("m{}", ops_rng.next_u64() % 1000)});
                let req = StoreRequest {
                    content: content.clone(),
                    depth: Some((ops_rng.next_u64() % 1001) as f64 / 1000.0),
                    priority: Some((ops_rng.next_u64() % 5) as i64),
                    tags: vec![],
                };
                *counts.entry("store").or_default() += 1;
                match engine.store(&tenant, req).await {
                    Ok(s) => {
                        known.push(s.id.clone());
                        live.insert(s.id.clone(), (tenant.clone(), content));
                        format!("store {tenant} -> {} {}", s.id, s.spiral_id)
                    }
                    Err(e) => return fail(step, format!("store refused: {e}"), counts, &trace),
                }
            }
            50..=74 if !known.is_empty() => {
                let id = known[(ops_rng.next_u64() % known.len() as u64) as usize].clone();
                *counts.entry("get").or_default() += 1;
                let got = engine.get(&tenant, &id).await;
                let expected = live.get(&id).filter(|(owner, _)| *owner == tenant);
                match (expected, &got) {
                    (Some((_, content)), Ok(node)) if node.content == *content => {}
                    (None, Err(EngineError::NotFound)) => {}
                    _ => {
                        let v =
                            format!("read of {id} by {tenant}: expected {expected:?}, got {got:?}");
                        return fail(step, v, counts, &trace);
                    }
                }
                format!("get {tenant} {id} -> {}", got.is_ok())
            }
            75..=89 if !known.is_empty() => {
                let id = known[(ops_rng.next_u64() % known.len() as u64) as usize].clone();
                *counts.entry("collect").or_default() += 1;
                let r = engine.collect(&tenant, &id).await;
                let owned = live.get(&id).is_some_and(|(owner, _)| *owner == tenant);
                if owned != r.is_ok() {
                    return fail(
                        step,
                        format!("collect of {id} by {tenant}: owned={owned}, got {r:?}"),
                        counts,
                        &trace,
                    );
                }
                format!("collect {tenant} {id} -> {}", r.is_ok())
            }
            90..=94 => {
                *counts.entry("gc").or_default() += 1;
                match engine.gc("sweep").await {
                    Ok(r) => format!(
                        "gc -> {:?}",
                        r.map(|r| (r.selected, r.collected, r.backlog))
                    ),
                    Err(e) => return fail(step, format!("gc: {e}"), counts, &trace),
                }
            }
            95..=97 => {
                *counts.entry("rebuild").or_default() += 1;
                match engine.rebuild_stats().await {
                    Ok(r) if !r.corrections.is_empty() => {
                        return fail(
                            step,
                            format!("rebuild had to correct {} spirals", r.corrections.len()),
                            counts,
                            &trace,
                        );
                    }
                    Ok(r) => format!("rebuild scanned {}", r.scanned),
                    Err(e) => return fail(step, format!("rebuild: {e}"), counts, &trace),
                }
            }
            _ => {
                *counts.entry("restart").or_default() += 1;
                drop(engine);
                engine = match open(
                    &storage,
                    &clock,
                    spiral_server::rng::sub_seed(engine_seed, &format!("restart-{step}")),
                )
                .await
                {
                    Ok(e) => e,
                    Err(e) => return fail(step, format!("reopen: {e}"), counts, &trace),
                };
                events = engine.subscribe();
                "restart".to_owned()
            }
        };
        trace.record(&line);
        while let Ok(ev) = events.try_recv() {
            if let EngineEvent::Collected { id, .. } = ev
                && live.remove(&id).is_none()
            {
                return fail(
                    step,
                    format!("invariant 3: {id} removed but not held"),
                    counts,
                    &trace,
                );
            }
        }
        if let Err(v) = engine.check_against_storage().await {
            return fail(step, v.to_string(), counts, &trace);
        }
        for (id, (_, content)) in &live {
            let stored = storage.get(&node_key(id)).await.ok().flatten();
            if stored.as_ref().and_then(|v| v.get("content")) != Some(content) {
                return fail(
                    step,
                    format!("invariant 2: acknowledged node {id} lost"),
                    counts,
                    &trace,
                );
            }
        }
    }
    RunReport {
        seed,
        steps,
        counts,
        trace_digest: trace.0,
        failure: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_to_the_same_trace() {
        let a = run(17, 300);
        let b = run(17, 300);
        assert_eq!(a, b);
        assert!(a.passed(), "{:?}", a.failure);
        assert_ne!(a.trace_digest, run(18, 300).trace_digest);
    }
}
