//! A registry of named proxies and the HTTP API over it — the subset of Toxiproxy's API its
//! clients use, with its JSON shapes, so existing clients work:
//!
//! | route | |
//! |---|---|
//! | `GET /version` | `{"version": …}` |
//! | `POST /reset` | enable every proxy, remove every toxic (204) |
//! | `POST /populate` | create or update a list of proxies (201, `{"proxies":[…]}`) |
//! | `GET /proxies` | `{name: proxy}` |
//! | `POST /proxies` | create `{name, listen, upstream, enabled}` (201; 409 if it exists) |
//! | `GET /proxies/{name}` | the proxy, with its toxics |
//! | `POST /proxies/{name}` | update `enabled` / `upstream` |
//! | `DELETE /proxies/{name}` | 204 |
//! | `GET /proxies/{name}/toxics` | `[toxic]` |
//! | `POST /proxies/{name}/toxics` | add a toxic (409 if its name is taken) |
//! | `GET /proxies/{name}/toxics/{toxic}` | the toxic |
//! | `POST /proxies/{name}/toxics/{toxic}` | update its `toxicity` and `attributes` |
//! | `DELETE /proxies/{name}/toxics/{toxic}` | 204 |
//!
//! Errors are `{"error": message, "status": code}`: 404 for an unknown proxy, toxic or route,
//! 400 for malformed or invalid input, 409 for a name or address already taken. `PATCH` is
//! accepted wherever `POST` updates, as older Toxiproxy clients send it.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::{DecisionLog, Proxy, ProxyConfig, ProxyError, ProxyHandle, Toxic};

/// Toxiproxy's default API address.
pub const DEFAULT_CONTROL_ADDR: &str = "127.0.0.1:8474";

/// A proxy as created over the API or from a config file (Toxiproxy's `-config` format; the
/// `toxics` list is ours and optional).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProxySpec {
    pub name: String,
    /// Default `127.0.0.1:0`.
    #[serde(default)]
    pub listen: Option<String>,
    pub upstream: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub toxics: Vec<Toxic>,
}

fn yes() -> bool {
    true
}

/// A proxy as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyView {
    pub name: String,
    /// The bound address.
    pub listen: String,
    pub upstream: String,
    pub enabled: bool,
    pub toxics: Vec<Toxic>,
}

impl ProxyView {
    fn of(p: &ProxyHandle) -> Self {
        Self {
            name: p.name().to_string(),
            listen: p.listen_addr().to_string(),
            upstream: p.upstream().to_string(),
            enabled: p.enabled(),
            toxics: p.toxics(),
        }
    }
}

/// An update to a proxy: Toxiproxy clients post the whole proxy back, so `name` and an
/// unchanged `listen` are accepted and ignored.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProxyUpdate {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub upstream: Option<String>,
    #[serde(default)]
    pub listen: Option<String>,
}

/// Named proxies sharing one run seed and one decision log.
#[derive(Debug)]
pub struct Registry {
    seed: u64,
    log: DecisionLog,
    proxies: tokio::sync::Mutex<BTreeMap<String, ProxyHandle>>,
}

/// Resolve `host:port` (an IP literal, or a name such as `localhost`).
async fn resolve(what: &str, addr: &str) -> Result<Vec<SocketAddr>, ProxyError> {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Ok(vec![a]);
    }
    let bad = |e: &dyn std::fmt::Display| {
        ProxyError::InvalidProxy(format!("{what} `{addr}` is not a host:port address: {e}"))
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| bad(&e))?
        .collect();
    if addrs.is_empty() {
        return Err(bad(&"no address"));
    }
    Ok(addrs)
}

async fn resolve_one(what: &str, addr: &str) -> Result<SocketAddr, ProxyError> {
    let addrs = resolve(what, addr).await?;
    // Prefer IPv4, as a `localhost` dialled by most clients is.
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| ProxyError::InvalidProxy(format!("{what} `{addr}` has no address")))
}

