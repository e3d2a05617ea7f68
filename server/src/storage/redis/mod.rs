//! Redis adapter (`REDIS_URL`): one Redis or a Redis Cluster, plain or TLS.
//!
//! # Key layout
//! Values are JSON text. Listing must not use `KEYS` (it blocks the server) and `SCAN` reaches one
//! cluster node only, so the adapter keeps explicit index sets. Every key belongs to one of
//! [`SHARDS`] shards (`FNV-1a(key) % 16`); the shard's hash tag keeps a data key and its index set
//! in one cluster slot, so one Lua script updates both atomically:
//!
//! ```text
//! <namespace>:{s07}:k:<key>   the value (a counter is an INCRBY integer, i.e. a JSON integer)
//! <namespace>:{s07}:idx       set of the shard's live keys
//! ```
//!
//! The namespace (default `spiral`) lets several servers or test cases share one Redis. The hash
//! tag is the first `{…}` in a Redis key, and it always precedes the user's key, so keys may
//! contain braces.
//!
//! # Connections
//! A single node is reached through `Redial`ing: a multiplexed connection made by a dial
//! function, dropped on an I/O error, an unrecoverable error or a timeout, and dialled again on the
//! next call. Production dials TCP/TLS with [`redis::Client`]; the simulator hands in a dialer over
//! its own streams ([`RedisStorage::with_dialer`], [`dial_stream`]). Dial and handshake run under
//! `connect_timeout_ms`, each command under `response_timeout_ms`. A cluster uses redis-rs's
//! cluster connection (which follows slot moves itself) behind the same re-dialling wrapper.
//!
//! # Security
//! `rediss://` uses TLS (rustls, CA from `REDIS_CA`). A plain `redis://` to anything but loopback
//! is refused unless `ALLOW_INSECURE_REDIS=true`: credentials and memories would cross the network
//! in clear text.

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::try_join_all;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, ErrorKind, IntoConnectionInfo, Pipeline,
    RedisFuture, Script, ServerErrorKind, TlsCertificates,
};
use serde_json::Value;

use super::{Storage, StorageError, StorageResult, decode, encode};

/// What a dialer needs to name, re-exported so the simulator need not depend on `redis` itself.
pub use redis::{RedisConnectionInfo, RedisError, RedisResult};

mod config;
mod conn;
mod keys;
mod scripts;
#[cfg(test)]
mod tests;

pub use config::*;
pub use conn::*;
pub use keys::*;
pub use scripts::*;

/// Number of index shards. Fixed: changing it moves every key (a data migration).
pub const SHARDS: usize = 16;

/// Keys per `MGET` in `scan_prefix`, and per script call in `set_many`/`del_many`.
const BATCH: usize = 500;

/// `MGET` batches in flight at once during `scan_prefix`: enough to keep the multiplexed
/// connection's pipeline full, few enough that every reply arrives well within the response timeout.
const BATCHES_IN_FLIGHT: usize = 8;

// --- the adapter ------------------------------------------------------------------------------

/// The Redis adapter. Cheap to share behind an `Arc`; every call multiplexes over one connection.
pub struct RedisStorage {
    backend: &'static str,
    /// Where it points, without credentials: for errors and `Debug`.
    label: String,
    namespace: String,
    response_timeout_ms: u64,
    conn: Redial,
}

impl fmt::Debug for RedisStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStorage")
            .field("backend", &self.backend)
            .field("target", &self.label)
            .field("namespace", &self.namespace)
            .field("response_timeout_ms", &self.response_timeout_ms)
            .finish()
    }
}

impl RedisStorage {
    /// Validate `config` and prepare the connection. No network I/O: the first call dials, so an
    /// unreachable Redis at start-up is an outage (handled by the resilience layer), not a
    /// configuration error. `init` checks reachability.
    pub async fn connect(config: RedisConfig) -> StorageResult<Self> {
        Self::open(config)
    }

