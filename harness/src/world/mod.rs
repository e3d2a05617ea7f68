//! One seeded run of a [`Scenario`] in turmoil: server hosts running the unmodified server
//! library (`api::serve` on [`SimListener`]s), client hosts speaking real WebSocket and HTTP over
//! simulated TCP, optionally a Redis host (the simulated Redis, reached by the real Redis
//! adapter), a fault schedule (timed list + seeded swarm) and the checkers.
//!
//! Durable state lives outside the host closures — the in-process store, the simulated Redis's
//! data, each server's clock skew — so it survives `crash` and `bounce` as a disk would.
//!
//! Everything random derives from the root seed (turmoil's `rng_seed`, each client's workload,
//! the swarm schedule, the server's RNG and the Redis error draws); time is simulated and the
//! epoch fixed, so one seed gives one trace, byte for byte. The trace is JSON lines: every client
//! operation and its answer, every fault, every checker verdict.

mod bad;
mod client;
mod net;
mod server;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use serde_json::json;
use spiral_server::api::AppState;
use spiral_server::engine::node_key;
use spiral_server::rng::SplitMix64;
use spiral_server::storage::SharedStorage;
use spiral_server::storage::embedded::EmbeddedStorage;
use spiral_server::storage::memory::MemoryStorage;
use spiral_server::storage::redis::data_key;

use crate::checkers::{self, Checker, Class, Obs, Violation};
use crate::scenario::{FaultAt, FaultKind, Scenario, StorageKind};
use crate::sim_redis::{Faults as RedisFaults, Outage, SimRedis};
use crate::{EXIT_CORRECTNESS, EXIT_CRASH, EXIT_LIVENESS, EXIT_PASS};

/// The fixed epoch of every run (2027-01-15T08:00:00Z).
pub const EPOCH_MS: u64 = 1_800_000_000_000;
/// The world's HS256 secret.
pub(crate) const SECRET: &[u8] = b"simulation-secret-simulation-secret!";
/// Simulated time the run may take beyond the workload: settling, final checks.
const SETTLE: Duration = Duration::from_secs(90);

/// What a run found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// A safety property broke: which checker and what it saw.
    Correctness {
        checker: &'static str,
        detail: String,
    },
    /// Work did not complete after the faults healed, or an SLO was missed.
    Liveness {
        checker: &'static str,
        detail: String,
    },
    /// The simulation or the server panicked or failed.
    Crash(String),
}

impl Verdict {
    pub fn exit_code(&self) -> u8 {
        match self {
            Verdict::Pass => EXIT_PASS,
            Verdict::Correctness { .. } => EXIT_CORRECTNESS,
            Verdict::Liveness { .. } => EXIT_LIVENESS,
            Verdict::Crash(_) => EXIT_CRASH,
        }
    }

    /// `correctness:acked_writes`, `liveness:liveness`, `crash`, `pass`: what the shrinker keeps.
    pub fn class(&self) -> String {
        match self {
            Verdict::Pass => "pass".into(),
            Verdict::Correctness { checker, .. } => format!("correctness:{checker}"),
            Verdict::Liveness { checker, .. } => format!("liveness:{checker}"),
            Verdict::Crash(_) => "crash".into(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Verdict::Pass => "pass".into(),
            Verdict::Correctness { checker, detail } => format!("correctness [{checker}] {detail}"),
            Verdict::Liveness { checker, detail } => format!("liveness [{checker}] {detail}"),
            Verdict::Crash(m) => format!("crash: {m}"),
        }
    }
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub seed: u64,
    pub verdict: Verdict,
    pub trace: Vec<String>,
    /// Index in `trace` of the line that broke the first violated property.
    pub violation_at: Option<usize>,
    /// Operations answered, by kind.
    pub ops: BTreeMap<String, u64>,
    pub faults_fired: BTreeMap<String, u64>,
    /// Checkers that ran.
    pub checks: Vec<&'static str>,
}

impl RunResult {
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

/// What the run has seen so far, and the checkers watching it.
struct Model {
    trace: Vec<String>,
    checkers: Vec<Box<dyn Checker + Send>>,
    violation: Option<(Violation, usize)>,
    /// Checkers that found a violation at any point.
    violated: BTreeSet<&'static str>,
    ops: BTreeMap<String, u64>,
    faults: BTreeMap<String, u64>,
    /// Acknowledged stores: id → (tenant, server). Foreign reads and the durable check use it.
    acked: BTreeMap<String, (String, u32)>,
}

/// One server's slot: its current state (None while crashed) and its clock skew.
#[derive(Default)]
pub(crate) struct ServerSlot {
    pub state: Mutex<Option<AppState>>,
    pub skew_ms: Arc<AtomicI64>,
}

/// Everything the hosts of one run share.
pub(crate) struct Ctx {
    pub sc: Scenario,
    model: Mutex<Model>,
    pub servers: Vec<ServerSlot>,
    /// In-process durable storage (memory / embedded), outside every host.
    pub durable: Option<SharedStorage>,
    pub redis: Option<SimRedis>,
    pub server_seed: u64,
    /// Workload clients that have finished.
    pub clients_done: AtomicU32,
    /// The harness itself failed (the run is reported as a crash).
    failed: Mutex<Option<String>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Simulated milliseconds since the run started.
pub(crate) fn now_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64)
}

impl Ctx {
    /// Record an observation: a trace line, and every checker sees it.
    pub fn record(&self, obs: Obs) {
        self.record_at(obs, now_ms());
    }

