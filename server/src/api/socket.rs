//! What both WebSocket ports (the command channel and the event stream) share: the handshake
//! checks, answered with an HTTP status before any upgrade (503 at the cap, 401 with a reason,
//! 403 without the stream scope, 429 at the user's own cap or over the handshake limit); the
//! [`Outbox`] that writes a connection's frames from a bounded queue; the heartbeat (4001 after
//! two unanswered pings); how a connection ends ([`Ending`]) and its closing handshake; the
//! welcome frame.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, header};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::http::VERSION;
use super::{ApiError, AppState, Connections, Slot};
use crate::auth::{Principal, Reject, STREAM_SCOPE, looks_like_jwt, token_from};
use crate::clock::{Instant, SharedClock};
use crate::metrics::Metrics;
use crate::protocol::CloseCode;

/// Which port a handshake is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Commands,
    Stream,
}

/// An admitted handshake.
#[derive(Debug)]
pub struct Admitted {
    pub who: Principal,
    pub slot: Slot,
    /// The subprotocol to answer with, when the client offered any.
    pub protocol: Option<String>,
}

/// How long a handshake refused at a cap is told to wait: places come back as connections end.
const CAP_RETRY_MS: u64 = 1000;

/// Every check a handshake must pass, in order: the cap, the token, the scope, the user's own
/// cap (`max_connections_per_user`, both ports together; anonymous clients are the one user
/// `anonymous`), the handshake bucket, and last the single use of its `jti` (so a refused
/// handshake does not burn it).
pub async fn admit(
    st: &AppState,
    headers: &HeaderMap,
    query: Option<&str>,
    port: Port,
) -> Result<Admitted, ApiError> {
    let mut slot = Connections::reserve(st).ok_or_else(|| {
        crate::reached!("conn.cap_refused");
        ApiError::OverCapacity {
            retry_after_ms: CAP_RETRY_MS,
        }
    })?;
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let protocols = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok());
    let fail = |r: Reject| {
        st.metrics.ws_auth_attempts.inc(&[r.label()]);
        ApiError::from(r)
    };
    let who = match token_from(auth, query, protocols) {
        None if st.cfg.allow_anonymous_ws => Principal::anonymous(),
        None => return Err(fail(Reject::Missing)),
        Some(t) => st.authenticate(&t).await.map_err(fail)?,
    };
    if port == Port::Stream && !who.claims.has_scope(STREAM_SCOPE) {
        st.metrics.ws_scope_reject.inc();
        return Err(ApiError::Forbidden("scope `metacog.stream` required"));
    }
    // Before the bucket: a user hammering at its cap costs no shared-state round trip.
    if !crate::planted!(NoUserCap) && !slot.hold_for(who.user()) {
        crate::reached!("conn.user_cap_refused");
        st.metrics.rate_limit_exceeded.inc(&["ws_user_connections"]);
        return Err(ApiError::RateLimited {
            retry_after_ms: CAP_RETRY_MS,
        });
    }
    let now_ms = st.now_ms();
    take_ws_token(st, &who, "ws_handshake").await?;
    if let Some(jti) = who.claims.jti.as_deref().filter(|_| !who.anonymous) {
        let until_ms = who
            .claims
            .exp
            .saturating_add(crate::auth::LEEWAY_S)
            .saturating_mul(1000);
        match st.shared.claim_jti(jti, now_ms, until_ms).await {
            Ok(true) => {}
            Ok(false) => {
                crate::reached!("auth.replayed");
                return Err(fail(Reject::Replayed));
            }
            Err(crate::auth::Unavailable) => return Err(fail(Reject::Unavailable)),
        }
    }
    st.metrics.ws_auth_attempts.inc(&["ok"]);
    let protocol = protocols.and_then(|p| {
        let offered: Vec<&str> = p.split(',').map(str::trim).collect();
        offered
            .iter()
            .find(|s| **s == "spiral")
            .or_else(|| offered.iter().find(|s| looks_like_jwt(s)))
            .map(|s| (*s).to_owned())
    });
    Ok(Admitted {
        who,
        slot,
        protocol,
    })
}

/// Take one token from the user's WebSocket bucket — a handshake and every data message, text or
/// binary, each take one; `Err` is the `rate_limited` refusal, counted under `label`.
pub async fn take_ws_token(
    st: &AppState,
    who: &Principal,
    label: &'static str,
) -> Result<(), ApiError> {
    let d = st.rate("ws", who.user(), &st.cfg.ws_rate).await;
    if d.allowed {
        return Ok(());
    }
    crate::reached!("ratelimit.ws_denied");
    st.metrics.rate_limit_exceeded.inc(&[label]);
    Err(ApiError::RateLimited {
        retry_after_ms: d.retry_after_ms,
    })
}

