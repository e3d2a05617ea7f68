//! `[[faults]]` and `[swarm]`: the timed faults of a scenario, typed per kind, and the random
//! faults drawn from the seed on top of them.
//!
//! A `[[faults]]` table is `at_s`, a `kind` from the history's vocabulary ([`FaultKind`]) and
//! exactly the fields of that kind ([`Fault`]); serde rejects a missing or a foreign field and
//! names the kind. What the types cannot say — the time within the run, hosts that exist, Redis
//! storage for the Redis faults, a rate within [0, 1] — is [`FaultAt::validate`]'s.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use spiral_history::FaultKind;

use super::{StorageKind, WorldSpec};

/// One timed fault: when it fires and what it does.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultAt {
    /// Simulated time it fires at (ms precision: `at_s = 12.5`).
    pub at_s: f64,
    /// What it does: `kind` and that kind's fields, in the same table as `at_s`.
    #[serde(flatten)]
    pub fault: Fault,
}

/// What a fault does: one variant per [`FaultKind`], with exactly the fields it needs.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Fault {
    /// Cut the link between hosts `a` and `b`.
    Partition { a: String, b: String },
    /// Restore the link between hosts `a` and `b`.
    Repair { a: String, b: String },
    /// Drop what host `a` sends to host `b`; `b` to `a` still flows.
    PartitionOneway { a: String, b: String },
    /// Restore what host `a` sends to host `b`.
    RepairOneway { a: String, b: String },
    /// Hold messages between hosts `a` and `b` (delivered on release).
    Hold { a: String, b: String },
    /// Release held messages between hosts `a` and `b`.
    Release { a: String, b: String },
    /// Stop host `a` (durable storage survives).
    Crash { a: String },
    /// Restart host `a`.
    Bounce { a: String },
    /// Stop server `a` gracefully, as SIGTERM does (WebSockets closed with 1001, requests in
    /// flight finished); it starts again once it has stopped, as a supervisor would start it.
    Terminate { a: String },
    /// The Redis host stops answering (`mode = "hang"`, the default) or refuses connections
    /// (`"refuse"`).
    RedisOutage {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<OutageMode>,
    },
    /// The Redis host recovers (outage, errors and slowness cleared).
    RedisRestore {},
    /// Every Redis command is delayed by `ms`.
    RedisSlow { ms: u64 },
    /// A seeded share `rate` (in [0, 1]) of Redis commands is answered with an error.
    RedisErrors { rate: f64 },
    /// Server `a`'s wall clock jumps by `ms` (negative: backwards) from now on.
    ClockSkew { a: String, ms: i64 },
    /// Every message between hosts `a` and `b` takes `ms`, both ways.
    LinkLatency { a: String, b: String, ms: u64 },
    /// The link between hosts `a` and `b` breaks at random: each network step it is up, with
    /// probability `rate` (in [0, 1]) it drops what is in flight — a TCP connection across it
    /// stalls for good, as one whose segments are lost past every retransmission would.
    LinkLoss { a: String, b: String, rate: f64 },
    /// The link between hosts `a` and `b` is back to the world's latency and loses nothing.
    LinkRestore { a: String, b: String },
    /// Server `a`'s disk refuses writes: its degraded journal cannot make an entry durable, so a
    /// write that would be journaled is refused (never acknowledged) until `disk-restore`.
    DiskFull { a: String },
    /// Server `a`'s disk takes writes again.
    DiskRestore { a: String },
}

/// How the Redis host fails during a `redis-outage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutageMode {
    /// Connections stay open and nothing answers.
    #[default]
    Hang,
    /// Connections are refused.
    Refuse,
}