    /// [`Ctx::record`] with the time given (outside any host, `now_ms` cannot see the clock).
    pub fn record_at(&self, obs: Obs, t_ms: u64) {
        // `{"t_ms":…,` then the observation's own fields: one serialization, no `Value` tree.
        let body = serde_json::to_string(&obs).unwrap_or_default();
        let line = format!(
            "{{\"t_ms\":{t_ms},{}",
            body.strip_prefix('{').unwrap_or("}")
        );
        let mut m = lock(&self.model);
        m.trace.push(line);
        if let Obs::Op {
            op,
            answer,
            target,
            tenant,
            server,
            ..
        } = &obs
        {
            if !answer.is_null() {
                *m.ops.entry(op.clone()).or_default() += 1;
            }
            match op.as_str() {
                "store" if checkers::is_result(answer) => {
                    if let Some(id) = answer["data"]["id"].as_str() {
                        m.acked.insert(id.to_owned(), (tenant.clone(), *server));
                    }
                }
                "collect" => {
                    if let Some(id) = target {
                        m.acked.remove(id);
                    }
                }
                _ => {}
            }
        }
        if let Obs::GcRemoved { id, .. } = &obs {
            m.acked.remove(id);
        }
        self.check(&mut m, |c| c.observe(&obs));
    }

    fn check(&self, m: &mut Model, mut f: impl FnMut(&mut dyn Checker) -> Result<(), String>) {
        let mut found = Vec::new();
        for c in &mut m.checkers {
            if let Err(detail) = f(c.as_mut()) {
                found.push(Violation {
                    checker: c.name(),
                    class: c.class(),
                    detail,
                });
            }
        }
        for v in found {
            let line = json!({"check": v.checker, "verdict": "violated", "detail": v.detail});
            m.trace.push(line.to_string());
            m.violated.insert(v.checker);
            if m.violation.is_none() {
                let at = m.trace.len() - 1;
                m.violation = Some((v, at));
            }
        }
    }

    /// Every checker's verdict for the whole run, one trace line each.
    fn verdicts(&self, m: &mut Model) {
        let lines: Vec<String> = m
            .checkers
            .iter()
            .map(|c| {
                let verdict = if m.violated.contains(c.name()) {
                    "violated"
                } else {
                    "held"
                };
                json!({"check": c.name(), "verdict": verdict}).to_string()
            })
            .collect();
        m.trace.extend(lines);
    }

    /// Up to `n` acknowledged ids of tenants other than `tenant`, in id order.
    pub fn foreign_ids(&self, tenant: &str, n: usize) -> Vec<String> {
        lock(&self.model)
            .acked
            .iter()
            .filter(|(_, (t, _))| t != tenant)
            .map(|(id, _)| id.clone())
            .take(n)
            .collect()
    }

    pub fn state(&self, server: u32) -> Option<AppState> {
        lock(&self.servers[server as usize].state).clone()
    }

    /// The server's wall clock (ms), skew included: tokens at the expiry edges are minted by it.
    pub fn server_unix_ms(&self, server: u32) -> u64 {
        let skew = self.servers[server as usize]
            .skew_ms
            .load(Ordering::Relaxed);
        (EPOCH_MS + now_ms()).saturating_add_signed(skew)
    }

    pub fn harness_error(&self, e: String) {
        lock(&self.failed).get_or_insert(e);
    }

    pub fn bad_client(&self, c: u32) -> bool {
        c >= self.sc.world.clients - self.sc.workload.bad_clients
    }
}

/// The checkers a run of `scenario` has, by name.
pub fn checks(scenario: &Scenario) -> Vec<&'static str> {
    checkers::all(scenario).iter().map(|c| c.name()).collect()
}