/// Apply the size limit and the chosen subprotocol to an upgrade.
pub fn configure(
    ws: WebSocketUpgrade,
    st: &AppState,
    protocol: Option<String>,
) -> WebSocketUpgrade {
    let ws = ws
        .max_message_size(st.cfg.max_message_size)
        .max_frame_size(st.cfg.max_message_size);
    match protocol {
        Some(p) => ws.protocols([p]),
        None => ws,
    }
}

/// One outbound frame; `since` is when the event behind it happened (for publish lag).
pub type Outgoing = (Message, Option<Instant>);

/// How long a close waits for the frames queued before it to go out.
const CLOSE_DRAIN: Duration = Duration::from_millis(250);

/// Send one frame and count it; false when the connection is gone.
async fn deliver(
    sink: &mut SplitSink<WebSocket, Message>,
    msg: Message,
    since: Option<Instant>,
    m: &Metrics,
    clock: &SharedClock,
) -> bool {
    let bytes = match &msg {
        Message::Text(t) => t.len(),
        Message::Binary(b) => b.len(),
        _ => 0,
    };
    if sink.send(msg).await.is_err() {
        return false;
    }
    m.ws_messages_out.inc();
    m.ws_bytes_out.add(bytes as u64);
    if let Some(t0) = since {
        let lag = clock.now().saturating_duration_since(t0);
        m.eventbus_publish_lag_ms
            .observe(lag.as_secs_f64() * 1000.0);
    }
    true
}

/// The writing half of a connection: a bounded queue drained by a writer task. When the queue
/// is full a new frame is dropped and counted in `ws_backpressure_drops_total`; a close goes
/// around the queue, after the frames already in it have had `CLOSE_DRAIN` to go out.
#[derive(Debug)]
pub struct Outbox {
    tx: mpsc::Sender<Outgoing>,
    close_tx: Option<oneshot::Sender<CloseCode>>,
    writer: JoinHandle<()>,
    st: AppState,
}

impl Outbox {
    pub fn spawn(mut sink: SplitSink<WebSocket, Message>, st: &AppState) -> Self {
        let (tx, mut rx) = mpsc::channel::<Outgoing>(st.cfg.ws_send_queue.max(1));
        let (close_tx, mut close_rx) = oneshot::channel::<CloseCode>();
        let m = st.metrics.clone();
        let clock = st.clock.clone();
        let writer = tokio::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    close = &mut close_rx => {
                        if let Ok(code) = close {
                            // The frames queued before the close go out first: a close follows
                            // the data sent before it (RFC 6455 §1.4), so an answer the server
                            // queued is not lost to the close that came after it. Within a short
                            // budget, so a peer that stopped reading cannot hold the close back.
                            let delivered = crate::planted!(CloseOvertakesQueue) || {
                                let drain = async {
                                    while let Ok((msg, since)) = rx.try_recv() {
                                        if !deliver(&mut sink, msg, since, &m, &clock).await {
                                            return false;
                                        }
                                    }
                                    true
                                };
                                tokio::time::timeout(CLOSE_DRAIN, drain).await.unwrap_or(true)
                            };
                            if delivered {
                                let frame = CloseFrame { code: code.code(), reason: code.reason().into() };
                                let _ = sink.send(Message::Close(Some(frame))).await;
                            }
                        }
                        break;
                    }
                    next = rx.recv() => {
                        let Some((msg, since)) = next else { break };
                        if !deliver(&mut sink, msg, since, &m, &clock).await {
                            break;
                        }
                    }
                }
            }
            let _ = sink.close().await;
        });
        Self {
            tx,
            close_tx: Some(close_tx),
            writer,
            st: st.clone(),
        }
    }

    /// Queue a frame; false (and counted) if the queue was full.
    pub fn send(&self, msg: Message, since: Option<Instant>) -> bool {
        match self.tx.try_send((msg, since)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                crate::reached!("ws.backpressure_drop");
                self.st.metrics.ws_backpressure_drops.inc();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    pub fn send_json(&self, v: &Value) -> bool {
        self.send(Message::Text(v.to_string().into()), None)
    }

    /// Close with `code`, giving the writer a moment to deliver the close frame.
    pub async fn close(mut self, code: CloseCode) {
        self.st.metrics.ws_closes.inc(&[&code.code().to_string()]);
        if let Some(tx) = self.close_tx.take() {
            let _ = tx.send(code);
        }
        self.finish().await;
    }

    /// Wait briefly for the writer to end, then stop it.
    pub async fn finish(mut self) {
        self.close_tx.take();
        if tokio::time::timeout(Duration::from_secs(2), &mut self.writer)
            .await
            .is_err()
        {
            self.writer.abort();
        }
    }
}

/// The tungstenite error behind a read error, if there is one.
fn tungstenite_error(e: &axum::Error) -> Option<&tokio_tungstenite::tungstenite::Error> {
    use std::error::Error as _;
    let mut source: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(s) = source {
        if let Some(t) = s.downcast_ref::<tokio_tungstenite::tungstenite::Error>() {
            return Some(t);
        }
        source = s.source();
    }
    None
}

/// Whether a read error is tungstenite refusing a message over the size limit.
pub fn is_oversized(e: &axum::Error) -> bool {
    match tungstenite_error(e) {
        Some(t) => matches!(t, tokio_tungstenite::tungstenite::Error::Capacity(_)),
        None => {
            e.to_string().contains("Space limit exceeded") || e.to_string().contains("too long")
        }
    }
}

/// How a read error ends a connection. tungstenite only reports what it refused and sends no
/// close frame itself, so the code is ours to send (RFC 6455 §7.4.1): 1009 for a message over
/// the size limit, 1007 for text (or a close reason) that is not UTF-8, 1002 for any other
/// protocol violation. A peer that vanished or an I/O error gets nothing.
pub fn read_error_ending(e: &axum::Error) -> Ending {
    use tokio_tungstenite::tungstenite::Error as E;
    use tokio_tungstenite::tungstenite::error::ProtocolError as P;
    if is_oversized(e) {
        crate::reached!("ws.closed_oversized");
        return Ending::Close(CloseCode::TooBig);
    }
    if crate::planted!(WsSilentClose) {
        return Ending::Gone;
    }
    match tungstenite_error(e) {
        Some(E::Utf8(_)) => Ending::Close(CloseCode::InvalidUtf8),
        Some(E::Protocol(P::ResetWithoutClosingHandshake)) => Ending::Gone,
        Some(E::Protocol(_)) => Ending::Close(CloseCode::ProtocolError),
        _ => Ending::Gone,
    }
}

/// After the server's close frame: read until the client's close (the closing handshake) or a
/// short timeout. Dropping the socket at once would make the kernel answer the client's pending
/// pongs with a reset, and the client would never read the close code.
pub async fn await_client_close(incoming: &mut futures_util::stream::SplitStream<WebSocket>) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(m)) = incoming.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Why a connection loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The client closed or vanished: nothing to send.
    Gone,
    Close(CloseCode),
}

