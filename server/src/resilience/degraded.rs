//! The synchronous heart of degraded mode: breaker, journal and in-memory view behind one lock
//! of the `sync` facade, with every decision the async [`ResilientStorage`] makes as one short
//! critical section. Storage I/O happens between sections, never inside one — so loom models
//! (`server/tests/loom_resilience.rs`) race exactly the protocol the server runs.
//!
//! Protocols (each step one critical section):
//! - write: [`begin_write`](ResilienceCore::begin_write) either journals the write (acknowledged)
//!   or admits a write-through; after the storage call [`finish_write`](ResilienceCore::finish_write)
//!   acknowledges it, or journals it on an outage — past the journal's bound if need be: it may
//!   have landed, so only a write that never reached storage is refused for a full journal.
//! - read: [`begin_read`](ResilienceCore::begin_read) chooses storage or the view; a storage
//!   answer refreshes the view only if no write touched the view meanwhile.
//! - replay: one [`Replay`] at a time copies the journal's front, writes it, then acks it.
//!
//! [`ResilientStorage`]: super::ResilientStorage

use std::collections::BTreeMap;

use serde_json::Value;

use super::breaker::{Breaker, BreakerConfig, Outcome, Permit, StateKind, Transition};
use super::journal::{Journal, JournalOp};
use super::journal_log::{JournalLog, MemLog};
use crate::clock::Instant;
use crate::error::StorageError;
use crate::sync::{AtomicBool, Mutex, Ordering, lock};

/// What `status()` reports; the `breaker_state` and `circuit_breaker_open_total` metrics and the
/// degraded-mode gauges read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ResilienceStatus {
    /// 0 closed, 1 open, 2 half-open.
    pub breaker_state: u8,
    pub opens_total: u64,
    pub journal_len: usize,
    pub journal_max: usize,
    /// The breaker is not closed or writes are waiting in the journal: reads come from the view.
    pub degraded: bool,
}

#[derive(Debug)]
struct State {
    breaker: Breaker,
    journal: Journal,
    /// The journal's durable copy: every append is in it before the write is acknowledged, every
    /// ack before the entry leaves `journal`.
    log: std::sync::Arc<dyn JournalLog>,
    /// Every value this process has read from or written to storage, as storage will hold it once
    /// the journal is replayed. Degraded reads are served from here.
    view: BTreeMap<String, Value>,
    /// Bumped whenever a write changes (or decides not to change) the view; a storage read that
    /// saw it move may be stale and must not refresh the view.
    write_gen: u64,
    /// Prefixes the view holds completely: a scan of storage succeeded for them, and every write
    /// since went through the view. Only these can be listed from the view; listing anything
    /// else while storage is unreachable would present a partial (at boot: empty) picture as the
    /// whole — an engine opened on it would lose every acknowledged node it did not see.
    complete: Vec<String>,
}

impl State {
    fn covers(&self, prefix: &str) -> bool {
        self.complete.iter().any(|c| prefix.starts_with(c.as_str()))
    }

    /// The view under `prefix`, if it holds all of it.
    fn listed<T>(
        &self,
        prefix: &str,
        f: impl Fn((&String, &Value)) -> T,
    ) -> Result<Vec<T>, StorageError> {
        if !self.covers(prefix) {
            crate::reached!("view.list_refused");
            return Err(StorageError::Unavailable(format!(
                "storage unreachable and `{prefix}` was never loaded: the degraded view cannot list it"
            )));
        }
        Ok(prefixed(&self.view, prefix).map(f).collect())
    }
}

/// Where a write goes.
#[derive(Debug)]
pub enum WriteRoute {
    /// Journaled and acknowledged; storage will get it on replay.
    Journaled,
    /// Write these through to storage, then call [`ResilienceCore::finish_write`].
    Through { permit: Permit, ops: Vec<JournalOp> },
}

