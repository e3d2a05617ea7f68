//! The wrapper over a storage with fault knobs: fail, hang or answer corrupt on demand.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::*;
use crate::clock::ManualClock;
use crate::storage::memory::MemoryStorage;

const HEALTHY: u8 = 0;
const FAIL: u8 = 1;
const HANG: u8 = 2;
const CORRUPT: u8 = 3;
/// Writes land, then the answer never comes (a reply lost with its connection).
const LAND_THEN_HANG: u8 = 4;

/// `MemoryStorage` with a fault knob, counting the calls that reach it and logging the writes
/// that land, in order.
#[derive(Debug, Default)]
struct Faulty {
    mem: MemoryStorage,
    mode: AtomicU8,
    calls: AtomicU64,
    writes: std::sync::Mutex<Vec<String>>,
}

impl Faulty {
    fn set_mode(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    fn writes(&self) -> Vec<String> {
        self.writes.lock().unwrap().clone()
    }

    async fn gate(&self, key: &str) -> StorageResult<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match self.mode.load(Ordering::SeqCst) {
            FAIL => Err(StorageError::Unavailable("injected".into())),
            HANG => std::future::pending().await,
            CORRUPT => Err(StorageError::Corrupt {
                key: key.into(),
                detail: "injected".into(),
            }),
            _ => Ok(()),
        }
    }

    fn wrote(&self, what: String) {
        self.writes.lock().unwrap().push(what);
    }
}

#[async_trait]
impl Storage for Faulty {
    fn backend(&self) -> &'static str {
        "faulty"
    }
    async fn init(&self) -> StorageResult<()> {
        self.gate("").await
    }
    async fn get(&self, key: &str) -> StorageResult<Option<Value>> {
        self.gate(key).await?;
        self.mem.get(key).await
    }
    async fn set(&self, key: &str, value: &Value) -> StorageResult<()> {
        if self.mode.load(Ordering::SeqCst) == LAND_THEN_HANG {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.wrote(format!("set {key}={value}"));
            self.mem.set(key, value).await?;
            return std::future::pending().await;
        }
        self.gate(key).await?;
        self.wrote(format!("set {key}={value}"));
        self.mem.set(key, value).await
    }
    async fn del(&self, key: &str) -> StorageResult<()> {
        self.gate(key).await?;
        self.wrote(format!("del {key}"));
        self.mem.del(key).await
    }
    async fn keys(&self, prefix: &str) -> StorageResult<Vec<String>> {
        self.gate(prefix).await?;
        self.mem.keys(prefix).await
    }
    async fn atomic_incr(&self, key: &str, delta: i64) -> StorageResult<i64> {
        self.gate(key).await?;
        self.mem.atomic_incr(key, delta).await
    }
}

struct World {
    faulty: Arc<Faulty>,
    store: ResilientStorage,
    clock: ManualClock,
}

fn world(cfg: ResilienceConfig) -> World {
    let faulty = Arc::new(Faulty::default());
    let clock = ManualClock::new(1_700_000_000_000);
    let store = ResilientStorage::new(faulty.clone(), cfg, Arc::new(clock.clone()));
    World {
        faulty,
        store,
        clock,
    }
}

/// A world whose journal is kept in `log`, over `faulty` (shared across "processes") at `clock`.
fn world_on(faulty: &Arc<Faulty>, clock: &ManualClock, log: Arc<dyn JournalLog>) -> World {
    World {
        faulty: faulty.clone(),
        store: ResilientStorage::with_log(
            faulty.clone(),
            ResilienceConfig::default(),
            Arc::new(clock.clone()),
            log,
        )
        .unwrap(),
        clock: clock.clone(),
    }
}

fn default_world() -> World {
    world(ResilienceConfig::default())
}

impl World {
    /// Five failing reads open the breaker.
    async fn open(&self) {
        let mode = self.faulty.mode.load(Ordering::SeqCst);
        self.faulty.set_mode(FAIL);
        for _ in 0..5 {
            self.store.get("probe-key").await.unwrap();
        }
        assert_eq!(self.store.status().breaker_state, 1);
        self.faulty.set_mode(mode);
    }

    fn advance_ms(&self, ms: u64) {
        self.clock.advance(Duration::from_millis(ms));
    }

    fn assert_legal(&self) {
        for t in self.store.transitions() {
            assert!(legal(t.from, t.to), "illegal transition {t:?}");
        }
    }
}

