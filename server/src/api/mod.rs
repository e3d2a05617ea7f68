//! The server's surfaces (SPEC §1.1–§1.4): HTTP on one listener, the WebSocket command channel on
//! a second, the event stream on a third. [`serve`] takes listeners that are already bound — any
//! `axum::serve::Listener` — so the same code runs on real sockets and on the simulator's.
//!
//! # Layout
//! - [`config`] — [`ServerConfig`] and the flags of `spiral serve`.
//! - [`error`] — [`ApiError`], the one error type every surface renders.
//! - [`http`] — routes, the auth and rate-limit middleware, health, status and metrics.
//! - [`ws`] — the command channel: envelope, commands, replies.
//! - [`socket`] — what both WebSocket ports share: handshake checks, the outbound queue,
//!   heartbeats, close codes and the closing handshake, the welcome frame.
//! - [`stream`] — the event stream: the hub that relays engine events, sanitization, frame limits.
//! - [`conn`] — serving one listener: accept, the header and idle timeouts, places under the cap.
//! - [`client`] — a minimal HTTP/1.1 client over any byte stream (the CLI, tests, the harness).
//! - this module — [`AppState`], the connection registry and [`serve`].

pub mod client;
pub mod config;
pub mod conn;
pub mod error;
pub mod http;
pub mod socket;
pub mod stream;
pub mod ws;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use tokio::sync::{broadcast, watch};

pub use config::{KeyArgs, ServeArgs, ServerConfig};
pub use error::ApiError;

use crate::auth::{Keys, Principal, Reject, Shared};
use crate::clock::SharedClock;
use crate::engine::{Engine, EngineConfig, RebuildReport};
use crate::error::{EngineError, StorageError};
use crate::metrics::{Metrics, Snapshot};
use crate::protocol::CloseCode;
use crate::ratelimit::{Decision, Limit};
use crate::resilience::ResilientStorage;
use crate::rng::SharedRng;
use crate::storage::instrumented::Instrumented;
use crate::sync::{self, AtomicU64, AtomicUsize, Mutex, Ordering};

/// Everything a request handler needs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub struct Inner {
    pub engine: Engine,
    pub storage: Arc<ResilientStorage>,
    pub shared: Arc<Shared>,
    pub keys: Keys,
    pub clock: SharedClock,
    pub cfg: ServerConfig,
    pub metrics: Arc<Metrics>,
    pub conns: Connections,
    pub rng: SharedRng,
    /// Frames the stream hub relays to stream clients.
    pub hub: broadcast::Sender<Arc<stream::Frame>>,
    /// `Some(true)` when storage is Redis without TLS.
    pub redis_tls_disabled: Option<bool>,
    /// A hash of the instance's name, the first part of every `jti` it mints.
    pub instance_tag: u32,
    /// When this state was opened: the origin of [`AppState::local_ms`].
    pub started: crate::clock::Instant,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

/// What [`AppState::open`] needs.
#[derive(Debug)]
pub struct Parts {
    pub storage: Arc<ResilientStorage>,
    pub shared: Arc<Shared>,
    pub keys: Keys,
    pub clock: SharedClock,
    pub cfg: ServerConfig,
    pub engine: EngineConfig,
    /// Seeds the engine's RNG and the server's (token ids).
    pub seed: u64,
    /// The instance's name (its address, a host name): tells apart the token ids of instances
    /// that do not share a boot counter.
    pub instance: String,
    pub redis_tls_disabled: Option<bool>,
}

/// How every server is put together — the binary, the black-box tests, the simulator's server
/// hosts and the chaos suites: keys and a clock, and whatever differs from the defaults.
///
/// Defaults: in-memory storage behind the breaker with the default resilience settings,
/// in-memory shared auth state, `ServerConfig::default()`, `EngineConfig::default()`, seed 0.
#[derive(Debug)]
pub struct ServerBuilder {
    parts: Parts,
}