/// Run `scenario` with `seed`.
pub fn run(scenario: &Scenario, seed: u64) -> RunResult {
    let root = SplitMix64::new(seed);
    let net_seed = root.fork("turmoil").next_u64();
    let server_seed = root.fork("server").next_u64();
    let redis_seed = root.fork("redis").next_u64();
    let checkers = checkers::all(scenario);
    let checks = checkers.iter().map(|c| c.name()).collect();
    let durable = match scenario.world.storage {
        StorageKind::Memory => Some(Arc::new(MemoryStorage::new()) as SharedStorage),
        StorageKind::Embedded => match EmbeddedStorage::in_memory() {
            Ok(s) => Some(Arc::new(s) as SharedStorage),
            Err(e) => return crashed(seed, format!("embedded storage: {e}"), checks),
        },
        StorageKind::Redis => None,
    };
    let ctx = Arc::new(Ctx {
        sc: scenario.clone(),
        model: Mutex::new(Model {
            trace: Vec::new(),
            checkers,
            violation: None,
            violated: BTreeSet::new(),
            ops: BTreeMap::new(),
            faults: BTreeMap::new(),
            acked: BTreeMap::new(),
        }),
        servers: (0..scenario.world.servers)
            .map(|_| ServerSlot::default())
            .collect(),
        durable,
        redis: (scenario.world.storage == StorageKind::Redis).then(|| SimRedis::new(redis_seed)),
        server_seed,
        clients_done: AtomicU32::new(0),
        failed: Mutex::new(None),
    });
    let schedule = schedule(scenario, &mut root.fork("swarm"));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        simulate(&ctx, net_seed, &root, &schedule)
    }));
    let mut m = lock(&ctx.model);
    let crash = match outcome {
        Err(p) => Some(
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panic".into()),
        ),
        Ok(Err(e)) => Some(e),
        Ok(Ok(())) => match lock(&ctx.failed).clone() {
            Some(e) => Some(e),
            None => {
                ctx.check(&mut m, |c| c.finish());
                ctx.verdicts(&mut m);
                None
            }
        },
    };
    let verdict = match (crash, m.violation.clone()) {
        (Some(e), _) => Verdict::Crash(e),
        (None, Some((v, _))) if v.class == Class::Correctness => Verdict::Correctness {
            checker: v.checker,
            detail: v.detail,
        },
        (None, Some((v, _))) => Verdict::Liveness {
            checker: v.checker,
            detail: v.detail,
        },
        (None, None) => Verdict::Pass,
    };
    #[allow(unused_mut)]
    let mut line = json!({"verdict": verdict.class(), "seed": seed});
    if spiral_server::planted!(NondeterministicTrace) {
        line["run"] = unseeded_value().into();
    }
    m.trace.push(line.to_string());
    RunResult {
        seed,
        verdict,
        violation_at: m.violation.as_ref().map(|(_, at)| *at),
        trace: std::mem::take(&mut m.trace),
        ops: std::mem::take(&mut m.ops),
        faults_fired: std::mem::take(&mut m.faults),
        checks,
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
        verdict: Verdict::Crash(e),
        trace: Vec::new(),
        violation_at: None,
        ops: BTreeMap::new(),
        faults_fired: BTreeMap::new(),
        checks,
    }
}

/// The timed faults plus the seeded swarm, in firing order.
pub fn schedule(sc: &Scenario, rng: &mut SplitMix64) -> Vec<FaultAt> {
    let mut out = sc.faults.clone();
    let sw = &sc.swarm;
    let heal = sw.heal_after_s.unwrap_or(5.0);
    let until = sw.until_s.unwrap_or(sc.world.duration_s as f64 * 2.0 / 3.0);
    let fault = |at_s: f64, kind: FaultKind, a: Option<String>, b: Option<String>| FaultAt {
        at_s,
        kind,
        a,
        b,
        ms: None,
        rate: None,
        mode: None,
    };
    // Poisson arrivals of each kind, one stream per kind.
    let arrivals = |per_min: f64, rng: &mut SplitMix64| {
        let mut t = 0.0;
        let mut at = Vec::new();
        if per_min <= 0.0 {
            return at;
        }
        loop {
            t += -(1.0 - rng.next_f64()).ln() * 60.0 / per_min;
            if t >= until {
                return at;
            }
            at.push((t * 1000.0).round() / 1000.0);
        }
    };
    let good = sc.world.clients - sc.workload.bad_clients;
    for t in arrivals(sw.partitions_per_min, rng) {
        let c = rng.next_u64() % u64::from(good.max(1));
        let s = rng.next_u64() % u64::from(sc.world.servers);
        let (a, b) = (
            Some(sc.world.client_host(c as u32)),
            Some(format!("server-{s}")),
        );
        out.push(fault(t, FaultKind::Partition, a.clone(), b.clone()));
        out.push(fault(t + heal, FaultKind::Repair, a, b));
    }
    for t in arrivals(sw.crashes_per_min, rng) {
        let s = Some(format!(
            "server-{}",
            rng.next_u64() % u64::from(sc.world.servers)
        ));
        out.push(fault(t, FaultKind::Crash, s.clone(), None));
        out.push(fault(t + heal, FaultKind::Bounce, s, None));
    }
    for t in arrivals(sw.redis_outages_per_min, rng) {
        out.push(fault(t, FaultKind::RedisOutage, None, None));
        out.push(fault(t + heal, FaultKind::RedisRestore, None, None));
    }
    out.sort_by_key(FaultAt::at_ms);
    out
}

