//! A server host: the unmodified server library on simulated listeners, over the world's durable
//! storage (in-process, with injected latency) or the simulated Redis, with a wall clock that
//! follows simulated time plus the host's skew.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use spiral_server::api::{AppState, ServerBuilder, ServerConfig};
use spiral_server::auth::Shared;
use spiral_server::clock::{Clock, EpochClock, Instant, SharedClock};
use spiral_server::engine::{EngineConfig, EngineEvent};
use spiral_server::ratelimit::Limit;
use spiral_server::resilience::{
    JournalLog, JournalOp, MemLog, ResilienceConfig, ResilientStorage,
};
use spiral_server::storage::redis::{RedisConnectionInfo, RedisStorage, dial_stream};
use spiral_server::storage::{SharedStorage, Storage, StorageResult};

use super::{Ctx, EPOCH_MS, lock, now_ms};
use spiral_history::{Event, TenantShare};

/// Server `s`'s data namespace in Redis: each instance indexes its own nodes, so each engine's
/// invariant 1 is exact; rate limits, `jti`s and revocations share the default namespace.
pub(crate) fn namespace(server: u32) -> String {
    format!("spiral-s{server}")
}

/// Simulated time since the epoch, plus a skew that faults can move.
#[derive(Debug)]
struct SkewedClock {
    base: EpochClock,
    skew_ms: Arc<AtomicI64>,
}

impl Clock for SkewedClock {
    fn now(&self) -> Instant {
        self.base.now()
    }

    fn unix_ms(&self) -> u64 {
        self.base
            .unix_ms()
            .saturating_add_signed(self.skew_ms.load(Ordering::Relaxed))
    }
}

/// In-process storage with a fixed latency on every call: a crash can land between an
/// operation and its durable write, as with a real disk or network.
#[derive(Debug)]
struct Slow {
    inner: SharedStorage,
    latency: Duration,
}

impl Slow {
    async fn wait(&self) {
        tokio::time::sleep(self.latency).await;
    }
}

#[async_trait]
impl Storage for Slow {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn init(&self) -> StorageResult<()> {
        self.wait().await;
        self.inner.init().await
    }
    async fn get(&self, key: &str) -> StorageResult<Option<Value>> {
        self.wait().await;
        self.inner.get(key).await
    }
    async fn set(&self, key: &str, value: &Value) -> StorageResult<()> {
        self.wait().await;
        self.inner.set(key, value).await
    }
    async fn del(&self, key: &str) -> StorageResult<()> {
        self.wait().await;
        self.inner.del(key).await
    }
    async fn keys(&self, prefix: &str) -> StorageResult<Vec<String>> {
        self.wait().await;
        self.inner.keys(prefix).await
    }
    async fn atomic_incr(&self, key: &str, delta: i64) -> StorageResult<i64> {
        self.wait().await;
        self.inner.atomic_incr(key, delta).await
    }
    // Bulk calls are one round trip each, as with the real adapters.
    async fn visit_prefix(
        &self,
        prefix: &str,
        visit: &mut (dyn for<'k> FnMut(&'k str, &'k Value) + Send),
    ) -> StorageResult<u64> {
        self.wait().await;
        self.inner.visit_prefix(prefix, visit).await
    }
    async fn set_many(&self, entries: &[(String, Value)]) -> StorageResult<()> {
        self.wait().await;
        self.inner.set_many(entries).await
    }
    async fn del_many(&self, keys: &[String]) -> StorageResult<()> {
        self.wait().await;
        self.inner.del_many(keys).await
    }
    async fn scan_prefix(&self, prefix: &str) -> StorageResult<Vec<(String, Value)>> {
        self.wait().await;
        self.inner.scan_prefix(prefix).await
    }
}

/// A server host's disk, holding its degraded journal: while `full` (the `disk-full` fault) an
/// append fails as a write to a full disk does; what is on it stays.
#[derive(Debug)]
struct Disk {
    journal: MemLog,
    full: Arc<AtomicBool>,
}

impl JournalLog for Disk {
    fn append(&self, first: u64, ops: &[JournalOp]) -> std::io::Result<()> {
        if self.full.load(Ordering::SeqCst) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "no space left on device",
            ));
        }
        self.journal.append(first, ops)
    }
    fn ack(&self, seq: u64, drained: bool) -> std::io::Result<()> {
        self.journal.ack(seq, drained)
    }
    fn load(&self) -> std::io::Result<Vec<JournalOp>> {
        self.journal.load()
    }
    fn describe(&self) -> String {
        self.journal.describe()
    }
}