/// Liveness bookkeeping shared by both ports: pings, missed pongs, revocation re-checks.
pub struct Heartbeat {
    pub ticker: tokio::time::Interval,
    pub missed: u32,
    seq: u64,
}

impl Heartbeat {
    pub fn new(st: &AppState) -> Self {
        let period = Duration::from_millis(st.cfg.ws_ping_interval_ms);
        let mut ticker = tokio::time::interval_at(st.clock.now() + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            ticker,
            missed: 0,
            seq: 0,
        }
    }

    /// A tick: close with 4001 if two pings went unanswered, 4003 if the token was revoked
    /// elsewhere, else send the next ping.
    pub async fn tick(&mut self, st: &AppState, who: &Principal, out: &Outbox) -> Option<Ending> {
        if self.missed >= 2 {
            crate::reached!("ws.closed_silent");
            return Some(Ending::Close(CloseCode::PongTimeout));
        }
        if !who.anonymous {
            let c = &who.claims;
            // As at the handshake: a revocation covers the whole refresh chain.
            let issued_ms = c.authenticated_at().unwrap_or(0).saturating_mul(1000);
            // Fail closed refuses new handshakes; an open connection is not cut for an outage.
            if st
                .shared
                .is_revoked(c.jti.as_deref(), &c.sub, issued_ms, st.now_ms())
                .await
                == Ok(true)
            {
                crate::reached!("ws.closed_revoked");
                return Some(Ending::Close(CloseCode::Revoked));
            }
        }
        self.missed += 1;
        self.seq += 1;
        out.send(Message::Ping(self.seq.to_be_bytes().to_vec().into()), None);
        None
    }
}

/// The close the registry asks for (4003 revoked, 1001 shutdown), if any.
pub fn registry_close(code: Option<CloseCode>) -> Ending {
    code.map_or(Ending::Gone, Ending::Close)
}

/// The first frame on either port: who the connection is, which server, and the port's own
/// settings (`port`, an object merged in).
pub fn welcome(connection_id: u64, who: &Principal, port: Value) -> Value {
    let mut w = json!({
        "type": "welcome",
        "connection_id": connection_id,
        "user": who.user(),
        "tenant": who.tenant(),
        "server": "spiral",
        "version": VERSION,
    });
    if let (Some(w), Value::Object(port)) = (w.as_object_mut(), port) {
        w.extend(port);
    }
    w
}