impl Registry {
    pub fn new(seed: u64, log: DecisionLog) -> Self {
        Self {
            seed,
            log,
            proxies: tokio::sync::Mutex::new(BTreeMap::new()),
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn log(&self) -> &DecisionLog {
        &self.log
    }

    pub async fn list(&self) -> BTreeMap<String, ProxyView> {
        let proxies = self.proxies.lock().await;
        proxies
            .iter()
            .map(|(k, p)| (k.clone(), ProxyView::of(p)))
            .collect()
    }

    pub async fn get(&self, name: &str) -> Result<ProxyView, ProxyError> {
        self.with(name, |p| Ok(ProxyView::of(p))).await
    }

    /// Run `f` on the proxy named `name`.
    pub async fn with<R>(
        &self,
        name: &str,
        f: impl FnOnce(&ProxyHandle) -> Result<R, ProxyError>,
    ) -> Result<R, ProxyError> {
        let proxies = self.proxies.lock().await;
        let p = proxies
            .get(name)
            .ok_or_else(|| ProxyError::ProxyNotFound(name.to_string()))?;
        f(p)
    }

    pub async fn create(&self, spec: ProxySpec) -> Result<ProxyView, ProxyError> {
        let mut proxies = self.proxies.lock().await;
        if proxies.contains_key(&spec.name) {
            return Err(ProxyError::ProxyExists(spec.name));
        }
        let p = self.start(spec).await?;
        let view = ProxyView::of(&p);
        proxies.insert(view.name.clone(), p);
        Ok(view)
    }

    async fn start(&self, spec: ProxySpec) -> Result<ProxyHandle, ProxyError> {
        for t in &spec.toxics {
            t.validate().map_err(ProxyError::InvalidToxic)?;
        }
        let listen = spec.listen.as_deref().unwrap_or("127.0.0.1:0");
        let listen = resolve_one("listen", listen).await?;
        let upstream = resolve_one("upstream", &spec.upstream).await?;
        let config =
            ProxyConfig::new(spec.name, listen, upstream, self.seed).with_log(self.log.clone());
        let p = Proxy::start(config).await?;
        for t in spec.toxics {
            p.add_toxic(t)?;
        }
        if !spec.enabled {
            p.set_enabled(false).await?;
        }
        Ok(p)
    }

    pub async fn update(&self, name: &str, update: ProxyUpdate) -> Result<ProxyView, ProxyError> {
        let proxies = self.proxies.lock().await;
        let p = proxies
            .get(name)
            .ok_or_else(|| ProxyError::ProxyNotFound(name.to_string()))?;
        Self::apply(p, update).await?;
        Ok(ProxyView::of(p))
    }

    async fn apply(p: &ProxyHandle, update: ProxyUpdate) -> Result<(), ProxyError> {
        if let Some(listen) = &update.listen {
            let listen_addr = p.listen_addr();
            let same = resolve("listen", listen)
                .await?
                .iter()
                .any(|a| *a == listen_addr || a.port() == 0);
            if !same {
                return Err(ProxyError::InvalidProxy(format!(
                    "proxy `{}` listens on {listen_addr}; to move it, delete and create it",
                    p.name()
                )));
            }
        }
        if let Some(upstream) = &update.upstream {
            p.set_upstream(resolve_one("upstream", upstream).await?);
        }
        if let Some(enabled) = update.enabled {
            p.set_enabled(enabled).await?;
        }
        Ok(())
    }

    pub async fn delete(&self, name: &str) -> Result<(), ProxyError> {
        let p = self.proxies.lock().await.remove(name);
        match p {
            Some(p) => {
                p.stop().await;
                Ok(())
            }
            None => Err(ProxyError::ProxyNotFound(name.to_string())),
        }
    }

    /// Create the proxies that do not exist; update the others in place (a changed `listen`
    /// recreates the proxy). Stops at the first error.
    pub async fn populate(&self, specs: Vec<ProxySpec>) -> Result<Vec<ProxyView>, ProxyError> {
        let mut views = Vec::new();
        for spec in specs {
            let mut proxies = self.proxies.lock().await;
            let moved = match (proxies.get(&spec.name), &spec.listen) {
                (Some(p), Some(listen)) => {
                    let addrs = resolve("listen", listen).await?;
                    !addrs.contains(&p.listen_addr())
                }
                _ => false,
            };
            if moved && let Some(old) = proxies.remove(&spec.name) {
                old.stop().await;
            }
            let view = match proxies.get(&spec.name) {
                Some(p) => {
                    let update = ProxyUpdate {
                        enabled: Some(spec.enabled),
                        upstream: Some(spec.upstream),
                        listen: None,
                    };
                    Self::apply(p, update).await?;
                    ProxyView::of(p)
                }
                None => {
                    let name = spec.name.clone();
                    let p = self.start(spec).await?;
                    let view = ProxyView::of(&p);
                    proxies.insert(name, p);
                    view
                }
            };
            views.push(view);
        }
        Ok(views)
    }

    /// Enable every proxy and remove every toxic.
    pub async fn reset(&self) -> Result<(), ProxyError> {
        let proxies = self.proxies.lock().await;
        for p in proxies.values() {
            p.remove_all_toxics();
            p.set_enabled(true).await?;
        }
        Ok(())
    }

    /// Stop every proxy.
    pub async fn shutdown(&self) {
        let proxies = std::mem::take(&mut *self.proxies.lock().await);
        for p in proxies.into_values() {
            p.stop().await;
        }
    }
}

/// An API error: a status and a message meant for the client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl From<ProxyError> for ApiError {
    fn from(e: ProxyError) -> Self {
        let status = match &e {
            ProxyError::ProxyNotFound(_) | ProxyError::ToxicNotFound(_) => StatusCode::NOT_FOUND,
            ProxyError::ProxyExists(_) | ProxyError::ToxicExists(_) => StatusCode::CONFLICT,
            ProxyError::Bind { source, .. } if source.kind() == io::ErrorKind::AddrInUse => {
                StatusCode::CONFLICT
            }
            ProxyError::Bind { .. } | ProxyError::InvalidToxic(_) | ProxyError::InvalidProxy(_) => {
                StatusCode::BAD_REQUEST
            }
        };
        Self {
            status,
            message: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.message, "status": self.status.as_u16()});
        (self.status, axum::Json(body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Parse a body ourselves: a malformed one gets our JSON error, and a client that forgets the
/// `Content-Type` header still works.
fn parse<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("bad request: {e}")))
}

/// The API over `registry`.
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/reset", post(reset))
        .route("/populate", post(populate))
        .route("/proxies", get(list_proxies).post(create_proxy))
        .route(
            "/proxies/{name}",
            get(get_proxy)
                .post(update_proxy)
                .patch(update_proxy)
                .delete(delete_proxy),
        )
        .route("/proxies/{name}/toxics", get(list_toxics).post(add_toxic))
        .route(
            "/proxies/{name}/toxics/{toxic}",
            get(get_toxic)
                .post(update_toxic)
                .patch(update_toxic)
                .delete(delete_toxic),
        )
        .fallback(|| async {
            ApiError {
                status: StatusCode::NOT_FOUND,
                message: "no such route".into(),
            }
        })
        .with_state(registry)
}