impl ServerBuilder {
    pub fn new(keys: Keys, clock: SharedClock) -> Self {
        let storage = Arc::new(ResilientStorage::new(
            Arc::new(crate::storage::memory::MemoryStorage::new()),
            crate::resilience::ResilienceConfig::default(),
            clock.clone(),
        ));
        ServerBuilder {
            parts: Parts {
                storage,
                shared: Arc::new(Shared::memory()),
                keys,
                clock,
                cfg: ServerConfig::default(),
                engine: EngineConfig::default(),
                seed: 0,
                instance: String::new(),
                redis_tls_disabled: None,
            },
        }
    }

    /// Storage (already wrapped in its breaker and journal).
    pub fn storage(mut self, storage: Arc<ResilientStorage>) -> Self {
        self.parts.storage = storage;
        self
    }

    /// Shared auth and rate-limit state (Redis for several instances).
    pub fn shared(mut self, shared: Arc<Shared>) -> Self {
        self.parts.shared = shared;
        self
    }

    pub fn config(mut self, cfg: ServerConfig) -> Self {
        self.parts.cfg = cfg;
        self
    }

    pub fn engine(mut self, engine: EngineConfig) -> Self {
        self.parts.engine = engine;
        self
    }

    /// Seeds the engine's RNG and the server's (token ids).
    pub fn seed(mut self, seed: u64) -> Self {
        self.parts.seed = seed;
        self
    }

    /// The instance's name (default empty): its address or host name.
    pub fn instance(mut self, instance: impl Into<String>) -> Self {
        self.parts.instance = instance.into();
        self
    }

    /// `Some(true)` when storage is Redis without TLS (the `RedisTLSDisabled` alert's gauge).
    pub fn redis_tls_disabled(mut self, disabled: Option<bool>) -> Self {
        self.parts.redis_tls_disabled = disabled;
        self
    }

    /// Open the engine over the storage and assemble the state; the rebuild report of the open
    /// is returned for the caller to log.
    pub async fn open(self) -> Result<(AppState, RebuildReport), EngineError> {
        AppState::open(self.parts).await
    }
}

impl AppState {
    /// Open the engine over the storage (timed into the metrics) and assemble the state. The
    /// rebuild report of the open is returned for the caller to log. [`ServerBuilder`] is the
    /// usual way to call it.
    ///
    /// Writes a degraded journal kept from an earlier run are replayed first: the rebuild must see
    /// them. While storage cannot take them the open fails with `Unavailable` (callers retry).
    pub async fn open(p: Parts) -> Result<(AppState, RebuildReport), EngineError> {
        p.storage.recover().await;
        let waiting = p.storage.status().journal_len;
        if waiting > 0 {
            crate::reached!("boot.waits_for_journal");
            return Err(EngineError::Storage(StorageError::Unavailable(format!(
                "{waiting} journaled writes wait for storage; the engine opens once they are replayed"
            ))));
        }
        let metrics = Arc::new(Metrics::new());
        let timed = Arc::new(Instrumented::new(
            p.storage.clone(),
            metrics.clone(),
            p.clock.clone(),
        ));
        let (engine, report) = Engine::open(timed, p.engine, p.clock.clone(), p.seed).await?;
        // Used and revoked tokens a previous boot persisted (durable shared state only).
        p.shared.load(p.clock.unix_ms()).await?;
        let (hub, _) = broadcast::channel(1024);
        let started = p.clock.now();
        let state = AppState {
            inner: Arc::new(Inner {
                engine,
                storage: p.storage,
                shared: p.shared,
                keys: p.keys,
                clock: p.clock,
                conns: Connections::new(p.cfg.max_connections, p.cfg.max_connections_per_user),
                cfg: p.cfg,
                metrics,
                rng: SharedRng::new(crate::rng::sub_seed(p.seed, "api")),
                hub,
                redis_tls_disabled: p.redis_tls_disabled,
                instance_tag: crate::rng::sub_seed(0, &p.instance) as u32,
                started,
            }),
        };
        Ok((state, report))
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.unix_ms()
    }

    /// Milliseconds since this state was opened, on the monotonic clock: for in-process rate
    /// buckets, which a wall-clock jump must not disturb.
    pub fn local_ms(&self) -> u64 {
        self.clock
            .now()
            .saturating_duration_since(self.started)
            .as_millis() as u64
    }

