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
//! A single node is reached through [`Redial`]ing: a multiplexed connection made by a dial
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

/// Number of index shards. Fixed: changing it moves every key (a data migration).
pub const SHARDS: usize = 16;

/// Keys per `MGET` in `scan_prefix`, and per script call in `set_many`/`del_many`.
const BATCH: usize = 500;

/// `MGET` batches in flight at once during `scan_prefix`: enough to keep the multiplexed
/// connection's pipeline full, few enough that every reply arrives well within the response timeout.
const BATCHES_IN_FLIGHT: usize = 8;

/// Default per-command time limit.
pub const DEFAULT_RESPONSE_TIMEOUT_MS: u64 = 500;
/// Default time limit for dial + handshake.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 1000;
/// Default key namespace.
pub const DEFAULT_NAMESPACE: &str = "spiral";

/// How to reach Redis. Validated by [`RedisStorage::connect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `REDIS_URL`: `redis://`, `rediss://` or `unix://`; a comma-separated list of node URLs means
    /// a cluster (entries without a scheme take the first entry's).
    pub url: String,
    /// `REDIS_CA`: PEM file with the CA that signed the server's certificate (`rediss://` only).
    /// Without it the platform's trust store is used.
    pub ca_path: Option<PathBuf>,
    /// `ALLOW_INSECURE_REDIS`: permit plain `redis://` to a non-loopback host.
    pub allow_insecure: bool,
    /// Time limit for one command, in ms (default 500).
    pub response_timeout_ms: u64,
    /// Time limit for dial + handshake, in ms (default 1000).
    pub connect_timeout_ms: u64,
    /// Cluster mode even for a single seed URL.
    pub cluster: bool,
    /// Prefix of every Redis key the adapter writes (default `spiral`). No braces: the shard's
    /// hash tag must be the first `{…}` in each key.
    pub namespace: String,
}

impl RedisConfig {
    /// A configuration with the documented defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ca_path: None,
            allow_insecure: false,
            response_timeout_ms: DEFAULT_RESPONSE_TIMEOUT_MS,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            cluster: false,
            namespace: DEFAULT_NAMESPACE.to_owned(),
        }
    }

    /// Cluster mode: asked for, or more than one node URL given.
    pub fn is_cluster(&self) -> bool {
        self.cluster || self.node_urls().len() > 1
    }

    /// The node URLs, trimmed; an entry without a scheme inherits the first entry's scheme.
    pub fn node_urls(&self) -> Vec<String> {
        let parts: Vec<&str> = self
            .url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let scheme = parts
            .first()
            .and_then(|p| p.find("://").map(|i| &p[..i]))
            .unwrap_or("redis");
        parts
            .into_iter()
            .map(|p| {
                if p.contains("://") {
                    p.to_owned()
                } else {
                    format!("{scheme}://{p}")
                }
            })
            .collect()
    }

    /// Check everything that can be checked without the network: URLs parse, plain text only to
    /// loopback (unless allowed), a usable namespace and timeouts. Returns the parsed nodes.
    fn validate(&self) -> StorageResult<Vec<Node>> {
        validate_namespace(&self.namespace)?;
        if self.response_timeout_ms == 0 || self.connect_timeout_ms == 0 {
            return Err(StorageError::Config(
                "redis timeouts must be at least 1 ms".into(),
            ));
        }
        let urls = self.node_urls();
        if urls.is_empty() {
            return Err(StorageError::Config("REDIS_URL: empty".into()));
        }
        urls.into_iter()
            .map(|url| {
                let info = url.as_str().into_connection_info().map_err(|e| {
                    StorageError::Config(format!("REDIS_URL: cannot parse a node URL: {e}"))
                })?;
                let addr = info.addr().clone();
                check_transport(&addr, self.allow_insecure)?;
                Ok(Node { url, addr })
            })
            .collect()
    }

    fn tls_certificates(&self, nodes: &[Node]) -> StorageResult<Option<TlsCertificates>> {
        let tls = nodes
            .iter()
            .any(|n| matches!(n.addr, ConnectionAddr::TcpTls { .. }));
        let (true, Some(path)) = (tls, &self.ca_path) else {
            return Ok(None);
        };
        let pem = std::fs::read(path)
            .map_err(|e| StorageError::Config(format!("REDIS_CA {}: {e}", path.display())))?;
        Ok(Some(TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        }))
    }
}

