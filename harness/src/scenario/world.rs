//! `[world]`: the hosts of a scenario (servers, client hosts, Redis), their storage, network
//! latency and server limits, and how hosts are named.

use serde::{Deserialize, Serialize};

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

    /// Every host of the world: `server-0…`, `client-0…`, and `redis` when storage is Redis.
    pub fn host_names(&self) -> Vec<String> {
        let redis = (self.storage == StorageKind::Redis).then(|| "redis".to_owned());
        (0..self.servers)
            .map(|i| format!("server-{i}"))
            .chain((0..self.client_host_count()).map(|i| format!("client-{i}")))
            .chain(redis)
            .collect()
    }

    /// What the types cannot say: counts and ranges.
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.servers == 0 || self.clients == 0 || self.duration_s == 0 {
            return Err("[world]: servers, clients and duration_s must be at least 1".into());
        }
        if self.servers > 1 && self.storage != StorageKind::Redis {
            return Err(
                "[world] servers: more than one server shares state through Redis; set storage = \"redis\""
                    .into(),
            );
        }
        if self.servers > 8 || self.clients > 256 {
            return Err("[world]: at most 8 servers and 256 clients".into());
        }
        if self
            .client_hosts
            .is_some_and(|h| h == 0 || h > self.clients)
        {
            return Err("[world] client_hosts: must be in 1..=clients".into());
        }
        if self.latency_ms_min > self.latency_ms_max || self.latency_ms_max > 10_000 {
            return Err("[world] latency_ms_min ≤ latency_ms_max ≤ 10000".into());
        }
        if !(1..=100).contains(&self.tick_ms) {
            return Err("[world] tick_ms: must be in 1..=100".into());
        }
        if self.ws_ping_interval_ms == 0
            || self.ws_idle_timeout_ms == 0
            || self.max_connections == 0
        {
            return Err("[world]: ws_ping_interval_ms, ws_idle_timeout_ms and max_connections must be at least 1".into());
        }
        Ok(())
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