impl Fault {
    /// The kind a history records when it fires.
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Partition { .. } => FaultKind::Partition,
            Fault::Repair { .. } => FaultKind::Repair,
            Fault::Hold { .. } => FaultKind::Hold,
            Fault::Release { .. } => FaultKind::Release,
            Fault::PartitionOneway { .. } => FaultKind::PartitionOneway,
            Fault::RepairOneway { .. } => FaultKind::RepairOneway,
            Fault::Crash { .. } => FaultKind::Crash,
            Fault::Bounce { .. } => FaultKind::Bounce,
            Fault::Terminate { .. } => FaultKind::Terminate,
            Fault::RedisOutage { .. } => FaultKind::RedisOutage,
            Fault::RedisRestore {} => FaultKind::RedisRestore,
            Fault::RedisSlow { .. } => FaultKind::RedisSlow,
            Fault::RedisErrors { .. } => FaultKind::RedisErrors,
            Fault::ClockSkew { .. } => FaultKind::ClockSkew,
            Fault::LinkLatency { .. } => FaultKind::LinkLatency,
            Fault::LinkLoss { .. } => FaultKind::LinkLoss,
            Fault::LinkRestore { .. } => FaultKind::LinkRestore,
            Fault::DiskFull { .. } => FaultKind::DiskFull,
            Fault::DiskRestore { .. } => FaultKind::DiskRestore,
        }
    }

    /// The hosts it names, `a` and `b` (as a history records them).
    pub fn hosts(&self) -> (Option<&str>, Option<&str>) {
        match self {
            Fault::Partition { a, b }
            | Fault::Repair { a, b }
            | Fault::PartitionOneway { a, b }
            | Fault::RepairOneway { a, b }
            | Fault::Hold { a, b }
            | Fault::Release { a, b }
            | Fault::LinkLatency { a, b, .. }
            | Fault::LinkLoss { a, b, .. }
            | Fault::LinkRestore { a, b } => (Some(a), Some(b)),
            Fault::Crash { a }
            | Fault::Bounce { a }
            | Fault::Terminate { a }
            | Fault::DiskFull { a }
            | Fault::DiskRestore { a }
            | Fault::ClockSkew { a, .. } => (Some(a), None),
            Fault::RedisOutage { .. }
            | Fault::RedisRestore {}
            | Fault::RedisSlow { .. }
            | Fault::RedisErrors { .. } => (None, None),
        }
    }

    /// It disturbs the Redis host, so the world must have one.
    fn needs_redis(&self) -> bool {
        matches!(
            self,
            Fault::RedisOutage { .. }
                | Fault::RedisRestore {}
                | Fault::RedisSlow { .. }
                | Fault::RedisErrors { .. }
        )
    }
}

impl FaultAt {
    pub fn at_ms(&self) -> u64 {
        (self.at_s * 1000.0).round() as u64
    }

    pub fn kind(&self) -> FaultKind {
        self.fault.kind()
    }

    /// What the types cannot say: it fires within the run, on hosts the world has.
    pub(super) fn validate(&self, world: &WorldSpec, hosts: &[String]) -> Result<(), String> {
        if !(self.at_s >= 0.0 && self.at_s < world.duration_s as f64) {
            return Err(format!(
                "at_s {} is not within [0, duration_s {})",
                self.at_s, world.duration_s
            ));
        }
        if self.fault.needs_redis() && world.storage != StorageKind::Redis {
            return Err(format!(
                "{} needs [world] storage = \"redis\"",
                self.kind().name()
            ));
        }
        let (a, b) = self.fault.hosts();
        for h in a.into_iter().chain(b) {
            if !hosts.iter().any(|known| known == h) {
                return Err(format!("no host {h:?} (hosts: {})", hosts.join(", ")));
            }
        }
        match &self.fault {
            Fault::ClockSkew { a, .. } if !a.starts_with("server-") => {
                Err("clock-skew applies to a server host".into())
            }
            Fault::DiskFull { a } | Fault::DiskRestore { a } if !a.starts_with("server-") => {
                Err(format!("{} applies to a server host", self.kind().name()))
            }
            Fault::RedisErrors { rate } if !(0.0..=1.0).contains(rate) => {
                Err("redis-errors needs rate in [0, 1]".into())
            }
            Fault::LinkLoss { rate, .. } if !(0.0..=1.0).contains(rate) => {
                Err("link-loss needs rate in [0, 1]".into())
            }
            Fault::LinkLatency { a, b, .. }
            | Fault::LinkLoss { a, b, .. }
            | Fault::LinkRestore { a, b }
                if a == b =>
            {
                Err(format!("{} needs two different hosts", self.kind().name()))
            }
            _ => Ok(()),
        }
    }
}

