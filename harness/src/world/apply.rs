//! What each fault does to the simulation: cut or hold links, crash or restart a server host,
//! move a server's clock, disturb the simulated Redis. Every fault that fires is recorded.

use std::sync::atomic::Ordering;
use std::time::Duration;

use spiral_history::Event;
use spiral_server::api::AppState;
use spiral_server::protocol::BreakerState;

use super::{Ctx, lock};
use crate::scenario::{Fault, FaultAt, OutageMode};
use crate::sim_redis::{Faults as RedisFaults, Outage};

fn server_index(host: &str) -> Option<u32> {
    host.strip_prefix("server-")?.parse().ok()
}

pub(super) fn apply(ctx: &Ctx, sim: &mut turmoil::Sim<'_>, f: &FaultAt) {
    let mut detail = None;
    match &f.fault {
        Fault::Partition { a, b } => sim.partition(a.as_str(), b.as_str()),
        Fault::Repair { a, b } => sim.repair(a.as_str(), b.as_str()),
        Fault::PartitionOneway { a, b } => sim.partition_oneway(a.as_str(), b.as_str()),
        Fault::RepairOneway { a, b } => sim.repair_oneway(a.as_str(), b.as_str()),
        Fault::Hold { a, b } => sim.hold(a.as_str(), b.as_str()),
        Fault::Release { a, b } => sim.release(a.as_str(), b.as_str()),
        Fault::Crash { a } => {
            if let Some(s) = server_index(a) {
                // Its breaker history dies with it: judge it now.
                if let Some(st) = lock(&ctx.servers[s as usize].state).take() {
                    record_breaker(ctx, s, &st, sim.elapsed().as_millis() as u64);
                }
            }
            sim.crash(a.as_str());
        }
        Fault::Bounce { a } => {
            if let Some(s) = server_index(a)
                && let Some(st) = lock(&ctx.servers[s as usize].state).take()
            {
                record_breaker(ctx, s, &st, sim.elapsed().as_millis() as u64);
            }
            sim.bounce(a.as_str());
        }
        // The server stops itself (see `server::main`); the run loop restarts its host once it has.
        Fault::Terminate { a } => {
            if let Some(s) = server_index(a)
                && lock(&ctx.servers[s as usize].state).is_some()
            {
                let slot = &ctx.servers[s as usize];
                slot.terminations.fetch_add(1, Ordering::SeqCst);
                lock(&ctx.disturbance).stop(s, true, sim.elapsed().as_millis() as u64);
                slot.terminate.notify_one();
            }
        }
        Fault::LinkLatency { a, b, ms } => {
            sim.set_link_latency(a.as_str(), b.as_str(), Duration::from_millis(*ms));
        }
        Fault::DiskFull { a } | Fault::DiskRestore { a } => {
            if let Some(s) = server_index(a) {
                let full = matches!(f.fault, Fault::DiskFull { .. });
                ctx.servers[s as usize]
                    .disk_full
                    .store(full, Ordering::SeqCst);
            }
        }
        Fault::LinkLoss { a, b, rate } => sim.set_link_fail_rate(a.as_str(), b.as_str(), *rate),
        Fault::LinkRestore { a, b } => {
            let w = &ctx.sc.world;
            sim.set_link_latency(
                a.as_str(),
                b.as_str(),
                Duration::from_millis(w.latency_ms_min),
            );
            sim.set_link_max_message_latency(
                a.as_str(),
                b.as_str(),
                Duration::from_millis(w.latency_ms_max),
            );
            sim.set_link_fail_rate(a.as_str(), b.as_str(), 0.0);
        }
        Fault::ClockSkew { a, ms } => {
            if let Some(s) = server_index(a) {
                ctx.servers[s as usize]
                    .skew_ms
                    .fetch_add(*ms, Ordering::Relaxed);
                detail = Some(format!("{ms:+} ms"));
            }
        }
        Fault::RedisOutage { .. }
        | Fault::RedisRestore {}
        | Fault::RedisSlow { .. }
        | Fault::RedisErrors { .. } => {
            if let Some(redis) = &ctx.redis {
                let mut faults = redis.faults();
                match &f.fault {
                    Fault::RedisOutage { mode } => {
                        faults.outage = match mode.unwrap_or_default() {
                            OutageMode::Hang => Outage::Hang,
                            OutageMode::Refuse => Outage::Refuse,
                        };
                    }
                    Fault::RedisSlow { ms } => faults.latency_ms = *ms,
                    Fault::RedisErrors { rate } => faults.error_rate = *rate,
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
    record_fault(ctx, f, detail, sim.elapsed().as_millis() as u64);
}

/// A fault fired at `t_ms`: the disturbance it causes, and its record. Both worlds call it.
pub(super) fn record_fault(ctx: &Ctx, f: &FaultAt, detail: Option<String>, t_ms: u64) {
    note_disturbance(ctx, &f.fault, t_ms);
    let (a, b) = f.fault.hosts();
    ctx.record_at(
        Event::Fault {
            kind: f.kind(),
            a: a.map(str::to_owned),
            b: b.map(str::to_owned),
            detail,
        },
        t_ms,
    );
}

/// Keep [`Disturbance`](super::Disturbance) up to date: which link and Redis faults are in
/// effect from `t_ms`.
fn note_disturbance(ctx: &Ctx, fault: &Fault, t_ms: u64) {
    let pair = |kind: &str, a: &str, b: &str| {
        let (x, y) = if a <= b { (a, b) } else { (b, a) };
        format!("{kind} {x} {y}")
    };
    let mut d = lock(&ctx.disturbance);
    match fault {
        Fault::Partition { a, b } => d.link(pair("partition", a, b), true, t_ms),
        Fault::Repair { a, b } => d.link(pair("partition", a, b), false, t_ms),
        Fault::PartitionOneway { a, b } => d.link(format!("oneway {a} {b}"), true, t_ms),
        Fault::RepairOneway { a, b } => d.link(format!("oneway {a} {b}"), false, t_ms),
        Fault::Hold { a, b } => d.link(pair("hold", a, b), true, t_ms),
        Fault::Release { a, b } => d.link(pair("hold", a, b), false, t_ms),
        Fault::Crash { a } => d.link(format!("down {a}"), true, t_ms),
        // A restart ends every connection the host had, and brings it back.
        Fault::Bounce { a } => d.link(format!("down {a}"), false, t_ms),
        // A stop in effect is recorded where it is signalled (only a running server stops).
        Fault::Terminate { .. } => {}
        Fault::ClockSkew { .. } => {}
        // The disk refuses journal entries: writes are refused, none acknowledged and lost.
        Fault::DiskFull { .. } | Fault::DiskRestore { .. } => {}
        Fault::LinkLatency { a, b, .. }
        | Fault::LinkLoss { a, b, .. }
        | Fault::LinkRestore { a, b } => {
            let on = !matches!(fault, Fault::LinkRestore { .. });
            let what = pair("link", a, b);
            if a == "redis" || b == "redis" {
                d.redis_link(what, on, t_ms);
            } else {
                d.link(what, on, t_ms);
            }
        }
        Fault::RedisRestore {} => d.redis(false, t_ms),
        Fault::RedisOutage { .. } | Fault::RedisSlow { .. } | Fault::RedisErrors { .. } => {
            d.redis(true, t_ms);
        }
    }
}

/// Restart the host of every server that has stopped gracefully since the last step (a
/// supervisor starting the process again); until it is back, it counts as down.
pub(super) fn restart_stopped(ctx: &Ctx, sim: &mut turmoil::Sim<'_>) {
    for (s, slot) in ctx.servers.iter().enumerate() {
        if !slot.stopped.swap(false, Ordering::SeqCst) {
            continue;
        }
        let t_ms = sim.elapsed().as_millis() as u64;
        if let Some(st) = lock(&slot.state).take() {
            record_breaker(ctx, s as u32, &st, t_ms);
        }
        let host = format!("server-{s}");
        sim.bounce(host.as_str());
        lock(&ctx.disturbance).stop(s as u32, false, t_ms);
    }
}

/// What a server that is about to stop leaves undecided: its breaker history, and the nodes it
/// was removing (their removal events die with it).
pub(super) fn record_breaker(ctx: &Ctx, server: u32, st: &AppState, t_ms: u64) {
    let ids = st.engine.removals_in_flight();
    if !ids.is_empty() {
        ctx.record_at(Event::RemovalsInFlight { server, ids }, t_ms);
    }
    // How long it stayed open before each probe: the difference of two transition times on the
    // server's own clock (this may run outside the server's host, where its clock cannot be read).
    let transitions = st.storage.transitions();
    let status = st.storage.status();
    ctx.record_at(
        Event::BreakerStatus {
            server,
            gauge: status.breaker_state,
            opens_total: status.opens_total,
            opens_logged: transitions
                .iter()
                .filter(|t| t.to == BreakerState::Open)
                .count() as u64,
            last: transitions.last().map(|t| t.to),
            complete: transitions.len() < spiral_server::resilience::breaker::TRANSITION_LOG_MAX,
        },
        t_ms,
    );
    let mut opened = None;
    for t in transitions {
        let open_ms = match (t.to, opened) {
            (BreakerState::HalfOpen, Some(at)) => {
                Some(t.at.saturating_duration_since(at).as_millis() as u64)
            }
            _ => None,
        };
        if t.to == BreakerState::Open {
            opened = Some(t.at);
        }
        ctx.record_at(
            Event::Breaker {
                server,
                from: t.from,
                to: t.to,
                open_ms,
                failures: (t.from == BreakerState::Closed && t.to == BreakerState::Open)
                    .then_some(t.failures),
            },
            t_ms,
        );
    }
}