    /// One decision of `user`'s `kind` bucket (`ws`, `http`, `store`) under `limit`, on the
    /// right clocks: a shared bucket on Redis's, an in-process one on [`local_ms`](Self::local_ms).
    pub async fn rate(&self, kind: &str, user: &str, limit: &Limit) -> Decision {
        self.shared
            .rate(
                &format!("{kind}:{user}"),
                limit,
                self.local_ms(),
                self.now_ms(),
            )
            .await
    }

    /// Verify a token and apply the block list and revocations. Counts nothing; callers count
    /// by surface.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, Reject> {
        let now_ms = self.now_ms();
        let claims = self.keys.verify(token, now_ms).inspect_err(|r| match r {
            Reject::Expired | Reject::NotYetValid => crate::reached!("auth.expired"),
            _ => crate::reached!("auth.bad_token"),
        })?;
        if self.cfg.blocked_users.contains(&claims.sub) {
            return Err(Reject::Blocked);
        }
        // A revocation covers every token of a refresh chain that began before it.
        let issued_ms = claims.authenticated_at().unwrap_or(0).saturating_mul(1000);
        match self
            .shared
            .is_revoked(claims.jti.as_deref(), &claims.sub, issued_ms, now_ms)
            .await
        {
            Ok(false) => {}
            Ok(true) => {
                crate::reached!("auth.revoked");
                return Err(Reject::Revoked);
            }
            Err(crate::auth::Unavailable) => return Err(Reject::Unavailable),
        }
        Ok(Principal {
            claims,
            anonymous: false,
        })
    }

    /// The scrape-time values of the metrics.
    pub fn snapshot(&self) -> Snapshot {
        let status = self.storage.status();
        let (heap_bytes, rss_bytes) = crate::metrics::process_memory();
        Snapshot {
            gc_backlog: self.engine.gc_backlog().unwrap_or(0),
            memories_total: self.engine.total().unwrap_or(0),
            breaker_state: status.breaker_state,
            breaker_opens: status.opens_total,
            eventbus_backlog: self.hub.len() as u64,
            heap_bytes,
            rss_bytes,
            redis_tls_disabled: self.redis_tls_disabled,
            journal_len: status.journal_len as u64,
            shared_state_fallbacks: self.shared.fallbacks(),
            ratelimit_buckets: self.shared.local_buckets() as u64,
        }
    }

    /// A fresh token id from the seeded RNG.
    /// A token id no other boot or instance mints: the instance's tag, the engine's boot
    /// generation and a draw from this boot's RNG (SplitMix64 never repeats an output within a
    /// boot).
    pub fn new_jti(&self) -> String {
        if crate::planted!(JtiRepeats) {
            // Planted: only the seeded RNG, which every restart (and every instance started
            // with the same seed) replays from the start.
            return format!("{:016x}{:016x}", self.rng.next_u64(), self.rng.next_u64());
        }
        format!(
            "{:08x}{:08x}{:016x}",
            self.instance_tag,
            self.engine.generation() as u32,
            self.rng.next_u64()
        )
    }
}

/// The breaker state as `/status` and the stream name it.
pub fn breaker_name(state: u8) -> &'static str {
    crate::resilience::StateKind::from_gauge(state).map_or("unknown", |k| k.name())
}

/// Open WebSocket connections: the cap, each user's own cap, the per-user count, and a way to
/// close them by subject (revocation) or all at once (shutdown).
#[derive(Debug)]
pub struct Connections {
    max: usize,
    max_per_user: usize,
    open: AtomicUsize,
    /// Sockets accepted with the cap full, waiting for their 503 (at most `max`).
    refusing: AtomicUsize,
    next_id: AtomicU64,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    by_id: BTreeMap<u64, Entry>,
    /// Registered connections per subject (the active-users gauge).
    users: BTreeMap<String, usize>,
    /// Places held per subject under its own cap: admitted handshakes and open connections.
    held: BTreeMap<String, usize>,
}

#[derive(Debug)]
struct Entry {
    sub: String,
    jti: Option<String>,
    close: watch::Sender<Option<CloseCode>>,
}