/// Serve the API on `listener` until `shutdown` completes. The proxies keep running: stop them
/// with [`Registry::shutdown`].
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(listener, router(registry))
        .with_graceful_shutdown(shutdown)
        .await
}

type Reg = State<Arc<Registry>>;

async fn version() -> impl IntoResponse {
    axum::Json(json!({"version": concat!("spiral-proxy ", env!("CARGO_PKG_VERSION"))}))
}

async fn reset(State(reg): Reg) -> ApiResult<StatusCode> {
    reg.reset().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn populate(State(reg): Reg, body: Bytes) -> ApiResult<impl IntoResponse> {
    let specs: Vec<ProxySpec> = parse(&body)?;
    let proxies = reg.populate(specs).await?;
    Ok((StatusCode::CREATED, axum::Json(json!({"proxies": proxies}))))
}

async fn list_proxies(State(reg): Reg) -> impl IntoResponse {
    axum::Json(reg.list().await)
}

async fn create_proxy(State(reg): Reg, body: Bytes) -> ApiResult<impl IntoResponse> {
    let spec: ProxySpec = parse(&body)?;
    let view = reg.create(spec).await?;
    Ok((StatusCode::CREATED, axum::Json(view)))
}

async fn get_proxy(State(reg): Reg, Path(name): Path<String>) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(reg.get(&name).await?))
}

async fn update_proxy(
    State(reg): Reg,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let update: ProxyUpdate = parse(&body)?;
    Ok(axum::Json(reg.update(&name, update).await?))
}

async fn delete_proxy(State(reg): Reg, Path(name): Path<String>) -> ApiResult<StatusCode> {
    reg.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_toxics(State(reg): Reg, Path(name): Path<String>) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(reg.with(&name, |p| Ok(p.toxics())).await?))
}

async fn add_toxic(
    State(reg): Reg,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    // Parse as a value first so a bad toxic is a 400 with serde's reason, not a 422.
    let value: Value = parse(&body)?;
    let toxic: Toxic = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("invalid toxic: {e}")))?;
    Ok(axum::Json(reg.with(&name, |p| p.add_toxic(toxic)).await?))
}

async fn get_toxic(
    State(reg): Reg,
    Path((name, toxic)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let t = reg
        .with(&name, |p| {
            p.toxic(&toxic)
                .ok_or_else(|| ProxyError::ToxicNotFound(toxic.clone()))
        })
        .await?;
    Ok(axum::Json(t))
}

async fn update_toxic(
    State(reg): Reg,
    Path((name, toxic)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let changes: Value = parse(&body)?;
    let t = reg
        .with(&name, |p| {
            let current = p
                .toxic(&toxic)
                .ok_or_else(|| ProxyError::ToxicNotFound(toxic.clone()))?;
            let next = current
                .updated(&changes)
                .map_err(ProxyError::InvalidToxic)?;
            p.update_toxic(next)
        })
        .await?;
    Ok(axum::Json(t))
}

async fn delete_toxic(
    State(reg): Reg,
    Path((name, toxic)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    reg.with(&name, |p| p.remove_toxic(&toxic)).await?;
    Ok(StatusCode::NO_CONTENT)
}
