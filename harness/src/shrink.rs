//! Shrinking a failing run: remove faults (one at a time, then whole swarm kinds) and truncate
//! each client's operation stream (binary search on `max_ops_per_client`) while the run still
//! fails with the same class (`correctness:<checker>`, `liveness:<checker>`, `crash`). The
//! result is a scenario that fails the same way with the same seed, printed as TOML.

use crate::scenario::{FaultAt, Scenario};
use crate::world::{RunResult, run};

/// What the shrinker did.
pub struct Shrunk {
    pub scenario: Scenario,
    pub result: RunResult,
    /// Runs it took.
    pub runs: u32,
}

/// Shrink `scenario` at `seed`; `None` if it does not fail to begin with.
pub fn shrink(scenario: &Scenario, seed: u64, mut progress: impl FnMut(&str)) -> Option<Shrunk> {
    let first = run(scenario, seed);
    if first.passed() {
        return None;
    }
    let class = first.class();
    let mut best = scenario.clone();
    let mut best_result = first;
    let mut runs = 1;
    let still_fails = |candidate: &Scenario, runs: &mut u32| {
        *runs += 1;
        let r = run(candidate, seed);
        (r.class() == class).then_some(r)
    };
    // Faults: drop each one that is not needed (from the last, so paired faults go together
    // when both are unneeded).
    let mut i = best.faults.len();
    while i > 0 {
        i -= 1;
        let mut c = best.clone();
        c.faults.remove(i);
        if let Some(r) = still_fails(&c, &mut runs) {
            progress(&format!("dropped fault {i}; {} left", c.faults.len()));
            best = c;
            best_result = r;
        }
    }
    for kind in ["partitions", "crashes", "redis outages"] {
        let mut c = best.clone();
        match kind {
            "partitions" => c.swarm.partitions_per_min = 0.0,
            "crashes" => c.swarm.crashes_per_min = 0.0,
            _ => c.swarm.redis_outages_per_min = 0.0,
        }
        if c != best
            && let Some(r) = still_fails(&c, &mut runs)
        {
            progress(&format!("dropped the swarm's {kind}"));
            best = c;
            best_result = r;
        }
    }
    // Fewer clients: drop well-behaved clients from the end while it still fails.
    while best.world.clients > best.workload.bad_clients + 1 {
        let mut c = best.clone();
        c.world.clients -= 1;
        // The world already runs at most one host per client; say so, or the file is invalid.
        c.world.client_hosts = c.world.client_hosts.map(|h| h.min(c.world.clients));
        match still_fails(&c, &mut runs) {
            Some(r) if c.faults.iter().all(|f| mentions_known_hosts(&c, f)) => {
                progress(&format!("{} clients", c.world.clients));
                best = c;
                best_result = r;
            }
            _ => break,
        }
    }
    // Operations: the fewest per client that still fail.
    let ops_so_far = best_result.ops.values().sum::<u64>().max(1);
    let (mut lo, mut hi) = (1u64, ops_so_far);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let mut c = best.clone();
        c.workload.max_ops_per_client = Some(mid);
        if let Some(r) = still_fails(&c, &mut runs) {
            progress(&format!("{mid} operations per client still fail"));
            hi = mid;
            best = c;
            best_result = r;
        } else {
            lo = mid + 1;
        }
    }
    Some(Shrunk {
        scenario: best,
        result: best_result,
        runs,
    })
}

fn mentions_known_hosts(sc: &Scenario, f: &FaultAt) -> bool {
    let hosts = sc.host_names();
    let (a, b) = f.fault.hosts();
    a.into_iter()
        .chain(b)
        .all(|h| hosts.iter().any(|known| known == h))
}
