//! A real server on `127.0.0.1:0` (three real sockets), real clients: tokio-tungstenite for
//! WebSockets, the library's HTTP client for HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use spiral_server::api::client::{Reply, request};
use spiral_server::api::{AppState, Listeners, ServerBuilder, ServerConfig};
use spiral_server::auth::{Claims, Keys, Shared};
use spiral_server::clock::{Clock, SharedClock, SystemClock};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &[u8] = b"test-secret-test-secret-test-secret!";

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct TestServer {
    pub http: SocketAddr,
    pub ws: SocketAddr,
    pub stream: SocketAddr,
    pub state: AppState,
    pub keys: Keys,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

pub fn now_s() -> u64 {
    SystemClock.unix_ms() / 1000
}

/// Claims for `sub` in `tenant`, valid for an hour, with a fresh `jti`.
pub fn claims(sub: &str, tenant: &str) -> Claims {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    Claims::new(sub, tenant, now_s() + 3600)
        .jti(format!(
            "jti-{}",
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ))
        .issued_at(now_s())
}

/// Start a server with `cfg` on memory storage and HS256 keys.
pub async fn start(cfg: ServerConfig) -> TestServer {
    start_with(cfg, Keys::hs256(SECRET), Arc::new(Shared::memory())).await
}

pub async fn start_with(cfg: ServerConfig, keys: Keys, shared: Arc<Shared>) -> TestServer {
    let clock: SharedClock = Arc::new(SystemClock);
    let (state, _) = ServerBuilder::new(keys.clone(), clock)
        .shared(shared)
        .config(cfg)
        .seed(7)
        .open()
        .await
        .expect("engine opens");
    let bind = || async { tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap() };
    let (h, w, s) = (bind().await, bind().await, bind().await);
    let (http, ws, stream) = (
        h.local_addr().unwrap(),
        w.local_addr().unwrap(),
        s.local_addr().unwrap(),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(spiral_server::api::serve(
        Listeners {
            http: h,
            ws: w,
            stream: s,
        },
        state.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    TestServer {
        http,
        ws,
        stream,
        state,
        keys,
        stop: Some(stop),
        task: Some(task),
    }
}

impl TestServer {
    pub fn token(&self, c: &Claims) -> String {
        self.keys.mint(c).unwrap()
    }

    pub fn user_token(&self, sub: &str, tenant: &str) -> String {
        self.token(&claims(sub, tenant))
    }

    pub fn admin_token(&self) -> String {
        let mut c = claims("root", "ops");
        c.roles = vec!["admin".into()];
        self.token(&c)
    }

    pub fn stream_token(&self, sub: &str, tenant: &str) -> String {
        let mut c = claims(sub, tenant);
        c.scope = Some("metacog.stream".into());
        self.token(&c)
    }

    pub async fn http(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let stream = TcpStream::connect(self.http).await.unwrap();
        request(
            stream,
            method,
            &self.http.to_string(),
            path,
            token,
            body.map(|b| b.to_string().into_bytes()),
        )
        .await
        .unwrap()
    }

    /// A counter's value from `/metrics` (summed over children matching `filter`).
    pub fn metric(&self, line_prefix: &str) -> f64 {
        let text = self.state.metrics.render(&self.state.snapshot());
        text.lines()
            .filter(|l| l.starts_with(line_prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

/// Open a WebSocket to `addr` with `token` in `Authorization` (if any). On refusal: the HTTP
/// status and body.
pub async fn ws_connect(addr: SocketAddr, token: Option<&str>) -> Result<Ws, (u16, Value)> {
    ws_connect_with(
        addr,
        token.map(|t| ("authorization", format!("Bearer {t}"))),
        "/",
    )
    .await
}

pub async fn ws_connect_with(
    addr: SocketAddr,
    header: Option<(&'static str, String)>,
    path: &str,
) -> Result<Ws, (u16, Value)> {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    if let Some((name, value)) = header {
        req.headers_mut().insert(name, value.parse().unwrap());
    }
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

/// The next text frame as JSON (pings are answered by tungstenite while reading).
pub async fn next_json(ws: &mut Ws) -> Value {
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

/// Read until the server's close frame; its code.
pub async fn close_code(ws: &mut Ws, within: Duration) -> Option<u16> {
    let read = async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return None,
                Some(Ok(Message::Close(f))) => return f.map(|f: CloseFrame| u16::from(f.code)),
                Some(Ok(_)) => {}
            }
        }
    };
    tokio::time::timeout(within, read).await.ok().flatten()
}

/// Send a command and wait for its answer (skipping events and other frames).
pub async fn command(ws: &mut Ws, id: u64, cmd: &str, args: Value) -> Value {
    let msg = json!({"id": id, "type": "command", "command": cmd, "args": args});
    ws.send(Message::Text(msg.to_string().into()))
        .await
        .unwrap();
    loop {
        let v = next_json(ws).await;
        if v["id"] == json!(id) {
            return v;
        }
    }
}

/// Connect and swallow the welcome message.
pub async fn ws_ready(addr: SocketAddr, token: &str) -> Ws {
    let mut ws = ws_connect(addr, Some(token)).await.expect("admitted");
    let welcome = next_json(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    ws
}