#[tokio::test]
async fn the_breaker_opens_after_five_outage_failures_then_fails_fast() {
    let w = default_world();
    w.faulty.set_mode(FAIL);
    for i in 0..5 {
        assert_eq!(
            w.store.status().breaker_state,
            0,
            "closed after {i} failures"
        );
        // A failed read falls back to the (empty) view.
        assert_eq!(w.store.get("k").await, Ok(None));
    }
    let st = w.store.status();
    assert_eq!(
        (st.breaker_state, st.opens_total, st.degraded),
        (1, 1, true)
    );
    assert_eq!(w.faulty.calls(), 5);
    w.store.get("k").await.unwrap();
    // Nothing was ever listed from storage, so the view cannot list anything either.
    assert!(w.store.keys("").await.is_err());
    assert_eq!(
        w.faulty.calls(),
        5,
        "an open breaker does not touch storage"
    );
    assert!(matches!(
        w.store.init().await,
        Err(StorageError::Unavailable(_))
    ));
    w.assert_legal();
}

#[tokio::test]
async fn writes_while_open_are_journaled_acknowledged_and_readable() {
    let w = default_world();
    // Loaded once (empty), so the view holds everything there is.
    assert!(w.store.scan_prefix("").await.unwrap().is_empty());
    w.open().await;
    let calls = w.faulty.calls();
    w.store.set("a", &json!(1)).await.unwrap();
    w.store.set("b", &json!({"x": [1, 2]})).await.unwrap();
    w.store.del("a").await.unwrap();
    w.store
        .set_many(&[("c".into(), json!("ç")), ("d".into(), json!(null))])
        .await
        .unwrap();
    assert_eq!(w.store.status().journal_len, 5);
    assert_eq!(w.faulty.calls(), calls, "nothing reached storage");
    assert_eq!(w.store.get("a").await, Ok(None));
    assert_eq!(w.store.get("b").await, Ok(Some(json!({"x": [1, 2]}))));
    assert_eq!(w.store.keys("").await.unwrap(), ["b", "c", "d"]);
    assert_eq!(
        w.store.scan_prefix("c").await.unwrap(),
        [("c".to_string(), json!("ç"))]
    );
    assert!(w.faulty.mem.is_empty());
}

#[tokio::test]
async fn a_full_journal_refuses_writes_and_applies_them_nowhere() {
    let w = world(ResilienceConfig {
        journal_max: 2,
        ..ResilienceConfig::default()
    });
    w.open().await;
    w.store.set("a", &json!(1)).await.unwrap();
    w.store.set("b", &json!(1)).await.unwrap();
    assert_eq!(
        w.store.set("c", &json!(1)).await,
        Err(StorageError::JournalFull(2))
    );
    assert_eq!(w.store.del("a").await, Err(StorageError::JournalFull(2)));
    assert_eq!(
        w.store.set_many(&[("d".into(), json!(1))]).await,
        Err(StorageError::JournalFull(2))
    );
    assert_eq!(
        w.store.get("c").await,
        Ok(None),
        "a refused write is not in the view"
    );
    assert_eq!(w.store.get("a").await, Ok(Some(json!(1))));
    let st = w.store.status();
    assert_eq!((st.journal_len, st.journal_max), (2, 2));
}

/// Writes that reached storage and timed out may have landed: each is journaled, past the bound
/// if need be, and acknowledged — a refusal would be a lie for one that landed. Only a write
/// that never reached storage is refused for a full journal.
#[tokio::test]
async fn writes_in_doubt_are_journaled_past_the_bound_never_refused() {
    let w = world(ResilienceConfig {
        journal_max: 1,
        timeout_ms: 100,
        ..ResilienceConfig::default()
    });
    w.faulty.set_mode(LAND_THEN_HANG);
    let (one, two, three) = (json!(1), json!(2), json!(3));
    let (a, b, c) = tokio::join!(
        w.store.set("a", &one),
        w.store.set("b", &two),
        w.store.set("c", &three),
    );
    assert_eq!(
        w.faulty.mem.keys("").await.unwrap(),
        ["a", "b", "c"],
        "all landed"
    );
    assert_eq!(
        [a, b, c],
        [Ok(()), Ok(()), Ok(())],
        "a write storage may hold is acknowledged"
    );
    assert_eq!(w.store.status().journal_len, 3, "past the bound of 1");
    let calls = w.faulty.calls();
    assert_eq!(
        w.store.set("d", &json!(4)).await,
        Err(StorageError::JournalFull(1))
    );
    assert_eq!(
        w.faulty.calls(),
        calls,
        "the refused write never reached storage"
    );
    w.faulty.set_mode(HEALTHY);
    w.advance_ms(30_001);
    assert_eq!(w.store.recover().await, 3);
    assert_eq!(w.store.get("b").await, Ok(Some(json!(2))));
    assert_eq!(w.faulty.mem.keys("").await.unwrap(), ["a", "b", "c"]);
}