#[derive(Debug, Clone)]
struct Node {
    url: String,
    addr: ConnectionAddr,
}

fn validate_namespace(ns: &str) -> StorageResult<()> {
    if ns.is_empty() || ns.contains(['{', '}']) {
        return Err(StorageError::Config(format!(
            "redis namespace {ns:?}: must be non-empty and contain no braces"
        )));
    }
    Ok(())
}

/// Loopback: `localhost`, 127.0.0.0/8, `::1` (brackets allowed).
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    // Exactly `localhost`: other names (even `*.localhost`) resolve however DNS says.
    if host.trim_end_matches('.').eq_ignore_ascii_case("localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.is_loopback(),
        Ok(IpAddr::V6(v6)) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => false,
    }
}

/// Refuse clear text across the network unless explicitly allowed.
fn check_transport(addr: &ConnectionAddr, allow_insecure: bool) -> StorageResult<()> {
    match addr {
        ConnectionAddr::Tcp(host, port) if !allow_insecure && !is_loopback_host(host) => {
            Err(StorageError::Config(format!(
                "REDIS_URL: plain redis:// to {host}:{port} would send data and credentials in \
                 clear text; use rediss:// (with REDIS_CA) or set ALLOW_INSECURE_REDIS=true"
            )))
        }
        _ => Ok(()),
    }
}

/// The shard of a key: FNV-1a (64-bit) of its bytes, modulo [`SHARDS`]. Stable forever.
pub fn shard_of(key: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % SHARDS as u64) as usize
}

/// `<ns>:{sNN}:k:<key>`.
pub fn data_key(namespace: &str, key: &str) -> String {
    format!("{namespace}:{{s{:02}}}:k:{key}", shard_of(key))
}

/// `<ns>:{sNN}:idx`.
pub fn index_key(namespace: &str, shard: usize) -> String {
    format!("{namespace}:{{s{shard:02}}}:idx")
}

// --- scripts: a data key and its index set change together --------------------------------

/// KEYS = index, data keys…; ARGV = user keys…, values… (same order).
const PUT_SRC: &str = r"local n = #KEYS - 1
for i = 1, n do
  redis.call('SET', KEYS[i + 1], ARGV[n + i])
  redis.call('SADD', KEYS[1], ARGV[i])
end
return n";
static PUT: LazyLock<Script> = LazyLock::new(|| Script::new(PUT_SRC));

/// KEYS = index, data keys…; ARGV = user keys… (same order).
const REMOVE_SRC: &str = r"for i = 2, #KEYS do
  redis.call('DEL', KEYS[i])
  redis.call('SREM', KEYS[1], ARGV[i - 1])
end
return #KEYS - 1";
static REMOVE: LazyLock<Script> = LazyLock::new(|| Script::new(REMOVE_SRC));

/// KEYS = index, data key; ARGV = user key, delta. Returns the new value as Redis stores it
/// (a string): Lua numbers are doubles and would round counters beyond 2^53.
const INCR_SRC: &str = r"redis.call('INCRBY', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[1], ARGV[1])
return redis.call('GET', KEYS[2])";
static INCR: LazyLock<Script> = LazyLock::new(|| Script::new(INCR_SRC));

/// The adapter's scripts as `(name, SHA1, source)`: `put`, `remove`, `incr`. A simulated Redis
/// implements exactly these, so it must recognise them by hash (`EVALSHA`) and by text (`EVAL`).
pub fn scripts() -> [(&'static str, String, &'static str); 3] {
    [
        ("put", PUT.get_hash().to_owned(), PUT_SRC),
        ("remove", REMOVE.get_hash().to_owned(), REMOVE_SRC),
        ("incr", INCR.get_hash().to_owned(), INCR_SRC),
    ]
}

// --- connections ----------------------------------------------------------------------------