/// Where a read goes.
#[derive(Debug, Clone, Copy)]
pub enum ReadRoute {
    /// Serve it from the view.
    View,
    /// Ask storage, then report with the permit and this generation.
    Storage { permit: Permit, write_gen: u64 },
}

/// One replay step.
#[derive(Debug)]
pub enum ReplayStep {
    /// The journal is empty.
    Drained,
    /// The breaker refuses calls (open, or a probe is already in flight).
    Blocked,
    /// Write `op` to storage, then report with [`Replay::done`].
    Apply {
        seq: u64,
        op: JournalOp,
        permit: Permit,
    },
}

#[derive(Debug)]
pub struct ResilienceCore {
    state: Mutex<State>,
    replaying: AtomicBool,
}

fn outcome<T>(r: &Result<T, StorageError>) -> Outcome {
    match r {
        Err(e) if e.is_outage() => Outcome::Outage,
        _ => Outcome::Answered,
    }
}

fn apply(view: &mut BTreeMap<String, Value>, op: JournalOp) {
    match op {
        JournalOp::Set { key, value } => {
            view.insert(key, value);
        }
        JournalOp::Del { key } => {
            view.remove(&key);
        }
    }
}

fn prefixed<'a>(
    view: &'a BTreeMap<String, Value>,
    prefix: &'a str,
) -> impl Iterator<Item = (&'a String, &'a Value)> + 'a {
    view.range(prefix.to_owned()..)
        .take_while(move |(k, _)| k.starts_with(prefix))
}

impl ResilienceCore {
    /// A core whose journal lives in memory only (nothing of it survives the process).
    pub fn new(breaker: BreakerConfig, journal_max: usize) -> Self {
        Self::with_log(
            breaker,
            journal_max,
            std::sync::Arc::new(MemLog::new()),
            Vec::new(),
        )
    }

    /// A core over a durable journal `log`, holding `loaded` — what the log held at boot, as
    /// [`JournalLog::load`] returned it — first in line for replay. Until they are replayed,
    /// reads come from the view, which holds only them, so an engine cannot open on storage that
    /// lacks them.
    pub fn with_log(
        breaker: BreakerConfig,
        journal_max: usize,
        log: std::sync::Arc<dyn JournalLog>,
        loaded: Vec<JournalOp>,
    ) -> Self {
        let mut journal = Journal::new(journal_max.max(loaded.len()));
        let mut view = BTreeMap::new();
        for op in loaded {
            // Cannot fail: the journal was sized for them. Numbered 0.., as `load` renumbered.
            let _ = journal.append(op.clone());
            apply(&mut view, op);
        }
        Self {
            state: Mutex::new(State {
                breaker: Breaker::new(breaker),
                journal,
                log,
                view,
                complete: Vec::new(),
                write_gen: 0,
            }),
            replaying: AtomicBool::new(false),
        }
    }

    pub fn status(&self) -> ResilienceStatus {
        let st = lock(&self.state);
        let kind = st.breaker.kind();
        ResilienceStatus {
            breaker_state: kind.gauge(),
            opens_total: st.breaker.opens_total(),
            journal_len: st.journal.len(),
            journal_max: st.journal.max(),
            degraded: kind != StateKind::Closed || !st.journal.is_empty(),
        }
    }

    /// The breaker's recent transitions, oldest first, for checkers.
    pub fn transitions(&self) -> Vec<Transition> {
        lock(&self.state).breaker.transitions().copied().collect()
    }

    /// The journal's entries in replay order, for checkers.
    pub fn journal(&self) -> Vec<(u64, JournalOp)> {
        lock(&self.state).journal.iter().cloned().collect()
    }

    /// Is there a journal to replay and would the breaker let a replay write through?
    pub fn wants_replay(&self, now: Instant) -> bool {
        if self.replaying.load(Ordering::SeqCst) {
            return false;
        }
        let st = lock(&self.state);
        !st.journal.is_empty() && st.breaker.would_admit(now)
    }

    // --- plain calls (init, counters) -------------------------------------------------------

