//! Scenario files (`scenarios/*.toml`): a named story — the world, the workload, the faults, the
//! checks and the SLOs. Unknown fields are errors, and every error names the file and the line
//! (parse errors carry `toml`'s line and column; a bad fault names the line it starts on).
//! The format is documented in `docs/simulation.md`; in short:
//!
//! ```toml
//! name = "smoke"
//! description = "one server, eight clients, no faults"
//!
//! [world]
//! servers = 1            # server hosts, each running the unmodified server library
//! clients = 8            # clients speaking real WebSocket over simulated TCP
//! client_hosts = 8       # hosts they run on, client c on `client-(c mod client_hosts)`
//! storage = "memory"     # memory | embedded (in-process, durable across a crash) | redis (a host)
//! duration_s = 60        # simulated seconds of workload
//!
//! [workload]
//! ops_per_s = 5.0        # per client
//! tenants = 3
//! mix = { store = 50, get = 25, collect = 10, list = 5, stats = 5, foreign_get = 5 }
//!
//! [[faults]]             # a timed list; each fires once
//! at_s = 20
//! kind = "partition"     # see FaultKind
//! a = "client-0"
//! b = "server-0"
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};
pub use spiral_history::FaultKind;
pub use spiral_history::checkers::Slo;
use spiral_history::checkers::{NAMES, Settings};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub world: WorldSpec,
    #[serde(default)]
    pub workload: Workload,
    #[serde(default)]
    pub faults: Vec<FaultAt>,
    #[serde(default)]
    pub swarm: Swarm,
    #[serde(default)]
    pub checks: Checks,
    #[serde(default)]
    pub slo: Slo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StorageKind {
    /// In-process memory adapter, held outside the server host.
    Memory,
    /// In-process embedded (redb) adapter, held outside the server host.
    Embedded,
    /// The simulated Redis on its own host `redis`, reached over the simulated network by the
    /// real Redis adapter; it also holds the shared state (rate limits, `jti`, revocations).
    Redis,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorldSpec {
    #[serde(default = "one")]
    pub servers: u32,
    pub clients: u32,
    /// Hosts the clients run on (default: one per client). Client `c` runs on host
    /// `client-(c mod client_hosts)`, with its own connections, user and token; clients sharing
    /// a host share its network faults. Turmoil steps every host every tick, busy or idle, so
    /// fewer hosts make a run cheaper.
    #[serde(default)]
    pub client_hosts: Option<u32>,
    /// Default `embedded`. That is not the server's own default: `spiral serve` uses `memory`
    /// unless `REDIS_URL` or `SPIRAL_DB_PATH` is set.
    #[serde(default = "embedded")]
    pub storage: StorageKind,
    pub duration_s: u64,
    /// Engine capacity (small values put GC under pressure).
    #[serde(default = "default_max_nodes")]
    pub max_nodes: u64,
    /// Latency added to every call of in-process storage (ms): makes a crash land between an
    /// operation and its durable write.
    #[serde(default)]
    pub storage_latency_ms: u64,
    /// The simulated Redis's latency per command (ms).
    #[serde(default)]
    pub redis_latency_ms: u64,
    #[serde(default = "default_ping")]
    pub ws_ping_interval_ms: u64,
    #[serde(default = "default_idle")]
    pub ws_idle_timeout_ms: u64,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_max_message")]
    pub max_message_size: usize,
    /// One-way network latency of every message, drawn in [min, max] ms (a data-centre LAN by
    /// default; turmoil's own default is 0–100 ms).
    #[serde(default)]
    pub latency_ms_min: u64,
    #[serde(default = "default_latency_max")]
    pub latency_ms_max: u64,
    /// The simulator's step (ms): every host runs this much simulated time per step. Smaller is
    /// finer-grained and slower.
    #[serde(default = "default_tick")]
    pub tick_ms: u64,
}

impl WorldSpec {
    /// Hosts the clients run on.
    pub fn client_host_count(&self) -> u32 {
        self.client_hosts
            .unwrap_or(self.clients)
            .clamp(1, self.clients.max(1))
    }

    /// The index of the host client `c` runs on.
    pub fn client_host_index(&self, c: u32) -> u32 {
        c % self.client_host_count()
    }

    /// The host client `c` runs on.
    pub fn client_host(&self, c: u32) -> String {
        format!("client-{}", self.client_host_index(c))
    }
}

fn one() -> u32 {
    1
}
fn embedded() -> StorageKind {
    StorageKind::Embedded
}
fn default_max_nodes() -> u64 {
    2618
}
fn default_ping() -> u64 {
    5_000
}
fn default_idle() -> u64 {
    20_000
}
fn default_max_connections() -> usize {
    64
}
fn default_latency_max() -> u64 {
    5
}
fn default_tick() -> u64 {
    10
}
fn default_max_message() -> usize {
    64 * 1024
}

/// Relative weights of each operation of a well-behaved client.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    #[serde(default)]
    pub store: u32,
    #[serde(default)]
    pub get: u32,
    #[serde(default)]
    pub collect: u32,
    #[serde(default)]
    pub list: u32,
    #[serde(default)]
    pub stats: u32,
    /// Reads of another tenant's ids: must be `not_found`.
    #[serde(default)]
    pub foreign_get: u32,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            store: 50,
            get: 25,
            collect: 10,
            list: 5,
            stats: 5,
            foreign_get: 5,
        }
    }
}

