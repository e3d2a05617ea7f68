//! One run, phase by phase, in one place:
//!
//! 1. **safety** — the workload runs and the fault schedule fires; every record is checked as it
//!    is made;
//! 2. **heal** — the last healing fault (repair, release, bounce, Redis restore) fires;
//! 3. **liveness** — from then on every well-behaved client must complete work within the
//!    scenario's bound (`checks.liveness_within_s`);
//! 4. **final** — the workload is over: the servers settle (journals replayed, breakers closed),
//!    then each engine is checked against its storage, the breakers' histories judged, every
//!    acknowledged store looked up in durable storage, and GC asked for on demand (it must start
//!    and bring each engine within capacity); then every checker's final verdict.
//!
//! The phases are records in the history ([`Phase`]), so the checkers — and a reader of the
//! trace — see where each began. Also here: a sweep of many seeds over the worker pool.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use spiral_history::{Event, Failure, Phase, failure};
use spiral_server::engine::{NODE_PREFIX, node_key};
use spiral_server::rng::SplitMix64;
use spiral_server::storage::redis::data_key;

use super::apply::{apply, record_breaker};
use super::schedule::schedule;
use super::{Ctx, build, lock, now_ms, server};
use crate::scenario::{FaultAt, Scenario};

/// A finished run.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub seed: u64,
    /// Why it failed (`None`: it passed).
    pub failure: Option<Failure>,
    pub trace: Vec<String>,
    /// Index in `trace` of the line that broke the first violated property.
    pub violation_at: Option<usize>,
    /// Operations answered, by kind.
    pub ops: BTreeMap<String, u64>,
    pub faults_fired: BTreeMap<String, u64>,
    /// Checkers that ran.
    pub checks: Vec<&'static str>,
    /// Fault-path coverage markers this run reached, with their hit counts.
    pub reached: BTreeMap<String, u64>,
}

impl RunResult {
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }

    pub fn exit_code(&self) -> u8 {
        failure::exit_code(self.failure.as_ref())
    }

    /// `pass`, `correctness:acked_writes`, `liveness:slo`, `crash`: what the shrinker keeps.
    pub fn class(&self) -> String {
        failure::class(self.failure.as_ref())
    }

    pub fn describe(&self) -> String {
        self.failure
            .as_ref()
            .map_or_else(|| "pass".into(), Failure::describe)
    }

    /// FNV-1a of the trace: equal digests ⇔ identical traces (for summaries and replays).
    pub fn digest(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for line in &self.trace {
            for b in line.bytes().chain(std::iter::once(b'\n')) {
                h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3);
            }
        }
        h
    }

    /// The trace lines that led to the violation: the last `n` up to and including it.
    pub fn leading_lines(&self, n: usize) -> &[String] {
        let end = self
            .violation_at
            .map_or(self.trace.len(), |i| i + 1)
            .min(self.trace.len());
        &self.trace[end.saturating_sub(n)..end]
    }
}

/// The checkers a run of `scenario` has, by name.
pub fn checks(scenario: &Scenario) -> Vec<&'static str> {
    spiral_history::checkers::all(&scenario.check_settings(&scenario.server.defaults()))
        .iter()
        .map(|c| c.name())
        .collect()
}

/// The server settings a run of `scenario` with `seed` draws (`[server]`).
pub fn server_settings(scenario: &Scenario, seed: u64) -> crate::scenario::ServerSettings {
    scenario
        .server
        .draw(&mut SplitMix64::new(seed).fork("server-settings"))
}

/// Run `scenario` with `seed`.
pub fn run(scenario: &Scenario, seed: u64) -> RunResult {
    let root = SplitMix64::new(seed);
    let net_seed = root.fork("turmoil").next_u64();
    let server_seed = root.fork("server").next_u64();
    let redis_seed = root.fork("redis").next_u64();
    let settings = server_settings(scenario, seed);
    let checks = checks(scenario);
    let ctx = match build::context(scenario, settings, server_seed, redis_seed) {
        Ok(ctx) => ctx,
        Err(e) => return crashed(seed, e, checks),
    };
    let schedule = schedule(scenario, &mut root.fork("swarm"));
    // This thread's marker hits from here on are this run's (every host runs on it).
    spiral_server::coverage::take();
    let (outcome, task_panic) = super::panics::watch(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            simulate(&ctx, net_seed, &root, &schedule)
        }))
    });
    let reached = spiral_server::coverage::take()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let crash = match outcome {
        Err(p) => Some(super::panics::message(&*p)),
        Ok(Err(e)) => Some(e),
        // A task the host's runtime caught: the simulation went on, but something panicked.
        Ok(Ok(())) => task_panic.map(|p| format!("a task panicked: {p}")),
    };
    finish(&ctx, seed, crash, checks, reached)
}

