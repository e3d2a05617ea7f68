//! Embedded, crash-safe adapter on local disk (`SPIRAL_DB_PATH`), built on redb: every write is
//! its own committed transaction, so an acknowledged write survives a crash of the process.
//!
//! redb is synchronous. On a file, every call runs on tokio's blocking pool: a stalled disk then
//! holds a blocking thread, never an async worker, so the caller's timeout (the breaker's
//! `CB_TIMEOUT`) still fires and degraded mode takes over (SPEC §1.9). A database held in memory
//! (the simulator's) has no disk to stall and runs inline, so a seed's schedule stays the same.

use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    db: Arc<Db>,
    /// Run redb on the blocking pool (a file) rather than inline (a database in memory).
    offload: bool,
}

/// The database and its commit policy: what a call needs, wherever it runs.
struct Db {
    db: Database,
    /// Commit durably only every this many writes (1: every write). Only a database held in
    /// memory, which has no disk to be durable on, commits less often.
    durable_every: u32,
    writes: std::sync::atomic::AtomicU32,
}

/// The database's writer slot, held: every write waits for it to drop, as writes wait for a
/// stalled disk. For tests and drills of the stalled-disk path.
pub struct WriteStall(#[allow(dead_code)] redb::WriteTransaction);

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
        let db = Db {
            db,
            durable_every: 1,
            writes: std::sync::atomic::AtomicU32::new(0),
        };
        db.create_table()?;
        Ok(Self {
            path,
            db: Arc::new(db),
            offload: !crate::planted!(EmbeddedInline),
        })
    }

    /// A database held in memory: the same adapter code without a disk, for simulation sweeps
    /// where thousands of seeds each need a fresh store.
    pub fn in_memory() -> StorageResult<Self> {
        let db = redb::Builder::new()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| StorageError::Config(format!("in-memory redb: {e}")))?;
        let db = Db {
            db,
            durable_every: IN_MEMORY_DURABLE_EVERY,
            writes: std::sync::atomic::AtomicU32::new(0),
        };
        db.create_table()?;
        Ok(Self {
            path: PathBuf::from(":memory:"),
            db: Arc::new(db),
            offload: false,
        })
    }

    /// Take the database's writer slot and hold it until the returned guard drops (see
    /// [`WriteStall`]). Blocks while another write is in progress.
    pub fn stall_writes(&self) -> StorageResult<WriteStall> {
        Ok(WriteStall(self.db.db.begin_write().map_err(io)?))
    }

    /// Run `f` on the database: on the blocking pool for a file, inline for memory.
    async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Db) -> StorageResult<R> + Send + 'static,
    ) -> StorageResult<R> {
        if !self.offload {
            return f(&self.db);
        }
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| io(format!("blocking task: {e}")))?
    }
}

impl Db {
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

    fn get(&self, key: &str) -> StorageResult<Option<Value>> {
        let tx = self.db.begin_read().map_err(io)?;
        let table = tx.open_table(KV).map_err(io)?;
        match table.get(key).map_err(io)? {
            Some(v) => Ok(Some(decode(key, v.value())?)),
            None => Ok(None),
        }
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

    fn scan_values(&self, prefix: &str) -> StorageResult<Vec<(String, Value)>> {
        let mut out = Vec::new();
        self.scan(prefix, |k, v| {
            out.push((k.to_owned(), decode(k, v)?));
            Ok(())
        })?;
        Ok(out)
    }
}

#[async_trait]
impl Storage for EmbeddedStorage {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn init(&self) -> StorageResult<()> {
        self.run(|db| db.create_table()).await
    }

    async fn get(&self, key: &str) -> StorageResult<Option<Value>> {
        let key = key.to_owned();
        self.run(move |db| db.get(&key)).await
    }

    async fn set(&self, key: &str, value: &Value) -> StorageResult<()> {
        let (key, bytes) = (key.to_owned(), encode(value));
        self.run(move |db| {
            db.write(|t| {
                t.insert(key.as_str(), bytes.as_slice())
                    .map(|_| ())
                    .map_err(io)
            })
        })
        .await
    }

