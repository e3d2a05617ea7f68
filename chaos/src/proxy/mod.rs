//! `spiral-proxy`: a seeded TCP fault proxy with Toxiproxy's toxics and HTTP API.
//!
//! A proxy listens on one address and relays each accepted connection to one upstream, through
//! the toxics currently installed — `latency`, `bandwidth`, `slow_close`, `timeout`,
//! `reset_peer`, `slicer`, `limit_data` (Toxiproxy's semantics, see [`ToxicKind`]), our `loss`,
//! and `down` ([`ProxyHandle::set_enabled`]`(false)`: the listener is closed, so new connections
//! are refused, and open ones are cut). Each toxic acts on one direction ([`Stream`]) and applies
//! to a connection with probability `toxicity`.
//!
//! # Determinism
//! The seed names a run. Connection ids count from 0 in accept order per proxy; connection `id`
//! of proxy `name` draws from `SplitMix64::new(sub_seed(seed, "{name}/conn/{id}"))`, and each
//! toxic from that generator's fork by the toxic's name: its first draw decides whether it
//! applies (`draw < toxicity`), later ones pick its values (jitter, slice sizes, losses) chunk by
//! chunk. So no decision depends on the order in which toxics drew, or on which other toxics
//! exist. What is not seeded: timing, and where the kernel splits the byte stream into chunks
//! (one chunk = one read). Every decision is logged ([`DecisionLog`]).
//!
//! # Changes while connections are open
//! Toxics added, updated or removed apply to open connections from their next step, as in
//! Toxiproxy — every kind: a new `timeout`/`reset_peer` starts its clock when the connection
//! first sees it, `limit_data` counts from then. A chunk already being delivered finishes under
//! the toxics it started with. A toxic removed and re-added under the same name replays the same
//! draws.
//!
//! # Layout
//! - [`toxic`] — [`Toxic`], [`ToxicKind`], [`Stream`]: the Toxiproxy JSON model.
//! - `conn` — one connection: a supervisor and a pump per direction.
//! - [`log`] — [`DecisionLog`] and its records.
//! - [`http`] — [`http::Registry`] of named proxies and the Toxiproxy-compatible HTTP API.

pub mod http;
pub mod log;
pub mod toxic;

mod conn;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use log::{Decision, DecisionLog, LogRecord};
pub use toxic::{Stream, Toxic, ToxicKind};

/// Wall time: a fault proxy on real sockets delays by the real clock; nothing simulated reads it.
#[allow(clippy::disallowed_methods)]
pub(crate) fn now() -> Instant {
    Instant::now()
}

/// Errors callers branch on.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("proxy `{0}` already exists")]
    ProxyExists(String),
    #[error("proxy `{0}` not found")]
    ProxyNotFound(String),
    #[error("toxic `{0}` already exists")]
    ToxicExists(String),
    #[error("toxic `{0}` not found")]
    ToxicNotFound(String),
    #[error("invalid toxic: {0}")]
    InvalidToxic(String),
    #[error("invalid proxy: {0}")]
    InvalidProxy(String),
}

/// What a proxy is started with.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Names the proxy in logs and in its connections' random streams.
    pub name: String,
    /// Port 0 picks a free port; [`ProxyHandle::listen_addr`] tells which.
    pub listen: SocketAddr,
    pub upstream: SocketAddr,
    /// The run seed.
    pub seed: u64,
    /// Default: discard.
    pub log: DecisionLog,
}

impl ProxyConfig {
    pub fn new(
        name: impl Into<String>,
        listen: SocketAddr,
        upstream: SocketAddr,
        seed: u64,
    ) -> Self {
        Self {
            name: name.into(),
            listen,
            upstream,
            seed,
            log: DecisionLog::discard(),
        }
    }

    pub fn with_log(mut self, log: DecisionLog) -> Self {
        self.log = log;
        self
    }
}

/// Starts proxies; a running one is a [`ProxyHandle`].
pub enum Proxy {}

