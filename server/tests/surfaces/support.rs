//! A real server on `127.0.0.1:0` (three real sockets), real clients: tokio-tungstenite for
//! WebSockets, the library's HTTP client for HTTP. The secret, claims, tokens and the WebSocket
//! client come from `spiral_server::test_support`, re-exported here for the suite's modules.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::Method;
use serde_json::{Value, json};
use spiral_server::api::client::{Reply, request};
use spiral_server::api::{AppState, ServerBuilder, ServerConfig};
use spiral_server::auth::{Claims, Keys, Shared};
use spiral_server::clock::{SharedClock, SystemClock};
pub use spiral_server::test_support::*;
use tokio::net::TcpStream;

pub struct TestServer {
    pub http: SocketAddr,
    pub ws: SocketAddr,
    pub stream: SocketAddr,
    pub state: AppState,
    pub keys: Keys,
    serving: Serving,
}

/// Start a server with `cfg` on memory storage and HS256 keys.
pub async fn start(cfg: ServerConfig) -> TestServer {
    start_with(cfg, keys(), Arc::new(Shared::memory())).await
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
    let serving = serve_local(state.clone()).await;
    TestServer {
        http: serving.http,
        ws: serving.ws,
        stream: serving.stream,
        state,
        keys,
        serving,
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

    pub async fn stop(self) {
        self.serving.stop().await;
    }
}

/// Whether the connection still answers: a `ping` (with request id `id`) gets a result.
pub async fn answers_ping(ws: &mut Ws, id: u64) -> bool {
    command(ws, id, "ping", Value::Null).await["type"] == "result"
}

/// Send a command and wait for its answer (skipping events and other frames).
pub async fn command(ws: &mut Ws, id: u64, cmd: &str, args: Value) -> Value {
    let msg = json!({"id": id, "type": "command", "command": cmd, "args": args});
    send_json(ws, &msg).await;
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
