#![cfg(spiral_loom)]
//! loom models of the resilience core: every interleaving (to a preemption bound) of concurrent
//! calls keeps the circuit breaker's transitions legal with at most one probe in flight, and a
//! journal replay racing new writes loses no acknowledged write and applies them in order.
//!
//! Run: `RUSTFLAGS="--cfg spiral_loom" cargo test -p spiral-server --release loom`.
//! The models drive the very `ResilienceCore` the async `ResilientStorage` runs; "storage" is a
//! loom-tracked map, written between the core's critical sections exactly where the wrapper does
//! its I/O, and able to fail its next write on demand.

use std::collections::BTreeMap;

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;
use serde_json::Value;
use spiral_server::StorageError;
use spiral_server::clock::{Clock, ManualClock};
use spiral_server::resilience::degraded::{ReplayStep, WriteRoute};
use spiral_server::resilience::{BreakerConfig, JournalOp, ResilienceCore, legal};

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(f);
}

fn outage() -> StorageError {
    StorageError::Unavailable("injected".into())
}

/// A breaker with threshold `failures` and no window (so a probe is due the moment it opens,
/// letting two threads cycle through open → half-open → closed/open), opened before the race.
fn open_core(failures: u32) -> ResilienceCore {
    let core = ResilienceCore::new(
        BreakerConfig {
            failures,
            window_ms: 0,
            timeout_ms: 1_000,
        },
        8,
    );
    let clock = ManualClock::new(0);
    for _ in 0..failures {
        let p = core.admit(clock.now()).expect("closed admits");
        core.record(p, &Err::<(), _>(outage()), clock.now());
    }
    core
}

/// Make one call per outcome; a probe bumps `probes` for as long as it is in flight.
fn calls(core: &ResilienceCore, clock: &ManualClock, probes: &AtomicUsize, outcomes: &[bool]) {
    for &ok in outcomes {
        let Some(permit) = core.admit(clock.now()) else {
            continue; // rejected: open, or someone else's probe is in flight
        };
        if permit.is_probe() {
            let before = probes.fetch_add(1, Ordering::SeqCst);
            assert_eq!(before, 0, "two probes in flight in half-open");
        }
        let result = if ok { Ok(()) } else { Err(outage()) };
        if permit.is_probe() {
            probes.fetch_sub(1, Ordering::SeqCst);
        }
        core.record(permit, &result, clock.now());
    }
}

#[test]
fn loom_breaker_transitions_stay_legal() {
    model(|| {
        let core = Arc::new(open_core(2));
        let clock = ManualClock::new(0);
        let probes = Arc::new(AtomicUsize::new(0));
        let spawn = |outcomes: &'static [bool]| {
            let (core, clock, probes) = (core.clone(), clock.clone(), probes.clone());
            thread::spawn(move || calls(&core, &clock, &probes, outcomes))
        };
        let others = [spawn(&[false, true]), spawn(&[false, false])];
        calls(&core, &clock, &probes, &[true, false]);
        for t in others {
            t.join().unwrap();
        }
        for t in core.transitions() {
            assert!(
                legal(t.from, t.to),
                "illegal breaker transition {:?} -> {:?}",
                t.from,
                t.to
            );
        }
        assert_eq!(probes.load(Ordering::SeqCst), 0);
    });
}

/// "Storage": per key, every value written, in the order the writes landed. Fails the next
/// `fail_next` writes.
#[derive(Default)]
struct Store {
    applied: BTreeMap<String, Vec<i64>>,
    fail_next: usize,
}

struct World {
    core: ResilienceCore,
    store: Mutex<Store>,
    clock: ManualClock,
}

fn set(key: &str, v: i64) -> JournalOp {
    JournalOp::Set {
        key: key.into(),
        value: Value::from(v),
    }
}

impl World {
    fn apply(&self, op: &JournalOp) -> Result<(), StorageError> {
        let mut s = self.store.lock().unwrap();
        if s.fail_next > 0 {
            s.fail_next -= 1;
            return Err(outage());
        }
        let JournalOp::Set { key, value } = op else {
            unreachable!("the model only sets")
        };
        s.applied
            .entry(key.clone())
            .or_default()
            .push(value.as_i64().unwrap());
        Ok(())
    }

    /// `ResilientStorage::set`: journal, or write through and journal on an outage.
    fn write(&self, key: &str, v: i64) {
        let now = self.clock.now();
        match self.core.begin_write(vec![set(key, v)], now).expect("room") {
            WriteRoute::Journaled => {}
            WriteRoute::Through { permit, ops } => {
                let r = self.apply(&ops[0]);
                self.core
                    .finish_write(ops, permit, r, now)
                    .expect("acknowledged");
            }
        }
    }

    /// `ResilientStorage::recover`: front → write outside the lock → ack.
    fn replay(&self) {
        let Some(mut replay) = self.core.begin_replay() else {
            return;
        };
        while let ReplayStep::Apply { seq, op, permit } = replay.next(self.clock.now()) {
            let r = self.apply(&op);
            if !replay.done(seq, permit, r, self.clock.now()) {
                break;
            }
        }
    }
}

#[test]
fn loom_journal_replay_racing_writes_loses_nothing() {
    model(|| {
        let w = Arc::new(World {
            core: open_core(1),
            store: Mutex::new(Store {
                fail_next: 1,
                ..Store::default()
            }),
            clock: ManualClock::new(0),
        });
        // Storage is down: `a=1` fails to write through, is journaled and acknowledged, and
        // opens the breaker; `a=2` queues behind it.
        w.write("a", 1);
        w.write("a", 2);
        assert_eq!(w.core.journal().len(), 2);
        // Storage comes back, but its next write — whoever makes it — fails once more.
        w.store.lock().unwrap().fail_next = 1;

        // Two replayers, like the periodic `recover` and one started by traffic, each trying
        // again after a failed attempt.
        let replayers = [0, 1].map(|_| {
            let w = w.clone();
            thread::spawn(move || {
                w.replay();
                w.replay();
            })
        });
        let writer = {
            let w = w.clone();
            thread::spawn(move || {
                w.write("a", 3);
                w.write("b", 1);
            })
        };
        w.write("c", 1);
        for r in replayers {
            r.join().unwrap();
        }
        writer.join().unwrap();

        // Liveness phase: storage healthy, replay drains the journal.
        for _ in 0..3 {
            w.replay();
        }
        assert!(w.core.journal().is_empty(), "journal not drained");

        // Acknowledged writes per key, in acknowledgement order (one writer per key).
        let acked: [(&str, &[i64]); 3] = [("a", &[1, 2, 3]), ("b", &[1]), ("c", &[1])];
        let store = w.store.lock().unwrap();
        for (key, want) in acked {
            let mut got = store.applied.get(key).cloned().unwrap_or_default();
            got.dedup(); // re-applying an entry after a partial failure is harmless
            assert_eq!(
                got, want,
                "key {key}: storage applied {got:?}, acknowledged {want:?}: an acknowledged write was lost or reordered"
            );
            assert_eq!(
                w.core.view_value(key),
                want.last().map(|v| Value::from(*v)),
                "key {key}: the view disagrees with storage"
            );
        }
    });
}