impl Proxy {
    /// Bind `config.listen` and start accepting. The proxy runs until [`ProxyHandle::stop`] or
    /// until the handle is dropped.
    pub async fn start(config: ProxyConfig) -> Result<ProxyHandle, ProxyError> {
        if config.name.is_empty() {
            return Err(ProxyError::InvalidProxy("a proxy needs a name".into()));
        }
        let listener = bind(config.listen).await?;
        let listen = listener.local_addr().map_err(|source| ProxyError::Bind {
            addr: config.listen,
            source,
        })?;
        let (state, _) = watch::channel(Snapshot {
            enabled: true,
            stopped: false,
            upstream: config.upstream,
            toxics: Arc::from(Vec::new()),
        });
        let shared = Arc::new(Shared {
            name: config.name,
            seed: config.seed,
            log: config.log,
            started: now(),
            state,
            next_conn: AtomicU64::new(0),
            next_toxic: AtomicU64::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        shared.log(None, None, None, Decision::Enabled);
        Ok(ProxyHandle {
            shared,
            listen,
            accept: tokio::sync::Mutex::new(Some(accept)),
        })
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ProxyError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ProxyError::Bind { addr, source })
}

/// A running proxy. Dropping it stops the proxy (its listener closes, its connections are cut).
pub struct ProxyHandle {
    shared: Arc<Shared>,
    listen: SocketAddr,
    /// The accept task, present while the proxy is enabled. The async lock serialises
    /// enable/disable, which bind and await.
    accept: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for ProxyHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyHandle")
            .field("name", &self.shared.name)
            .field("listen", &self.listen)
            .field("upstream", &self.upstream())
            .field("enabled", &self.enabled())
            .finish()
    }
}

impl ProxyHandle {
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The bound address (the real port when started on port 0).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    pub fn upstream(&self) -> SocketAddr {
        self.shared.state.borrow().upstream
    }

    /// New connections go to `upstream`; open ones keep theirs.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        self.shared
            .state
            .send_if_modified(|s| std::mem::replace(&mut s.upstream, upstream) != upstream);
    }

    pub fn seed(&self) -> u64 {
        self.shared.seed
    }

    pub fn log(&self) -> &DecisionLog {
        &self.shared.log
    }

    pub fn enabled(&self) -> bool {
        self.shared.state.borrow().enabled
    }

    /// The installed toxics, in the order they were added (the order they act in).
    pub fn toxics(&self) -> Vec<Toxic> {
        let state = self.shared.state.borrow();
        state.toxics.iter().map(|i| i.toxic.clone()).collect()
    }

    pub fn toxic(&self, name: &str) -> Option<Toxic> {
        let state = self.shared.state.borrow();
        state
            .toxics
            .iter()
            .find(|i| i.toxic.name == name)
            .map(|i| i.toxic.clone())
    }

    /// Install a toxic; it acts on open connections too.
    pub fn add_toxic(&self, toxic: Toxic) -> Result<Toxic, ProxyError> {
        toxic.validate().map_err(ProxyError::InvalidToxic)?;
        let id = self.shared.next_toxic.fetch_add(1, Ordering::Relaxed);
        let mut added = false;
        self.shared.state.send_if_modified(|s| {
            if s.toxics.iter().any(|i| i.toxic.name == toxic.name) {
                return false;
            }
            let mut v = s.toxics.to_vec();
            v.push(Installed {
                id,
                toxic: toxic.clone(),
            });
            s.toxics = v.into();
            added = true;
            true
        });
        if !added {
            return Err(ProxyError::ToxicExists(toxic.name));
        }
        self.shared.log(
            None,
            Some(&toxic.name),
            Some(toxic.stream),
            Decision::ToxicAdded {
                spec: toxic.clone(),
            },
        );
        Ok(toxic)
    }

    /// Replace the attributes and toxicity of the toxic named `toxic.name`, keeping its place,
    /// its clocks and its draws on open connections. Its type and stream must not change.
    pub fn update_toxic(&self, toxic: Toxic) -> Result<Toxic, ProxyError> {
        toxic.validate().map_err(ProxyError::InvalidToxic)?;
        let mut outcome = Err(ProxyError::ToxicNotFound(toxic.name.clone()));
        self.shared.state.send_if_modified(|s| {
            let Some(pos) = s.toxics.iter().position(|i| i.toxic.name == toxic.name) else {
                return false;
            };
            let old = &s.toxics[pos].toxic;
            if old.kind.type_name() != toxic.kind.type_name() || old.stream != toxic.stream {
                outcome = Err(ProxyError::InvalidToxic(format!(
                    "toxic `{}` is a {} {} toxic; type and stream cannot change",
                    old.name,
                    old.stream,
                    old.kind.type_name()
                )));
                return false;
            }
            let mut v = s.toxics.to_vec();
            v[pos].toxic = toxic.clone();
            s.toxics = v.into();
            outcome = Ok(());
            true
        });
        outcome?;
        self.shared.log(
            None,
            Some(&toxic.name),
            Some(toxic.stream),
            Decision::ToxicUpdated {
                spec: toxic.clone(),
            },
        );
        Ok(toxic)
    }

