//! Embedded, crash-safe adapter on local disk (`SPIRAL_DB_PATH`), built on redb: every write is
//! its own committed transaction, so an acknowledged write survives a crash of the process.
//!
//! redb is synchronous. A single write is a short fsync-bound transaction, run inline: moving it
//! to a blocking thread pool would bring OS threads (and their scheduling) into server logic.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::Value;

use super::{Storage, StorageError, StorageResult, as_counter, decode, encode};

/// A database held in memory commits durably once every this many writes: its pages live as
/// long as the process, so the rest skip the durable-commit bookkeeping, and the periodic
/// durable commit lets redb reclaim the pages the others freed.
const IN_MEMORY_DURABLE_EVERY: u32 = 64;

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("spiral_kv");

pub struct EmbeddedStorage {
    path: PathBuf,
    db: Database,
    /// Commit durably only every this many writes (1: every write). Only a database held in
    /// memory, which has no disk to be durable on, commits less often.
    durable_every: u32,
    writes: std::sync::atomic::AtomicU32,
}

impl std::fmt::Debug for EmbeddedStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStorage")
            .field("path", &self.path)
            .finish()
    }
}

fn io(e: impl std::fmt::Display) -> StorageError {
    StorageError::Unavailable(format!("embedded store: {e}"))
}

impl EmbeddedStorage {
    /// Open (or create) the database file at `path`.
    pub fn open(path: impl AsRef<Path>) -> StorageResult<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StorageError::Config(format!("SPIRAL_DB_PATH {}: {e}", path.display()))
            })?;
        }
        let db = Database::create(&path)
            .map_err(|e| StorageError::Config(format!("SPIRAL_DB_PATH {}: {e}", path.display())))?;
        let store = Self {
            path,
            db,
            durable_every: 1,
            writes: std::sync::atomic::AtomicU32::new(0),
        };
        store.create_table()?;
        Ok(store)
    }

    /// A database held in memory: the same adapter code without a disk, for simulation sweeps
    /// where thousands of seeds each need a fresh store.
    pub fn in_memory() -> StorageResult<Self> {
        let db = redb::Builder::new()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| StorageError::Config(format!("in-memory redb: {e}")))?;
        let store = Self {
            path: PathBuf::from(":memory:"),
            db,
            durable_every: IN_MEMORY_DURABLE_EVERY,
            writes: std::sync::atomic::AtomicU32::new(0),
        };
        store.create_table()?;
        Ok(store)
    }

    fn create_table(&self) -> StorageResult<()> {
        let tx = self.db.begin_write().map_err(io)?;
        tx.open_table(KV).map_err(io)?;
        tx.commit().map_err(io)
    }

    fn write<R>(
        &self,
        f: impl FnOnce(&mut redb::Table<'_, &str, &[u8]>) -> StorageResult<R>,
    ) -> StorageResult<R> {
        let mut tx = self.db.begin_write().map_err(io)?;
        if self.durable_every > 1 {
            let n = self
                .writes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if !n.is_multiple_of(self.durable_every) {
                tx.set_durability(redb::Durability::None).map_err(io)?;
            }
        }
        let out = {
            let mut table = tx.open_table(KV).map_err(io)?;
            f(&mut table)?
        };
        tx.commit().map_err(io)?;
        Ok(out)
    }

    fn scan(
        &self,
        prefix: &str,
        mut each: impl FnMut(&str, &[u8]) -> StorageResult<()>,
    ) -> StorageResult<()> {
        let tx = self.db.begin_read().map_err(io)?;
        let table = tx.open_table(KV).map_err(io)?;
        for entry in table.range(prefix..).map_err(io)? {
            let (k, v) = entry.map_err(io)?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            each(key, v.value())?;
        }
        Ok(())
    }
}

#[async_trait]
impl Storage for EmbeddedStorage {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn init(&self) -> StorageResult<()> {
        self.create_table()
    }

    async fn get(&self, key: &str) -> StorageResult<Option<Value>> {
        let tx = self.db.begin_read().map_err(io)?;
        let table = tx.open_table(KV).map_err(io)?;
        match table.get(key).map_err(io)? {
            Some(v) => Ok(Some(decode(key, v.value())?)),
            None => Ok(None),
        }
    }

    async fn set(&self, key: &str, value: &Value) -> StorageResult<()> {
        let bytes = encode(value);
        self.write(|t| t.insert(key, bytes.as_slice()).map(|_| ()).map_err(io))
    }

    async fn del(&self, key: &str) -> StorageResult<()> {
        self.write(|t| t.remove(key).map(|_| ()).map_err(io))
    }

    async fn keys(&self, prefix: &str) -> StorageResult<Vec<String>> {
        let mut out = Vec::new();
        self.scan(prefix, |k, _| {
            out.push(k.to_owned());
            Ok(())
        })?;
        Ok(out)
    }

    async fn atomic_incr(&self, key: &str, delta: i64) -> StorageResult<i64> {
        // One write transaction: redb serializes writers, so read-modify-write is atomic.
        self.write(|t| {
            let current = match t.get(key).map_err(io)? {
                Some(v) => as_counter(key, &decode(key, v.value())?)?,
                None => 0,
            };
            let next = current.wrapping_add(delta);
            let bytes = encode(&Value::from(next));
            t.insert(key, bytes.as_slice()).map_err(io)?;
            Ok(next)
        })
    }

    /// One transaction: all or nothing, one fsync.
    async fn set_many(&self, entries: &[(String, Value)]) -> StorageResult<()> {
        self.write(|t| {
            for (k, v) in entries {
                t.insert(k.as_str(), encode(v).as_slice()).map_err(io)?;
            }
            Ok(())
        })
    }

    /// One transaction: all or nothing, one fsync.
    async fn del_many(&self, keys: &[String]) -> StorageResult<()> {
        self.write(|t| {
            for k in keys {
                t.remove(k.as_str()).map_err(io)?;
            }
            Ok(())
        })
    }

    async fn visit_prefix(
        &self,
        prefix: &str,
        visit: &mut (dyn for<'k> FnMut(&'k str, &'k Value) + Send),
    ) -> StorageResult<u64> {
        let mut n = 0;
        self.scan(prefix, |k, v| {
            visit(k, &decode(k, v)?);
            n += 1;
            Ok(())
        })?;
        Ok(n)
    }

    async fn scan_prefix(&self, prefix: &str) -> StorageResult<Vec<(String, Value)>> {
        let mut out = Vec::new();
        self.scan(prefix, |k, v| {
            out.push((k.to_owned(), decode(k, v)?));
            Ok(())
        })?;
        Ok(out)
    }
}
