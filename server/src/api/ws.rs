//! The WebSocket command channel (SPEC §1.4): one command per text message, one reply each. The
//! handshake checks, the outbound queue, the heartbeat and the closing handshake are the ones
//! both ports share ([`super::socket`]).
//!
//! A connection closes with 4000 after `WS_IDLE_TIMEOUT_MS` without a data message, 4001 after
//! two pings went unanswered, 4003 when its subject or token is revoked, 1009 on an oversized
//! message, 1007 on a text message that is not UTF-8, 1002 on any other protocol violation,
//! 1001 when the server shuts down. Bad input never closes it: malformed JSON, unknown commands
//! and bad arguments each get an error envelope.

use std::time::Duration;

use axum::Extension;
use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::http::{admit_store, spiral_stats};
use super::socket::{
    Ending, Heartbeat, Outbox, Port, admit, await_client_close, configure, read_error_ending,
    registry_close, take_ws_token, welcome,
};
use super::{ApiError, AppState, Connections, Place, Registered, Slot};
use crate::auth::Principal;
use crate::protocol::{CloseCode, Command, Reply};

/// The command-channel router: the upgrade on `/` and `/ws`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", any(upgrade))
        .route("/ws", any(upgrade))
        .fallback(|| async { ApiError::NotFound })
        .with_state(state)
}

async fn upgrade(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    place: Option<Extension<Place>>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Ok(ws) = ws else {
        return ApiError::BadRequest("expected a WebSocket upgrade".into()).into_response();
    };
    match admit(
        &st,
        &headers,
        query.as_deref(),
        Port::Commands,
        place.as_deref(),
    )
    .await
    {
        Err(e) => e.into_response(),
        Ok(a) => {
            let st2 = st.clone();
            configure(ws, &st, a.protocol).on_upgrade(move |socket| run(st2, socket, a.who, a.slot))
        }
    }
}

/// Conformance builds only (`SPIRAL_WS_ECHO`): echo data messages instead of answering them.
#[cfg(feature = "conformance")]
fn echo_mode(st: &AppState) -> bool {
    st.cfg.ws_echo
}

#[cfg(not(feature = "conformance"))]
fn echo_mode(_: &AppState) -> bool {
    false
}

async fn run(st: AppState, socket: WebSocket, who: Principal, slot: Slot) {
    let mut reg: Registered = Connections::register(&st, slot, &who);
    let (sink, mut incoming) = socket.split();
    let out = Outbox::spawn(sink, &st);
    if !echo_mode(&st) {
        out.send_json(&welcome(
            reg.id,
            &who,
            json!({
                "ping_interval_ms": st.cfg.ws_ping_interval_ms,
                "idle_timeout_ms": st.cfg.ws_idle_timeout_ms,
                "max_message_size": st.cfg.max_message_size,
            }),
        ));
    }
    let idle_for = Duration::from_millis(st.cfg.ws_idle_timeout_ms);
    // The idle timer is re-armed lazily when it fires, not on every message: a busy connection
    // then costs no timer-wheel work per message.
    let mut last_data = st.clock.now();
    let idle = tokio::time::sleep_until(last_data + idle_for);
    tokio::pin!(idle);
    let mut beat = Heartbeat::new(&st);
    let slow = out.too_slow();
    tokio::pin!(slow);
    let ending = loop {
        tokio::select! {
            biased;
            changed = reg.closed.changed() => {
                let code = if changed.is_ok() { *reg.closed.borrow() } else { None };
                break registry_close(code);
            }
            () = &mut slow => break Ending::Close(CloseCode::PolicyViolation),
            msg = incoming.next() => match msg {
                None | Some(Ok(Message::Close(_))) => break Ending::Gone,
                Some(Err(e)) => break read_error_ending(&e),
                Some(Ok(Message::Pong(_))) => beat.missed = 0,
                Some(Ok(Message::Ping(_))) => {}
                #[cfg(feature = "conformance")]
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) if echo_mode(&st) => {
                    last_data = st.clock.now();
                    st.metrics.ws_messages_in.inc();
                    out.send(m, None);
                }
                // Only a command is activity for the idle timer; noise — binary frames, text
                // that is not a command — is answered and counted, but keeps no one alive.
                Some(Ok(Message::Text(text))) => {
                    st.metrics.ws_messages_in.inc();
                    let (reply, command) = handle_text(&st, &who, text.as_str()).await;
                    if command || crate::planted!(NoiseKeepsAlive) {
                        last_data = st.clock.now();
                    }
                    out.send_json(&reply);
                }
                Some(Ok(Message::Binary(_))) => {
                    if crate::planted!(NoiseKeepsAlive) {
                        last_data = st.clock.now();
                    }
                    st.metrics.ws_messages_in.inc();
                    out.send_json(&handle_binary(&st, &who).await);
                }
            },
            _ = beat.ticker.tick() => {
                if let Some(end) = beat.tick(&st, &who, &out).await {
                    break end;
                }
            }
            () = &mut idle => {
                let due = last_data + idle_for;
                if st.clock.now() >= due {
                    crate::reached!("ws.closed_idle");
                    break Ending::Close(CloseCode::IdleTimeout);
                }
                idle.as_mut().reset(due);
            }
        }
    };
    match ending {
        Ending::Close(code) => {
            out.close(code).await;
            await_client_close(&mut incoming).await;
        }
        Ending::Gone => out.finish().await,
    }
    drop(reg);
}