/// `at_s`, then `kind` read as a [`FaultKind`], then that kind's fields as a [`Fault`]: an error
/// in the fields names the kind (partition: missing field `b`).
impl<'de> Deserialize<'de> for FaultAt {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Table {
            at_s: f64,
            kind: FaultKind,
            #[serde(flatten)]
            fields: toml::Table,
        }
        let Table {
            at_s,
            kind,
            mut fields,
        } = Table::deserialize(deserializer)?;
        fields.insert("kind".into(), kind.name().into());
        let fault = Fault::deserialize(toml::Value::Table(fields))
            .map_err(|e| D::Error::custom(format_args!("{}: {}", kind.name(), e.message())))?;
        Ok(FaultAt { at_s, fault })
    }
}

/// The first fault of a scenario file that does not deserialize on its own, and why. serde reads
/// a fault's fields from a buffer (the fields depend on `kind`), so an error in them reaches
/// `toml` without a place of its own; this finds the fault it belongs to. `None` when the file is
/// not TOML or every fault reads.
pub(super) fn first_bad_fault(text: &str) -> Option<(usize, toml::de::Error)> {
    let file: toml::Table = toml::from_str(text).ok()?;
    let faults = file.get("faults")?.as_array()?;
    faults
        .iter()
        .enumerate()
        .find_map(|(i, f)| FaultAt::deserialize(f.clone()).err().map(|e| (i, e)))
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
    /// Graceful stops (SIGTERM) of a random server per minute; each starts again once stopped.
    #[serde(default)]
    pub terminations_per_min: f64,
    /// A random server's disk refusing writes (its degraded journal cannot append), per
    /// minute, healed after `heal_after_s`.
    #[serde(default)]
    pub disk_faults_per_min: f64,
    /// Redis outages per minute (needs `storage = "redis"`).
    #[serde(default)]
    pub redis_outages_per_min: f64,
    /// One-way partitions per minute: a client host's packets to a server (or the server's to
    /// it) are dropped while the other direction flows.
    #[serde(default)]
    pub oneway_partitions_per_min: f64,
    /// Clock jumps per minute on a random server, by up to `skew_max_ms` either way, jumping
    /// back when healed.
    #[serde(default)]
    pub skews_per_min: f64,
    /// Largest clock jump (ms). Default 90000.
    #[serde(default)]
    pub skew_max_ms: Option<u64>,
    /// Redis slowdowns per minute (every command delayed by up to `redis_slow_ms`), healed by a
    /// restore (needs Redis).
    #[serde(default)]
    pub redis_slow_per_min: f64,
    /// Largest Redis delay (ms). Default 400.
    #[serde(default)]
    pub redis_slow_ms: Option<u64>,
    /// Spells of Redis error replies per minute (a share up to `redis_error_rate`), healed by a
    /// restore (needs Redis).
    #[serde(default)]
    pub redis_errors_per_min: f64,
    /// Largest share of Redis commands answered with an error. Default 0.5.
    #[serde(default)]
    pub redis_error_rate: Option<f64>,
    /// Share of swarm Redis outages that refuse connections (`mode = "refuse"`) instead of
    /// hanging. Default 0.
    #[serde(default)]
    pub redis_refuse_share: Option<f64>,
    /// Holds per minute: messages between a client host and a server queued, delivered all at
    /// once when released.
    #[serde(default)]
    pub holds_per_min: f64,
    /// Spells of extra latency per minute on a random link (client host ↔ server, or server ↔
    /// Redis), each message taking up to `link_latency_ms`, healed by a link restore.
    #[serde(default)]
    pub link_latency_per_min: f64,
    /// Largest latency of a slowed link (ms). Default 200.
    #[serde(default)]
    pub link_latency_ms: Option<u64>,
    /// Spells of loss per minute on a random client host ↔ server link (a share of network
    /// steps up to `link_loss_rate` break it), healed by a link restore.
    #[serde(default)]
    pub link_loss_per_min: f64,
    /// Largest loss rate of a lossy link. Default 0.05.
    #[serde(default)]
    pub link_loss_rate: Option<f64>,
    /// How long a swarm fault lasts (s). Default 5.
    #[serde(default)]
    pub heal_after_s: Option<f64>,
    /// No swarm fault starts after this (s); default: 2/3 of the duration, so liveness can be
    /// judged after the last heal.
    #[serde(default)]
    pub until_s: Option<f64>,
}

