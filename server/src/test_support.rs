//! Helpers the test suites share (feature `test-support`, never in normal builds): the default
//! test secret, claims and HS256 tokens signed with it, and a WebSocket client that reads and
//! writes JSON frames. The server's own suites (`server/tests`), the chaos suites, the harness's
//! integration tests and the benchmarks turn the feature on in their `[dev-dependencies]`, so the
//! `spiral` binary and the libraries' normal builds never contain this module.
//!
//! Everything here panics on failure instead of returning errors: a helper that cannot do its
//! job is a failed test.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::api::{AppState, Listeners};
use crate::auth::{Claims, Keys};
use crate::clock::{Clock, SystemClock};

/// The HS256 secret every suite's server verifies with, unless a test needs another one. A
/// `&str` so it can also be handed to the binary as `JWT_SECRET`; at least
/// [`MIN_SECRET_LEN`](crate::auth::keys::MIN_SECRET_LEN) bytes.
pub const SECRET: &str = "test-secret-test-secret-test-secret!";

/// HS256 keys for [`SECRET`]: sign and verify.
pub fn keys() -> Keys {
    Keys::hs256(SECRET.as_bytes())
}

/// Wall-clock unix seconds (the real clock: for suites on real sockets, not the simulator).
pub fn now_s() -> u64 {
    SystemClock.unix_ms() / 1000
}

/// Claims for `sub` in `tenant` with role `user`, issued now, valid for an hour, with a `jti`
/// fresh in this process (`jti-1`, `jti-2`, …), so each token passes the single-use handshake
/// check once.
pub fn claims(sub: &str, tenant: &str) -> Claims {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    Claims::new(sub, tenant, now_s() + 3600)
        .jti(format!("jti-{}", NEXT.fetch_add(1, Ordering::Relaxed)))
        .issued_at(now_s())
}

/// `claims` as an HS256 token signed with [`SECRET`].
pub fn mint(claims: &Claims) -> String {
    mint_with(SECRET.as_bytes(), claims)
}

/// `claims` as an HS256 token signed with `secret` (a wrong key, a rotated one).
pub fn mint_with(secret: &[u8], claims: &Claims) -> String {
    Keys::hs256(secret)
        .mint(claims)
        .expect("an HS256 key signs")
}

/// A client WebSocket on a real TCP socket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// `Authorization: Bearer <token>`, as a header for [`ws_request`] and [`ws_connect_with`].
pub fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

/// The handshake request for `url` (`ws://host:port/path`), with `header` set if given. For
/// streams [`ws_connect`] does not open (turmoil's): hand it to `tokio_tungstenite::client_async`.
pub fn ws_request(url: &str, header: Option<(&'static str, String)>) -> Request {
    let mut req = url.into_client_request().expect("a ws:// URL");
    if let Some((name, value)) = header {
        req.headers_mut()
            .insert(name, value.parse().expect("a header value"));
    }
    req
}

/// Open a WebSocket to `addr` with `token` in `Authorization` (if any). On refusal: the HTTP
/// status and body.
pub async fn ws_connect(addr: SocketAddr, token: Option<&str>) -> Result<Ws, (u16, Value)> {
    ws_connect_with(addr, token.map(bearer), "/").await
}

/// Open a WebSocket to `path` on `addr` with `header` (if any): a token in the query or in
/// `Sec-WebSocket-Protocol`, say. On refusal: the HTTP status and body (`Null` if not JSON).
pub async fn ws_connect_with(
    addr: SocketAddr,
    header: Option<(&'static str, String)>,
    path: &str,
) -> Result<Ws, (u16, Value)> {
    let req = ws_request(&format!("ws://{addr}{path}"), header);
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Err((resp.status().as_u16(), body))
        }
        Err(e) => panic!("handshake failed without an HTTP answer: {e}"),
    }
}

/// Send `msg` as one text frame.
pub async fn send_json<S>(ws: &mut WebSocketStream<S>, msg: &Value)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.send(Message::Text(msg.to_string().into()))
        .await
        .expect("frame sent");
}

/// The next text frame as JSON, within 10 s (of the runtime's time: simulated under turmoil).
/// Other frames are skipped; pings are answered by tungstenite while reading. Panics on a close.
pub async fn next_json<S>(ws: &mut WebSocketStream<S>) -> Value
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("connection open")
            .expect("frame readable");
        match msg {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Close(f) => panic!("closed while waiting for a frame: {f:?}"),
            _ => {}
        }
    }
}

/// Read until the server's close frame, for at most `within`; its code. `None` if the
/// connection ended without one, or none came in time.
pub async fn close_code<S>(ws: &mut WebSocketStream<S>, within: Duration) -> Option<u16>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let read = async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return None,
                Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
            }
        }
    };
    tokio::time::timeout(within, read).await.ok().flatten()
}

/// A server serving on three ephemeral loopback ports (HTTP, WebSocket, event stream) until
/// [`Serving::stop`] or until it is dropped.
pub struct Serving {
    pub http: SocketAddr,
    pub ws: SocketAddr,
    pub stream: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Serve `state` on three fresh loopback ports.
pub async fn serve_local(state: AppState) -> Serving {
    let bind = || async {
        tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port")
    };
    let (h, w, s) = (bind().await, bind().await, bind().await);
    let addr = |l: &tokio::net::TcpListener| l.local_addr().expect("a bound address");
    let (http, ws, stream) = (addr(&h), addr(&w), addr(&s));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listeners = Listeners {
        http: h,
        ws: w,
        stream: s,
    };
    let task = tokio::spawn(crate::api::serve(listeners, state, async move {
        let _ = stopped.await;
    }));
    Serving {
        http,
        ws,
        stream,
        stop: Some(stop),
        task: Some(task),
    }
}

impl Serving {
    /// Shut down gracefully and wait (at most 5 s) for the server to finish.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}
