//! Circuit breaker and degraded mode around a storage adapter (SPEC §1.6).
//!
//! [`ResilientStorage`] wraps any [`Storage`] and is one itself, so the engine cannot tell it is
//! there. Every call runs under `CB_TIMEOUT`; outage errors (unavailable, timed out) feed the
//! [`breaker`]; while storage is unreachable reads are served from an in-memory view and writes
//! are acknowledged only once they are in the bounded [`journal`], which is replayed in order
//! when a probe finds storage back. A full journal refuses the write: a write is never
//! acknowledged and then lost.
//!
//! # Layout
//! - [`breaker`] — the breaker as a pure state machine on the injected clock.
//! - [`journal`] — the bounded, numbered write journal.
//! - [`journal_log`] — its durable copy on local disk, replayed at boot (SPEC §1.9).
//! - [`degraded`] — [`ResilienceCore`]: breaker, journal and view behind one `sync` lock, every
//!   decision one short critical section; loom models (`tests/loom_resilience.rs`) race it.
//! - this module — the async wrapper: timeouts, storage I/O between the core's sections, replay.

pub mod breaker;
pub mod degraded;
pub mod journal;
pub mod journal_log;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

pub use breaker::{
    Breaker, BreakerConfig, BreakerState, Outcome, Permit, StateKind, Transition, legal,
};
pub use degraded::{ResilienceCore, ResilienceStatus};
pub use journal::{Journal, JournalFull, JournalOp};
pub use journal_log::{FileLog, JournalLog, MemLog};

use crate::clock::{Instant, SharedClock};
use crate::error::StorageError;
use crate::storage::{SharedStorage, Storage, StorageResult};
use crate::sync::{AtomicBool, Ordering};
use degraded::{ReadRoute, ReplayStep, WriteRoute, breaker_open};

/// The key `/ready` reads: nothing stores it, so the read is as cheap as storage allows.
const READY_PROBE_KEY: &str = "ready:probe";

/// `CB_FAILURES`, `CB_WINDOW`, `CB_TIMEOUT` and `DEGRADED_JOURNAL_MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResilienceConfig {
    /// Consecutive outage failures that open the breaker (`CB_FAILURES`, 5).
    pub failures: u32,
    /// How long the breaker stays open before a probe (`CB_WINDOW`, 30000 ms).
    pub window_ms: u64,
    /// Time limit of each storage call (`CB_TIMEOUT`, 20000 ms).
    pub timeout_ms: u64,
    /// Writes the degraded journal holds (`DEGRADED_JOURNAL_MAX`, 10000).
    pub journal_max: usize,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        let b = BreakerConfig::default();
        Self {
            failures: b.failures,
            window_ms: b.window_ms,
            timeout_ms: b.timeout_ms,
            journal_max: 10_000,
        }
    }
}

impl ResilienceConfig {
    pub fn breaker(&self) -> BreakerConfig {
        BreakerConfig {
            failures: self.failures,
            window_ms: self.window_ms,
            timeout_ms: self.timeout_ms,
        }
    }
}

/// A storage adapter behind a circuit breaker, with degraded mode. Cheap to clone: clones share
/// one breaker, journal and view.
#[derive(Debug, Clone)]
pub struct ResilientStorage {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    inner: SharedStorage,
    core: ResilienceCore,
    clock: SharedClock,
    timeout_ms: u64,
    /// A background replay has been spawned and has not started yet; saves spawning one per call.
    kicked: AtomicBool,
}

/// A call in flight. If its future is dropped before it reports (the caller gave up), the permit
/// is reported abandoned, so a dropped probe cannot leave the breaker half-open for ever.
struct Call<'a> {
    shared: &'a Shared,
    permit: Permit,
    armed: bool,
}

impl<'a> Call<'a> {
    fn new(shared: &'a Shared, permit: Permit) -> Self {
        Self {
            shared,
            permit,
            armed: true,
        }
    }

    fn disarm(mut self) -> Permit {
        self.armed = false;
        self.permit
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.core.abandon(self.permit, self.shared.now());
        }
    }
}

impl ResilientStorage {
    /// Storage whose degraded journal lives in memory only: what it holds when the process ends
    /// is lost. For storage that does not outlive the process either (memory) and for tests;
    /// anything else uses [`with_log`](Self::with_log).
    pub fn new(inner: SharedStorage, cfg: ResilienceConfig, clock: SharedClock) -> Self {
        Self::from_core(
            inner,
            ResilienceCore::new(cfg.breaker(), cfg.journal_max),
            cfg,
            clock,
        )
    }

