//! The clients' side of the network — simulated, or real sockets in the real-process world
//! ([`real`](super::real)): tokens, WebSocket handshakes over its streams
//! (tokio-tungstenite `client_async`), reading answers and close frames, and HTTP requests through
//! the project's one HTTP client.

use std::time::Duration;

use axum::http::Method;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::StreamExt;
use serde_json::{Value, json};
use spiral_server::api::client;
use spiral_server::auth::{Claims, KeyConfig, Keys};
use spiral_server::protocol::Reply;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::SECRET;

/// A client waits this long for an answer before it gives up on the connection.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// A client's TCP connection: across the simulated network, or — in the real-process world
/// ([`real`](super::real)) — a real socket to a server's proxy.
pub enum Conn {
    Sim(turmoil::net::TcpStream),
    Real(tokio::net::TcpStream),
}

impl tokio::io::AsyncRead for Conn {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Sim(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Conn::Real(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Conn {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Sim(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Conn::Real(s) => std::pin::Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Sim(s) => std::pin::Pin::new(s).poll_flush(cx),
            Conn::Real(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Sim(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Conn::Real(s) => std::pin::Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Connect to `host:port` (`server-N` and one of its ports): in the simulation, across the
/// simulated network; in the real-process world, to the address that world gave for it.
pub async fn tcp(host: &str, port: u16) -> std::io::Result<Conn> {
    match super::real::world() {
        Some(w) => {
            let addr = w.endpoint(host, port).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("the real-process world has no {host}:{port}"),
                )
            })?;
            tokio::net::TcpStream::connect(addr).await.map(Conn::Real)
        }
        None => turmoil::net::TcpStream::connect((host, port))
            .await
            .map(Conn::Sim),
    }
}

pub type SimWs = tokio_tungstenite::WebSocketStream<Conn>;

/// Claims for `sub` with expiry `exp_s` and issue time `iat_s` (unix seconds).
pub fn claims(
    sub: &str,
    tenant: &str,
    roles: &[&str],
    jti: String,
    exp_s: u64,
    iat_s: u64,
) -> Claims {
    Claims::new(sub, tenant, exp_s)
        .roles(roles)
        .jti(jti)
        .issued_at(iat_s)
}

pub fn sign(c: &Claims) -> String {
    Keys::hs256(SECRET).mint(c).unwrap_or_default()
}

/// The RS256 public key every simulated server also accepts (`kid` test-1): the server suite's
/// test fixture.
pub(crate) const JWKS: &str = include_str!("../../../server/tests/fixtures/rs256-test-jwks.json");
/// Its private key.
const RS256_KEY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../server/tests/fixtures/rs256-test-key.pem"
);

/// What every simulated server verifies with: the HS256 secret, and the RS256 key set.
pub fn server_keys() -> Keys {
    Keys::from_config(&KeyConfig {
        jwt_secret: Some(String::from_utf8_lossy(SECRET).into_owned()),
        jwt_secret_previous: None,
        jwk: Some(JWKS.to_owned()),
        jwt_private_key: None,
    })
    .expect("the simulation's keys")
}

/// Signed RS256 with the key the servers know (header `kid` test-1).
pub fn sign_rs256(c: &Claims) -> String {
    static SIGNER: std::sync::OnceLock<Keys> = std::sync::OnceLock::new();
    SIGNER
        .get_or_init(|| {
            Keys::from_config(&KeyConfig {
                jwt_secret: None,
                jwt_secret_previous: None,
                jwk: Some(JWKS.to_owned()),
                jwt_private_key: Some(RS256_KEY.into()),
            })
            .expect("the simulation's RS256 signer")
        })
        .mint(c)
        .unwrap_or_default()
}

/// Signed with a key the server does not know.
pub fn forge(c: &Claims) -> String {
    Keys::hs256(b"not-the-server-secret-not-the-server")
        .mint(c)
        .unwrap_or_default()
}

/// The claims of a token, read without verifying it (the client's view of what it was given).
pub fn peek_claims(token: &str) -> Option<Claims> {
    let body = token.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()
}

/// `alg: none`, no signature.
pub fn alg_none(c: &Claims) -> String {
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string());
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_string(c).unwrap_or_default());
    format!("{header}.{body}.")
}

/// A small read buffer: tungstenite zero-fills its whole read buffer (128 KiB by default) before
/// every read, and the clients' answers are small. (The server keeps the default: with a small
/// buffer it refuses an oversized frame before the client has finished sending it, and the
/// close frame is lost in the reset.)
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(8 * 1024)
}

/// The HTTP port.
pub const HTTP: u16 = 3000;
/// The command channel's port.
pub const COMMANDS: u16 = 3001;
/// The event stream's port.
pub const STREAM: u16 = 3002;

/// How a handshake went.
pub struct Handshake {
    pub ws: Option<SimWs>,
    /// HTTP status of a refused upgrade.
    pub status: Option<u16>,
    /// The `retry_after_ms` of a refused upgrade's error body.
    pub retry_after_ms: Option<u64>,
    pub error: Option<String>,
}

