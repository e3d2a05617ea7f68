//! The fault schedule of a run: the scenario's timed faults plus the seeded swarm (Poisson
//! arrivals of partitions, crashes and Redis outages, each healed after a fixed time), in firing
//! order.

use spiral_server::rng::SplitMix64;

use crate::scenario::{Fault, FaultAt, Scenario};

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
    for t in arrivals(sw.partitions_per_min, rng) {
        let c = rng.next_u64() % u64::from(good.max(1));
        let s = rng.next_u64() % u64::from(sc.world.servers);
        let (a, b) = (sc.world.client_host(c as u32), format!("server-{s}"));
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
        let a = format!("server-{}", rng.next_u64() % u64::from(sc.world.servers));
        out.push(fault(t, Fault::Crash { a: a.clone() }));
        out.push(fault(t + heal, Fault::Bounce { a }));
    }
    for t in arrivals(sw.redis_outages_per_min, rng) {
        out.push(fault(t, Fault::RedisOutage { mode: None }));
        out.push(fault(t + heal, Fault::RedisRestore {}));
    }
    out.sort_by_key(FaultAt::at_ms);
    out
}