impl Mix {
    pub fn weights(&self) -> [(&'static str, u32); 6] {
        [
            ("store", self.store),
            ("get", self.get),
            ("collect", self.collect),
            ("list", self.list),
            ("stats", self.stats),
            ("foreign_get", self.foreign_get),
        ]
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Operations per second, per well-behaved client (mean; gaps are jittered ±50 %).
    #[serde(default = "default_rate")]
    pub ops_per_s: f64,
    #[serde(default = "default_tenants")]
    pub tenants: u32,
    /// Distinct users; client `c` is `user-(c % users)`. Default: one per client. Fewer users
    /// than clients puts several connections (and servers) on one rate-limit budget.
    #[serde(default)]
    pub users: Option<u32>,
    #[serde(default)]
    pub mix: Mix,
    /// The last `bad_clients` clients attack instead of working: forged, `alg: none`, expired,
    /// replayed and revoked tokens, tokens at the expiry edges, malformed and oversized frames,
    /// unauthenticated HTTP, connection floods, and peers that go silent.
    #[serde(default)]
    pub bad_clients: u32,
    /// Stop each client after this many operations (the shrinker truncates with it).
    #[serde(default)]
    pub max_ops_per_client: Option<u64>,
}

fn default_rate() -> f64 {
    5.0
}
fn default_tenants() -> u32 {
    3
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            ops_per_s: default_rate(),
            tenants: default_tenants(),
            users: None,
            mix: Mix::default(),
            bad_clients: 0,
            max_ops_per_client: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultAt {
    /// Simulated time it fires at (ms precision: `at_s = 12.5`).
    pub at_s: f64,
    pub kind: FaultKind,
    #[serde(default)]
    pub a: Option<String>,
    #[serde(default)]
    pub b: Option<String>,
    /// `redis-slow` latency, `clock-skew` jump (ms).
    #[serde(default)]
    pub ms: Option<i64>,
    /// `redis-errors` share of failed commands, in [0, 1].
    #[serde(default)]
    pub rate: Option<f64>,
    /// `redis-outage`: `hang` (default) or `refuse`.
    #[serde(default)]
    pub mode: Option<String>,
}

impl FaultAt {
    pub fn at_ms(&self) -> u64 {
        (self.at_s * 1000.0).round() as u64
    }
}

/// Random faults drawn from the seed, on top of the timed list: each kind fires as a Poisson
/// process at its rate (per simulated minute) and heals after `heal_after_s`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Swarm {
    /// Client↔server partitions per minute.
    #[serde(default)]
    pub partitions_per_min: f64,
    /// Server crash + restart per minute.
    #[serde(default)]
    pub crashes_per_min: f64,
    /// Redis outages per minute (needs `storage = "redis"`).
    #[serde(default)]
    pub redis_outages_per_min: f64,
    /// How long a swarm fault lasts (s). Default 5.
    #[serde(default)]
    pub heal_after_s: Option<f64>,
    /// No swarm fault starts after this (s); default: 2/3 of the duration, so liveness can be
    /// judged after the last heal.
    #[serde(default)]
    pub until_s: Option<f64>,
}

/// Which checkers run and their bounds. Every checker is on unless turned off here.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Checks {
    /// Checker names to turn off (see `docs/simulation.md`).
    #[serde(default)]
    pub disable: Vec<String>,
    /// After the last fault heals, each client must complete an operation within this (s).
    #[serde(default = "default_liveness")]
    pub liveness_within_s: f64,
    /// A GC pass may overrun its budget by this much (the delete batch in flight), ms.
    #[serde(default = "default_gc_grace")]
    pub gc_grace_ms: u64,
}

fn default_liveness() -> f64 {
    20.0
}
fn default_gc_grace() -> u64 {
    25
}

impl Default for Checks {
    fn default() -> Self {
        Self {
            disable: Vec::new(),
            liveness_within_s: default_liveness(),
            gc_grace_ms: default_gc_grace(),
        }
    }
}

impl Scenario {
    /// Parse TOML text; `origin` names the file in errors.
    pub fn parse(origin: &str, text: &str) -> Result<Self, String> {
        let s: Scenario = toml::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
        s.validate(text).map_err(|e| format!("{origin}: {e}"))?;
        Ok(s)
    }

    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        Self::parse(&path.display().to_string(), &text)
    }