    /// Storage whose degraded journal is kept in `log`. What the log holds from an earlier run
    /// (writes acknowledged while storage was unreachable, never replayed) is loaded first in
    /// line: reads come from the degraded view until it is replayed, so an engine opens only
    /// once storage has it ([`AppState::open`](crate::api::AppState::open) replays first).
    pub fn with_log(
        inner: SharedStorage,
        cfg: ResilienceConfig,
        clock: SharedClock,
        log: Arc<dyn JournalLog>,
    ) -> std::io::Result<Self> {
        let (log, loaded): (Arc<dyn JournalLog>, _) = if crate::planted!(JournalVolatile) {
            // Planted: the journal is kept in process memory, as before it was durable.
            (Arc::new(MemLog::new()), Vec::new())
        } else {
            let loaded = log.load()?;
            if !loaded.is_empty() {
                crate::reached!("journal.loaded_at_boot");
                tracing::warn!(
                    entries = loaded.len(),
                    journal = %log.describe(),
                    "degraded journal from an earlier run: replaying before opening"
                );
            }
            (log, loaded)
        };
        let core = ResilienceCore::with_log(cfg.breaker(), cfg.journal_max, log, loaded);
        Ok(Self::from_core(inner, core, cfg, clock))
    }

    fn from_core(
        inner: SharedStorage,
        core: ResilienceCore,
        cfg: ResilienceConfig,
        clock: SharedClock,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                inner,
                core,
                clock,
                timeout_ms: cfg.timeout_ms,
                kicked: AtomicBool::new(false),
            }),
        }
    }

    /// Breaker state, opens, journal fill and whether reads come from the view.
    pub fn status(&self) -> ResilienceStatus {
        self.shared.core.status()
    }

    /// The breaker's recent transitions, oldest first; every one satisfies [`legal`].
    pub fn transitions(&self) -> Vec<Transition> {
        self.shared.core.transitions()
    }

    /// The synchronous core, for checkers.
    pub fn core(&self) -> &ResilienceCore {
        &self.shared.core
    }

    /// Whether storage answers now, for `/ready`: one read of a key nothing uses, through the
    /// breaker and bounded by `within`. Nothing is written, and while the breaker is open (reads
    /// come from the view) nothing reaches storage at all — a probe storm costs storage nothing.
    pub async fn probe(&self, within: Duration) -> bool {
        if crate::planted!(ReadyBypassesBreaker) {
            // Planted: straight to the adapter, as before (a write transaction on redb).
            let init = tokio::time::timeout(within, self.shared.inner.init()).await;
            return matches!(init, Ok(Ok(())));
        }
        let read = tokio::time::timeout(within, self.get(READY_PROBE_KEY)).await;
        let s = self.status();
        matches!(read, Ok(Ok(_))) && !s.degraded && s.breaker_state == 0
    }

    /// The wrapped adapter.
    pub fn inner(&self) -> &SharedStorage {
        &self.shared.inner
    }

    /// Try to leave degraded mode: replay the journal in order if the breaker lets a call through
    /// (after an open window the first replayed write is the probe), or, with nothing to replay,
    /// probe an open breaker with `init`. Returns how many journal entries reached storage. Safe
    /// to call at any time and from several tasks: one replays, the others return at once.
    pub async fn recover(&self) -> usize {
        self.shared.recover().await
    }

    /// Call [`recover`](Self::recover) every `period` until the storage is dropped. Operations
    /// also start a replay on their own when one is due, but an idle server needs this to leave
    /// degraded mode. Must be called inside a tokio runtime.
    pub fn spawn_recovery(&self, period: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(shared) = weak.upgrade() else { break };
                shared.recover().await;
            }
        })
    }
}

impl Shared {
    fn now(&self) -> Instant {
        self.clock.now()
    }

    async fn bounded<T>(&self, fut: impl Future<Output = StorageResult<T>>) -> StorageResult<T> {
        match tokio::time::timeout(Duration::from_millis(self.timeout_ms), fut).await {
            Ok(r) => r,
            Err(_) => {
                crate::reached!("storage.timeout");
                Err(StorageError::Timeout(self.timeout_ms))
            }
        }
    }