    /// Admit a call that bypasses journal and view (`init`). `None`: fail fast.
    pub fn admit(&self, now: Instant) -> Option<Permit> {
        lock(&self.state).breaker.admit(now)
    }

    /// Admit a health probe, only if the breaker is open and its window has passed (a replay
    /// with nothing to replay still has to find out whether storage is back).
    pub fn admit_probe(&self, now: Instant) -> Option<Permit> {
        let mut st = lock(&self.state);
        if st.breaker.kind() == StateKind::Open {
            st.breaker.admit(now)
        } else {
            None
        }
    }

    /// Report a call admitted by [`admit`](Self::admit).
    pub fn record<T>(&self, permit: Permit, result: &Result<T, StorageError>, now: Instant) {
        lock(&self.state)
            .breaker
            .record(permit, outcome(result), now);
    }

    /// The caller dropped a call mid-flight; see [`Outcome::Abandoned`].
    pub fn abandon(&self, permit: Permit, now: Instant) {
        lock(&self.state)
            .breaker
            .record(permit, Outcome::Abandoned, now);
    }

    /// Admit a counter update. Counters cannot be journaled (another instance may share them), so
    /// while degraded they are refused.
    pub fn begin_incr(&self, now: Instant) -> Result<Permit, StorageError> {
        let mut st = lock(&self.state);
        let permit = (st.journal.is_empty())
            .then(|| st.breaker.admit(now))
            .flatten();
        permit.ok_or_else(|| {
            crate::reached!("counter.refused_degraded");
            if st.journal.is_empty() {
                breaker_open()
            } else {
                StorageError::Unavailable("degraded mode: counters cannot be journaled".into())
            }
        })
    }

    pub fn finish_incr(
        &self,
        key: &str,
        permit: Permit,
        result: Result<i64, StorageError>,
        now: Instant,
    ) -> Result<i64, StorageError> {
        let mut st = lock(&self.state);
        st.breaker.record(permit, outcome(&result), now);
        if let Ok(n) = result {
            st.write_gen += 1;
            if !st.journal.has_pending(key) {
                st.view.insert(key.to_owned(), Value::from(n));
            }
        }
        result
    }

    // --- writes -----------------------------------------------------------------------------

    /// Route a write. Journaled when writes are already queued (a write-through would overtake
    /// them) or the breaker refuses; otherwise through to storage.
    pub fn begin_write(
        &self,
        ops: Vec<JournalOp>,
        now: Instant,
    ) -> Result<WriteRoute, StorageError> {
        let mut st = lock(&self.state);
        if st.journal.is_empty()
            && let Some(permit) = st.breaker.admit(now)
        {
            return Ok(WriteRoute::Through { permit, ops });
        }
        Self::enqueue(&mut st, ops)?;
        Ok(WriteRoute::Journaled)
    }