/// Open a WebSocket to `server`'s command channel with `token` (as a bearer header) and read the
/// welcome.
pub async fn connect(server: u32, token: Option<&str>) -> Handshake {
    connect_to(server, COMMANDS, token).await
}

/// [`connect`] to `port`: [`COMMANDS`] or [`STREAM`] (whose token needs the stream scope).
pub async fn connect_to(server: u32, port: u16, token: Option<&str>) -> Handshake {
    let host = format!("server-{server}");
    let fail = |status, e: String| Handshake {
        ws: None,
        status,
        retry_after_ms: None,
        error: Some(e),
    };
    let mut req = match format!("ws://{host}:{port}/").into_client_request() {
        Ok(r) => r,
        Err(e) => return fail(None, e.to_string()),
    };
    if let Some(t) = token
        && let Ok(v) = format!("Bearer {t}").parse()
    {
        req.headers_mut().insert("authorization", v);
    }
    // A crashed server or a cut link answers nothing, not even a refusal.
    let connect = tcp(&host, port);
    let stream = match tokio::time::timeout(ANSWER_TIMEOUT, connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return fail(None, e.to_string()),
        Err(_) => return fail(None, "connect timed out".into()),
    };
    let mut ws = match tokio::time::timeout(
        ANSWER_TIMEOUT,
        tokio_tungstenite::client_async_with_config(req, stream, Some(client_config())),
    )
    .await
    {
        Err(_) => return fail(None, "handshake timed out".into()),
        Ok(Err(WsError::Http(resp))) => {
            let retry_after_ms = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice::<Value>(b).ok())
                .and_then(|v| v["error"]["retry_after_ms"].as_u64());
            return Handshake {
                retry_after_ms,
                ..fail(
                    Some(resp.status().as_u16()),
                    format!("refused: {}", resp.status()),
                )
            };
        }
        Ok(Err(e)) => return fail(None, e.to_string()),
        Ok(Ok((ws, _))) => ws,
    };
    match next_text(&mut ws).await {
        Ok(_) => Handshake {
            ws: Some(ws),
            status: None,
            retry_after_ms: None,
            error: None,
        },
        Err(e) => fail(None, format!("no welcome: {e}")),
    }
}

/// The next text message, as JSON (pings are answered by reading).
pub async fn next_text(ws: &mut SimWs) -> Result<Value, String> {
    let read = async {
        loop {
            match ws.next().await {
                None => return Err("closed".to_owned()),
                Some(Err(e)) => return Err(e.to_string()),
                Some(Ok(Message::Text(t))) => {
                    return serde_json::from_str(t.as_str()).map_err(|e| e.to_string());
                }
                Some(Ok(Message::Close(f))) => {
                    return Err(format!(
                        "closed by server: {}",
                        f.map_or(0, |f| u16::from(f.code))
                    ));
                }
                Some(Ok(_)) => {}
            }
        }
    };
    tokio::time::timeout(ANSWER_TIMEOUT, read)
        .await
        .map_err(|_| "no answer in 5 s".to_owned())?
}

/// The next answer on the command channel (`Err`: none came, or it was not a reply).
pub async fn next_reply(ws: &mut SimWs) -> Result<Reply, String> {
    let v = next_text(ws).await?;
    serde_json::from_value(v).map_err(|e| format!("not a reply: {e}"))
}

/// Read until the server closes, for at most `within`: the close code, if a close frame came.
pub async fn close_code(ws: &mut SimWs, within: Duration) -> Option<u16> {
    let read = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    };
    tokio::time::timeout(within, read).await.ok().flatten()
}

/// Send a whole HTTP/1.1 request to `server`'s HTTP port and hang up `after` later without
/// reading the answer: a client that goes away while the server works on its request.
pub async fn abandon(
    server: u32,
    method: &str,
    path: &str,
    token: &str,
    body: &Value,
    after: Duration,
) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let host = format!("server-{server}");
    let mut stream = tcp(&host, HTTP).await.map_err(|e| e.to_string())?;
    let body = body.to_string();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream
        .write_all(format!("{head}{body}").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::sleep(after).await;
    drop(stream);
    Ok(())
}

/// One HTTP/1.1 request to `server`'s HTTP port, through the project's one HTTP client
/// (`spiral_server::api::client`); the response status.
pub async fn http(
    server: u32,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<u16, String> {
    Ok(http_reply(server, method, path, token, body).await?.status)
}

/// [`http`], with the response body.
pub async fn http_reply(
    server: u32,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<client::Reply, String> {
    let host = format!("server-{server}");
    let method = Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let exchange = async {
        let stream = tcp(&host, HTTP).await.map_err(|e| e.to_string())?;
        let body = body.map(|b| b.to_string().into_bytes());
        client::request(stream, method, &host, path, token, body).await
    };
    tokio::time::timeout(ANSWER_TIMEOUT, exchange)
        .await
        .map_err(|_| "no response in 5 s".to_owned())?
}