    /// The scenario as TOML (the shrinker prints its result with this).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// What the checkers need to know of a run of this scenario.
    pub fn check_settings(&self) -> Settings {
        // The world's servers run the default WebSocket limit.
        let ws_rate = spiral_server::api::ServerConfig::default().ws_rate;
        Settings {
            clients: self.world.clients - self.workload.bad_clients,
            ws_rate_capacity: ws_rate.capacity,
            ws_rate_window_ms: ws_rate.window_ms,
            gc_grace_ms: self.checks.gc_grace_ms,
            liveness_within_ms: (self.checks.liveness_within_s * 1000.0) as u64,
            end_ms: self.world.duration_s * 1000,
            truncated: self.workload.max_ops_per_client.is_some(),
            slo: self.slo.clone(),
            disabled: self.checks.disable.iter().cloned().collect(),
        }
    }

    pub fn user_count(&self) -> u32 {
        self.workload.users.unwrap_or(self.world.clients).max(1)
    }

    fn validate(&self, text: &str) -> Result<(), String> {
        let w = &self.world;
        if w.servers == 0 || w.clients == 0 || w.duration_s == 0 {
            return Err("[world]: servers, clients and duration_s must be at least 1".into());
        }
        if w.servers > 1 && w.storage != StorageKind::Redis {
            return Err(
                "[world] servers: more than one server shares state through Redis; set storage = \"redis\""
                    .into(),
            );
        }
        if w.servers > 8 || w.clients > 256 {
            return Err("[world]: at most 8 servers and 256 clients".into());
        }
        if w.client_hosts.is_some_and(|h| h == 0 || h > w.clients) {
            return Err("[world] client_hosts: must be in 1..=clients".into());
        }
        if w.latency_ms_min > w.latency_ms_max || w.latency_ms_max > 10_000 {
            return Err("[world] latency_ms_min ≤ latency_ms_max ≤ 10000".into());
        }
        if !(1..=100).contains(&w.tick_ms) {
            return Err("[world] tick_ms: must be in 1..=100".into());
        }
        if w.ws_ping_interval_ms == 0 || w.ws_idle_timeout_ms == 0 || w.max_connections == 0 {
            return Err("[world]: ws_ping_interval_ms, ws_idle_timeout_ms and max_connections must be at least 1".into());
        }
        let wl = &self.workload;
        if !(wl.ops_per_s > 0.0 && wl.ops_per_s <= 1000.0) {
            return Err("[workload] ops_per_s: must be in (0, 1000]".into());
        }
        if wl.tenants == 0 || wl.users == Some(0) {
            return Err("[workload]: tenants and users must be at least 1".into());
        }
        if wl.bad_clients > w.clients {
            return Err("[workload] bad_clients: more than [world] clients".into());
        }
        if wl.mix.weights().iter().all(|(_, w)| *w == 0) {
            return Err("[workload] mix: all weights are zero".into());
        }
        for d in &self.checks.disable {
            if !NAMES.contains(&d.as_str()) {
                return Err(format!(
                    "[checks] disable: no checker {d:?} (checkers: {})",
                    NAMES.join(", ")
                ));
            }
        }
        let hosts = self.host_names();
        // Fault tables start at `[[faults]]` headers, in order: name the line of the bad one.
        let fault_lines: Vec<usize> = text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.trim_start().starts_with("[[faults]]"))
            .map(|(i, _)| i + 1)
            .collect();
        for (i, f) in self.faults.iter().enumerate() {
            let at = fault_lines
                .get(i)
                .map_or(format!("faults[{i}]"), |l| format!("line {l}: [[faults]]"));
            self.validate_fault(f, &hosts)
                .map_err(|e| format!("{at}: {e}"))?;
        }
        if w.storage != StorageKind::Redis && self.swarm.redis_outages_per_min > 0.0 {
            return Err("[swarm] redis_outages_per_min: needs storage = \"redis\"".into());
        }
        Ok(())
    }

    fn validate_fault(&self, f: &FaultAt, hosts: &[String]) -> Result<(), String> {
        let w = &self.world;
        if !(f.at_s >= 0.0 && f.at_s < w.duration_s as f64) {
            return Err(format!(
                "at_s {} is not within [0, duration_s {})",
                f.at_s, w.duration_s
            ));
        }
        let pair = matches!(
            f.kind,
            FaultKind::Partition | FaultKind::Repair | FaultKind::Hold | FaultKind::Release
        );
        let one = matches!(
            f.kind,
            FaultKind::Crash | FaultKind::Bounce | FaultKind::ClockSkew
        );
        let redis = matches!(
            f.kind,
            FaultKind::RedisOutage
                | FaultKind::RedisRestore
                | FaultKind::RedisSlow
                | FaultKind::RedisErrors
        );
        if pair && (f.a.is_none() || f.b.is_none()) {
            return Err(format!("{} needs hosts `a` and `b`", f.kind.name()));
        }
        if one && (f.a.is_none() || f.b.is_some()) {
            return Err(format!("{} needs one host `a`", f.kind.name()));
        }
        if redis && (f.a.is_some() || f.b.is_some()) {
            return Err(format!("{} takes no hosts", f.kind.name()));
        }
        if redis && w.storage != StorageKind::Redis {
            return Err(format!(
                "{} needs [world] storage = \"redis\"",
                f.kind.name()
            ));
        }
        for h in f.a.iter().chain(f.b.iter()) {
            if !hosts.contains(h) {
                return Err(format!("no host {h:?} (hosts: {})", hosts.join(", ")));
            }
        }
        if f.kind == FaultKind::ClockSkew
            && !f.a.as_deref().is_some_and(|a| a.starts_with("server-"))
        {
            return Err("clock-skew applies to a server host".into());
        }
        let wants_ms = matches!(f.kind, FaultKind::RedisSlow | FaultKind::ClockSkew);
        if wants_ms != f.ms.is_some() {
            return Err(format!(
                "`ms` is required for redis-slow and clock-skew only (got it on {})",
                f.kind.name()
            ));
        }
        if f.kind == FaultKind::RedisSlow && f.ms.is_some_and(|m| m < 0) {
            return Err("redis-slow: ms must not be negative".into());
        }
        match (f.kind, f.rate) {
            (FaultKind::RedisErrors, Some(r)) if (0.0..=1.0).contains(&r) => {}
            (FaultKind::RedisErrors, _) => return Err("redis-errors needs rate in [0, 1]".into()),
            (_, Some(_)) => return Err("`rate` belongs to redis-errors only".into()),
            _ => {}
        }
        match (f.kind, f.mode.as_deref()) {
            (FaultKind::RedisOutage, None | Some("hang" | "refuse")) => {}
            (FaultKind::RedisOutage, Some(m)) => {
                return Err(format!("redis-outage mode {m:?}: hang | refuse"));
            }
            (_, Some(_)) => return Err("`mode` belongs to redis-outage only".into()),
            _ => {}
        }
        Ok(())
    }

    /// Every host of the world: `server-0…`, `client-0…`, and `redis` when storage is Redis.
    pub fn host_names(&self) -> Vec<String> {
        let redis = (self.world.storage == StorageKind::Redis).then(|| "redis".to_owned());
        (0..self.world.servers)
            .map(|i| format!("server-{i}"))
            .chain((0..self.world.client_host_count()).map(|i| format!("client-{i}")))
            .chain(redis)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses_and_round_trips() {
        let text = "name = \"x\"\n[world]\nclients = 2\nduration_s = 10\n[[faults]]\nat_s = 1\nkind = \"partition\"\na = \"client-0\"\nb = \"server-0\"\n";
        let s = Scenario::parse("x.toml", text).unwrap();
        assert_eq!(
            (s.world.servers, s.world.clients, s.faults.len()),
            (1, 2, 1)
        );
        assert_eq!(s.workload, Workload::default());
        let again = Scenario::parse("again.toml", &s.to_toml()).unwrap();
        assert_eq!(again, s);
    }

    #[test]
    fn errors_name_the_line_and_the_field() {
        let e = Scenario::parse(
            "bad.toml",
            "name = \"x\"\n[world]\nclients = 2\nduration_s = 10\nspeed = 3\n",
        )
        .unwrap_err();
        assert!(
            e.contains("bad.toml") && e.contains("line 5") && e.contains("speed"),
            "{e}"
        );
        let text = "name = \"x\"\n[world]\nclients = 2\nduration_s = 10\n\n[[faults]]\nat_s = 1\nkind = \"crash\"\na = \"server-0\"\n\n[[faults]]\nat_s = 2\nkind = \"crash\"\na = \"nobody\"\n";
        let e = Scenario::parse("bad.toml", text).unwrap_err();
        assert!(e.contains("line 11") && e.contains("nobody"), "{e}");
        let e = Scenario::parse("bad.toml", "name = \"x\"\n[world]\nclients = 2\nduration_s = 10\n[[faults]]\nat_s = 1\nkind = \"redis-outage\"\n").unwrap_err();
        assert!(
            e.contains("line 5") && e.contains("storage = \\\"redis\\\"")
                || e.contains("storage = \"redis\""),
            "{e}"
        );
        let e = Scenario::parse(
            "bad.toml",
            "name = \"x\"\n[world]\nclients = 2\nduration_s = 10\n[checks]\ndisable = [\"nope\"]\n",
        )
        .unwrap_err();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn clients_share_the_client_hosts_round_robin() {
        let base = "name = \"x\"\n[world]\nclients = 5\nduration_s = 10\n";
        let s = Scenario::parse("x.toml", &format!("{base}client_hosts = 2\n")).unwrap();
        assert_eq!(
            s.host_names(),
            ["server-0", "client-0", "client-1"].map(String::from)
        );
        let hosts: Vec<String> = (0..5).map(|c| s.world.client_host(c)).collect();
        assert_eq!(
            hosts,
            ["client-0", "client-1", "client-0", "client-1", "client-0"].map(String::from)
        );
        // By default every client has a host of its own.
        let s = Scenario::parse("x.toml", base).unwrap();
        assert_eq!(s.world.client_host(4), "client-4");
        // A fault may only name a host that exists.
        let fault =
            "[[faults]]\nat_s = 1\nkind = \"partition\"\na = \"client-3\"\nb = \"server-0\"\n";
        let e = Scenario::parse("x.toml", &format!("{base}client_hosts = 2\n{fault}")).unwrap_err();
        assert!(e.contains("line 6") && e.contains("client-3"), "{e}");
        for bad in ["0", "6"] {
            let e =
                Scenario::parse("x.toml", &format!("{base}client_hosts = {bad}\n")).unwrap_err();
            assert!(e.contains("client_hosts"), "{e}");
        }
    }

    #[test]
    fn every_shipped_scenario_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Scenario::load(&path).unwrap();
                n += 1;
            }
        }
        assert!(n >= 8, "only {n} scenarios in {}", dir.display());
    }
}