    /// [`connect`](Self::connect) without the `async`.
    pub fn open(config: RedisConfig) -> StorageResult<Self> {
        let nodes = config.validate()?;
        let tls = config.tls_certificates(&nodes)?;
        let label = nodes
            .iter()
            .map(|n| n.addr.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let config_err = |e: RedisError| StorageError::Config(format!("REDIS_URL/REDIS_CA: {e}"));
        let (backend, dialer): (&'static str, Box<dyn Dial>) = if config.is_cluster() {
            let mut builder =
                redis::cluster::ClusterClientBuilder::new(nodes.iter().map(|n| n.url.as_str()))
                    .connection_timeout(Duration::from_millis(config.connect_timeout_ms))
                    .response_timeout(Duration::from_millis(config.response_timeout_ms));
            if let Some(certs) = tls {
                builder = builder.certs(certs);
            }
            let client = builder.build().map_err(config_err)?;
            let dial = move || {
                let client = client.clone();
                async move { Ok(Dialed::cluster(client.get_async_connection().await?)) }
            };
            ("redis-cluster", Box::new(dial))
        } else {
            let url = nodes[0].url.as_str();
            let client = match tls {
                Some(certs) => redis::Client::build_with_tls(url, certs),
                None => redis::Client::open(url),
            }
            .map_err(config_err)?;
            let async_config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_millis(config.connect_timeout_ms)))
                .set_response_timeout(None);
            let dial = move || {
                let client = client.clone();
                let async_config = async_config.clone();
                async move {
                    let conn = client
                        .get_multiplexed_async_connection_with_config(&async_config)
                        .await?;
                    Ok(Dialed::multiplexed(conn))
                }
            };
            ("redis", Box::new(dial))
        };
        Ok(Self {
            backend,
            label,
            namespace: config.namespace,
            response_timeout_ms: config.response_timeout_ms,
            conn: Redial::new(dialer, config.connect_timeout_ms),
        })
    }

    /// A single-node adapter over connections made by `dialer` — the simulator's entry point
    /// (see [`dial_stream`]). `name` names the target in errors. Defaults: namespace `spiral`,
    /// response timeout 500 ms, connect timeout 1000 ms; see the `with_*` methods.
    pub fn with_dialer(name: impl Into<String>, dialer: impl Dial) -> Self {
        Self {
            backend: "redis",
            label: name.into(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            response_timeout_ms: DEFAULT_RESPONSE_TIMEOUT_MS,
            conn: Redial::new(Box::new(dialer), DEFAULT_CONNECT_TIMEOUT_MS),
        }
    }

    /// Use another key namespace (no braces).
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> StorageResult<Self> {
        let namespace = namespace.into();
        validate_namespace(&namespace)?;
        self.namespace = namespace;
        Ok(self)
    }

    /// Set the per-command and dial time limits, in ms (at least 1).
    pub fn with_timeouts(mut self, response_timeout_ms: u64, connect_timeout_ms: u64) -> Self {
        self.response_timeout_ms = response_timeout_ms.max(1);
        self.conn.connect_timeout_ms = connect_timeout_ms.max(1);
        self
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `key` in this adapter's namespace, for state that is not a stored node (rate-limit
    /// buckets, token replay and revocation marks). Each such key is used alone, so it needs no
    /// hash tag in a cluster.
    pub fn namespaced(&self, key: &str) -> String {
        format!("{}:{key}", self.namespace)
    }

    /// Run one command under the adapter's timeouts and re-dialling. `label` names it in errors.
    pub async fn query<T: redis::FromRedisValue + Send>(
        &self,
        label: &str,
        cmd: redis::Cmd,
    ) -> StorageResult<T> {
        self.call(label, |mut c| async move { cmd.query_async(&mut c).await })
            .await
    }

    /// Run a script (`EVALSHA`, loading it on a miss) under the adapter's timeouts.
    pub async fn invoke<T: redis::FromRedisValue + Send>(
        &self,
        label: &str,
        script: &Script,
        keys: &[String],
        args: &[String],
    ) -> StorageResult<T> {
        let mut inv = script.prepare_invoke();
        for k in keys {
            inv.key(k);
        }
        for a in args {
            inv.arg(a);
        }
        self.call(
            label,
            |mut c| async move { inv.invoke_async::<T>(&mut c).await },
        )
        .await
    }

    /// Run one request under the response timeout; failures that spoil the connection drop it.
    async fn call<T, Fut>(&self, key: &str, request: impl FnOnce(Conn) -> Fut) -> StorageResult<T>
    where
        Fut: Future<Output = RedisResult<T>>,
    {
        let live = self.conn.live(&self.label).await?;
        let limit = Duration::from_millis(self.response_timeout_ms);
        match tokio::time::timeout(limit, request(live.conn.clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let fault = classify(&e);
                if fault == Fault::Broken {
                    self.conn.invalidate(live.id).await;
                }
                Err(match fault {
                    Fault::Data => StorageError::Corrupt {
                        key: key.to_owned(),
                        detail: e.to_string(),
                    },
                    Fault::Broken | Fault::Outage if e.is_timeout() => {
                        StorageError::Timeout(self.response_timeout_ms)
                    }
                    Fault::Broken | Fault::Outage => {
                        StorageError::Unavailable(format!("redis {}: {e}", self.label))
                    }
                })
            }
            Err(_) => {
                self.conn.invalidate(live.id).await;
                Err(StorageError::Timeout(self.response_timeout_ms))
            }
        }
    }

    fn data_key(&self, key: &str) -> String {
        data_key(&self.namespace, key)
    }

    fn index_key(&self, shard: usize) -> String {
        index_key(&self.namespace, shard)
    }

    /// The members of every index set, each shard's list unsorted.
    async fn index_members(&self) -> StorageResult<Vec<Vec<String>>> {
        try_join_all((0..SHARDS).map(|shard| async move {
            let idx = self.index_key(shard);
            let cmd = redis::cmd("SMEMBERS").arg(&idx).to_owned();
            self.call(&idx, |mut c| async move { cmd.query_async(&mut c).await })
                .await
        }))
        .await
    }

    /// `items` grouped by the shard of their key, in chunks of at most [`BATCH`].
    fn by_shard<T>(
        items: impl IntoIterator<Item = T>,
        key_of: impl Fn(&T) -> &str,
    ) -> Vec<(usize, Vec<T>)> {
        let mut shards: Vec<Vec<T>> = (0..SHARDS).map(|_| Vec::new()).collect();
        for item in items {
            shards[shard_of(key_of(&item))].push(item);
        }
        let mut out = Vec::new();
        for (shard, mut items) in shards.into_iter().enumerate() {
            while !items.is_empty() {
                let rest = items.split_off(items.len().min(BATCH));
                out.push((shard, std::mem::replace(&mut items, rest)));
            }
        }
        out
    }

    async fn put(&self, shard: usize, entries: &[(&str, Vec<u8>)]) -> StorageResult<()> {
        let first = entries.first().map_or("", |(k, _)| *k);
        let mut inv = PUT.prepare_invoke();
        inv.key(self.index_key(shard));
        for (k, _) in entries {
            inv.key(self.data_key(k));
        }
        for (k, _) in entries {
            inv.arg(*k);
        }
        for (_, v) in entries {
            inv.arg(v.as_slice());
        }
        self.call(first, |mut c| async move {
            inv.invoke_async::<i64>(&mut c).await.map(|_| ())
        })
        .await
    }

    async fn remove(&self, shard: usize, keys: &[&str]) -> StorageResult<()> {
        let first = keys.first().copied().unwrap_or("");
        let mut inv = REMOVE.prepare_invoke();
        inv.key(self.index_key(shard));
        for k in keys {
            inv.key(self.data_key(k));
        }
        for k in keys {
            inv.arg(*k);
        }
        self.call(first, |mut c| async move {
            inv.invoke_async::<i64>(&mut c).await.map(|_| ())
        })
        .await
    }
}

#[async_trait]
impl Storage for RedisStorage {
    fn backend(&self) -> &'static str {
        self.backend
    }

    /// A round trip; nothing to create (index sets appear with their first member).
    async fn init(&self) -> StorageResult<()> {
        self.call("", |mut c| async move {
            redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .map(|_| ())
        })
        .await
    }

    async fn get(&self, key: &str) -> StorageResult<Option<Value>> {
        let dk = self.data_key(key);
        let bytes: Option<Vec<u8>> = self
            .call(key, |mut c| async move {
                redis::cmd("GET").arg(&dk).query_async(&mut c).await
            })
            .await?;
        bytes.map(|b| decode(key, &b)).transpose()
    }

    async fn set(&self, key: &str, value: &Value) -> StorageResult<()> {
        self.put(shard_of(key), &[(key, encode(value))]).await
    }

    async fn del(&self, key: &str) -> StorageResult<()> {
        self.remove(shard_of(key), &[key]).await
    }

    async fn keys(&self, prefix: &str) -> StorageResult<Vec<String>> {
        let mut keys: Vec<String> = self
            .index_members()
            .await?
            .into_iter()
            .flatten()
            .filter(|k| k.starts_with(prefix))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }

    /// `INCRBY` (plus the index entry) in one script; a value that is not an integer is `Corrupt`
    /// and stays untouched. Unlike the in-process adapters, overflowing `i64` is an error, not a wrap.
    async fn atomic_incr(&self, key: &str, delta: i64) -> StorageResult<i64> {
        let mut inv = INCR.prepare_invoke();
        inv.key(self.index_key(shard_of(key)))
            .key(self.data_key(key))
            .arg(key)
            .arg(delta);
        let text: Vec<u8> = self
            .call(key, |mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        std::str::from_utf8(&text)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(|| StorageError::Corrupt {
                key: key.to_owned(),
                detail: format!(
                    "INCRBY answered {:?}, not an integer",
                    String::from_utf8_lossy(&text)
                ),
            })
    }

    /// One script per shard and batch, all in flight at once: atomic per shard, not across shards.
    async fn set_many(&self, entries: &[(String, Value)]) -> StorageResult<()> {
        let encoded = entries.iter().map(|(k, v)| (k.as_str(), encode(v)));
        let batches = Self::by_shard(encoded, |(k, _)| k);
        try_join_all(batches.iter().map(|(shard, batch)| self.put(*shard, batch)))
            .await
            .map(|_| ())
    }

    /// One script per shard and batch, all in flight at once: atomic per shard, not across shards.
    async fn del_many(&self, keys: &[String]) -> StorageResult<()> {
        let batches = Self::by_shard(keys.iter().map(String::as_str), |k| k);
        try_join_all(
            batches
                .iter()
                .map(|(shard, batch)| self.remove(*shard, batch)),
        )
        .await
        .map(|_| ())
    }

    /// The rebuild's hot path: the index sets, then `MGET`s of up to 500 same-slot keys, several
    /// in flight on the multiplexed connection. Keys deleted in between are skipped.
    async fn scan_prefix(&self, prefix: &str) -> StorageResult<Vec<(String, Value)>> {
        let members = self.index_members().await?;
        let mut batches = Vec::new();
        for shard_keys in members {
            let mut keys: Vec<String> = shard_keys
                .into_iter()
                .filter(|k| k.starts_with(prefix))
                .collect();
            while !keys.is_empty() {
                let rest = keys.split_off(keys.len().min(BATCH));
                batches.push(std::mem::replace(&mut keys, rest));
            }
        }
        let mut out: Vec<(String, Value)> = stream::iter(batches)
            .map(|keys| async move {
                let data_keys: Vec<String> = keys.iter().map(|k| self.data_key(k)).collect();
                let first = keys.first().cloned().unwrap_or_default();
                let values: Vec<Option<Vec<u8>>> = self
                    .call(&first, |mut c| async move {
                        redis::cmd("MGET").arg(&data_keys).query_async(&mut c).await
                    })
                    .await?;
                if values.len() != keys.len() {
                    return Err(StorageError::Corrupt {
                        key: first,
                        detail: format!("MGET of {} keys answered {}", keys.len(), values.len()),
                    });
                }
                keys.into_iter()
                    .zip(values)
                    .filter_map(|(k, v)| v.map(|bytes| (k, bytes)))
                    .map(|(k, bytes)| decode(&k, &bytes).map(|v| (k, v)))
                    .collect::<StorageResult<Vec<_>>>()
            })
            .buffer_unordered(BATCHES_IN_FLIGHT)
            .try_fold(Vec::new(), |mut acc, batch| async move {
                acc.extend(batch);
                Ok(acc)
            })
            .await?;
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}
