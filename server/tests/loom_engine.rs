//! loom models of the engine's critical sections: every interleaving (to a preemption bound) of
//! concurrent store, collect and GC keeps invariant 1 and never collects a node twice.
//!
//! Run: `RUSTFLAGS="--cfg spiral_loom" cargo test -p spiral-server --release loom`.
//! The models drive the very `CoreHandle` the async engine uses; "storage" is a loom-tracked set
//! of node ids, written between the critical sections exactly where the engine does its I/O.
#![cfg(spiral_loom)]

use std::collections::BTreeSet;

use loom::sync::{Arc, Mutex};
use loom::thread;
use spiral_server::clock::{ManualClock, SharedClock};
use spiral_server::engine::EngineConfig;
use spiral_server::engine::core::Core;
use spiral_server::engine::handle::CoreHandle;

struct World {
    core: CoreHandle,
    stored: Mutex<BTreeSet<String>>,
}

impl World {
    fn new(max_nodes: u64) -> Arc<World> {
        let clock: SharedClock = std::sync::Arc::new(ManualClock::new(0));
        let core = Core::new(
            EngineConfig {
                max_nodes,
                ..EngineConfig::default()
            },
            1,
        );
        Arc::new(World {
            core: CoreHandle::new(core, clock),
            stored: Mutex::new(BTreeSet::new()),
        })
    }

    /// The engine's store protocol: reserve → persist → commit.
    fn store(&self, tag: u8) -> String {
        let r = self
            .core
            .reserve_store("t", 500_000, i64::from(tag), u64::from(tag), &[tag; 32])
            .unwrap();
        self.stored.lock().unwrap().insert(r.id.clone());
        assert!(self.core.commit_store(&r.id).unwrap());
        r.id
    }

    /// Delete from storage; deleting what is already gone means a node was collected twice.
    fn delete(&self, id: &str) {
        let was_there = self.stored.lock().unwrap().remove(id);
        assert!(was_there, "node {id} deleted twice: collected twice");
    }

    /// The engine's collect protocol: take → delete → commit.
    fn collect(&self, id: &str) {
        if self.core.begin_collect("t", id).unwrap() {
            self.delete(id);
            assert!(self.core.commit_collect(id).unwrap());
        }
    }

    /// One GC pass: select (takes the candidates) → delete → commit.
    fn gc(&self) {
        let sel = self.core.gc_select(8).unwrap();
        for id in &sel.ids {
            self.delete(id);
            self.core.gc_commit(id).unwrap();
        }
    }

    /// Invariant 1 against "storage" and invariants 1 and 3 inside the core.
    fn check(&self) {
        self.core.check().unwrap_or_else(|v| panic!("{v}"));
        let total = self.core.with(|c| c.total()).unwrap();
        assert_eq!(
            total,
            self.stored.lock().unwrap().len() as u64,
            "invariant 1: total vs storage"
        );
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(f);
}

#[test]
fn loom_concurrent_stores_keep_invariant_1() {
    model(|| {
        let w = World::new(100);
        let a = {
            let w = w.clone();
            thread::spawn(move || {
                w.store(1);
            })
        };
        w.store(2);
        a.join().unwrap();
        w.check();
    });
}

#[test]
fn loom_collect_racing_gc_never_collects_twice() {
    model(|| {
        // Capacity 1 with two nodes: GC wants the oldest, lowest-priority one — the very node
        // the user collects.
        let w = World::new(1);
        let x = w.store(0);
        w.store(9);
        let user = {
            let w = w.clone();
            let x = x.clone();
            thread::spawn(move || w.collect(&x))
        };
        w.gc();
        user.join().unwrap();
        w.check();
    });
}

#[test]
fn loom_store_collect_and_gc_together_keep_the_invariants() {
    model(|| {
        let w = World::new(1);
        let x = w.store(0);
        let storer = {
            let w = w.clone();
            thread::spawn(move || {
                w.store(5);
            })
        };
        let collector = {
            let w = w.clone();
            thread::spawn(move || w.collect(&x))
        };
        w.gc();
        storer.join().unwrap();
        collector.join().unwrap();
        w.check();
    });
}