    pub fn remove_toxic(&self, name: &str) -> Result<Toxic, ProxyError> {
        let mut removed = None;
        self.shared.state.send_if_modified(|s| {
            let Some(pos) = s.toxics.iter().position(|i| i.toxic.name == name) else {
                return false;
            };
            let mut v = s.toxics.to_vec();
            removed = Some(v.remove(pos).toxic);
            s.toxics = v.into();
            true
        });
        let toxic = removed.ok_or_else(|| ProxyError::ToxicNotFound(name.to_string()))?;
        self.shared.log(
            None,
            Some(&toxic.name),
            Some(toxic.stream),
            Decision::ToxicRemoved,
        );
        Ok(toxic)
    }

    pub fn remove_all_toxics(&self) {
        for t in self.toxics() {
            let _ = self.remove_toxic(&t.name);
        }
    }

    /// `false` takes the proxy down: its listener closes (connecting is refused) and open
    /// connections are cut. `true` listens again on the same address.
    pub async fn set_enabled(&self, enabled: bool) -> Result<(), ProxyError> {
        let mut accept = self.accept.lock().await;
        if enabled && accept.is_none() {
            let listener = bind(self.listen).await?;
            *accept = Some(tokio::spawn(accept_loop(listener, self.shared.clone())));
        }
        // When disabling, cut first, so a connection accepted meanwhile is cut as it starts.
        let changed = self
            .shared
            .state
            .send_if_modified(|s| std::mem::replace(&mut s.enabled, enabled) != enabled);
        if !enabled && let Some(task) = accept.take() {
            task.abort();
            // The listener is closed once the aborted task is gone.
            let _ = task.await;
        }
        if changed {
            let decision = if enabled {
                Decision::Enabled
            } else {
                Decision::Disabled
            };
            self.shared.log(None, None, None, decision);
        }
        Ok(())
    }

    /// Stop accepting, cut every connection, and wait until the listener is closed.
    pub async fn stop(self) {
        self.shared.state.send_modify(|s| s.stopped = true);
        let task = self.accept.lock().await.take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.shared.state.send_modify(|s| s.stopped = true);
        if let Ok(mut accept) = self.accept.try_lock()
            && let Some(task) = accept.take()
        {
            task.abort();
        }
    }
}

/// What every task of one proxy shares.
pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) seed: u64,
    pub(crate) log: DecisionLog,
    pub(crate) started: Instant,
    /// The proxy's settings; connections watch it and react to every change.
    pub(crate) state: watch::Sender<Snapshot>,
    next_conn: AtomicU64,
    next_toxic: AtomicU64,
}

impl Shared {
    pub(crate) fn log(
        &self,
        conn: Option<u64>,
        toxic: Option<&str>,
        stream: Option<Stream>,
        decision: Decision,
    ) {
        let t_ms =
            u64::try_from(now().duration_since(self.started).as_millis()).unwrap_or(u64::MAX);
        self.log.record(LogRecord {
            t_ms,
            proxy: self.name.clone(),
            conn,
            toxic: toxic.map(str::to_string),
            stream,
            decision,
        });
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub(crate) enabled: bool,
    pub(crate) stopped: bool,
    pub(crate) upstream: SocketAddr,
    pub(crate) toxics: Arc<[Installed]>,
}

/// A toxic as installed: `id` tells a re-added toxic from the one it replaced, even when a
/// connection sees both changes at once.
#[derive(Debug, Clone)]
pub(crate) struct Installed {
    pub(crate) id: u64,
    pub(crate) toxic: Toxic,
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(conn::run(shared.clone(), id, client, peer));
            }
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(proxy = %shared.name, error = %e, "spiral-proxy: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