    /// Report a write-through. An outage journals it instead (acknowledged if there is room); a
    /// write is acknowledged only once it is in storage or in the journal.
    pub fn finish_write(
        &self,
        ops: Vec<JournalOp>,
        permit: Permit,
        result: Result<(), StorageError>,
        now: Instant,
    ) -> Result<(), StorageError> {
        let mut st = lock(&self.state);
        st.breaker.record(permit, outcome(&result), now);
        st.write_gen += 1;
        match result {
            Ok(()) => {
                for op in ops {
                    // A journaled write to this key arrived while ours was in flight; it will
                    // land after ours on replay, so the view already shows the final value.
                    if !st.journal.has_pending(op.key()) {
                        apply(&mut st.view, op);
                    }
                }
                Ok(())
            }
            Err(e) if e.is_outage() && crate::planted!(JournalFullLands) => {
                // Planted: an in-doubt write meets the bound like a new one, and is refused
                // although it may have landed.
                Self::enqueue(&mut st, ops)
            }
            Err(e) if e.is_outage() => {
                // It may have landed: journal it whatever the bound, so that it lands for sure
                // (a refusal here would be a lie if it had).
                crate::reached!(
                    "journal.in_doubt_past_bound" if st.journal.len() + ops.len() > st.journal.max()
                );
                let (first, _) = st.journal.append_in_doubt(ops.clone());
                let timeout_ms = st.breaker.config().timeout_ms;
                if crate::planted!(InDoubtDropped) {
                    // Planted: a disk error takes the entry back like a new write's, so the
                    // write may have landed while its caller was told to take it back.
                    return Self::persist(&mut st, first, ops)
                        .map_err(|_| StorageError::Timeout(timeout_ms));
                }
                if let Err(e) = st.log.append(first, &ops) {
                    // The disk refused the entry. Taking it back would leave the outcome to
                    // chance (it may have landed); keeping it in memory settles it: it lands on
                    // replay unless this process stops first (and then the next boot rebuilds
                    // from whatever storage holds). Not durable, so not acknowledged: the caller
                    // hears `timeout`, and an index counts it as done (StorageError::InDoubt).
                    crate::reached!("journal.in_doubt_undurable");
                    tracing::warn!(error = %e, log = %st.log.describe(), "in-doubt write kept in memory only");
                    Self::show(&mut st, ops);
                    return Err(StorageError::InDoubt(timeout_ms));
                }
                crate::reached!("journal.appended");
                Self::show(&mut st, ops);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn enqueue(st: &mut State, ops: Vec<JournalOp>) -> Result<(), StorageError> {
        let (first, _) = st.journal.append_all(ops.clone()).map_err(|full| {
            crate::reached!("journal.full");
            StorageError::JournalFull(full.max)
        })?;
        Self::persist(st, first, ops)
    }

    /// Make entries `first..` (just appended: `ops`) durable and show them in the view; on a
    /// disk error take them back.
    fn persist(st: &mut State, first: u64, ops: Vec<JournalOp>) -> Result<(), StorageError> {
        if let Err(e) = st.log.append(first, &ops) {
            crate::reached!("journal.disk_error");
            // Not durable, so not acknowledged: take it back.
            st.journal.truncate(first);
            return Err(StorageError::Unavailable(format!(
                "degraded journal {}: {e}",
                st.log.describe()
            )));
        }
        crate::reached!("journal.appended");
        Self::show(st, ops);
        Ok(())
    }

    /// Journaled writes `ops` will land: reads see them from now on.
    fn show(st: &mut State, ops: Vec<JournalOp>) {
        st.write_gen += 1;
        for op in ops {
            apply(&mut st.view, op);
        }
    }

    // --- reads ------------------------------------------------------------------------------

    /// Storage answers reads only when it is healthy and nothing waits in the journal (storage
    /// does not have those writes yet); otherwise the view does.
    pub fn begin_read(&self, now: Instant) -> ReadRoute {
        let mut st = lock(&self.state);
        if !st.journal.is_empty() {
            return ReadRoute::View;
        }
        match st.breaker.admit(now) {
            Some(permit) => ReadRoute::Storage {
                permit,
                write_gen: st.write_gen,
            },
            None => ReadRoute::View,
        }
    }

    /// The view's value for `key`: what a degraded read answers.
    pub fn view_value(&self, key: &str) -> Option<Value> {
        crate::reached!("view.read");
        lock(&self.state).view.get(key).cloned()
    }

    /// The view's keys under `prefix` — refused unless the view holds all of the prefix.
    pub fn view_keys(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        lock(&self.state).listed(prefix, |(k, _)| k.clone())
    }

    /// The view's entries under `prefix` — refused unless the view holds all of the prefix.
    pub fn view_scan(&self, prefix: &str) -> Result<Vec<(String, Value)>, StorageError> {
        lock(&self.state).listed(prefix, |(k, v)| (k.clone(), v.clone()))
    }

    /// Report a storage `get`; an outage falls back to the view.
    pub fn finish_get(
        &self,
        key: &str,
        permit: Permit,
        write_gen: u64,
        result: Result<Option<Value>, StorageError>,
        now: Instant,
    ) -> Result<Option<Value>, StorageError> {
        let mut st = lock(&self.state);
        st.breaker.record(permit, outcome(&result), now);
        match result {
            Ok(v) => {
                if st.write_gen == write_gen && st.journal.is_empty() {
                    match &v {
                        Some(v) => {
                            st.view.insert(key.to_owned(), v.clone());
                        }
                        None => {
                            st.view.remove(key);
                        }
                    }
                }
                Ok(v)
            }
            Err(e) if e.is_outage() => Ok(st.view.get(key).cloned()),
            Err(e) => Err(e),
        }
    }

    /// Report a storage `keys`; an outage falls back to the view.
    pub fn finish_keys(
        &self,
        prefix: &str,
        permit: Permit,
        result: Result<Vec<String>, StorageError>,
        now: Instant,
    ) -> Result<Vec<String>, StorageError> {
        let mut st = lock(&self.state);
        st.breaker.record(permit, outcome(&result), now);
        match result {
            Err(e) if e.is_outage() => st.listed(prefix, |(k, _)| k.clone()),
            other => other,
        }
    }

    /// Report a storage `scan_prefix`: a fresh scan replaces the view under `prefix`; an outage
    /// falls back to the view.
    pub fn finish_scan(
        &self,
        prefix: &str,
        permit: Permit,
        write_gen: u64,
        result: Result<Vec<(String, Value)>, StorageError>,
        now: Instant,
    ) -> Result<Vec<(String, Value)>, StorageError> {
        let mut st = lock(&self.state);
        st.breaker.record(permit, outcome(&result), now);
        match result {
            Ok(all) => {
                if st.write_gen == write_gen && st.journal.is_empty() {
                    let stale: Vec<String> =
                        prefixed(&st.view, prefix).map(|(k, _)| k.clone()).collect();
                    for k in stale {
                        st.view.remove(&k);
                    }
                    for (k, v) in &all {
                        st.view.insert(k.clone(), v.clone());
                    }
                    if !st.covers(prefix) {
                        st.complete.push(prefix.to_owned());
                    }
                }
                Ok(all)
            }
            Err(e) if e.is_outage() => st.listed(prefix, |(k, v)| (k.clone(), v.clone())),
            Err(e) => Err(e),
        }
    }

    // --- replay -----------------------------------------------------------------------------

    /// Become the replayer, unless another one is running.
    pub fn begin_replay(&self) -> Option<Replay<'_>> {
        self.replaying
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .ok()
            .map(|_| Replay { core: self })
    }
}

/// The right to replay the journal; one exists at a time. Dropping it lets another replayer in.
#[derive(Debug)]
pub struct Replay<'a> {
    core: &'a ResilienceCore,
}

impl Replay<'_> {
    /// The next entry to write, with the breaker's leave to write it (after an open window this
    /// is the probe). The entry stays in the journal until [`done`](Self::done) acks it.
    pub fn next(&mut self, now: Instant) -> ReplayStep {
        let mut st = lock(&self.core.state);
        let Some((seq, op)) = st.journal.front() else {
            return ReplayStep::Drained;
        };
        match st.breaker.admit(now) {
            Some(permit) => ReplayStep::Apply { seq, op, permit },
            None => ReplayStep::Blocked,
        }
    }