/// A connection to one node or to a cluster.
#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Aborts a connection's driver task when the last user of the connection is gone.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a dialer produces: a ready connection, and the task driving it if the dialer spawned one.
pub struct Dialed {
    conn: Conn,
    driver: Option<AbortOnDrop>,
}

impl Dialed {
    /// A multiplexed connection whose driver, if any, is managed elsewhere (as `redis::Client`
    /// does for the connections it makes).
    pub fn multiplexed(conn: MultiplexedConnection) -> Self {
        Self {
            conn: Conn::Single(conn),
            driver: None,
        }
    }

    /// A cluster connection (it manages its own tasks).
    pub fn cluster(conn: ClusterConnection) -> Self {
        Self {
            conn: Conn::Cluster(conn),
            driver: None,
        }
    }

    /// Spawn `driver` on the current tokio runtime; it is aborted when the connection is
    /// dropped (re-dialled or the adapter dropped). Must be called within a tokio runtime.
    pub fn with_driver(mut self, driver: impl Future<Output = ()> + Send + 'static) -> Self {
        let handle = tokio::spawn(driver);
        self.driver = Some(AbortOnDrop(handle.abort_handle()));
        self
    }
}

/// Handshake over any stream (a turmoil `TcpStream` in the simulator) and spawn the connection's
/// driver: the building block of a simulation dialer.
pub async fn dial_stream<S>(info: &RedisConnectionInfo, stream: S) -> RedisResult<Dialed>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Timeouts are the adapter's (it wraps every call), not the connection's.
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(None)
        .set_response_timeout(None);
    let (conn, driver) = MultiplexedConnection::new_with_config(info, stream, config).await?;
    Ok(Dialed::multiplexed(conn).with_driver(driver))
}

pub type DialFuture = Pin<Box<dyn Future<Output = RedisResult<Dialed>> + Send>>;

/// Makes a new connection. Implemented for every `Fn() -> impl Future<Output = RedisResult<Dialed>>`.
pub trait Dial: Send + Sync + 'static {
    fn dial(&self) -> DialFuture;
}

impl<F, Fut> Dial for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = RedisResult<Dialed>> + Send + 'static,
{
    fn dial(&self) -> DialFuture {
        Box::pin(self())
    }
}

/// The connection in use, shared by every in-flight command. Its driver stops when the last
/// clone is dropped, so commands still in flight on a replaced connection finish or fail on their own.
#[derive(Clone)]
struct Live {
    id: u64,
    conn: Conn,
    _driver: Option<Arc<AbortOnDrop>>,
}

#[derive(Default)]
struct Slot {
    live: Option<Live>,
    last_failure: Option<StorageError>,
}

/// A connection that is dialled on first use and again after it failed.
struct Redial {
    dialer: Box<dyn Dial>,
    connect_timeout_ms: u64,
    /// Dial attempts so far; a caller that waited for someone else's failed dial reports that
    /// failure instead of dialling again straight away (an outage costs one connect timeout per
    /// burst of calls, not one per call).
    attempts: AtomicU64,
    slot: tokio::sync::Mutex<Slot>,
}

impl Redial {
    fn new(dialer: Box<dyn Dial>, connect_timeout_ms: u64) -> Self {
        Self {
            dialer,
            connect_timeout_ms,
            attempts: AtomicU64::new(0),
            slot: tokio::sync::Mutex::new(Slot::default()),
        }
    }