#[tokio::test]
async fn after_the_window_a_probe_replays_the_journal_in_order() {
    let w = default_world();
    w.open().await;
    w.store.set("a", &json!(1)).await.unwrap();
    w.store.set("b", &json!(1)).await.unwrap();
    w.store.set("a", &json!(2)).await.unwrap();
    w.store.del("b").await.unwrap();
    w.store.set("c", &json!(1)).await.unwrap();
    w.store
        .set_many(&[("d".into(), json!(1)), ("e".into(), json!(1))])
        .await
        .unwrap();

    w.advance_ms(29_999);
    assert_eq!(w.store.recover().await, 0, "still inside the window");
    assert_eq!(w.store.status().journal_len, 7);
    w.advance_ms(1);
    assert_eq!(w.store.recover().await, 7);

    assert_eq!(
        w.faulty.writes(),
        [
            "set a=1", "set b=1", "set a=2", "del b", "set c=1", "set d=1", "set e=1"
        ]
    );
    let mem = &w.faulty.mem;
    assert_eq!(mem.get("a").await, Ok(Some(json!(2))));
    assert_eq!(mem.get("b").await, Ok(None));
    assert_eq!(mem.keys("").await.unwrap(), ["a", "c", "d", "e"]);
    let st = w.store.status();
    assert_eq!(
        (
            st.breaker_state,
            st.journal_len,
            st.degraded,
            st.opens_total
        ),
        (0, 0, false, 1)
    );
    use StateKind::*;
    let kinds: Vec<_> = w
        .store
        .transitions()
        .iter()
        .map(|t| (t.from, t.to))
        .collect();
    assert_eq!(
        kinds,
        [(Closed, Open), (Open, HalfOpen), (HalfOpen, Closed)]
    );
    // Healthy again: reads come from storage.
    let calls = w.faulty.calls();
    w.store.get("a").await.unwrap();
    assert_eq!(w.faulty.calls(), calls + 1);
}

#[tokio::test]
async fn a_failed_probe_reopens_and_keeps_the_whole_journal() {
    let w = default_world();
    w.open().await;
    w.store.set("a", &json!(1)).await.unwrap();
    w.store.set("b", &json!(2)).await.unwrap();
    w.faulty.set_mode(FAIL);
    w.advance_ms(30_000);
    assert_eq!(w.store.recover().await, 0);
    let st = w.store.status();
    assert_eq!(
        (st.breaker_state, st.opens_total, st.journal_len),
        (1, 2, 2)
    );
    w.faulty.set_mode(HEALTHY);
    w.advance_ms(29_999);
    assert_eq!(w.store.recover().await, 0);
    w.advance_ms(1);
    assert_eq!(w.store.recover().await, 2);
    assert_eq!(w.faulty.writes(), ["set a=1", "set b=2"]);
    w.assert_legal();
}

#[tokio::test]
async fn a_failed_write_through_is_journaled_and_later_writes_queue_behind_it() {
    let w = default_world();
    w.faulty.set_mode(FAIL);
    w.store.set("a", &json!(1)).await.unwrap();
    let st = w.store.status();
    assert_eq!(
        (st.breaker_state, st.journal_len),
        (0, 1),
        "closed, one failure"
    );
    w.faulty.set_mode(HEALTHY);
    let calls = w.faulty.calls();
    // Storage is back and the breaker closed, but writing through would overtake `a=1`.
    w.store.set("a", &json!(2)).await.unwrap();
    w.store.set("b", &json!(1)).await.unwrap();
    assert_eq!(w.faulty.calls(), calls);
    assert_eq!(w.store.get("a").await, Ok(Some(json!(2))));
    w.store.recover().await;
    tokio::task::yield_now().await;
    assert_eq!(w.faulty.writes(), ["set a=1", "set a=2", "set b=1"]);
    assert_eq!(w.faulty.mem.get("a").await, Ok(Some(json!(2))));
    assert_eq!(w.store.status().journal_len, 0);
}

