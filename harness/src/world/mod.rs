//! One seeded run of a [`Scenario`] in turmoil: server hosts running the unmodified server
//! library (`api::serve` on [`SimListener`](crate::sim_net::SimListener)s), client hosts speaking
//! real WebSocket and HTTP over simulated TCP, optionally a Redis host (the simulated Redis,
//! reached by the real Redis adapter), a fault schedule (timed list + seeded swarm) and the
//! checkers.
//!
//! Durable state lives outside the host closures — the in-process store, the simulated Redis's
//! data, each server's clock skew — so it survives `crash` and `bounce` as a disk would.
//!
//! Everything random derives from the root seed (turmoil's `rng_seed`, each client's workload,
//! the swarm schedule, the server's RNG and the Redis error draws); time is simulated and the
//! epoch fixed, so one seed gives one trace, byte for byte. The trace is the run's history
//! (`spiral_history::Record`s, one JSON line each) with every checker's verdict.
//!
//! - `build` — the shared context of a run and the simulation's hosts;
//! - [`run`](mod@run) — one run, phase by phase, and a sweep of many;
//! - [`schedule`](mod@schedule) — the timed faults plus the seeded swarm;
//! - `apply` — what each fault does to the simulation;
//! - `server`, `client`, `bad`, `net` — the hosts and their simulated network;
//! - `attacks` — the bad clients' larger attacks, one module each;
//! - `panics` — a panic anywhere in a run (a task its runtime caught included) is a crash;
//! - [`real`](mod@real) — the same clients and checkers in the real-process world
//!   (`spiral-chaos run`): real sockets and the wall clock instead of turmoil's.

mod apply;
mod attacks;
mod bad;
mod build;
mod client;
mod net;
pub(crate) mod panics;
pub mod real;
pub mod run;
pub mod schedule;
mod server;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use spiral_history::checkers::Panel;
use spiral_history::{Answer, Event, Failure, Op, Record, Violation};
use spiral_server::api::AppState;
use spiral_server::storage::SharedStorage;

use crate::scenario::Scenario;
use crate::sim_redis::SimRedis;

pub use self::run::{RunResult, checks, run, server_settings, sweep};
pub use self::schedule::schedule;

/// The fixed epoch of every run (2027-01-15T08:00:00Z).
pub const EPOCH_MS: u64 = 1_800_000_000_000;
/// The world's HS256 secret.
pub(crate) const SECRET: &[u8] = b"simulation-secret-simulation-secret!";

/// What the run has recorded so far, and the checkers watching it.
struct Model {
    trace: Vec<String>,
    panel: Panel,
    ops: BTreeMap<String, u64>,
    faults: BTreeMap<String, u64>,
    /// Acknowledged stores: id → (tenant, server). Foreign reads and the durable check use it.
    acked: BTreeMap<String, (String, u32)>,
    /// Handshake `jti`s each server admitted, with their tokens' `exp` (unix s): the durable
    /// shared-state check asks for those still unexpired at the end.
    admitted: BTreeMap<u32, BTreeMap<String, u64>>,
}

/// One server's slot: its current state (None while crashed), its clock skew and its local disk
/// (the degraded journal), which outlive a crash of the host.
#[derive(Default)]
pub(crate) struct ServerSlot {
    pub state: Mutex<Option<AppState>>,
    pub skew_ms: Arc<AtomicI64>,
    pub journal: spiral_server::resilience::MemLog,
    /// A graceful stop asked of the running server (SIGTERM).
    pub terminate: tokio::sync::Notify,
    /// Graceful stops asked of this server so far.
    pub terminations: AtomicU32,
    /// The server has stopped gracefully: its host is to be restarted (the run loop does it).
    pub stopped: std::sync::atomic::AtomicBool,
    /// The host's disk refuses writes (`disk-full`): appending to the journal fails.
    pub disk_full: Arc<std::sync::atomic::AtomicBool>,
    /// Held by the non-reading peer attacking this server: it times its reads by the server's
    /// drop counter, which a second non-reader's drops would move too.
    pub non_reader: tokio::sync::Mutex<()>,
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
    /// The server settings this run drew from `[server]`.
    pub settings: crate::scenario::ServerSettings,
    /// Held by a bad client's flood or hog: one crowd of connections at a time, so that neither
    /// is refused for what the other holds.
    pub crowd: tokio::sync::Mutex<()>,
    /// Which faults are in effect and when they last changed, so that an attack can tell whether
    /// a fault stood between it and the outcome it expects.
    pub disturbance: Mutex<Disturbance>,
    /// Servers whose journal was seen past its bound (recorded once each).
    pub journal_flagged: Mutex<std::collections::BTreeSet<u32>>,
}