    /// Report the write of entry `seq`. On success it leaves the journal; on failure it stays
    /// (a retry re-applies it, which is harmless) and replay stops. Returns whether to go on.
    pub fn done(
        &mut self,
        seq: u64,
        permit: Permit,
        result: Result<(), StorageError>,
        now: Instant,
    ) -> bool {
        let mut st = lock(&self.core.state);
        st.breaker.record(permit, outcome(&result), now);
        match result {
            Ok(()) => {
                // The ack is durable before the entry leaves the journal: until then every write
                // queues behind it, so no write-through can land before a crash would replay it.
                let drained = st.journal.len() == 1;
                if let Err(e) = st.log.ack(seq, drained) {
                    tracing::error!(seq, error = %e, "degraded journal: ack not durable, entry kept");
                    return false;
                }
                let acked = st.journal.ack(seq);
                debug_assert!(acked, "only the replayer pops the journal");
                crate::reached!("journal.replayed");
                true
            }
            Err(e) => {
                crate::reached!("journal.replay_failed");
                if crate::planted!(JournalDrop) {
                    // Planted: the write storage refused is dropped — acknowledged, then lost.
                    st.journal.ack(seq);
                }
                if !e.is_outage() {
                    // Storage answered but refused the entry. Dropping it would lose an
                    // acknowledged write, so it stays; the journal fills and new writes are
                    // refused, which an operator sees.
                    tracing::error!(seq, error = %e, "degraded journal: replay refused, entry kept");
                }
                false
            }
        }
    }
}