#[tokio::test]
async fn traffic_alone_replays_the_journal_once_the_window_has_passed() {
    let w = default_world();
    w.open().await;
    w.store.set("a", &json!(1)).await.unwrap();
    w.advance_ms(30_000);
    // Any call starts a background replay; the current-thread runtime runs it at the next yield.
    w.store.get("a").await.unwrap();
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(w.faulty.mem.get("a").await, Ok(Some(json!(1))));
    assert_eq!(w.store.status().breaker_state, 0);
}

#[tokio::test]
async fn counters_are_refused_while_degraded() {
    let w = default_world();
    assert_eq!(w.store.atomic_incr("n", 1).await, Ok(1));
    w.open().await;
    assert!(matches!(
        w.store.atomic_incr("n", 1).await,
        Err(StorageError::Unavailable(_))
    ));
    assert_eq!(
        w.store.get("n").await,
        Ok(Some(json!(1))),
        "the view has the counter"
    );
    w.advance_ms(30_000);
    w.store.recover().await; // nothing to replay: probes with init
    assert_eq!(w.store.status().breaker_state, 0);
    // A journal waiting to be replayed also refuses counters, breaker closed or not.
    w.faulty.set_mode(FAIL);
    w.store.set("x", &json!(1)).await.unwrap();
    w.faulty.set_mode(HEALTHY);
    assert!(w.store.atomic_incr("n", 1).await.is_err());
    w.store.recover().await;
    assert_eq!(w.store.atomic_incr("n", 1).await, Ok(2));
}

#[tokio::test]
async fn corrupt_answers_do_not_trip_the_breaker() {
    let w = default_world();
    w.faulty.set_mode(CORRUPT);
    for _ in 0..10 {
        assert!(matches!(
            w.store.get("k").await,
            Err(StorageError::Corrupt { .. })
        ));
        assert!(matches!(
            w.store.set("k", &json!(1)).await,
            Err(StorageError::Corrupt { .. })
        ));
    }
    let st = w.store.status();
    assert_eq!((st.breaker_state, st.journal_len), (0, 0));
}

#[tokio::test]
async fn a_hang_longer_than_cb_timeout_counts_as_a_failure() {
    let w = world(ResilienceConfig {
        timeout_ms: 20,
        ..ResilienceConfig::default()
    });
    w.store.set("k", &json!(1)).await.unwrap();
    w.faulty.set_mode(HANG);
    // A hanging write times out, is journaled and acknowledged.
    assert_eq!(w.store.set("k", &json!(2)).await, Ok(()));
    assert_eq!(w.store.status().journal_len, 1);
    // Reads fall back to the view after the timeout; with the first write that is five failures.
    for _ in 0..4 {
        assert_eq!(w.store.init().await, Err(StorageError::Timeout(20)));
    }
    let st = w.store.status();
    assert_eq!((st.breaker_state, st.opens_total), (1, 1));
    assert_eq!(w.store.get("k").await, Ok(Some(json!(2))));
}

#[tokio::test]
async fn a_probe_dropped_mid_flight_reopens_the_breaker() {
    let w = default_world();
    w.open().await;
    w.advance_ms(30_000);
    w.faulty.set_mode(HANG);
    let gave_up = tokio::time::timeout(Duration::from_millis(5), w.store.get("k")).await;
    assert!(gave_up.is_err());
    let st = w.store.status();
    assert_eq!(
        (st.breaker_state, st.opens_total),
        (1, 2),
        "not wedged half-open"
    );
    w.faulty.set_mode(HEALTHY);
    w.advance_ms(30_000);
    w.store.get("k").await.unwrap();
    assert_eq!(w.store.status().breaker_state, 0);
    w.assert_legal();
}

#[tokio::test]
async fn reads_fall_back_to_the_view_of_everything_read_and_written() {
    let w = default_world();
    w.store.set("n:a", &json!(1)).await.unwrap();
    w.faulty.mem.set("n:b", &json!(2)).await.unwrap();
    w.faulty.mem.set("n:c", &json!(3)).await.unwrap();
    w.faulty.mem.set("other", &json!(4)).await.unwrap();
    assert_eq!(w.store.scan_prefix("n:").await.unwrap().len(), 3);
    w.store.get("other").await.unwrap();
    w.faulty.mem.del("n:c").await.unwrap();
    assert_eq!(
        w.store.get("n:c").await,
        Ok(None),
        "a read refreshes the view"
    );
    w.open().await;
    assert_eq!(w.store.keys("n:").await.unwrap(), ["n:a", "n:b"]);
    assert_eq!(w.store.get("other").await, Ok(Some(json!(4))));
    assert_eq!(w.store.get("n:b").await, Ok(Some(json!(2))));
    let mut seen = Vec::new();
    let n = w
        .store
        .visit_prefix("n:", &mut |k, v| seen.push((k.to_owned(), v.clone())))
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(seen[1], ("n:b".to_string(), json!(2)));
}