/// The end of a run in either world: unless it crashed (`crash`, or a harness error on record),
/// the checkers' final verdicts; then the verdict line and the result.
pub(super) fn finish(
    ctx: &Ctx,
    seed: u64,
    crash: Option<String>,
    checks: Vec<&'static str>,
    reached: BTreeMap<String, u64>,
) -> RunResult {
    let mut m = lock(&ctx.model);
    let crash = crash.or_else(|| lock(&ctx.failed).clone());
    if crash.is_none() {
        m.finish();
    }
    let (failure, violation_at) = match (crash, m.failure()) {
        (Some(e), _) => (Some(Failure::Crash(e)), None),
        (None, Some((f, at))) => (Some(f), Some(at)),
        (None, None) => (None, None),
    };
    #[allow(unused_mut)]
    let mut line = json!({"verdict": failure::class(failure.as_ref()), "seed": seed});
    if spiral_server::planted!(NondeterministicTrace) {
        line["run"] = unseeded_value().into();
    }
    m.trace.push(line.to_string());
    RunResult {
        seed,
        failure,
        violation_at,
        trace: std::mem::take(&mut m.trace),
        ops: std::mem::take(&mut m.ops),
        faults_fired: std::mem::take(&mut m.faults),
        checks,
        reached,
    }
}

/// A value no seed controls (a randomly keyed hash): what the planted `nondeterministic-trace`
/// bug leaks into the trace.
fn unseeded_value() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0u8)
}

fn crashed(seed: u64, e: String, checks: Vec<&'static str>) -> RunResult {
    RunResult {
        seed,
        failure: Some(Failure::Crash(e)),
        trace: Vec::new(),
        violation_at: None,
        ops: BTreeMap::new(),
        faults_fired: BTreeMap::new(),
        checks,
        reached: BTreeMap::new(),
    }
}

/// Phases 1–3: the simulation runs with faults firing in time order; when the last healing fault
/// has fired, the liveness phase begins. Phase 4 runs inside the simulation ([`final_checks`]).
fn simulate(
    ctx: &Arc<Ctx>,
    net_seed: u64,
    root: &SplitMix64,
    schedule: &[FaultAt],
) -> Result<(), String> {
    let mut sim = build::simulation(ctx, net_seed, root);
    let last_heal_ms = schedule
        .iter()
        .filter(|f| f.kind().heals())
        .map(FaultAt::at_ms)
        .max()
        .unwrap_or(0);
    ctx.record_at(
        Event::Phase {
            phase: Phase::Safety,
            at_ms: 0,
        },
        0,
    );
    let mut healed = false;
    let mut pending = schedule.iter().peekable();
    loop {
        let elapsed = sim.elapsed().as_millis() as u64;
        while let Some(f) = pending.next_if(|f| f.at_ms() <= elapsed) {
            apply(ctx, &mut sim, f);
        }
        if !healed && elapsed >= last_heal_ms {
            healed = true;
            ctx.record_at(
                Event::Phase {
                    phase: Phase::Liveness,
                    at_ms: last_heal_ms,
                },
                elapsed,
            );
        }
        match sim.step() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => return Err(e.to_string()),
        }
        super::apply::restart_stopped(ctx, &mut sim);
    }
}

/// Every node in durable storage at the end that no store acknowledged, with the client and
/// sequence number its content names: a store refused for good must not be among them
/// (`refused_writes`). Only these make the trace — the acknowledged ones are `acked_writes`'.
async fn record_unacked_at_rest(ctx: &Arc<Ctx>) {
    let acked: std::collections::BTreeSet<String> =
        ctx.acked().into_iter().map(|(id, _)| id).collect();
    let mut at_rest: Vec<(u32, String, serde_json::Value)> = Vec::new();
    if let Some(d) = &ctx.durable {
        // One store shared by every server.
        for (key, v) in d.scan_prefix(NODE_PREFIX).await.unwrap_or_default() {
            at_rest.push((0, key[NODE_PREFIX.len()..].to_owned(), v));
        }
    } else if let Some(r) = &ctx.redis {
        let marker = format!(":k:{NODE_PREFIX}");
        for s in 0..ctx.sc.world.servers {
            for (key, v) in r.scan_json(&format!("{}:", server::namespace(s))) {
                if let Some((_, id)) = key.split_once(&marker) {
                    at_rest.push((s, id.to_owned(), v));
                }
            }
        }
    }
    for (server, id, v) in at_rest {
        if acked.contains(&id) {
            continue;
        }
        let content = &v["content"];
        ctx.record(Event::UnackedAtRest {
            server,
            id,
            client: content["client"].as_u64().map(|c| c as u32),
            seq: content["seq"].as_u64(),
        });
    }
}