fn redis_adapter() -> RedisStorage {
    RedisStorage::with_dialer("sim-redis", || async {
        let stream = turmoil::net::TcpStream::connect("redis:6379").await?;
        dial_stream(&RedisConnectionInfo::default(), stream).await
    })
    .with_timeouts(250, 250)
}

pub(super) fn server_config(ctx: &Ctx) -> ServerConfig {
    let w = &ctx.sc.world;
    let knob = |name| ctx.settings.get(name);
    let defaults = ServerConfig::default();
    ServerConfig {
        ws_ping_interval_ms: w.ws_ping_interval_ms,
        ws_idle_timeout_ms: w.ws_idle_timeout_ms,
        max_connections: w.max_connections,
        max_message_size: w.max_message_size,
        recovery_period_ms: 500,
        ws_rate: Limit {
            capacity: knob("ws_rate_limit"),
            ..defaults.ws_rate
        },
        ws_send_queue: knob("ws_send_queue") as usize,
        ws_send_queue_bytes: knob("ws_send_queue_bytes") as usize,
        ws_slow_client_ms: knob("ws_slow_client_ms"),
        http_header_timeout_ms: knob("http_header_timeout_ms"),
        http_idle_timeout_ms: knob("http_idle_timeout_ms"),
        store_rate: Limit {
            capacity: knob("store_rate_limit"),
            ..defaults.store_rate
        },
        http_rate: ctx.settings.http_rate(),
        refresh_max_lifetime_s: knob("refresh_max_lifetime_s"),
        max_connections_per_user: knob("max_connections_per_user") as usize,
        ..defaults
    }
}