impl Drop for Replay<'_> {
    fn drop(&mut self) {
        self.core.replaying.store(false, Ordering::SeqCst);
    }
}

/// What a call the breaker refused fails with.
pub(super) fn breaker_open() -> StorageError {
    StorageError::Unavailable("circuit breaker open".into())
}

#[cfg(test)]
#[cfg(not(spiral_loom))]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use serde_json::json;

    use crate::resilience::journal::set_op as set;

    fn core() -> (ResilienceCore, ManualClock) {
        (
            ResilienceCore::new(BreakerConfig::default(), 10),
            ManualClock::new(0),
        )
    }

    #[test]
    fn a_read_that_raced_a_write_does_not_refresh_the_view_with_its_stale_answer() {
        let (c, clock) = core();
        let now = clock.now();
        let ReadRoute::Storage { permit, write_gen } = c.begin_read(now) else {
            panic!("healthy reads go to storage")
        };
        // Storage answered the read with the old value; meanwhile a write landed and was acked.
        let WriteRoute::Through { permit: wp, ops } =
            c.begin_write(vec![set("k", 2)], now).unwrap()
        else {
            panic!("healthy writes go through")
        };
        c.finish_write(ops, wp, Ok(()), now).unwrap();
        let stale = c.finish_get("k", permit, write_gen, Ok(Some(json!(1))), now);
        assert_eq!(
            stale,
            Ok(Some(json!(1))),
            "the caller still gets its answer"
        );
        assert_eq!(
            c.view_value("k"),
            Some(json!(2)),
            "the view keeps the newer write"
        );
    }

    #[test]
    fn a_write_through_finishing_after_a_journaled_write_leaves_the_view_to_the_journal() {
        let (c, clock) = core();
        let now = clock.now();
        let WriteRoute::Through { permit, ops } = c.begin_write(vec![set("k", 1)], now).unwrap()
        else {
            panic!("healthy writes go through")
        };
        // Another write fails and is journaled while ours is in flight; then `k=2` queues.
        let WriteRoute::Through {
            permit: p2,
            ops: ops2,
        } = c.begin_write(vec![set("x", 1)], now).unwrap()
        else {
            panic!("healthy writes go through")
        };
        c.finish_write(ops2, p2, Err(StorageError::Timeout(1)), now)
            .unwrap();
        assert!(matches!(
            c.begin_write(vec![set("k", 2)], now),
            Ok(WriteRoute::Journaled)
        ));
        c.finish_write(ops, permit, Ok(()), now).unwrap();
        // Replay will land `k=2` after our `k=1`: the view already shows the final value.
        assert_eq!(c.view_value("k"), Some(json!(2)));
    }

    #[test]
    fn only_one_replayer_at_a_time() {
        let (c, _) = core();
        let first = c.begin_replay().expect("free");
        assert!(c.begin_replay().is_none());
        drop(first);
        assert!(c.begin_replay().is_some());
    }
}