/// Phase 4, after the workload: let every live server drain its journal, then check each engine
/// against its storage, judge the breakers, and look every acknowledged store up in durable
/// storage.
pub(super) async fn final_checks(ctx: &Arc<Ctx>) {
    let workers = ctx.sc.world.clients;
    while ctx.clients_done.load(Ordering::SeqCst) < workers {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let final_ms = now_ms();
    ctx.record(Event::Phase {
        phase: Phase::Final,
        at_ms: final_ms,
    });
    // Settle: every server serving (one restarted during an outage boots once storage answers),
    // journals replayed, breakers closed (bounded; a stuck journal is the acked-write checker's
    // to judge, a server that never came back the liveness checker's).
    for _ in 0..600 {
        let settled = (0..ctx.sc.world.servers).all(|s| {
            ctx.state(s).is_some_and(|st| {
                let status = st.storage.status();
                status.journal_len == 0 && !status.degraded
            })
        });
        if settled {
            break;
        }
        for s in 0..ctx.sc.world.servers {
            if let Some(st) = ctx.state(s) {
                st.storage.recover().await;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for s in 0..ctx.sc.world.servers {
        if ctx.state(s).is_none() {
            ctx.record(Event::NotServing {
                server: s,
                waited_ms: now_ms() - final_ms,
            });
        }
    }
    for s in 0..ctx.sc.world.servers {
        let Some(st) = ctx.state(s) else { continue };
        let check = st.engine.check_against_storage().await;
        ctx.record(Event::EngineCheck {
            server: s,
            ok: check.is_ok(),
            detail: check
                .err()
                .map_or_else(|| "invariant 1 holds".to_owned(), |v| v.to_string()),
        });
        record_breaker(ctx, s, &st, now_ms());
        ctx.record(Event::SharedState {
            server: s,
            backend: st.shared.backend().to_owned(),
            fallbacks: st.shared.fallbacks(),
        });
        // Without Redis, what the server admitted must be on its own record — across restarts,
        // because storage persists (a Redis backend's record is Redis, judged by `auth`).
        if st.shared.backend() != "redis" {
            // Only tokens a second or more from the end of their use (exp plus the leeway, by
            // the server's clock): an expired one may rightly be forgotten.
            let now = st.now_ms();
            let live = |exp_s: u64| (exp_s + spiral_server::auth::LEEWAY_S) * 1000 > now + 1000;
            let admitted: Vec<String> = ctx
                .admitted(s)
                .into_iter()
                .filter(|(_, exp)| live(*exp))
                .map(|(j, _)| j)
                .collect();
            let forgotten: Vec<String> = admitted
                .iter()
                .filter(|j| !st.shared.jti_known(j, now))
                .cloned()
                .collect();
            ctx.record(Event::SharedDurable {
                server: s,
                backend: st.shared.backend().to_owned(),
                admitted: admitted.len() as u64,
                forgotten_count: forgotten.len() as u64,
                forgotten: forgotten.into_iter().take(5).collect(),
            });
        }
    }
    for (id, server) in ctx.acked() {
        let key = node_key(&id);
        let found = match (&ctx.durable, &ctx.redis) {
            (Some(d), _) => d.get(&key).await.ok().flatten().is_some(),
            (None, Some(r)) => r
                .get_json(&data_key(&server::namespace(server), &key))
                .is_some(),
            (None, None) => false,
        };
        // Only the missing ones make the trace: the rest is implied by the checker staying quiet.
        if !found {
            ctx.record(Event::Durable { id, server, found });
        }
    }
    record_unacked_at_rest(ctx).await;
    // Last, GC on demand (it removes nodes, so after the durability lookups): a pass must be able
    // to start — a pass still running from the workload gets 5 s to end — and bring the engine
    // back within capacity.
    for s in 0..ctx.sc.world.servers {
        let Some(st) = ctx.state(s) else { continue };
        let max_nodes = st.engine.config().max_nodes;
        let mut started = false;
        for _ in 0..50 {
            match st.engine.gc("quiescence").await {
                Ok(None) => tokio::time::sleep(Duration::from_millis(100)).await,
                Ok(Some(_)) | Err(_) => {
                    started = true;
                    if st.engine.total().unwrap_or(0) <= max_nodes {
                        break;
                    }
                }
            }
        }
        let total = st.engine.total().unwrap_or(0);
        ctx.record(Event::GcQuiescent {
            server: s,
            started,
            total,
            max_nodes,
        });
        if started && total <= max_nodes && max_nodes - total < CAPACITY_PROBES {
            capacity_trigger(ctx, s, &st.engine, total, max_nodes).await;
        }
        if let Ok((pending, collecting)) = st.engine.in_flight() {
            ctx.record(Event::EngineAtRest {
                server: s,
                pending,
                collecting,
            });
        }
    }
    // Every client has finished, so every connection ends: a peer that vanished is dropped by the
    // heartbeat (two missed pongs) within three ping intervals, a closing handshake within 2 s.
    // Give them that long, then each connection table must be empty — places under the cap and
    // registered subjects alike (`connection_fairness`).
    let wait_ms = 3 * ctx.sc.world.ws_ping_interval_ms + 5_000;
    for s in 0..ctx.sc.world.servers {
        let Some(st) = ctx.state(s) else { continue };
        let t0 = now_ms();
        while st.conns.open() + st.conns.users() > 0 && now_ms() - t0 < wait_ms {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ctx.record(Event::ConnectionsAtRest {
            server: s,
            open: st.conns.open(),
            users: st.conns.users(),
            waited_ms: now_ms() - t0,
        });
    }
    limiter_at_rest(ctx, final_ms).await;
}

/// The limiter's memory bound (`rate_limit`), where the run set it below the default (a bound
/// of 10 000 buckets is out of a simulated run's reach) and the in-memory limiter decides (no
/// Redis): once every bucket is idle — the longest
/// window and block have passed since the last client finished, at `final_ms` — a request of a
/// user no server has seen makes a limiter at its bound sweep the idle buckets, and it must then
/// hold no more than its bound.
async fn limiter_at_rest(ctx: &Arc<Ctx>, final_ms: u64) {
    let bound = ctx.settings.get("rate_limit_buckets");
    if bound >= spiral_server::ratelimit::SWEEP_AT as u64 {
        return;
    }
    let cfg = server::server_config(ctx);
    let idle_ms = [cfg.ws_rate, cfg.store_rate, cfg.http_rate]
        .iter()
        .map(|l| l.window_ms.max(l.block_ms))
        .max()
        .unwrap_or(0)
        + 1_000;
    let wait = (final_ms + idle_ms).saturating_sub(now_ms());
    tokio::time::sleep(Duration::from_millis(wait)).await;
    for s in 0..ctx.sc.world.servers {
        let Some(st) = ctx.state(s) else { continue };
        // With Redis, buckets live there; the local ones are the fallback's, swept only when an
        // outage sends a new user to them, which a probe to a healthy Redis does not.
        if st.shared.backend() == "redis" {
            continue;
        }
        st.rate("http", "limiter-probe", &st.cfg.http_rate).await;
        ctx.record(Event::LimiterAtRest {
            server: s,
            buckets: st.shared.local_buckets() as u64,
            bound,
        });
    }
}

/// Run every seed of `seeds` on `jobs` threads (each run owns its simulation; nothing is shared);
/// results in seed order, whatever order they finished in. `progress` is called after each run.
/// A passing run keeps no trace (a sweep's summary does not need it); a failing one keeps it for
/// the failure report and the artifacts.
pub fn sweep(
    scenario: &Scenario,
    seeds: &[u64],
    jobs: usize,
    progress: &(dyn Fn(&RunResult) + Sync),
) -> Vec<RunResult> {
    crate::pool::map(seeds, jobs, |&seed| {
        let mut r = run(scenario, seed);
        progress(&r);
        if r.passed() {
            r.trace = Vec::new();
        }
        r
    })
}

/// Stores the capacity probe may make to fill an engine that the on-demand GC left just under
/// capacity (one more then takes it over).
const CAPACITY_PROBES: u64 = 8;

/// The capacity trigger, tried at quiescence (nothing else in flight, no pass running): fill the
/// engine to capacity with probe stores of a tenant of its own, then store once more, which takes
/// it over capacity. A GC pass must run before that store is answered. The probe nodes stay (the
/// durability lookups are done; the pass may take them like any others).
async fn capacity_trigger(
    ctx: &Ctx,
    server: u32,
    engine: &spiral_server::engine::Engine,
    mut total: u64,
    max_nodes: u64,
) {
    let probe = |n: u64| spiral_server::engine::StoreRequest {
        content: json!({"capacity_probe": n}),
        depth: Some(0.5),
        priority: Some(0),
        tags: Vec::new(),
    };
    let mut n = 0;
    while total < max_nodes {
        if engine.store("capacity-probe", probe(n)).await.is_err() {
            return;
        }
        n += 1;
        total = engine.total().unwrap_or(0);
        if n > CAPACITY_PROBES {
            return;
        }
    }
    if total != max_nodes {
        return;
    }
    let passes = engine.gc_totals().passes;
    if engine.store("capacity-probe", probe(n)).await.is_err() {
        return;
    }
    ctx.record(Event::GcCapacityTrigger {
        server,
        before: total,
        max_nodes,
        ran: engine.gc_totals().passes > passes,
        after: engine.total().unwrap_or(0),
    });
}
