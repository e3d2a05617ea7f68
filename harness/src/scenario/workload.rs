//! `[workload]`: what the well-behaved clients do (rate, tenants, users, the operation [`Mix`])
//! and how many clients attack instead.

use serde::{Deserialize, Serialize};

use super::WorldSpec;

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
    /// Collects of another tenant's ids: must be `not_found`, and the node stays.
    #[serde(default)]
    pub foreign_collect: u32,
    /// `POST /auth/refresh` with the client's token; the new token is used for the next
    /// handshake (the `tokens` checker judges every one minted).
    #[serde(default)]
    pub refresh: u32,
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
            foreign_collect: 0,
            refresh: 0,
        }
    }
}

impl Mix {
    pub fn weights(&self) -> [(&'static str, u32); 8] {
        [
            ("store", self.store),
            ("get", self.get),
            ("collect", self.collect),
            ("list", self.list),
            ("stats", self.stats),
            ("foreign_get", self.foreign_get),
            ("refresh", self.refresh),
            ("foreign_collect", self.foreign_collect),
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

impl Workload {
    /// What the types cannot say: ranges, and no more bad clients than clients.
    pub(super) fn validate(&self, world: &WorldSpec) -> Result<(), String> {
        if !(self.ops_per_s > 0.0 && self.ops_per_s <= 1000.0) {
            return Err("[workload] ops_per_s: must be in (0, 1000]".into());
        }
        if self.tenants == 0 || self.users == Some(0) {
            return Err("[workload]: tenants and users must be at least 1".into());
        }
        if self.bad_clients > world.clients {
            return Err("[workload] bad_clients: more than [world] clients".into());
        }
        if self.mix.weights().iter().all(|(_, w)| *w == 0) {
            return Err("[workload] mix: all weights are zero".into());
        }
        Ok(())
    }
}
