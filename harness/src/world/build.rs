//! Putting a run together: the context every host shares (durable storage outside the hosts,
//! the simulated Redis, the checkers) and the turmoil simulation with its Redis, server and
//! client hosts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use spiral_history::Event;
use spiral_history::checkers::{self, Panel};
use spiral_server::rng::SplitMix64;
use spiral_server::storage::SharedStorage;
use spiral_server::storage::embedded::EmbeddedStorage;
use spiral_server::storage::memory::MemoryStorage;

use super::run::final_checks;
use super::{Ctx, EPOCH_MS, Model, ServerSlot, bad, client, server};
use crate::scenario::{Scenario, ServerSettings, StorageKind};
use crate::sim_redis::{Faults as RedisFaults, SimRedis};

/// Simulated time the run may take beyond the workload: settling, final checks.
const SETTLE: Duration = Duration::from_secs(90);

/// The shared context of a run of `scenario`: fresh checkers, durable storage outside every
/// host, the simulated Redis if the scenario uses one.
pub(super) fn context(
    scenario: &Scenario,
    settings: ServerSettings,
    server_seed: u64,
    redis_seed: u64,
) -> Result<Arc<Ctx>, String> {
    let durable = match scenario.world.storage {
        StorageKind::Memory => Some(Arc::new(MemoryStorage::new()) as SharedStorage),
        StorageKind::Embedded => Some(Arc::new(
            EmbeddedStorage::in_memory().map_err(|e| format!("embedded storage: {e}"))?,
        ) as SharedStorage),
        StorageKind::Redis => None,
    };
    let redis = (scenario.world.storage == StorageKind::Redis).then(|| SimRedis::new(redis_seed));
    Ok(context_over(
        scenario,
        settings,
        server_seed,
        durable,
        redis,
    ))
}

/// [`context`] over the given storage: none in the real-process world, where storage lives in
/// the server processes and a real Redis.
pub(super) fn context_over(
    scenario: &Scenario,
    settings: ServerSettings,
    server_seed: u64,
    durable: Option<SharedStorage>,
    redis: Option<SimRedis>,
) -> Arc<Ctx> {
    // The run's world: `[world]` with what `[server]` drew for it in place.
    let mut sc = scenario.clone();
    settings.apply_to(&mut sc.world);
    let ctx = Arc::new(Ctx {
        sc,
        model: Mutex::new(Model {
            trace: Vec::new(),
            panel: Panel::new(checkers::all(&scenario.check_settings(&settings))),
            ops: BTreeMap::new(),
            faults: BTreeMap::new(),
            acked: BTreeMap::new(),
            admitted: BTreeMap::new(),
        }),
        servers: (0..scenario.world.servers)
            .map(|_| ServerSlot::default())
            .collect(),
        durable,
        redis,
        server_seed,
        clients_done: AtomicU32::new(0),
        journal_flagged: Mutex::default(),
        failed: Mutex::new(None),
        settings,
        crowd: tokio::sync::Mutex::new(()),
        disturbance: Mutex::new(super::Disturbance::default()),
    });
    ctx.record_at(
        Event::Settings {
            values: ctx.settings.values(),
        },
        0,
    );
    ctx
}

/// The simulation: the Redis host (if any), one host per server, the client hosts (each running
/// its clients side by side, polled in a fixed order); host `client-0` also runs the final
/// checks once every client has finished.
pub(super) fn simulation<'a>(ctx: &Arc<Ctx>, net_seed: u64, root: &SplitMix64) -> turmoil::Sim<'a> {
    let sc = &ctx.sc;
    let duration = Duration::from_secs(sc.world.duration_s);
    let mut sim = turmoil::Builder::new()
        .rng_seed(net_seed)
        .epoch(UNIX_EPOCH + Duration::from_millis(EPOCH_MS))
        .simulation_duration(duration + SETTLE)
        .tick_duration(Duration::from_millis(sc.world.tick_ms))
        .min_message_latency(Duration::from_millis(sc.world.latency_ms_min))
        .max_message_latency(Duration::from_millis(sc.world.latency_ms_max))
        .build();

    if let Some(redis) = &ctx.redis {
        redis.set_faults(RedisFaults {
            latency_ms: sc.world.redis_latency_ms,
            ..RedisFaults::default()
        });
        let redis = redis.clone();
        sim.host("redis", move || {
            let redis = redis.clone();
            async move {
                redis.listen(6379).await?;
                Ok(())
            }
        });
    }
    for s in 0..sc.world.servers {
        let ctx = ctx.clone();
        sim.host(format!("server-{s}"), move || server::main(ctx.clone(), s));
    }

    let mut hosts: Vec<Vec<(u32, SplitMix64)>> =
        vec![Vec::new(); sc.world.client_host_count() as usize];
    for c in 0..sc.world.clients {
        let rng = root.fork(&format!("client-{c}"));
        hosts[sc.world.client_host_index(c) as usize].push((c, rng));
    }
    // A host of its own for the final checks would cost a runtime step every tick for one task
    // at the end: host `client-0` runs them.
    for (h, clients) in hosts.into_iter().enumerate() {
        let ctx = ctx.clone();
        sim.client(format!("client-{h}"), async move {
            let ctx = &ctx;
            let work =
                futures_util::future::join_all(clients.into_iter().map(|(c, rng)| async move {
                    if ctx.bad_client(c) {
                        bad::main(ctx, c, rng).await;
                    } else {
                        client::main(ctx, c, rng).await;
                    }
                    ctx.clients_done.fetch_add(1, Ordering::SeqCst);
                }));
            if h == 0 {
                futures_util::future::join(work, final_checks(ctx)).await;
            } else {
                work.await;
            }
            Ok(())
        });
    }
    sim
}
