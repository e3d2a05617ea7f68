//! `spiral-chaos`: real-process chaos for Spiral — a real Redis for every test binary that needs
//! one, ways to take it away (pause/resume) for outage tests, and the suites that run against it.
//!
//! testcontainers and proptest-state-machine live only here, so building the server never pays
//! for them.
//!
//! # Layout
//! - [`redis_fixture`] — finds or starts one Redis and one 3-node Redis Cluster per test binary
//!   (`REDIS_URL`, a local container image, or `redis-server` processes), cleans up at exit,
//!   pauses and resumes them; skips loudly without a Redis, fails under `CI`.
//! - [`Adapter`] — every storage adapter, opened fresh and ready (`init` done) in one call, so a
//!   suite is instantiated per adapter in a line.
//! - `tests/adapter_contract.rs` — the storage contract (SPEC §1.6) as a proptest state machine
//!   against a `BTreeMap` model, plus the no-torn-writes property, for every adapter.
//! - `tests/engine_model.rs` — the engine against a reference model, per adapter.
//! - [`proxy`] — `spiral-proxy`: a seeded TCP fault proxy with Toxiproxy's toxics (plus `loss`)
//!   and a Toxiproxy-compatible HTTP API, driven in-process or by `src/bin/spiral-proxy.rs`;
//!   every toxic is tested on loopback in `tests/proxy_toxics.rs`.
//! - [`world`] — `spiral-chaos run` / `diff`: a scenario against real `spiral` processes, a real
//!   Redis and a proxy on every link, judged by the simulator's checkers
//!   (`src/bin/spiral-chaos.rs`).
//! - `scripts/build-redis-image.sh` (repository root) — the local image `spiral-redis:local`,
//!   built without a registry.

pub mod proxy;
pub mod redis_fixture;
pub mod world;

use std::sync::Arc;

use spiral_server::storage::embedded::EmbeddedStorage;
use spiral_server::storage::memory::MemoryStorage;
use spiral_server::storage::{SharedStorage, Storage, StorageResult};

/// The storage adapters a suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adapter {
    Memory,
    /// redb in a fresh temporary directory.
    Embedded,
    /// The binary's shared Redis, in a fresh namespace.
    Redis,
    /// The binary's shared 3-node Redis Cluster, in a fresh namespace.
    RedisCluster,
}

impl Adapter {
    pub const ALL: [Adapter; 4] = [
        Adapter::Memory,
        Adapter::Embedded,
        Adapter::Redis,
        Adapter::RedisCluster,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Adapter::Memory => "memory",
            Adapter::Embedded => "embedded",
            Adapter::Redis => "redis",
            Adapter::RedisCluster => "redis-cluster",
        }
    }

    /// A fresh, empty, initialised store; `None` when this adapter's backing service is missing
    /// (the fixture has already said so loudly, and under `CI` it panicked instead).
    /// Panics if a present backend cannot be opened: that is a test failure, not a skip.
    pub async fn open(self) -> Option<Fresh> {
        let (storage, dir): (SharedStorage, _) = match self {
            Adapter::Memory => (Arc::new(MemoryStorage::new()), None),
            Adapter::Embedded => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let db = EmbeddedStorage::open(dir.path().join("spiral.redb"))
                    .expect("open redb in a temporary directory");
                (Arc::new(db), Some(dir))
            }
            Adapter::Redis => {
                let fixture = redis_fixture::redis()?;
                (fixture.storage().await.expect("redis adapter"), None)
            }
            Adapter::RedisCluster => {
                let fixture = redis_fixture::redis_cluster()?;
                (
                    fixture.storage().await.expect("redis cluster adapter"),
                    None,
                )
            }
        };
        storage.init().await.expect("init");
        Some(Fresh { storage, _dir: dir })
    }
}

/// A store opened by [`Adapter::open`], with whatever keeps it alive (its temporary directory).
#[derive(Debug)]
pub struct Fresh {
    pub storage: SharedStorage,
    _dir: Option<tempfile::TempDir>,
}

impl Fresh {
    /// Wrap a store opened some other way (one needing nothing kept alive beside it).
    pub fn new(storage: SharedStorage) -> Self {
        Self {
            storage,
            _dir: None,
        }
    }

    /// Remove every key this store holds. A Redis store shares its server with other tests (in
    /// its own namespace); clearing it keeps a long-lived `REDIS_URL` server from filling up.
    pub async fn clear(&self) -> StorageResult<()> {
        let keys = self.storage.keys("").await?;
        self.storage.del_many(&keys).await
    }
}

impl std::ops::Deref for Fresh {
    type Target = dyn Storage;

    fn deref(&self) -> &Self::Target {
        &*self.storage
    }
}