    /// Start a background replay when one is due, so traffic alone brings the journal home.
    fn kick(self: &Arc<Self>) {
        if !self.core.wants_replay(self.now()) || self.kicked.swap(true, Ordering::SeqCst) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.kicked.store(false, Ordering::SeqCst);
            return;
        };
        let shared = Arc::clone(self);
        rt.spawn(async move {
            shared.kicked.store(false, Ordering::SeqCst);
            shared.replay().await;
        });
    }

    async fn recover(&self) -> usize {
        if self.core.status().journal_len == 0 {
            if let Some(permit) = self.core.admit_probe(self.now()) {
                crate::reached!("breaker.probe_by_init");
                let call = Call::new(self, permit);
                let r = self.bounded(self.inner.init()).await;
                self.core.record(call.disarm(), &r, self.now());
            }
            return 0;
        }
        self.replay().await
    }

    async fn replay(&self) -> usize {
        let Some(mut replay) = self.core.begin_replay() else {
            return 0;
        };
        let mut replayed = 0;
        while let ReplayStep::Apply { seq, op, permit } = replay.next(self.now()) {
            let call = Call::new(self, permit);
            let r = self.bounded(self.apply(&op)).await;
            if !replay.done(seq, call.disarm(), r, self.now()) {
                break;
            }
            replayed += 1;
        }
        if replayed > 0 {
            tracing::info!(replayed, "degraded journal replayed");
        }
        replayed
    }

    async fn apply(&self, op: &JournalOp) -> StorageResult<()> {
        match op {
            JournalOp::Set { key, value } => self.inner.set(key, value).await,
            JournalOp::Del { key } => self.inner.del(key).await,
        }
    }

    /// The write protocol: journal, or write through and journal on an outage.
    async fn write<F, Fut>(self: &Arc<Self>, ops: Vec<JournalOp>, through: F) -> StorageResult<()>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = StorageResult<()>>,
    {
        self.kick();
        match self.core.begin_write(ops, self.now())? {
            WriteRoute::Journaled => Ok(()),
            WriteRoute::Through { permit, ops } => {
                let call = Call::new(self, permit);
                let r = self.bounded(through()).await;
                self.core.finish_write(ops, call.disarm(), r, self.now())
            }
        }
    }
}

#[async_trait]
impl Storage for ResilientStorage {
    fn backend(&self) -> &'static str {
        self.shared.inner.backend()
    }

    async fn init(&self) -> StorageResult<()> {
        let s = &self.shared;
        let permit = s.core.admit(s.now()).ok_or_else(breaker_open)?;
        let call = Call::new(s, permit);
        let r = s.bounded(s.inner.init()).await;
        s.core.record(call.disarm(), &r, s.now());
        r
    }

    async fn get(&self, key: &str) -> StorageResult<Option<Value>> {
        let s = &self.shared;
        s.kick();
        match s.core.begin_read(s.now()) {
            ReadRoute::View => Ok(s.core.view_value(key)),
            ReadRoute::Storage { permit, write_gen } => {
                let call = Call::new(s, permit);
                let r = s.bounded(s.inner.get(key)).await;
                s.core.finish_get(key, call.disarm(), write_gen, r, s.now())
            }
        }
    }

    async fn set(&self, key: &str, value: &Value) -> StorageResult<()> {
        let op = JournalOp::Set {
            key: key.to_owned(),
            value: value.clone(),
        };
        let inner = &self.shared.inner;
        self.shared.write(vec![op], || inner.set(key, value)).await
    }

    async fn del(&self, key: &str) -> StorageResult<()> {
        let op = JournalOp::Del {
            key: key.to_owned(),
        };
        let inner = &self.shared.inner;
        self.shared.write(vec![op], || inner.del(key)).await
    }

    async fn keys(&self, prefix: &str) -> StorageResult<Vec<String>> {
        let s = &self.shared;
        s.kick();
        match s.core.begin_read(s.now()) {
            ReadRoute::View => s.core.view_keys(prefix),
            ReadRoute::Storage { permit, .. } => {
                let call = Call::new(s, permit);
                let r = s.bounded(s.inner.keys(prefix)).await;
                s.core.finish_keys(prefix, call.disarm(), r, s.now())
            }
        }
    }

    async fn atomic_incr(&self, key: &str, delta: i64) -> StorageResult<i64> {
        let s = &self.shared;
        s.kick();
        let permit = s.core.begin_incr(s.now())?;
        let call = Call::new(s, permit);
        let r = s.bounded(s.inner.atomic_incr(key, delta)).await;
        s.core.finish_incr(key, call.disarm(), r, s.now())
    }

    async fn set_many(&self, entries: &[(String, Value)]) -> StorageResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let ops = entries
            .iter()
            .map(|(key, value)| JournalOp::Set {
                key: key.clone(),
                value: value.clone(),
            })
            .collect();
        let inner = &self.shared.inner;
        self.shared.write(ops, || inner.set_many(entries)).await
    }

    async fn del_many(&self, keys: &[String]) -> StorageResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let ops = keys
            .iter()
            .map(|key| JournalOp::Del { key: key.clone() })
            .collect();
        let inner = &self.shared.inner;
        self.shared.write(ops, || inner.del_many(keys)).await
    }

    async fn scan_prefix(&self, prefix: &str) -> StorageResult<Vec<(String, Value)>> {
        let s = &self.shared;
        s.kick();
        match s.core.begin_read(s.now()) {
            ReadRoute::View => s.core.view_scan(prefix),
            ReadRoute::Storage { permit, write_gen } => {
                let call = Call::new(s, permit);
                let r = s.bounded(s.inner.scan_prefix(prefix)).await;
                s.core
                    .finish_scan(prefix, call.disarm(), write_gen, r, s.now())
            }
        }
    }
}

#[cfg(test)]
#[cfg(not(spiral_loom))]
mod tests;