/// A reserved place under the connection cap and, once [`Slot::hold_for`] took it, under its
/// user's own cap; both are given back on drop — whichever way the handshake or the connection
/// ends (refused, closed, failed, timed out, revoked, cancelled), since every path drops it.
#[derive(Debug)]
pub struct Slot {
    conns: Arc<Inner>,
    /// The subject this place is also held for.
    user: Option<String>,
}

impl Slot {
    /// Hold this place for `user` too: `false` when the user already holds
    /// `max_connections_per_user` places on this instance (a second call holds nothing more).
    pub fn hold_for(&mut self, user: &str) -> bool {
        if self.user.is_some() {
            return true;
        }
        let c = &self.conns.conns;
        let mut t = sync::lock(&c.table);
        let n = t.held.get(user).copied().unwrap_or(0);
        if n >= c.max_per_user {
            return false;
        }
        t.held.insert(user.to_owned(), n + 1);
        self.user = Some(user.to_owned());
        true
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let c = &self.conns.conns;
        if let Some(user) = self.user.take() {
            let mut t = sync::lock(&c.table);
            if let Some(n) = t.held.get_mut(&user) {
                *n -= 1;
                if *n == 0 {
                    t.held.remove(&user);
                }
            }
        }
        c.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A socket accepted with the cap full, counted while it waits for its answer.
#[derive(Debug)]
pub struct Refusal {
    conns: Arc<Inner>,
}

impl Drop for Refusal {
    fn drop(&mut self) {
        self.conns.conns.refusing.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What an accepted socket on a WebSocket port holds, from accept to close (and what its
/// requests carry as an extension): its place under the cap, which a handshake takes over, or
/// — accepted with the cap full — its count among the refusals.
#[derive(Debug, Clone)]
pub struct Place {
    slot: Arc<Mutex<Option<Slot>>>,
    /// Held, not read: the count among the refusals ends with the socket.
    _refusal: Option<Arc<Refusal>>,
}

impl Place {
    pub fn holding(slot: Slot) -> Self {
        Place {
            slot: Arc::new(Mutex::new(Some(slot))),
            _refusal: None,
        }
    }

    pub fn refusing(r: Refusal) -> Self {
        Place {
            slot: Arc::new(Mutex::new(None)),
            _refusal: Some(Arc::new(r)),
        }
    }

    /// The place, if the socket still holds one.
    pub fn take(&self) -> Option<Slot> {
        sync::lock(&self.slot).take()
    }
}

/// A registered connection; deregisters on drop. `closed` yields the close code the server
/// wants (4003 revoked, 1001 shutting down).
#[derive(Debug)]
pub struct Registered {
    pub id: u64,
    pub closed: watch::Receiver<Option<CloseCode>>,
    state: AppState,
    _slot: Slot,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let c = &self.state.conns;
        let mut t = sync::lock(&c.table);
        if let Some(e) = t.by_id.remove(&self.id)
            && let Some(n) = t.users.get_mut(&e.sub)
        {
            *n -= 1;
            if *n == 0 {
                t.users.remove(&e.sub);
            }
        }
        self.state
            .metrics
            .ws_active_connections
            .set(t.by_id.len() as i64);
        self.state.metrics.ws_active_users.set(t.users.len() as i64);
    }
}

impl Connections {
    fn new(max: usize, max_per_user: usize) -> Self {
        Self {
            max,
            max_per_user,
            open: AtomicUsize::new(0),
            refusing: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            table: Mutex::new(Table::default()),
        }
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    pub fn users(&self) -> usize {
        sync::lock(&self.table).users.len()
    }

    /// The places `user` holds under its own cap (admitted handshakes and open connections).
    pub fn held_by(&self, user: &str) -> usize {
        sync::lock(&self.table).held.get(user).copied().unwrap_or(0)
    }

    /// Take a place under the cap, or `None` when full.
    pub fn reserve(state: &AppState) -> Option<Slot> {
        let c = &state.conns;
        c.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < c.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot {
                conns: state.inner.clone(),
                user: None,
            })
    }

    /// Count a socket accepted with the cap full while it waits for its 503, or `None` when
    /// `max` such sockets already wait.
    pub fn refusing(state: &AppState) -> Option<Refusal> {
        let c = &state.conns;
        c.refusing
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < c.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Refusal {
                conns: state.inner.clone(),
            })
    }

    /// Register an upgraded connection.
    pub fn register(state: &AppState, slot: Slot, who: &Principal) -> Registered {
        let c = &state.conns;
        let id = c.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        let mut t = sync::lock(&c.table);
        t.by_id.insert(
            id,
            Entry {
                sub: who.claims.sub.clone(),
                jti: who.claims.jti.clone(),
                close: tx,
            },
        );
        *t.users.entry(who.claims.sub.clone()).or_insert(0) += 1;
        state
            .metrics
            .ws_active_connections
            .set(t.by_id.len() as i64);
        state.metrics.ws_active_users.set(t.users.len() as i64);
        Registered {
            id,
            closed: rx,
            state: state.clone(),
            _slot: slot,
        }
    }

    /// Ask every connection of `sub` (or holding `jti`) to close with `code`; how many.
    pub fn close_matching(&self, sub: Option<&str>, jti: Option<&str>, code: CloseCode) -> usize {
        let t = sync::lock(&self.table);
        let mut n = 0;
        for e in t.by_id.values() {
            let hit =
                sub.is_some_and(|s| s == e.sub) || jti.is_some_and(|j| Some(j) == e.jti.as_deref());
            if hit {
                let _ = e.close.send(Some(code));
                n += 1;
            }
        }
        n
    }

    pub fn close_all(&self, code: CloseCode) {
        let t = sync::lock(&self.table);
        for e in t.by_id.values() {
            let _ = e.close.send(Some(code));
        }
    }
}

/// The three listeners of a server.
#[derive(Debug)]
pub struct Listeners<H, W, S> {
    pub http: H,
    pub ws: W,
    pub stream: S,
}

/// How long a graceful shutdown waits for the WebSockets it closed: each finishes what it was
/// doing, sends its 1001 and waits a bounded time for the peer's close.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

/// Serve until `shutdown` completes, then stop accepting, close open WebSockets with 1001
/// (going away), let in-flight HTTP requests finish, and return once the WebSockets have closed
/// (at most 5 s later).
pub async fn serve<H, W, S>(
    listeners: Listeners<H, W, S>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    H: Listener,
    H::Addr: std::fmt::Debug,
    W: Listener,
    W::Addr: std::fmt::Debug,
    S: Listener,
    S::Addr: std::fmt::Debug,
{
    let (stop_tx, stop_rx) = watch::channel(false);
    let hub = tokio::spawn(stream::hub(state.clone(), stop_rx.clone()));
    let recovery = state
        .storage
        .spawn_recovery(Duration::from_millis(state.cfg.recovery_period_ms));
    let stopper = {
        let state = state.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: closing WebSockets, finishing requests");
            let _ = stop_tx.send(true);
            state.conns.close_all(CloseCode::GoingAway);
        }
    };
    use conn::Counted;
    let http = conn::serve(
        listeners.http,
        http::router(state.clone()),
        state.clone(),
        Counted::No,
        stop_rx.clone(),
    );
    let ws = conn::serve(
        listeners.ws,
        ws::router(state.clone()),
        state.clone(),
        Counted::Yes,
        stop_rx.clone(),
    );
    let st = conn::serve(
        listeners.stream,
        stream::router(state.clone()),
        state.clone(),
        Counted::Yes,
        stop_rx.clone(),
    );
    let (_, a, b, c) = tokio::join!(stopper, http, ws, st);
    // Upgraded connections live outside the listeners' accounting: wait for every WebSocket
    // asked to close (each finishes its command in flight, sends 1001 and waits a bounded time
    // for the peer's close) before returning, so the process never exits under them.
    let drained = async {
        while state.conns.open() > 0 && !crate::planted!(ShutdownAbandonsSockets) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout(SHUTDOWN_DRAIN, drained).await.is_err() {
        tracing::warn!(
            open = state.conns.open(),
            "WebSockets still open after the shutdown drain; exiting under them"
        );
    }
    recovery.abort();
    hub.abort();
    a.and(b).and(c)
}
