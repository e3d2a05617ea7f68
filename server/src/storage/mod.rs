//! The storage adapter contract (SPEC §1.6) and its adapters.
//!
//! Every adapter — `memory`, `embedded` (redb), `redis` (single or cluster), and the simulated one
//! in the harness — keeps the same promises, checked by one proptest state-machine suite
//! (`chaos/tests/adapter_contract.rs`):
//! - `init` is idempotent; `get` of a missing key is `None`; `del` of a missing key is not an error;
//! - JSON values round-trip exactly (every JSON type, Unicode, nesting, 1 MiB);
//! - `keys(prefix)` lists exactly the live keys starting with `prefix`, sorted;
//! - a counter is a JSON integer; `atomic_incr` on a missing key starts from 0;
//! - concurrent writers to one key: the last writer wins, never a torn value.

pub mod embedded;
pub mod instrumented;
pub mod memory;
pub mod redis;

use async_trait::async_trait;
use serde_json::Value;

pub use crate::error::StorageError;

pub type StorageResult<T> = Result<T, StorageError>;

/// A key-value store of JSON values.
#[async_trait]
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Short backend name for metrics and status: `memory`, `embedded`, `redis`, `redis-cluster`, `sim`.
    fn backend(&self) -> &'static str;

    /// Prepare the backend (tables, connections). Safe to call any number of times.
    async fn init(&self) -> StorageResult<()>;

    async fn get(&self, key: &str) -> StorageResult<Option<Value>>;

    async fn set(&self, key: &str, value: &Value) -> StorageResult<()>;

    /// Removing a missing key succeeds.
    async fn del(&self, key: &str) -> StorageResult<()>;

    /// Every key starting with `prefix`, in ascending byte order.
    async fn keys(&self, prefix: &str) -> StorageResult<Vec<String>>;

    /// Add `delta` to the integer at `key` (missing counts as 0) and return the new value.
    async fn atomic_incr(&self, key: &str, delta: i64) -> StorageResult<i64>;

    /// Call `visit` for every `(key, value)` under `prefix`, in key order, and return how many
    /// were visited. Adapters that hold values in process override this to avoid copying them;
    /// the default is `scan_prefix`.
    async fn visit_prefix(
        &self,
        prefix: &str,
        visit: &mut (dyn for<'k> FnMut(&'k str, &'k Value) + Send),
    ) -> StorageResult<u64> {
        let all = self.scan_prefix(prefix).await?;
        for (k, v) in &all {
            visit(k, v);
        }
        Ok(all.len() as u64)
    }

    /// Write several keys. Adapters that can do it in one transaction or round trip override
    /// this; the default writes one key at a time. Atomic only where the adapter says so.
    async fn set_many(&self, entries: &[(String, Value)]) -> StorageResult<()> {
        for (k, v) in entries {
            self.set(k, v).await?;
        }
        Ok(())
    }

    /// Remove several keys (missing ones are fine); see `set_many`.
    async fn del_many(&self, keys: &[String]) -> StorageResult<()> {
        for k in keys {
            self.del(k).await?;
        }
        Ok(())
    }

    /// Every `(key, value)` under `prefix`, in key order. Adapters override this with a batched
    /// read; the default is correct for any adapter (a key deleted between listing and reading
    /// is skipped, as if listed a moment later).
    async fn scan_prefix(&self, prefix: &str) -> StorageResult<Vec<(String, Value)>> {
        let keys = self.keys(prefix).await?;
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            if let Some(v) = self.get(&k).await? {
                out.push((k, v));
            }
        }
        Ok(out)
    }
}

pub type SharedStorage = std::sync::Arc<dyn Storage>;

/// Parse stored bytes as JSON, naming the key when they are not.
pub(crate) fn decode(key: &str, bytes: &[u8]) -> StorageResult<Value> {
    serde_json::from_slice(bytes).map_err(|e| StorageError::Corrupt {
        key: key.to_owned(),
        detail: e.to_string(),
    })
}

pub(crate) fn encode(value: &Value) -> Vec<u8> {
    // Serializing a `Value` cannot fail: its map keys are strings by construction.
    serde_json::to_vec(value).unwrap_or_default()
}

/// Interpret a stored value as a counter.
pub(crate) fn as_counter(key: &str, value: &Value) -> StorageResult<i64> {
    value.as_i64().ok_or_else(|| StorageError::Corrupt {
        key: key.to_owned(),
        detail: format!("not an integer counter: {value}"),
    })
}