#[tokio::test]
async fn a_prefix_never_loaded_is_refused_not_listed_empty_while_degraded() {
    // Found by the simulation (server-crash-restart with slow storage): a boot whose scan failed
    // over to the view opened the engine on an empty picture and lost every acknowledged node.
    let w = default_world();
    w.faulty.mem.set("n:a", &json!(1)).await.unwrap();
    w.faulty.mem.set("n:b", &json!(2)).await.unwrap();
    w.open().await;
    let e = w.store.scan_prefix("n:").await.unwrap_err();
    assert!(
        e.is_outage() && e.to_string().contains("never loaded"),
        "{e}"
    );
    assert!(w.store.keys("n:").await.is_err());
    assert!(w.store.visit_prefix("n:", &mut |_, _| {}).await.is_err());
    // Outage on the call itself (breaker still closed): the same.
    let w = default_world();
    w.faulty.mem.set("n:a", &json!(1)).await.unwrap();
    w.faulty.set_mode(FAIL);
    assert!(w.store.scan_prefix("n:").await.is_err());
    assert!(w.store.keys("n:").await.is_err());
    // Once a scan has loaded the prefix, the view answers for it (and for narrower prefixes).
    w.faulty.set_mode(HEALTHY);
    assert_eq!(w.store.scan_prefix("n:").await.unwrap().len(), 1);
    w.store.set("n:c", &json!(3)).await.unwrap();
    w.open().await;
    assert_eq!(w.store.keys("n:").await.unwrap(), ["n:a", "n:c"]);
    assert_eq!(w.store.keys("n:c").await.unwrap(), ["n:c"]);
    assert!(w.store.keys("m:").await.is_err());
}

#[tokio::test]
async fn an_idle_server_recovers_through_the_recovery_task() {
    let w = world(ResilienceConfig {
        window_ms: 1,
        ..ResilienceConfig::default()
    });
    w.open().await;
    w.store.set("a", &json!(1)).await.unwrap();
    w.advance_ms(1);
    let task = w.store.spawn_recovery(Duration::from_millis(1));
    for _ in 0..200 {
        if w.store.status().journal_len == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    task.abort();
    assert_eq!(w.faulty.mem.get("a").await, Ok(Some(json!(1))));
    assert!(!w.store.status().degraded);
}

/// A journal log whose disk has failed: nothing can be made durable.
#[derive(Debug)]
struct BrokenDisk;

impl JournalLog for BrokenDisk {
    fn append(&self, _: u64, _: &[JournalOp]) -> std::io::Result<()> {
        Err(std::io::Error::other("injected: disk full"))
    }
    fn ack(&self, _: u64, _: bool) -> std::io::Result<()> {
        Err(std::io::Error::other("injected: disk full"))
    }
    fn load(&self) -> std::io::Result<Vec<JournalOp>> {
        Ok(Vec::new())
    }
    fn describe(&self) -> String {
        "broken".into()
    }
}

#[tokio::test]
async fn writes_journaled_before_a_crash_are_replayed_by_the_next_process_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.jsonl");
    let faulty = Arc::new(Faulty::default());
    let clock = ManualClock::new(1_700_000_000_000);
    {
        // The first process: storage down, three writes acknowledged, then it dies.
        let w = world_on(&faulty, &clock, Arc::new(FileLog::open(&path).unwrap()));
        w.open().await;
        w.store.set("a", &json!(1)).await.unwrap();
        w.store.set("b", &json!(2)).await.unwrap();
        w.store.del("a").await.unwrap();
        assert_eq!(w.store.status().journal_len, 3);
    }
    assert!(faulty.writes().is_empty(), "storage never saw them");
    // The next process, storage back: the journal is waiting before anything else.
    let store = world_on(&faulty, &clock, Arc::new(FileLog::open(&path).unwrap())).store;
    assert_eq!(store.status().journal_len, 3);
    assert!(
        store.scan_prefix("").await.is_err(),
        "storage lacks the journal, so nothing may be listed from it yet"
    );
    assert_eq!(store.recover().await, 3);
    assert_eq!(faulty.writes(), ["set a=1", "set b=2", "del a"]);
    assert_eq!(store.get("b").await, Ok(Some(json!(2))));
    assert_eq!(store.get("a").await, Ok(None));
    drop(store);
    // A replay task kicked by the reads may still hold the storage (and its journal) for a turn.
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
    // Replayed entries are acknowledged on disk: a third process finds nothing to replay.
    let again = FileLog::open(&path).unwrap();
    assert!(again.load().unwrap().is_empty());
}