/// The faults in effect, by kind of harm: links (partitions, holds, crashed servers) and Redis
/// (outages, error spells, slowness), each with the time its set last changed.
#[derive(Debug, Default)]
pub(crate) struct Disturbance {
    links: std::collections::BTreeSet<String>,
    links_changed_ms: Option<u64>,
    redis: bool,
    /// Faulty links to the Redis host (latency, loss) in effect: Redis is as good as faulty.
    redis_links: std::collections::BTreeSet<String>,
    redis_changed_ms: Option<u64>,
    /// Servers stopping gracefully (from the signal until they are back), and when that set last
    /// changed: a disturbance for attacks like a link fault, but one that closes its WebSockets
    /// with 1001 first.
    stops: std::collections::BTreeSet<u32>,
    stops_changed_ms: Option<u64>,
}

impl Disturbance {
    /// A link fault began or ended (`on`) for `what` at `t_ms`.
    pub fn link(&mut self, what: String, on: bool, t_ms: u64) {
        if on {
            self.links.insert(what);
        } else {
            self.links.remove(&what);
        }
        self.links_changed_ms = Some(t_ms);
    }

    /// A fault on a link to the Redis host began or ended: a link fault and a Redis fault both.
    pub fn redis_link(&mut self, what: String, on: bool, t_ms: u64) {
        if on {
            self.redis_links.insert(what.clone());
        } else {
            self.redis_links.remove(&what);
        }
        self.redis_changed_ms = Some(t_ms);
        self.link(what, on, t_ms);
    }

    /// The simulated Redis is faulty (`on`) or healthy again, from `t_ms`.
    pub fn redis(&mut self, on: bool, t_ms: u64) {
        self.redis = on;
        self.redis_changed_ms = Some(t_ms);
    }

    /// Server `server` began (`on`) or ended a graceful stop at `t_ms`.
    pub fn stop(&mut self, server: u32, on: bool, t_ms: u64) {
        if on {
            self.stops.insert(server);
        } else {
            self.stops.remove(&server);
        }
        self.stops_changed_ms = Some(t_ms);
    }

    /// Whether a link fault or a graceful stop was in effect at any time since `t0_ms`.
    pub fn links_since(&self, t0_ms: u64) -> bool {
        self.links_only_since(t0_ms)
            || !self.stops.is_empty()
            || self.stops_changed_ms.is_some_and(|t| t >= t0_ms)
    }

    /// Whether a link fault (a graceful stop aside) was in effect at any time since `t0_ms`.
    pub fn links_only_since(&self, t0_ms: u64) -> bool {
        !self.links.is_empty() || self.links_changed_ms.is_some_and(|t| t >= t0_ms)
    }

    /// Whether Redis was faulty at any time since `t0_ms`.
    pub fn redis_since(&self, t0_ms: u64) -> bool {
        self.redis
            || !self.redis_links.is_empty()
            || self.redis_changed_ms.is_some_and(|t| t >= t0_ms)
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Milliseconds since the run started: simulated, or in the real-process world the wall time
/// since it began.
pub(crate) fn now_ms() -> u64 {
    match real::world() {
        Some(w) => w.elapsed_ms(),
        None => turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64),
    }
}

impl Ctx {
    /// Record an event: a trace line, and every checker sees it.
    pub fn record(&self, event: Event) {
        self.record_at(event, now_ms());
    }

    /// The degraded journal's bound (`refused_writes`), looked at after each operation a client
    /// finished: a read of the server's status under its lock, so nothing in the run moves. The
    /// slack is what may be in flight when an outage begins — a GC delete batch with its
    /// spirals' updates, and a few writes per client — which is journaled past the bound.
    pub fn check_journal(&self, server: u32) {
        let Some(st) = self.state(server) else {
            return;
        };
        let status = st.storage.status();
        let max = self.settings.get("journal_max") as usize;
        let slack = 64 + 8 * self.sc.world.clients as usize;
        let bounded =
            status.journal_len <= max + slack && (max..=max + slack).contains(&status.journal_max);
        if !bounded && lock(&self.journal_flagged).insert(server) {
            self.record(Event::JournalBound {
                server,
                len: status.journal_len,
                reported: status.journal_max,
                max,
                slack,
            });
        }
    }