    async fn live(&self, label: &str) -> StorageResult<Live> {
        let seen = self.attempts.load(Ordering::Acquire);
        let mut slot = self.slot.lock().await;
        if let Some(live) = &slot.live {
            return Ok(live.clone());
        }
        if self.attempts.load(Ordering::Acquire) != seen
            && let Some(e) = &slot.last_failure
        {
            return Err(e.clone());
        }
        let id = self.attempts.fetch_add(1, Ordering::AcqRel) + 1;
        let limit = Duration::from_millis(self.connect_timeout_ms);
        let outcome = match tokio::time::timeout(limit, self.dialer.dial()).await {
            Ok(Ok(dialed)) => Ok(Live {
                id,
                conn: dialed.conn,
                _driver: dialed.driver.map(Arc::new),
            }),
            Ok(Err(e)) => Err(StorageError::Unavailable(format!(
                "redis {label}: cannot connect: {e}"
            ))),
            Err(_) => Err(StorageError::Unavailable(format!(
                "redis {label}: no connection within {} ms",
                self.connect_timeout_ms
            ))),
        };
        match outcome {
            Ok(live) => {
                slot.last_failure = None;
                slot.live = Some(live.clone());
                Ok(live)
            }
            Err(e) => {
                slot.last_failure = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Drop connection `id` (if it is still the current one) so the next call dials afresh.
    async fn invalidate(&self, id: u64) {
        let mut slot = self.slot.lock().await;
        if slot.live.as_ref().is_some_and(|l| l.id == id) {
            slot.live = None;
        }
    }
}

/// How a Redis error counts: an outage that spoils the connection, an outage that does not, or a
/// problem with the data at hand.
#[derive(Debug, PartialEq, Eq)]
enum Fault {
    Broken,
    Outage,
    Data,
}

fn classify(e: &RedisError) -> Fault {
    if e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
    {
        return Fault::Broken;
    }
    match e.kind() {
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => Fault::Data,
        ErrorKind::Server(ServerErrorKind::ResponseError) => {
            let text = e.to_string();
            if text.contains("not an integer") || text.contains("overflow") {
                Fault::Data
            } else {
                Fault::Outage
            }
        }
        ErrorKind::ClusterConnectionNotFound => Fault::Broken,
        _ => Fault::Outage,
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_is_fnv1a_mod_16_and_stable() {
        // FNV-1a 64 of "" is the offset basis; of "a" is 0xaf63dc4c8601ec8c.
        assert_eq!(shard_of(""), (0xcbf2_9ce4_8422_2325u64 % 16) as usize);
        assert_eq!(shard_of("a"), (0xaf63_dc4c_8601_ec8cu64 % 16) as usize);
        let mut seen = [false; SHARDS];
        for i in 0..1000 {
            let s = shard_of(&format!("node:{i}"));
            assert!(s < SHARDS);
            seen[s] = true;
        }
        assert!(seen.iter().all(|s| *s), "1000 keys reach every shard");
    }

    #[test]
    fn key_layout_puts_the_hash_tag_first() {
        let s = shard_of("node:{x}:1");
        assert_eq!(
            data_key("spiral", "node:{x}:1"),
            format!("spiral:{{s{s:02}}}:k:node:{{x}}:1")
        );
        assert_eq!(index_key("spiral", 3), "spiral:{s03}:idx");
        assert_eq!(index_key("t1", 15), "t1:{s15}:idx");
        // Redis hashes the first {…}: the data key and its index share it.
        let dk = data_key("spiral", "k");
        let tag = |k: &str| k[k.find('{').unwrap_or(0)..=k.find('}').unwrap_or(0)].to_owned();
        assert_eq!(tag(&dk), tag(&index_key("spiral", shard_of("k"))));
    }

    #[test]
    fn loopback_detection() {
        for host in [
            "localhost",
            "LOCALHOST",
            "localhost.",
            "127.0.0.1",
            "127.8.9.10",
            "::1",
            "[::1]",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_loopback_host(host), "{host} is loopback");
        }
        for host in [
            "10.0.0.5",
            "redis",
            "redis.example.com",
            "128.0.0.1",
            "::",
            "0.0.0.0",
            "localhost.example.com",
            "fe80::1",
        ] {
            assert!(!is_loopback_host(host), "{host} is not loopback");
        }
    }

    fn refused(url: &str, allow: bool) -> Option<String> {
        let mut cfg = RedisConfig::new(url);
        cfg.allow_insecure = allow;
        match RedisStorage::open(cfg) {
            Err(StorageError::Config(m)) => Some(m),
            Err(e) => panic!("unexpected {e}"),
            Ok(_) => None,
        }
    }

    #[test]
    fn plain_text_to_a_remote_host_is_refused_unless_allowed() {
        let m = refused("redis://10.1.2.3:6379", false).expect("refused");
        assert!(m.contains("ALLOW_INSECURE_REDIS"), "{m}");
        assert!(
            refused("redis://:secret@redis.internal:6379", false)
                .is_some_and(|m| !m.contains("secret"))
        );
        assert_eq!(refused("redis://10.1.2.3:6379", true), None);
        assert_eq!(refused("redis://127.0.0.1:6379", false), None);
        assert_eq!(refused("redis://localhost:6379/2", false), None);
        assert_eq!(refused("redis://[::1]:6379", false), None);
        assert_eq!(refused("rediss://redis.example.com:6380", false), None);
        assert_eq!(refused("redis+unix:///run/redis.sock", false), None);
        // One remote node in a cluster list is enough to refuse.
        assert!(refused("redis://127.0.0.1:7000,10.0.0.2:7001", false).is_some());
    }

    #[test]
    fn cluster_mode_from_flag_or_list() {
        let c = RedisConfig::new("redis://127.0.0.1:7000, 127.0.0.1:7001");
        assert!(c.is_cluster());
        assert_eq!(
            c.node_urls(),
            ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]
        );
        assert!(!RedisConfig::new("redis://127.0.0.1:7000").is_cluster());
        let mut one = RedisConfig::new("redis://127.0.0.1:7000");
        one.cluster = true;
        assert!(one.is_cluster());
        let s = RedisStorage::open(c).expect("valid");
        assert_eq!(s.backend(), "redis-cluster");
        let s = RedisStorage::open(RedisConfig::new("redis://127.0.0.1:7000")).expect("valid");
        assert_eq!(s.backend(), "redis");
    }

    #[test]
    fn bad_configuration_is_a_config_error() {
        let mut c = RedisConfig::new("redis://127.0.0.1:6379");
        c.namespace = "a{b}".into();
        assert!(matches!(
            RedisStorage::open(c),
            Err(StorageError::Config(_))
        ));
        assert!(matches!(
            RedisStorage::open(RedisConfig::new("")),
            Err(StorageError::Config(_))
        ));
        let mut c = RedisConfig::new("rediss://127.0.0.1:6379");
        c.ca_path = Some("/nonexistent/ca.pem".into());
        let e = RedisStorage::open(c).expect_err("unreadable CA");
        assert!(e.to_string().contains("REDIS_CA"), "{e}");
    }

    #[test]
    fn batches_stay_within_one_shard() {
        let keys: Vec<String> = (0..5000).map(|i| format!("k{i}")).collect();
        let batches = RedisStorage::by_shard(keys.iter().map(String::as_str), |k| k);
        assert_eq!(batches.iter().map(|(_, b)| b.len()).sum::<usize>(), 5000);
        for (shard, batch) in &batches {
            assert!(batch.len() <= BATCH && !batch.is_empty());
            assert!(batch.iter().all(|k| shard_of(k) == *shard));
        }
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_unavailable_and_redialled() {
        use std::sync::atomic::AtomicUsize;
        let dials = Arc::new(AtomicUsize::new(0));
        let counter = dials.clone();
        let s = RedisStorage::with_dialer("nowhere", move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                Err::<Dialed, _>(RedisError::from(std::io::Error::from(
                    std::io::ErrorKind::ConnectionRefused,
                )))
            }
        });
        assert!(matches!(
            s.get("k").await,
            Err(StorageError::Unavailable(_))
        ));
        assert!(matches!(s.init().await, Err(StorageError::Unavailable(_))));
        assert_eq!(
            dials.load(Ordering::SeqCst),
            2,
            "each call after a failure dials again"
        );
    }

    #[tokio::test]
    async fn a_dial_that_hangs_times_out() {
        let s = RedisStorage::with_dialer("black-hole", || async {
            std::future::pending::<RedisResult<Dialed>>().await
        })
        .with_timeouts(500, 20);
        let e = s.set("k", &Value::Null).await.expect_err("no connection");
        assert!(matches!(e, StorageError::Unavailable(_)), "{e}");
        assert!(e.to_string().contains("20 ms"), "{e}");
    }
}
