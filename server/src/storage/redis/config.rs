//! How to reach Redis: the configuration, its validation, and the transport policy (TLS, or
//! loopback, or an explicit `ALLOW_INSECURE_REDIS`).

use super::*;

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
    pub(super) fn validate(&self) -> StorageResult<Vec<Node>> {
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

    pub(super) fn tls_certificates(
        &self,
        nodes: &[Node],
    ) -> StorageResult<Option<TlsCertificates>> {
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
pub(super) struct Node {
    pub(super) url: String,
    pub(super) addr: ConnectionAddr,
}

pub(super) fn validate_namespace(ns: &str) -> StorageResult<()> {
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
pub(super) fn check_transport(addr: &ConnectionAddr, allow_insecure: bool) -> StorageResult<()> {
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