/// A command from the client.
#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(default)]
    id: Value,
    #[serde(rename = "type", default)]
    _kind: Option<String>,
    command: Option<String>,
    #[serde(default)]
    args: Value,
}

pub fn error_envelope(id: &Value, e: &ApiError) -> Value {
    Reply::Error {
        id: id.clone(),
        error: e.body(),
    }
    .to_value()
}

/// A binary message: refused (`bad_request`), after it has taken its token from the bucket like
/// any other message (`rate_limited` once the bucket is empty).
pub async fn handle_binary(st: &AppState, who: &Principal) -> Value {
    if !crate::planted!(BinaryUnlimited)
        && let Err(e) = take_ws_token(st, who, "ws_message").await
    {
        return error_envelope(&Value::Null, &e);
    }
    crate::reached!("ws.binary_frame");
    let e = ApiError::BadRequest("binary frames are not accepted; send JSON text".into());
    error_envelope(&Value::Null, &e)
}

/// One text message in, one envelope out, and whether it was a command (an envelope with a
/// `command`, run or refused by the limiter) rather than noise. Never fails: every problem is an
/// error envelope.
pub async fn handle_text(st: &AppState, who: &Principal, text: &str) -> (Value, bool) {
    let admitted = take_ws_token(st, who, "ws_message").await;
    // The id, if the message has one, even when it is over the limit.
    let env: Result<Envelope, _> = serde_json::from_str(text);
    let id = env.as_ref().map(|e| e.id.clone()).unwrap_or(Value::Null);
    let command = env.as_ref().is_ok_and(|e| e.command.is_some());
    if let Err(e) = admitted {
        return (error_envelope(&id, &e), command);
    }
    let env = match env {
        Ok(e) => e,
        Err(e) => {
            crate::reached!("ws.malformed_frame");
            let e = ApiError::BadRequest(format!("malformed message: {e}"));
            return (error_envelope(&Value::Null, &e), false);
        }
    };
    let Some(name) = env.command.as_deref() else {
        let e = ApiError::BadRequest("missing `command`".into());
        return (error_envelope(&id, &e), false);
    };
    let reply = match execute(st, who, name, env.args).await {
        Ok(data) => Reply::Result { id, data }.to_value(),
        Err(e) => error_envelope(&id, &e),
    };
    (reply, true)
}

/// Run one command for `who`; the same arguments and answers as the REST routes.
pub async fn execute(
    st: &AppState,
    who: &Principal,
    command: &str,
    a: Value,
) -> Result<Value, ApiError> {
    let to_json = |v: Result<Value, serde_json::Error>| v.map_err(|_| ApiError::Internal);
    match Command::parse(command, a).map_err(ApiError::BadRequest)? {
        Command::MemoryStore(req) => {
            admit_store(st, who).await?;
            to_json(serde_json::to_value(
                st.engine.store(who.tenant(), req).await?,
            ))
        }
        Command::MemoryGet { id } => to_json(serde_json::to_value(
            st.engine.get(who.tenant(), &id).await?,
        )),
        Command::MemoryCollect { id } => {
            st.engine.collect(who.tenant(), &id).await?;
            Ok(json!({"id": id, "collected": true}))
        }
        Command::MemoryList { limit } => {
            let ids = st
                .engine
                .list(who.tenant(), limit.unwrap_or(100).min(1000))?;
            Ok(json!({"ids": ids}))
        }
        Command::SpiralStats => spiral_stats(st),
        Command::Ping => Ok(json!({"pong": true, "time_ms": st.now_ms()})),
    }
}