#[tokio::test]
async fn a_write_the_disk_cannot_keep_is_refused_not_acknowledged() {
    let faulty = Arc::new(Faulty::default());
    let clock = ManualClock::new(1_700_000_000_000);
    let w = world_on(&faulty, &clock, Arc::new(BrokenDisk));
    assert!(w.store.scan_prefix("").await.unwrap().is_empty());
    w.open().await;
    let err = w.store.set("a", &json!(1)).await.unwrap_err();
    assert!(err.to_string().contains("disk full"), "{err}");
    assert_eq!(w.store.status().journal_len, 0, "taken back");
    assert_eq!(w.store.get("a").await, Ok(None), "and not in the view");
}

/// A journal log on a disk that can fill up and be cleared again.
#[derive(Debug, Default)]
struct FillableDisk {
    log: MemLog,
    full: std::sync::atomic::AtomicBool,
}

impl FillableDisk {
    fn check(&self) -> std::io::Result<()> {
        if self.full.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("injected: disk full"));
        }
        Ok(())
    }
}

impl JournalLog for FillableDisk {
    fn append(&self, first: u64, ops: &[JournalOp]) -> std::io::Result<()> {
        self.check()?;
        self.log.append(first, ops)
    }
    fn ack(&self, seq: u64, drained: bool) -> std::io::Result<()> {
        self.check()?;
        self.log.ack(seq, drained)
    }
    fn load(&self) -> std::io::Result<Vec<JournalOp>> {
        self.log.load()
    }
    fn describe(&self) -> String {
        "fillable".into()
    }
}

/// A write that timed out (so it may have landed) whose journal entry the disk refuses is kept in
/// memory to land on replay, and its caller told so (`InDoubt`): never taken back, which would
/// leave storage holding a write its caller's index had forgotten.
#[tokio::test]
async fn a_write_in_doubt_the_disk_refuses_is_kept_in_memory_to_land() {
    let faulty = Arc::new(Faulty::default());
    let clock = ManualClock::new(1_700_000_000_000);
    let disk = Arc::new(FillableDisk::default());
    let cfg = ResilienceConfig {
        timeout_ms: 100,
        ..ResilienceConfig::default()
    };
    let w = World {
        faulty: faulty.clone(),
        store: ResilientStorage::with_log(
            faulty.clone(),
            cfg,
            Arc::new(clock.clone()),
            disk.clone(),
        )
        .unwrap(),
        clock: clock.clone(),
    };
    w.faulty.set_mode(LAND_THEN_HANG);
    disk.full.store(true, Ordering::SeqCst);
    assert_eq!(
        w.store.set("a", &json!(1)).await,
        Err(StorageError::InDoubt(100))
    );
    assert_eq!(w.store.status().journal_len, 1, "kept, though not durable");
    assert!(disk.log.load().unwrap().is_empty(), "the disk has nothing");
    // Whether it had landed or not, it lands on replay.
    w.faulty.mem.del("a").await.unwrap();
    w.faulty.set_mode(FAIL);
    assert_eq!(w.store.get("a").await, Ok(Some(json!(1))), "reads see it");
    disk.full.store(false, Ordering::SeqCst);
    w.faulty.set_mode(HEALTHY);
    w.advance_ms(30_001);
    while w.store.status().journal_len > 0 {
        w.store.recover().await;
        tokio::task::yield_now().await;
    }
    assert_eq!(w.faulty.mem.get("a").await, Ok(Some(json!(1))), "it landed");
}

#[tokio::test]
async fn the_ready_probe_reads_through_the_breaker_and_never_writes() {
    let w = default_world();
    for _ in 0..5 {
        assert!(w.store.probe(Duration::from_secs(1)).await);
    }
    assert!(w.faulty.writes().is_empty(), "a probe writes nothing");
    w.open().await;
    w.faulty.set_mode(FAIL);
    let before = w.faulty.calls();
    for _ in 0..20 {
        assert!(!w.store.probe(Duration::from_secs(1)).await);
    }
    assert_eq!(
        w.faulty.calls(),
        before,
        "no probe reached storage while the breaker was open"
    );
}
