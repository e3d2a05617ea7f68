//! HTTP routes (SPEC §1.1). Probes (`/health`, `/ready`, `/version`) need no token and are never
//! rate limited, so an orchestrator's probes cannot be throttled into restarting a healthy server.
//! Everything else passes `authenticate`: token, block list, revocation, then the per-user
//! HTTP bucket, whose figures every answer carries in `X-RateLimit-*`.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::auth::shared::Revoke;
use crate::auth::{Claims, Principal, Reject, token_from};
use crate::engine::StoreRequest;
use crate::protocol::CloseCode;
use crate::ratelimit::Decision;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The HTTP router over `state`.
pub fn router(state: AppState) -> Router {
    let authed = Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/v1/memories", post(store))
        .route("/v1/memories/{id}", get(get_memory).delete(delete_memory))
        .route("/v1/spirals", get(spirals))
        .route("/auth/refresh", post(refresh))
        .route("/admin/gc", post(admin_gc))
        .route("/admin/rebuild-stats", post(admin_rebuild))
        .route("/admin/tokens/revoke", post(admin_revoke))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/version", get(version))
        .merge(authed)
        .fallback(|| async { ApiError::NotFound })
        .layer(middleware::from_fn_with_state(state.clone(), timed))
        .layer(axum::extract::DefaultBodyLimit::max(
            state.cfg.max_message_size,
        ))
        .with_state(state)
}

/// Record `http_request_duration_seconds{route,status}`.
async fn timed(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = st.clock.now();
    let resp = next.run(req).await;
    let secs = st
        .clock
        .now()
        .saturating_duration_since(started)
        .as_secs_f64();
    st.metrics
        .http_request_duration_seconds
        .observe(&[&route, resp.status().as_str()], secs);
    resp
}

/// The token of an HTTP request: `Authorization: Bearer`, then `?token=`.
pub fn request_token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    token_from(auth, query, None)
}

fn rate_headers(resp: &mut Response, d: &Decision, now_ms: u64) {
    let reset_s = (now_ms + d.reset_after_ms).div_ceil(1000);
    let h = resp.headers_mut();
    for (name, v) in [
        ("x-ratelimit-limit", d.limit),
        ("x-ratelimit-remaining", d.remaining),
        ("x-ratelimit-reset", reset_s),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v.to_string()) {
            h.insert(name, v);
        }
    }
}