/// The host's software; called again on every bounce.
pub(crate) async fn main(ctx: Arc<Ctx>, s: u32) -> Result<(), Box<dyn std::error::Error>> {
    let clock: SharedClock = Arc::new(SkewedClock {
        base: EpochClock::new(EPOCH_MS + now_ms()),
        skew_ms: ctx.servers[s as usize].skew_ms.clone(),
    });
    let (storage, shared): (SharedStorage, Shared) = match (&ctx.durable, &ctx.redis) {
        (Some(d), _) => {
            let latency = ctx.sc.world.storage_latency_ms;
            let storage = if latency > 0 {
                Arc::new(Slow {
                    inner: d.clone(),
                    latency: Duration::from_millis(latency),
                })
            } else {
                d.clone()
            };
            // Used and revoked tokens persist where the nodes do (the host's disk).
            (storage.clone(), Shared::durable(storage))
        }
        _ => {
            let data = redis_adapter().with_namespace(namespace(s))?;
            let shared = Shared::redis(Arc::new(redis_adapter()))
                .fail_closed(ctx.settings.get("auth_fail_closed") == 1);
            (Arc::new(data), shared)
        }
    };
    let resilience = ResilienceConfig {
        failures: ctx.settings.get("cb_failures") as u32,
        window_ms: ctx.settings.get("cb_window_ms"),
        timeout_ms: ctx.settings.get("cb_timeout_ms"),
        journal_max: ctx.settings.get("journal_max") as usize,
    };
    // The journal survives the crash on the host's disk; a restarted server replays it.
    let disk = Arc::new(Disk {
        journal: ctx.servers[s as usize].journal.clone(),
        full: ctx.servers[s as usize].disk_full.clone(),
    });
    let resilient = Arc::new(ResilientStorage::with_log(
        storage,
        resilience,
        clock.clone(),
        disk,
    )?);
    let shared = Arc::new(shared.bucket_limit(ctx.settings.get("rate_limit_buckets") as usize));
    // Opening reads storage; while it is unreachable, keep trying (a real supervisor would).
    let state = loop {
        let opened = ServerBuilder::new(super::net::server_keys(), clock.clone())
            .storage(resilient.clone())
            .shared(shared.clone())
            .config(server_config(&ctx))
            .engine(EngineConfig {
                max_nodes: ctx.sc.world.max_nodes,
                gc_time_budget_ms: ctx.settings.get("gc_time_budget_ms"),
                gc_trigger_interval: ctx.settings.get("gc_trigger_interval"),
                gc_budget_scale: ctx.settings.get("gc_budget_scale"),
                gc_force_skip: ctx.settings.get("gc_force_skip") as u32,
                ..EngineConfig::default()
            })
            .seed(spiral_server::rng::sub_seed(
                ctx.server_seed,
                &format!("server-{s}"),
            ))
            .instance(format!("server-{s}"))
            .open()
            .await;
        match opened {
            Ok((state, _)) => break state,
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    };
    watch_engine(&ctx, s, &state);
    *lock(&ctx.servers[s as usize].state) = Some(state.clone());
    let signal = ctx.clone();
    let shutdown = async move { signal.servers[s as usize].terminate.notified().await };
    crate::sim_net::serve(state, shutdown).await?;
    // Stopped gracefully: the process exits, and its supervisor starts it again — the run loop
    // restarts the host, which ends every task this lifetime left.
    ctx.servers[s as usize]
        .stopped
        .store(true, Ordering::SeqCst);
    std::future::pending::<()>().await;
    Ok(())
}

/// GC passes and GC removals, from the engine's own event channel. What a pass took from each
/// tenant is the world's own count — its removals of nodes whose stores the world saw
/// acknowledged, by the tenant that stored them — not the server's report of its selection.
fn watch_engine(ctx: &Arc<Ctx>, s: u32, state: &AppState) {
    let mut events = state.engine.subscribe();
    let ctx = ctx.clone();
    tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        let mut taken: std::collections::BTreeMap<String, u64> = Default::default();
        loop {
            match events.recv().await {
                Ok(EngineEvent::Collected {
                    id,
                    tenant: announced,
                    by_gc: true,
                }) => {
                    if let Some(tenant) = ctx.acked_tenant(&id) {
                        *taken.entry(tenant).or_default() += 1;
                    }
                    ctx.record(Event::GcRemoved {
                        server: s,
                        id,
                        tenant: Some(announced),
                    });
                }
                Ok(EngineEvent::Gc(r)) => {
                    if r.selected > 0 {
                        ctx.record(Event::GcShares {
                            server: s,
                            share: r.share,
                            tenants: r
                                .tenants
                                .iter()
                                .map(|t| TenantShare {
                                    tenant: t.tenant.to_string(),
                                    held: t.held,
                                    taken: taken.get(&*t.tenant).copied().unwrap_or(0),
                                })
                                .collect(),
                            max_nodes: ctx.sc.world.max_nodes,
                        });
                    }
                    taken.clear();
                    ctx.record(Event::Gc {
                        server: s,
                        pause_ms: r.pause_ms,
                        budget_ms: r.budget_ms,
                        collected: r.collected,
                        excess: Some(r.excess),
                        started_ms: now_ms().checked_sub(r.pause_ms.ceil() as u64),
                        spared: Some(u64::from(r.skipped)),
                    });
                }
                Ok(_) => {}
                // Missing GC removals would turn legal disappearances into false alarms.
                Err(RecvError::Lagged(n)) => {
                    ctx.harness_error(format!("server-{s}: the harness missed {n} engine events"));
                }
                Err(RecvError::Closed) => return,
            }
        }
    });
}
