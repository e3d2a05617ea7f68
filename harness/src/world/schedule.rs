//! The fault schedule of a run: the scenario's timed faults plus the seeded swarm (Poisson
//! arrivals of partitions, crashes and Redis outages, each healed after a fixed time), in firing
//! order.

use spiral_server::rng::SplitMix64;

use crate::scenario::{Fault, FaultAt, OutageMode, Scenario};

/// The timed faults plus the seeded swarm, in firing order.
pub fn schedule(sc: &Scenario, rng: &mut SplitMix64) -> Vec<FaultAt> {
    let mut out = sc.faults.clone();
    let sw = &sc.swarm;
    let heal = sw.heal_after_s.unwrap_or(5.0);
    let until = sw.until_s.unwrap_or(sc.world.duration_s as f64 * 2.0 / 3.0);
    let fault = |at_s: f64, fault: Fault| FaultAt { at_s, fault };
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
    // A random server.
    let server =
        |rng: &mut SplitMix64| format!("server-{}", rng.next_u64() % u64::from(sc.world.servers));
    // A random well-behaved client's host and a random server (drawn in that order).
    let client_and_server = |rng: &mut SplitMix64| {
        let c = rng.next_u64() % u64::from(good.max(1));
        let s = rng.next_u64() % u64::from(sc.world.servers);
        (sc.world.client_host(c as u32), format!("server-{s}"))
    };
    for t in arrivals(sw.partitions_per_min, rng) {
        let (a, b) = client_and_server(rng);
        out.push(fault(
            t,
            Fault::Partition {
                a: a.clone(),
                b: b.clone(),
            },
        ));
        out.push(fault(t + heal, Fault::Repair { a, b }));
    }
    for t in arrivals(sw.crashes_per_min, rng) {
        let a = server(rng);
        out.push(fault(t, Fault::Crash { a: a.clone() }));
        out.push(fault(t + heal, Fault::Bounce { a }));
    }
    // Which outages refuse connections instead of hanging: a stream of its own, so the draws
    // above and below stay what they were.
    let mut modes = rng.fork("redis-outage-modes");
    let refuse = sw.redis_refuse_share.unwrap_or(0.0);
    for t in arrivals(sw.redis_outages_per_min, rng) {
        let mode = (refuse > 0.0 && modes.next_f64() < refuse).then_some(OutageMode::Refuse);
        out.push(fault(t, Fault::RedisOutage { mode }));
        out.push(fault(t + heal, Fault::RedisRestore {}));
    }
    // The kinds below were added later; a scenario without them draws nothing for them, so the
    // schedules above stay what they were.
    for t in arrivals(sw.oneway_partitions_per_min, rng) {
        let (mut a, mut b) = client_and_server(rng);
        if rng.next_u64() % 2 == 1 {
            std::mem::swap(&mut a, &mut b);
        }
        out.push(fault(
            t,
            Fault::PartitionOneway {
                a: a.clone(),
                b: b.clone(),
            },
        ));
        out.push(fault(t + heal, Fault::RepairOneway { a, b }));
    }
    let max_skew = sw.skew_max_ms.unwrap_or(90_000).max(1);
    for t in arrivals(sw.skews_per_min, rng) {
        let a = server(rng);
        let ms = (rng.next_u64() % max_skew) as i64 + 1;
        let ms = if rng.next_u64() % 2 == 1 { -ms } else { ms };
        out.push(fault(t, Fault::ClockSkew { a: a.clone(), ms }));
        out.push(fault(t + heal, Fault::ClockSkew { a, ms: -ms }));
    }
    let slow = sw.redis_slow_ms.unwrap_or(400).max(1);
    for t in arrivals(sw.redis_slow_per_min, rng) {
        let ms = 1 + rng.next_u64() % slow;
        out.push(fault(t, Fault::RedisSlow { ms }));
        out.push(fault(t + heal, Fault::RedisRestore {}));
    }
    let rate = sw.redis_error_rate.unwrap_or(0.5);
    for t in arrivals(sw.redis_errors_per_min, rng) {
        let r = (rng.next_f64() * rate * 100.0).round() / 100.0;
        out.push(fault(t, Fault::RedisErrors { rate: r }));
        out.push(fault(t + heal, Fault::RedisRestore {}));
    }
    let max_ms = sw.link_latency_ms.unwrap_or(200).max(1);
    let redis = sc.world.storage == crate::scenario::StorageKind::Redis;
    for t in arrivals(sw.link_latency_per_min, rng) {
        let s = server(rng);
        let c = rng.next_u64() % u64::from(good.max(1));
        // One link in three is the server's to Redis, when there is one.
        let a = if redis && rng.next_u64().is_multiple_of(3) {
            "redis".to_owned()
        } else {
            sc.world.client_host(c as u32)
        };
        let ms = 1 + rng.next_u64() % max_ms;
        out.push(fault(
            t,
            Fault::LinkLatency {
                a: a.clone(),
                b: s.clone(),
                ms,
            },
        ));
        out.push(fault(t + heal, Fault::LinkRestore { a, b: s }));
    }
    let max_rate = sw.link_loss_rate.unwrap_or(0.05);
    for t in arrivals(sw.link_loss_per_min, rng) {
        let (a, b) = client_and_server(rng);
        let rate = ((rng.next_f64() * max_rate * 1000.0).round() / 1000.0).max(0.001);
        out.push(fault(
            t,
            Fault::LinkLoss {
                a: a.clone(),
                b: b.clone(),
                rate,
            },
        ));
        out.push(fault(t + heal, Fault::LinkRestore { a, b }));
    }
    for t in arrivals(sw.holds_per_min, rng) {
        let (a, b) = client_and_server(rng);
        out.push(fault(
            t,
            Fault::Hold {
                a: a.clone(),
                b: b.clone(),
            },
        ));
        out.push(fault(t + heal, Fault::Release { a, b }));
    }
    for t in arrivals(sw.terminations_per_min, rng) {
        let a = server(rng);
        out.push(fault(t, Fault::Terminate { a }));
    }
    for t in arrivals(sw.disk_faults_per_min, rng) {
        let a = server(rng);
        out.push(fault(t, Fault::DiskFull { a: a.clone() }));
        out.push(fault(t + heal, Fault::DiskRestore { a }));
    }
    out.sort_by_key(FaultAt::at_ms);
    out
}