fn simulate(
    ctx: &Arc<Ctx>,
    net_seed: u64,
    root: &SplitMix64,
    schedule: &[FaultAt],
) -> Result<(), String> {
    let sc = &ctx.sc;
    let duration = Duration::from_secs(sc.world.duration_s);
    let mut sim = turmoil::Builder::new()
        .rng_seed(net_seed)
        .epoch(UNIX_EPOCH + Duration::from_millis(EPOCH_MS))
        .simulation_duration(duration + SETTLE)
        .tick_duration(Duration::from_millis(sc.world.tick_ms))
        .min_message_latency(Duration::from_millis(sc.world.latency_ms_min))
        .max_message_latency(Duration::from_millis(sc.world.latency_ms_max))
        .build();

    if let Some(redis) = &ctx.redis {
        redis.set_faults(RedisFaults {
            latency_ms: sc.world.redis_latency_ms,
            ..RedisFaults::default()
        });
        let redis = redis.clone();
        sim.host("redis", move || {
            let redis = redis.clone();
            async move {
                redis.listen(6379).await?;
                Ok(())
            }
        });
    }
    for s in 0..sc.world.servers {
        let ctx = ctx.clone();
        sim.host(format!("server-{s}"), move || server::main(ctx.clone(), s));
    }

    let last_heal_ms = schedule
        .iter()
        .filter(|f| f.kind.heals())
        .map(FaultAt::at_ms)
        .max()
        .unwrap_or(0);
    // Each client host runs its clients side by side in one task (polled in a fixed order).
    let mut hosts: Vec<Vec<(u32, SplitMix64)>> =
        vec![Vec::new(); sc.world.client_host_count() as usize];
    for c in 0..sc.world.clients {
        let rng = root.fork(&format!("client-{c}"));
        hosts[sc.world.client_host_index(c) as usize].push((c, rng));
    }
    // Host `client-0` also runs the final checks, which wait for every client to finish: a host
    // of its own would cost a runtime step every tick for one task at the end.
    for (h, clients) in hosts.into_iter().enumerate() {
        let ctx = ctx.clone();
        sim.client(format!("client-{h}"), async move {
            let ctx = &ctx;
            let work =
                futures_util::future::join_all(clients.into_iter().map(|(c, rng)| async move {
                    if ctx.bad_client(c) {
                        bad::main(ctx, c, rng).await;
                    } else {
                        client::main(ctx, c, rng).await;
                    }
                    ctx.clients_done.fetch_add(1, Ordering::SeqCst);
                }));
            if h == 0 {
                futures_util::future::join(work, final_checks(ctx, last_heal_ms)).await;
            } else {
                work.await;
            }
            Ok(())
        });
    }

    // Faults, in time order, as the simulation advances.
    let mut pending = schedule.iter().peekable();
    loop {
        let elapsed = sim.elapsed().as_millis() as u64;
        while let Some(f) = pending.next_if(|f| f.at_ms() <= elapsed) {
            apply(ctx, &mut sim, f);
        }
        match sim.step() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn server_index(host: &str) -> Option<u32> {
    host.strip_prefix("server-")?.parse().ok()
}

fn apply(ctx: &Ctx, sim: &mut turmoil::Sim<'_>, f: &FaultAt) {
    let a = f.a.clone().unwrap_or_default();
    let b = f.b.clone().unwrap_or_default();
    let mut detail = None;
    match f.kind {
        FaultKind::Partition => sim.partition(a.as_str(), b.as_str()),
        FaultKind::Repair => sim.repair(a.as_str(), b.as_str()),
        FaultKind::Hold => sim.hold(a.as_str(), b.as_str()),
        FaultKind::Release => sim.release(a.as_str(), b.as_str()),
        FaultKind::Crash => {
            if let Some(s) = server_index(&a) {
                // Its breaker history dies with it: judge it now.
                if let Some(st) = lock(&ctx.servers[s as usize].state).take() {
                    record_breaker(ctx, s, &st, sim.elapsed().as_millis() as u64);
                }
            }
            sim.crash(a.as_str());
        }
        FaultKind::Bounce => {
            if let Some(s) = server_index(&a)
                && let Some(st) = lock(&ctx.servers[s as usize].state).take()
            {
                record_breaker(ctx, s, &st, sim.elapsed().as_millis() as u64);
            }
            sim.bounce(a.as_str());
        }
        FaultKind::ClockSkew => {
            if let Some(s) = server_index(&a) {
                let ms = f.ms.unwrap_or(0);
                ctx.servers[s as usize]
                    .skew_ms
                    .fetch_add(ms, Ordering::Relaxed);
                detail = Some(format!("{ms:+} ms"));
            }
        }
        FaultKind::RedisOutage
        | FaultKind::RedisRestore
        | FaultKind::RedisSlow
        | FaultKind::RedisErrors => {
            if let Some(redis) = &ctx.redis {
                let mut faults = redis.faults();
                match f.kind {
                    FaultKind::RedisOutage => {
                        faults.outage = if f.mode.as_deref() == Some("refuse") {
                            Outage::Refuse
                        } else {
                            Outage::Hang
                        };
                    }
                    FaultKind::RedisSlow => faults.latency_ms = f.ms.unwrap_or(0).unsigned_abs(),
                    FaultKind::RedisErrors => faults.error_rate = f.rate.unwrap_or(0.0),
                    _ => {
                        faults = RedisFaults::default();
                        faults.latency_ms = ctx.sc.world.redis_latency_ms;
                    }
                }
                detail = Some(format!("{faults:?}"));
                redis.set_faults(faults);
            }
        }
    }
    lock(&ctx.model)
        .faults
        .entry(f.kind.name().to_owned())
        .and_modify(|n| *n += 1)
        .or_insert(1);
    let t_ms = sim.elapsed().as_millis() as u64;
    ctx.record_at(
        Obs::Fault {
            kind: f.kind.name().to_owned(),
            a: f.a.clone(),
            b: f.b.clone(),
            detail,
        },
        t_ms,
    );
}

fn record_breaker(ctx: &Ctx, server: u32, st: &AppState, t_ms: u64) {
    for t in st.storage.transitions() {
        ctx.record_at(
            Obs::Breaker {
                server,
                from: t.from.name().to_owned(),
                to: t.to.name().to_owned(),
            },
            t_ms,
        );
    }
}

/// After the workload: let every live server drain its journal, then check each engine against
/// its storage, judge the breakers, and look every acknowledged store up in durable storage.
async fn final_checks(ctx: &Arc<Ctx>, last_heal_ms: u64) {
    let workers = ctx.sc.world.clients;
    while ctx.clients_done.load(Ordering::SeqCst) < workers {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ctx.record(Obs::End { last_heal_ms });
    // Settle: journals replayed, breakers closed (bounded; a stuck journal is the acked-write
    // checker's to judge).
    for _ in 0..600 {
        let settled = (0..ctx.sc.world.servers).all(|s| {
            ctx.state(s).is_none_or(|st| {
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
        let Some(st) = ctx.state(s) else { continue };
        let check = st.engine.check_against_storage().await;
        ctx.record(Obs::EngineCheck {
            server: s,
            ok: check.is_ok(),
            detail: check
                .err()
                .map_or_else(|| "invariant 1 holds".to_owned(), |v| v.to_string()),
        });
        record_breaker(ctx, s, &st, now_ms());
        ctx.record(Obs::SharedState {
            server: s,
            backend: st.shared.backend().to_owned(),
            fallbacks: st.shared.fallbacks(),
        });
    }
    let acked: Vec<(String, u32)> = lock(&ctx.model)
        .acked
        .iter()
        .map(|(id, (_, s))| (id.clone(), *s))
        .collect();
    for (id, server) in acked {
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
            ctx.record(Obs::Durable { id, server, found });
        }
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
        if r.verdict == Verdict::Pass {
            r.trace = Vec::new();
        }
        r
    })
}