    /// [`Ctx::record`] with the time given (outside any host, `now_ms` cannot see the clock).
    pub fn record_at(&self, event: Event, t_ms: u64) {
        let record = Record { t_ms, event };
        let mut m = lock(&self.model);
        m.trace.push(record.to_line());
        match &record.event {
            Event::Op {
                op,
                answer,
                tenant,
                server,
                ..
            } => {
                if answer.answered() {
                    *m.ops.entry(op.name().to_owned()).or_default() += 1;
                }
                if let Answer::Stored { id } = answer {
                    m.acked.insert(id.clone(), (tenant.clone(), *server));
                } else if let Op::Collect { id } = op {
                    m.acked.remove(id);
                }
            }
            Event::GcRemoved { id, .. } => {
                m.acked.remove(id);
            }
            Event::Connect {
                server,
                jti: Some(jti),
                exp: Some(exp),
                accepted: true,
                ..
            } => {
                m.admitted
                    .entry(*server)
                    .or_default()
                    .insert(jti.clone(), *exp);
            }
            Event::Fault { kind, .. } => *m.faults.entry(kind.name().to_owned()).or_default() += 1,
            _ => {}
        }
        // A violation's line comes right after the record that caused it.
        let at = m.trace.len();
        let found = m.panel.observe(&record.event, at);
        m.violations(found);
    }

    /// The tenant whose store of `id` was acknowledged, while the node is on record.
    pub fn acked_tenant(&self, id: &str) -> Option<String> {
        lock(&self.model).acked.get(id).map(|(t, _)| t.clone())
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

    /// The handshake `jti`s `server` admitted, in order, with their tokens' `exp` (unix s).
    fn admitted(&self, server: u32) -> Vec<(String, u64)> {
        lock(&self.model)
            .admitted
            .get(&server)
            .map(|s| s.iter().map(|(j, e)| (j.clone(), *e)).collect())
            .unwrap_or_default()
    }

    /// Every acknowledged store still expected to exist, with the server that took it.
    fn acked(&self) -> Vec<(String, u32)> {
        lock(&self.model)
            .acked
            .iter()
            .map(|(id, (_, s))| (id.clone(), *s))
            .collect()
    }

    pub fn state(&self, server: u32) -> Option<AppState> {
        lock(&self.servers[server as usize].state).clone()
    }

    /// The server's wall clock (ms), skew included: tokens at the expiry edges are minted by it.
    pub fn server_unix_ms(&self, server: u32) -> u64 {
        (EPOCH_MS + now_ms()).saturating_add_signed(self.skew_ms(server))
    }

    pub(crate) fn skew_ms(&self, server: u32) -> i64 {
        self.servers[server as usize]
            .skew_ms
            .load(Ordering::Relaxed)
    }

    /// [`net::http_reply`] for `client`, recording the answer's rate-limit headers
    /// ([`Event::RateHeaders`]) when it carries them, with the server's clock around the
    /// exchange.
    pub async fn http_reply(
        &self,
        client: u32,
        server: u32,
        (method, path): (&str, &str),
        token: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> Result<spiral_server::api::client::Reply, String> {
        let skew = self.skew_ms(server);
        let sent_server_ms = self.server_unix_ms(server);
        let reply = net::http_reply(server, method, path, token, body).await?;
        let answered_server_ms = self.server_unix_ms(server);
        let header = |name| reply.header(name).and_then(|v| v.parse::<u64>().ok());
        if let (Some(limit), Some(remaining), Some(reset_s)) = (
            header("x-ratelimit-limit"),
            header("x-ratelimit-remaining"),
            header("x-ratelimit-reset"),
        ) {
            self.record(Event::RateHeaders {
                client,
                server,
                path: path.to_owned(),
                status: reply.status,
                limit,
                remaining,
                reset_s,
                retry_after_ms: (reply.status == 429)
                    .then(|| reply.json()["error"]["retry_after_ms"].as_u64())
                    .flatten(),
                sent_server_ms,
                answered_server_ms,
                steady: self.skew_ms(server) == skew && answered_server_ms >= sent_server_ms,
            });
        }
        Ok(reply)
    }

    pub fn harness_error(&self, e: String) {
        lock(&self.failed).get_or_insert(e);
    }

    pub fn bad_client(&self, c: u32) -> bool {
        c >= self.sc.world.clients - self.sc.workload.bad_clients
    }
}

impl Model {
    /// Each violation is a trace line of its own.
    fn violations(&mut self, found: Vec<Violation>) {
        for v in found {
            let line =
                serde_json::json!({"check": v.checker, "verdict": "violated", "detail": v.detail});
            self.trace.push(line.to_string());
        }
    }

    /// The end of the history: the checkers' final judgements, then every checker's verdict for
    /// the whole run, one trace line each.
    fn finish(&mut self) {
        let at = self.trace.len();
        let found = self.panel.finish(at);
        self.violations(found);
        for (name, held) in self.panel.verdicts() {
            let verdict = if held { "held" } else { "violated" };
            self.trace
                .push(serde_json::json!({"check": name, "verdict": verdict}).to_string());
        }
    }

    /// The first violation as the run's failure, with the index of its trace line.
    fn failure(&self) -> Option<(Failure, usize)> {
        let (v, at) = self.panel.first()?;
        Some((Failure::of(v.clone()), *at))
    }
}