/// Token → principal → HTTP bucket; the principal goes into the request's extensions.
async fn authenticate(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let token = request_token(req.headers(), req.uri().query());
    let who = match token {
        None => Err(crate::auth::Reject::Missing),
        Some(t) => st.authenticate(&t).await,
    };
    let who = match who {
        Ok(p) => {
            st.metrics.http_auth_attempts.inc(&["ok"]);
            p
        }
        Err(r) => {
            st.metrics.http_auth_attempts.inc(&[r.label()]);
            return ApiError::from(r).into_response();
        }
    };
    let now_ms = st.now_ms();
    let d = st.rate("http", who.user(), &st.cfg.http_rate).await;
    if !d.allowed {
        crate::reached!("ratelimit.http_denied");
        st.metrics.rate_limit_exceeded.inc(&["http"]);
        let mut resp = ApiError::RateLimited {
            retry_after_ms: d.retry_after_ms,
        }
        .into_response();
        rate_headers(&mut resp, &d, now_ms);
        return resp;
    }
    req.extensions_mut().insert(who);
    let mut resp = next.run(req).await;
    rate_headers(&mut resp, &d, now_ms);
    resp
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn version() -> Json<Value> {
    Json(json!({"name": "spiral", "version": VERSION}))
}

/// Ready when storage answers, or when it does not but the degraded journal still has room
/// (writes are still acknowledged safely). 503 only when neither holds.
async fn ready(State(st): State<AppState>) -> Response {
    let reachable = st.storage.probe(Duration::from_millis(1000)).await;
    let s = st.storage.status();
    let room = s.journal_len < s.journal_max;
    let body = json!({
        "ready": reachable || room,
        "storage_reachable": reachable,
        "degraded": s.degraded || !reachable,
        "journal_len": s.journal_len,
        "journal_max": s.journal_max,
    });
    let code = if reachable || room {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn status(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let s = st.storage.status();
    let gc = st.engine.gc_totals();
    Ok(Json(json!({
        "version": VERSION,
        "connections": st.conns.open(),
        "users": st.conns.users(),
        "storage": {
            "backend": st.storage.inner().backend(),
            "healthy": s.breaker_state == 0 && !s.degraded,
            "breaker_state": super::breaker_name(s.breaker_state),
            "breaker_opens_total": s.opens_total,
            "degraded": s.degraded,
            "journal_len": s.journal_len,
            "journal_max": s.journal_max,
        },
        "shared_state": st.shared.backend(),
        "gc": {
            "passes": gc.passes,
            "collected": gc.collected,
            "skipped": gc.skipped,
            "out_of_time": gc.out_of_time,
            "last_pause_ms": gc.last_pause_ms,
            "max_pause_ms": gc.max_pause_ms,
            "backlog": st.engine.gc_backlog()?,
        },
        "memories": st.engine.total()?,
    })))
}

async fn metrics(State(st): State<AppState>) -> Response {
    let text = st.metrics.render(&st.snapshot());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Parse a JSON body, mapping every failure to `bad_request` or `payload_too_large`.
pub fn parse_body<T: serde::de::DeserializeOwned>(
    st: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(st.cfg.max_message_size)
        } else {
            ApiError::BadRequest("unreadable body".into())
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest(format!("invalid body: {e}")))
}

/// The store bucket, shared by `POST /v1/memories` and `memory.store`.
pub async fn admit_store(st: &AppState, who: &Principal) -> Result<(), ApiError> {
    let d = st.rate("store", who.user(), &st.cfg.store_rate).await;
    if d.allowed {
        st.metrics.store_allowed.inc();
        Ok(())
    } else {
        crate::reached!("ratelimit.store_denied");
        st.metrics.store_denied.inc();
        st.metrics.rate_limit_exceeded.inc(&["store"]);
        Err(ApiError::RateLimited {
            retry_after_ms: d.retry_after_ms,
        })
    }
}

async fn store(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: Value = parse_body(&st, body)?;
    if !req.is_object() {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object with `content`".into(),
        ));
    }
    let req: StoreRequest = serde_json::from_value(req)
        .map_err(|e| ApiError::BadRequest(format!("invalid body: {e}")))?;
    admit_store(&st, &who).await?;
    let stored = st.engine.store(who.tenant(), req).await?;
    Ok((StatusCode::CREATED, Json(stored)).into_response())
}

async fn get_memory(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let node = st.engine.get(who.tenant(), &id).await?;
    Ok(Json(
        serde_json::to_value(node).map_err(|_| ApiError::Internal)?,
    ))
}

async fn delete_memory(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    st.engine.collect(who.tenant(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/spirals` and `spiral.stats`, timed as analysis latency.
pub fn spiral_stats(st: &AppState) -> Result<Value, ApiError> {
    let started = st.clock.now();
    let view = st.engine.spirals()?;
    let v = serde_json::to_value(view).map_err(|_| ApiError::Internal)?;
    observe_analysis(st, started);
    Ok(v)
}

/// An analysis (statistics, a rebuild) that began at `started` has finished: its latency.
fn observe_analysis(st: &AppState, started: crate::clock::Instant) {
    let ms = st
        .clock
        .now()
        .saturating_duration_since(started)
        .as_secs_f64()
        * 1000.0;
    st.metrics.analysis_latency_ms.observe(ms);
}

async fn spirals(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    spiral_stats(&st).map(Json)
}

/// A fresh token for the caller: same subject, roles, tenant and scope; a new `jti`, unique across
/// restarts and instances. The chain keeps its original authentication time (`auth_time`, else
/// the old token's `iat`, else now): every token of it expires by that plus
/// `REFRESH_MAX_LIFETIME_S`, and past that the chain cannot be refreshed (401 `expired`).
async fn refresh(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    if !st.keys.can_sign() {
        return Err(ApiError::BadRequest(
            "this server verifies tokens but holds no signing key".into(),
        ));
    }
    let now_s = st.now_ms() / 1000;
    let old = &who.claims;
    let lifetime = old
        .iat
        .map_or(st.cfg.refresh_lifetime_s, |iat| old.exp.saturating_sub(iat))
        .clamp(60, 24 * 3600);
    let (auth_time, exp) = if crate::planted!(RefreshForever) {
        // Planted: every refresh starts the clock again, as before the chain kept its start.
        (None, now_s + lifetime)
    } else {
        let auth_time = old.authenticated_at().unwrap_or(now_s);
        let deadline = auth_time.saturating_add(st.cfg.refresh_max_lifetime_s);
        if deadline <= now_s {
            crate::reached!("auth.refresh_exhausted");
            return Err(ApiError::Unauthorized(Reject::Expired));
        }
        (Some(auth_time), (now_s + lifetime).min(deadline))
    };
    let claims = Claims {
        scope: old.scope.clone(),
        auth_time,
        ..Claims::new(old.sub.clone(), old.tenant.clone(), exp)
            .roles(&old.roles)
            .jti(st.new_jti())
            .issued_at(now_s)
    };
    let token = st.keys.mint(&claims).map_err(|e| {
        tracing::error!(error = %e, "minting a refreshed token");
        ApiError::Internal
    })?;
    Ok(Json(json!({"token": token, "expires_at": claims.exp})))
}

fn require_admin(who: &Principal) -> Result<(), ApiError> {
    if who.claims.has_role("admin") {
        Ok(())
    } else {
        Err(ApiError::Forbidden("role `admin` required"))
    }
}

async fn admin_gc(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&who)?;
    let report = st.engine.gc("admin").await?;
    Ok(Json(json!({"ran": report.is_some(), "report": report})))
}

async fn admin_rebuild(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&who)?;
    let started = st.clock.now();
    let report = st.engine.rebuild_stats().await?;
    observe_analysis(&st, started);
    Ok(Json(
        serde_json::to_value(report).map_err(|_| ApiError::Internal)?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    jti: Option<String>,
    sub: Option<String>,
}

/// How long a revoked `jti` is remembered when its expiry is unknown.
const JTI_REVOCATION_MS: u64 = 30 * 24 * 3600 * 1000;

async fn admin_revoke(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&who)?;
    let b: RevokeBody = parse_body(&st, body)?;
    let now_ms = st.now_ms();
    let what = match (b.jti, b.sub) {
        (Some(jti), None) if !jti.is_empty() => Revoke::Jti {
            jti,
            until_ms: now_ms + JTI_REVOCATION_MS,
        },
        (None, Some(sub)) if !sub.is_empty() => Revoke::Sub(sub),
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of `jti` or `sub`".into(),
            ));
        }
    };
    let recorded = st.shared.revoke(&what, now_ms).await;
    // This instance honours the revocation even if it could not be shared.
    let closed = match &what {
        Revoke::Jti { jti, .. } => st.conns.close_matching(None, Some(jti), CloseCode::Revoked),
        Revoke::Sub(sub) => st.conns.close_matching(Some(sub), None, CloseCode::Revoked),
    };
    if closed > 0 {
        crate::reached!("ws.closed_revoked");
    }
    if let Err(e) = recorded {
        tracing::warn!(error = %e, "revocation not shared with other instances: Redis unreachable");
        return Err(ApiError::StorageUnavailable);
    }
    let revoked = match &what {
        Revoke::Jti { jti, .. } => json!({"jti": jti}),
        Revoke::Sub(sub) => json!({"sub": sub}),
    };
    Ok(Json(
        json!({"revoked": revoked, "closed_connections": closed}),
    ))
}

/// Turn an axum body into bytes (for tests of the router without sockets).
pub async fn body_bytes(body: Body) -> Bytes {
    http_body_util::BodyExt::collect(body)
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default()
}
