//! What both WebSocket ports (the command channel and the event stream) share: the handshake
//! checks, answered with an HTTP status before any upgrade (503 at the cap, 401 with a reason,
//! 403 without the stream scope, 429 at the user's own cap or over the handshake limit); the
//! [`Outbox`] that writes a connection's frames from a bounded queue; the heartbeat (4001 after
//! two unanswered pings); how a connection ends ([`Ending`]) and its closing handshake; the
//! welcome frame.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, header};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::http::VERSION;
use super::{ApiError, AppState, Connections, Place, Slot};
use crate::auth::{Principal, Reject, STREAM_SCOPE, looks_like_jwt, token_from};
use crate::clock::{Instant, SharedClock};
use crate::metrics::Metrics;
use crate::protocol::CloseCode;
use crate::sync::{AtomicUsize, Ordering};

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
///
/// The place under the cap is the one the socket took when it was accepted (`place`, see
/// [`super::conn`]): a socket accepted with the cap full has none and is refused, even if a place
/// came free since (its client tries again on a new socket). A request served without a place
/// (tests calling the router directly) reserves one now.
pub async fn admit(
    st: &AppState,
    headers: &HeaderMap,
    query: Option<&str>,
    port: Port,
    place: Option<&Place>,
) -> Result<Admitted, ApiError> {
    let slot = match place {
        Some(p) => p.take(),
        None => Connections::reserve(st),
    };
    let mut slot = slot.ok_or_else(|| {
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

/// The bytes a frame holds in a queue.
fn frame_bytes(msg: &Message) -> usize {
    match msg {
        Message::Text(t) => t.len(),
        Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b.len(),
        Message::Close(_) => 0,
    }
}

/// What the producers of a connection's frames and its writer share: the bytes queued and since
/// when the queue has been at its bound.
#[derive(Debug)]
struct Backlog {
    bytes: AtomicUsize,
    /// Set when a frame is dropped, cleared when the writer empties the queue.
    full_since: watch::Sender<Option<Instant>>,
}

/// The writing half of a connection: a queue bounded in frames (`WS_SEND_QUEUE`) and in bytes
/// (`WS_SEND_QUEUE_BYTES`), drained by a writer task. When a frame does not fit it is dropped and
/// counted in `ws_backpressure_drops_total`; a queue that stays at its bound — frames dropped and
/// not drained since — for `WS_SLOW_CLIENT_MS` makes [`Outbox::too_slow`] resolve, and the
/// connection is closed with 1008. A close goes around the queue: after the frames already in it
/// have had `CLOSE_DRAIN` to go out, or — a slow client's — at once, the queue discarded.
#[derive(Debug)]
pub struct Outbox {
    tx: mpsc::Sender<Outgoing>,
    close_tx: Option<oneshot::Sender<CloseCode>>,
    writer: JoinHandle<()>,
    backlog: Arc<Backlog>,
    st: AppState,
}

impl Outbox {
    pub fn spawn(mut sink: SplitSink<WebSocket, Message>, st: &AppState) -> Self {
        let (tx, mut rx) = mpsc::channel::<Outgoing>(st.cfg.ws_send_queue.max(1));
        let (close_tx, mut close_rx) = oneshot::channel::<CloseCode>();
        let backlog = Arc::new(Backlog {
            bytes: AtomicUsize::new(0),
            full_since: watch::channel(None).0,
        });
        let m = st.metrics.clone();
        let clock = st.clock.clone();
        let b = backlog.clone();
        // A frame leaves the queue's count once it is written (or discarded).
        let written = move |len: usize, rx: &mpsc::Receiver<Outgoing>| {
            b.bytes.fetch_sub(len, Ordering::AcqRel);
            m.ws_send_queue_bytes.add(-(len as i64));
            if rx.is_empty() {
                b.full_since.send_if_modified(|s| s.take().is_some());
            }
        };
        let m = st.metrics.clone();
        let writer = tokio::spawn(async move {
            let mut closing = None;
            loop {
                tokio::select! {
                    biased;
                    close = &mut close_rx => {
                        closing = close.ok();
                        break;
                    }
                    next = rx.recv() => {
                        let Some((msg, since)) = next else { break };
                        let len = frame_bytes(&msg);
                        // A peer that stopped reading holds the write: a close must not wait
                        // for it (what was being written stays in the sink, ahead of the close).
                        let sent = tokio::select! {
                            biased;
                            sent = deliver(&mut sink, msg, since, &m, &clock) => Some(sent),
                            close = &mut close_rx => {
                                closing = close.ok();
                                None
                            }
                        };
                        written(len, &rx);
                        match sent {
                            Some(true) => {}
                            Some(false) => break,
                            None => break,
                        }
                    }
                }
            }
            if let Some(code) = closing {
                // The frames queued before the close go out first: a close follows the data
                // sent before it (RFC 6455 §1.4), so an answer the server queued is not lost to
                // the close that came after it. Within a short budget, so a peer that stopped
                // reading cannot hold the close back — and not at all for a peer closed for
                // not reading.
                let skip =
                    crate::planted!(CloseOvertakesQueue) || code == CloseCode::PolicyViolation;
                let delivered = skip || {
                    let drain = async {
                        while let Ok((msg, since)) = rx.try_recv() {
                            let len = frame_bytes(&msg);
                            let ok = deliver(&mut sink, msg, since, &m, &clock).await;
                            written(len, &rx);
                            if !ok {
                                return false;
                            }
                        }
                        true
                    };
                    tokio::time::timeout(CLOSE_DRAIN, drain)
                        .await
                        .unwrap_or(true)
                };
                if delivered {
                    let frame = CloseFrame {
                        code: code.code(),
                        reason: code.reason().into(),
                    };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                }
            }
            let _ = sink.close().await;
        });
        Self {
            tx,
            close_tx: Some(close_tx),
            writer,
            backlog,
            st: st.clone(),
        }
    }

    /// Queue a frame; false (and counted) if it did not fit.
    pub fn send(&self, msg: Message, since: Option<Instant>) -> bool {
        let len = frame_bytes(&msg);
        let bytes_bound = if crate::planted!(QueueUnboundedBytes) {
            usize::MAX
        } else {
            self.st.cfg.ws_send_queue_bytes
        };
        // A frame into an empty queue always fits, whatever its size.
        let fits = self
            .backlog
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                (b == 0 || b.saturating_add(len) <= bytes_bound).then_some(b + len)
            })
            .is_ok();
        if !fits {
            crate::reached!("ws.queue_bytes_full");
            return self.dropped();
        }
        match self.tx.try_send((msg, since)) {
            Ok(()) => {
                self.st.metrics.ws_send_queue_bytes.add(len as i64);
                true
            }
            Err(e) => {
                self.backlog.bytes.fetch_sub(len, Ordering::AcqRel);
                match e {
                    mpsc::error::TrySendError::Full(_) => self.dropped(),
                    mpsc::error::TrySendError::Closed(_) => false,
                }
            }
        }
    }

    /// A frame that did not fit: counted, and the queue at its bound from now on.
    fn dropped(&self) -> bool {
        crate::reached!("ws.backpressure_drop");
        self.st.metrics.ws_backpressure_drops.inc();
        let now = self.st.clock.now();
        self.backlog.full_since.send_if_modified(|s| {
            let first = s.is_none();
            if first {
                *s = Some(now);
            }
            first
        });
        false
    }

    pub fn send_json(&self, v: &Value) -> bool {
        self.send(Message::Text(v.to_string().into()), None)
    }

    /// Resolves once the queue has stayed at its bound for `WS_SLOW_CLIENT_MS`: the peer does
    /// not read what it is sent. Owns what it needs, so a connection loop can keep it pinned.
    pub fn too_slow(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut full = self.backlog.full_since.subscribe();
        let limit = Duration::from_millis(self.st.cfg.ws_slow_client_ms);
        let planted = crate::planted!(QueueUnboundedBytes);
        async move {
            if planted {
                // Planted: a connection at its bound is never closed for it.
                return std::future::pending().await;
            }
            loop {
                let since = *full.borrow_and_update();
                match since {
                    Some(t) => tokio::select! {
                        biased;
                        () = tokio::time::sleep_until(t + limit) => {
                            if *full.borrow() == Some(t) {
                                crate::reached!("ws.slow_client_closed");
                                return;
                            }
                        }
                        changed = full.changed() => if changed.is_err() {
                            return std::future::pending().await;
                        },
                    },
                    None => {
                        if full.changed().await.is_err() {
                            return std::future::pending().await;
                        }
                    }
                }
            }
        }
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

impl Drop for Outbox {
    /// Whatever is still queued leaves the gauge with the connection.
    fn drop(&mut self) {
        let left = self.backlog.bytes.swap(0, Ordering::AcqRel);
        self.st.metrics.ws_send_queue_bytes.add(-(left as i64));
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
