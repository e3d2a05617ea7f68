//! The fault vocabulary: what a scenario schedules (`[[faults]]`, the swarm) and what a history
//! records when a fault fires. Each world applies the kinds it can (a simulated partition, a
//! proxy's toxic, a killed process).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// Cut the link between `a` and `b`.
    Partition,
    /// Restore the link between `a` and `b`.
    Repair,
    /// Drop what `a` sends to `b` (the other direction still flows).
    PartitionOneway,
    /// Restore what `a` sends to `b`.
    RepairOneway,
    /// Hold messages between `a` and `b` (delivered on release).
    Hold,
    /// Release held messages between `a` and `b`.
    Release,
    /// Stop host `a` (durable storage survives).
    Crash,
    /// Restart host `a`.
    Bounce,
    /// Stop server `a` gracefully (SIGTERM: WebSockets closed with 1001, requests finished);
    /// it starts again once stopped.
    Terminate,
    /// The Redis host stops answering (`mode = "hang"`) or refuses connections (`"refuse"`).
    RedisOutage,
    /// The Redis host recovers (outage, errors and slowness cleared).
    RedisRestore,
    /// Every Redis command is delayed by `ms`.
    RedisSlow,
    /// A seeded share `rate` of Redis commands is answered with an error.
    RedisErrors,
    /// Server `a`'s wall clock jumps by `ms` (negative: backwards) from now on.
    ClockSkew,
    /// Every message between `a` and `b` takes `ms`, both ways.
    LinkLatency,
    /// The link between `a` and `b` breaks at random (probability `rate` per network step),
    /// dropping what is in flight: a TCP connection across it stalls for good.
    LinkLoss,
    /// The link between `a` and `b` is back to the world's latency and loses nothing.
    LinkRestore,
    /// Server `a`'s disk refuses writes: appending to its degraded journal fails.
    DiskFull,
    /// Server `a`'s disk takes writes again.
    DiskRestore,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Partition => "partition",
            FaultKind::Repair => "repair",
            FaultKind::PartitionOneway => "partition-oneway",
            FaultKind::RepairOneway => "repair-oneway",
            FaultKind::Hold => "hold",
            FaultKind::Release => "release",
            FaultKind::Crash => "crash",
            FaultKind::Bounce => "bounce",
            FaultKind::Terminate => "terminate",
            FaultKind::RedisOutage => "redis-outage",
            FaultKind::RedisRestore => "redis-restore",
            FaultKind::RedisSlow => "redis-slow",
            FaultKind::RedisErrors => "redis-errors",
            FaultKind::ClockSkew => "clock-skew",
            FaultKind::LinkLatency => "link-latency",
            FaultKind::LinkLoss => "link-loss",
            FaultKind::LinkRestore => "link-restore",
            FaultKind::DiskFull => "disk-full",
            FaultKind::DiskRestore => "disk-restore",
        }
    }

    /// Faults that end a disturbance: liveness is measured from the last of them.
    pub fn heals(self) -> bool {
        matches!(
            self,
            FaultKind::Repair
                | FaultKind::RepairOneway
                | FaultKind::Release
                | FaultKind::Bounce
                | FaultKind::Terminate
                | FaultKind::RedisRestore
                | FaultKind::LinkRestore
                | FaultKind::DiskRestore
        )
    }
}