impl Swarm {
    /// Redis outages need a Redis host.
    pub(super) fn validate(&self, world: &WorldSpec) -> Result<(), String> {
        let redis =
            self.redis_outages_per_min + self.redis_slow_per_min + self.redis_errors_per_min;
        if world.storage != StorageKind::Redis && redis > 0.0 {
            return Err(
                "[swarm] redis_outages_per_min, redis_slow_per_min, redis_errors_per_min: need storage = \"redis\""
                    .into(),
            );
        }
        for (name, share) in [
            ("redis_error_rate", self.redis_error_rate),
            ("link_loss_rate", self.link_loss_rate),
            ("redis_refuse_share", self.redis_refuse_share),
        ] {
            if share.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
                return Err(format!("[swarm] {name}: must be in [0, 1]"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Serialize)]
    struct Faults {
        faults: Vec<FaultAt>,
    }

    fn parse(table: &str) -> Result<FaultAt, String> {
        toml::from_str::<Faults>(&format!("[[faults]]\nat_s = 1\n{table}\n"))
            .map(|mut f| f.faults.remove(0))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn every_kind_has_a_variant_with_its_fields_and_round_trips() {
        let tables = [
            ("partition", "a = \"client-0\"\nb = \"server-0\""),
            ("repair", "a = \"client-0\"\nb = \"server-0\""),
            ("hold", "a = \"client-0\"\nb = \"server-0\""),
            ("release", "a = \"client-0\"\nb = \"server-0\""),
            ("crash", "a = \"server-0\""),
            ("bounce", "a = \"server-0\""),
            ("redis-outage", ""),
            ("redis-outage", "mode = \"refuse\""),
            ("redis-restore", ""),
            ("redis-slow", "ms = 20"),
            ("redis-errors", "rate = 0.5"),
            ("clock-skew", "a = \"server-0\"\nms = -1500"),
            (
                "link-latency",
                "a = \"client-0\"\nb = \"server-0\"\nms = 40",
            ),
            (
                "link-loss",
                "a = \"client-0\"\nb = \"server-0\"\nrate = 0.01",
            ),
            ("link-restore", "a = \"client-0\"\nb = \"server-0\""),
        ];
        for (kind, fields) in tables {
            let f = parse(&format!("kind = \"{kind}\"\n{fields}")).unwrap();
            assert_eq!(f.kind().name(), kind);
            let toml = toml::to_string(&Faults {
                faults: vec![f.clone()],
            })
            .unwrap();
            let again = toml::from_str::<Faults>(&toml).unwrap();
            assert_eq!(again.faults, [f], "{toml}");
        }
    }

    #[test]
    fn a_field_the_kind_does_not_take_or_lacks_is_an_error_naming_the_kind() {
        for (table, expect) in [
            (
                "kind = \"partition\"\na = \"client-0\"",
                "partition: missing field `b`",
            ),
            ("kind = \"crash\"", "crash: missing field `a`"),
            (
                "kind = \"crash\"\na = \"server-0\"\nb = \"client-0\"",
                "crash: unknown field `b`",
            ),
            (
                "kind = \"partition\"\na = \"x\"\nb = \"y\"\nms = 3",
                "partition: unknown field `ms`",
            ),
            (
                "kind = \"clock-skew\"\na = \"server-0\"",
                "clock-skew: missing field `ms`",
            ),
            (
                "kind = \"redis-slow\"\nms = -5",
                "redis-slow: invalid value: integer `-5`",
            ),
            (
                "kind = \"redis-slow\"\nms = 5\na = \"redis\"",
                "redis-slow: unknown field `a`",
            ),
            (
                "kind = \"redis-errors\"",
                "redis-errors: missing field `rate`",
            ),
            (
                "kind = \"redis-outage\"\nmode = \"explode\"",
                "redis-outage: unknown variant `explode`",
            ),
            (
                "kind = \"redis-restore\"\nmode = \"hang\"",
                "redis-restore: unknown field `mode`",
            ),
            (
                "kind = \"crash\"\na = \"server-0\"\nrate = 0.5",
                "crash: unknown field `rate`",
            ),
            ("kind = \"meteor\"", "unknown variant `meteor`"),
            ("a = \"server-0\"", "missing field `kind`"),
        ] {
            let e = parse(table).unwrap_err();
            assert!(e.contains(expect), "{table:?}: {e}");
        }
    }
}