    async fn del(&self, key: &str) -> StorageResult<()> {
        let key = key.to_owned();
        self.run(move |db| db.write(|t| t.remove(key.as_str()).map(|_| ()).map_err(io)))
            .await
    }

    async fn keys(&self, prefix: &str) -> StorageResult<Vec<String>> {
        let prefix = prefix.to_owned();
        self.run(move |db| {
            let mut out = Vec::new();
            db.scan(&prefix, |k, _| {
                out.push(k.to_owned());
                Ok(())
            })?;
            Ok(out)
        })
        .await
    }

    async fn atomic_incr(&self, key: &str, delta: i64) -> StorageResult<i64> {
        let key = key.to_owned();
        // One write transaction: redb serializes writers, so read-modify-write is atomic.
        self.run(move |db| {
            db.write(|t| {
                let current = match t.get(key.as_str()).map_err(io)? {
                    Some(v) => as_counter(&key, &decode(&key, v.value())?)?,
                    None => 0,
                };
                let next = current.wrapping_add(delta);
                let bytes = encode(&Value::from(next));
                t.insert(key.as_str(), bytes.as_slice()).map_err(io)?;
                Ok(next)
            })
        })
        .await
    }

    /// One transaction: all or nothing, one fsync.
    async fn set_many(&self, entries: &[(String, Value)]) -> StorageResult<()> {
        let entries: Vec<(String, Vec<u8>)> = entries
            .iter()
            .map(|(k, v)| (k.clone(), encode(v)))
            .collect();
        self.run(move |db| {
            db.write(|t| {
                for (k, v) in &entries {
                    t.insert(k.as_str(), v.as_slice()).map_err(io)?;
                }
                Ok(())
            })
        })
        .await
    }

    /// One transaction: all or nothing, one fsync.
    async fn del_many(&self, keys: &[String]) -> StorageResult<()> {
        let keys = keys.to_vec();
        self.run(move |db| {
            db.write(|t| {
                for k in &keys {
                    t.remove(k.as_str()).map_err(io)?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn visit_prefix(
        &self,
        prefix: &str,
        visit: &mut (dyn for<'k> FnMut(&'k str, &'k Value) + Send),
    ) -> StorageResult<u64> {
        if self.offload {
            // The scan runs on the blocking pool; the visitor, which borrows the caller's
            // state, runs here.
            let all = self.scan_prefix(prefix).await?;
            for (k, v) in &all {
                visit(k, v);
            }
            return Ok(all.len() as u64);
        }
        let mut n = 0;
        self.db.scan(prefix, |k, v| {
            visit(k, &decode(k, v)?);
            n += 1;
            Ok(())
        })?;
        Ok(n)
    }

    async fn scan_prefix(&self, prefix: &str) -> StorageResult<Vec<(String, Value)>> {
        let prefix = prefix.to_owned();
        self.run(move |db| db.scan_values(&prefix)).await
    }
}

#[cfg(test)]
#[cfg(not(spiral_loom))]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    #[test]
    fn a_stalled_disk_holds_a_blocking_thread_and_the_callers_timeout_fires() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStorage::open(dir.path().join("spiral.redb")).unwrap());
        // Another thread holds the writer slot for 3 s: to a writer, a stalled disk.
        let (held, stalled) = std::sync::mpsc::channel();
        let holder = store.clone();
        #[allow(clippy::disallowed_methods)] // the stalled disk, outside the server's logic
        let stall = std::thread::spawn(move || {
            let guard = holder.stall_writes().unwrap();
            held.send(()).unwrap();
            std::thread::sleep(Duration::from_secs(3));
            drop(guard);
        });
        stalled.recv().unwrap();
        // One async worker, as a loaded server has: if the write ran on it, nothing else — not
        // even the timer — could run until the disk came back.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let timed_out = rt.block_on(async {
            tokio::time::timeout(Duration::from_millis(200), store.set("k", &json!(1)))
                .await
                .is_err()
        });
        assert!(
            timed_out,
            "a write to a stalled disk must let its caller's timeout fire"
        );
        stall.join().unwrap();
        drop(rt);
        // The write itself went on once the disk was back.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(store.get("k")).unwrap(), Some(json!(1)));
    }
}
