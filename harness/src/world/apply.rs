//! What each fault does to the simulation: cut or hold links, crash or restart a server host,
//! move a server's clock, disturb the simulated Redis. Every fault that fires is recorded.

use std::sync::atomic::Ordering;

use spiral_history::{Event, FaultKind};
use spiral_server::api::AppState;

use super::{Ctx, lock};
use crate::scenario::FaultAt;
use crate::sim_redis::{Faults as RedisFaults, Outage};

fn server_index(host: &str) -> Option<u32> {
    host.strip_prefix("server-")?.parse().ok()
}

pub(super) fn apply(ctx: &Ctx, sim: &mut turmoil::Sim<'_>, f: &FaultAt) {
    let a = f.a.clone().unwrap_or_default();
    let b = f.b.clone().unwrap_or_default();
    let mut detail = None;
    match f.kind {
        FaultKind::Partition => sim.partition(a.as_str(), b.as_str()),
        FaultKind::Repair => sim.repair(a.as_str(), b.as_str()),
        FaultKind::Hold => sim.hold(a.as_str(), b.as_str()),
        FaultKind::Release => sim.release(a.as_str(), b.as_str()),
        FaultKind::Crash => {
            if let Some(s) = server_index(&a) {
                // Its breaker history dies with it: judge it now.
                if let Some(st) = lock(&ctx.servers[s as usize].state).take() {
                    record_breaker(ctx, s, &st, sim.elapsed().as_millis() as u64);
                }
            }
            sim.crash(a.as_str());
        }
        FaultKind::Bounce => {
            if let Some(s) = server_index(&a)
                && let Some(st) = lock(&ctx.servers[s as usize].state).take()
            {
                record_breaker(ctx, s, &st, sim.elapsed().as_millis() as u64);
            }
            sim.bounce(a.as_str());
        }
        FaultKind::ClockSkew => {
            if let Some(s) = server_index(&a) {
                let ms = f.ms.unwrap_or(0);
                ctx.servers[s as usize]
                    .skew_ms
                    .fetch_add(ms, Ordering::Relaxed);
                detail = Some(format!("{ms:+} ms"));
            }
        }
        FaultKind::RedisOutage
        | FaultKind::RedisRestore
        | FaultKind::RedisSlow
        | FaultKind::RedisErrors => {
            if let Some(redis) = &ctx.redis {
                let mut faults = redis.faults();
                match f.kind {
                    FaultKind::RedisOutage => {
                        faults.outage = if f.mode.as_deref() == Some("refuse") {
                            Outage::Refuse
                        } else {
                            Outage::Hang
                        };
                    }
                    FaultKind::RedisSlow => faults.latency_ms = f.ms.unwrap_or(0).unsigned_abs(),
                    FaultKind::RedisErrors => faults.error_rate = f.rate.unwrap_or(0.0),
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
    let t_ms = sim.elapsed().as_millis() as u64;
    ctx.record_at(
        Event::Fault {
            kind: f.kind,
            a: f.a.clone(),
            b: f.b.clone(),
            detail,
        },
        t_ms,
    );
}

pub(super) fn record_breaker(ctx: &Ctx, server: u32, st: &AppState, t_ms: u64) {
    for t in st.storage.transitions() {
        ctx.record_at(
            Event::Breaker {
                server,
                from: t.from,
                to: t.to,
            },
            t_ms,
        );
    }
}
