//! Slow and idle clients on real sockets (SPEC §1.9): half-header sockets closed at the header
//! timeout on every listener while `/health` keeps answering; idle keep-alive connections closed;
//! sockets not yet upgraded holding places under the cap; a never-reading WebSocket held to its
//! queue's byte bound and closed with 1008; the stream sharing one copy of a frame. What the
//! simulator cannot show: real file descriptors, a real TCP window that closes.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::Method;
use serde_json::json;
use spiral_server::api::ServerConfig;
use spiral_server::ratelimit::Limit;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Long enough for anything that should happen to have happened; never a speed claim.
const EVENTUALLY: Duration = Duration::from_secs(20);

/// A socket that has sent half a request header.
async fn half_header(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: ")
        .await
        .unwrap();
    s
}

/// Whether the server closes `s` (EOF or reset) within `within`.
async fn closed_within(mut s: TcpStream, within: Duration) -> bool {
    let read = async {
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read).await.is_ok()
}

#[tokio::test]
async fn two_hundred_half_header_sockets_are_closed_and_health_keeps_answering() {
    let s = start(ServerConfig {
        http_header_timeout_ms: 300,
        ..ServerConfig::default()
    })
    .await;
    for addr in [s.http, s.ws, s.stream] {
        let mut held = Vec::new();
        for _ in 0..200 {
            held.push(half_header(addr).await);
        }
        // While they are held, the server still answers.
        assert_eq!(s.http(Method::GET, "/health", None, None).await.status, 200);
        let closed =
            futures_util::future::join_all(held.into_iter().map(|h| closed_within(h, EVENTUALLY)))
                .await;
        assert!(
            closed.iter().all(|c| *c),
            "{addr}: a half-header socket stayed open"
        );
        assert_eq!(s.http(Method::GET, "/health", None, None).await.status, 200);
    }
    assert!(s.metric("spiral_http_connection_timeouts_total{reason=\"header\"}") >= 600.0);
    s.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_its_idle_timeout_not_its_header_timeout() {
    let s = start(ServerConfig {
        http_header_timeout_ms: 200,
        http_idle_timeout_ms: 1_500,
        ..ServerConfig::default()
    })
    .await;
    let mut c = TcpStream::connect(s.http).await.unwrap();
    c.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = c.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Idle past the header timeout, the connection still serves a second request.
    tokio::time::sleep(Duration::from_millis(600)).await;
    c.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let n = c.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(closed_within(c, EVENTUALLY).await, "idle connection kept");
    assert!(s.metric("spiral_http_connection_timeouts_total{reason=\"idle\"}") >= 1.0);
    s.stop().await;
}

#[tokio::test]
async fn sockets_not_yet_upgraded_hold_places_under_the_cap() {
    let s = start(ServerConfig {
        max_connections: 4,
        http_header_timeout_ms: 400,
        ..ServerConfig::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(half_header(s.ws).await);
    }
    // Let the server accept them.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = ws_connect(s.ws, Some(&s.user_token("ada", "t1"))).await;
    assert_eq!(refused.err().map(|e| e.0), Some(503));
    // Once they are closed at the header timeout, the places come back.
    for h in held {
        assert!(closed_within(h, EVENTUALLY).await);
    }
    let mut ws = ws_ready(s.ws, &s.user_token("ada", "t1")).await;
    assert!(answers_ping(&mut ws, 1).await);
    s.stop().await;
}

#[tokio::test]
async fn a_websocket_that_never_reads_stays_within_its_queue_bytes_and_is_closed_with_1008() {
    let bound = 256 * 1024;
    let s = start(ServerConfig {
        ws_send_queue_bytes: bound,
        ws_slow_client_ms: 300,
        ws_rate: Limit::new(100_000, 1_000, 0),
        max_message_size: 128 * 1024,
        ..ServerConfig::default()
    })
    .await;
    let mut ws = ws_ready(s.ws, &s.user_token("ada", "t1")).await;
    // Every answer echoes a 64 KiB id; read none of them.
    let id = "i".repeat(64 * 1024);
    let mut most = 0.0f64;
    let mut closed_1008 = 0.0;
    for n in 0..2_000 {
        if futures_util::SinkExt::send(
            &mut ws,
            tokio_tungstenite::tungstenite::Message::Text(
                json!({"id": id, "command": "ping"}).to_string().into(),
            ),
        )
        .await
        .is_err()
        {
            break;
        }
        most = most.max(s.metric("ws_send_queue_bytes "));
        closed_1008 = s.metric("ws_close_total{code=\"1008\"}");
        if closed_1008 > 0.0 {
            break;
        }
        if n % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Sent until the server gave up on it (or the socket filled both ways).
    for _ in 0..400 {
        closed_1008 = s.metric("ws_close_total{code=\"1008\"}");
        if closed_1008 > 0.0 {
            break;
        }
        most = most.max(s.metric("ws_send_queue_bytes "));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        s.metric("ws_backpressure_drops_total") > 0.0,
        "nothing dropped"
    );
    assert!(most > 0.0, "nothing queued");
    assert!(most <= bound as f64, "queued {most} bytes, bound {bound}");
    assert_eq!(closed_1008, 1.0, "not closed for being slow");
    // What the client reads now ends with the 1008 close (or the socket closing).
    let got = close_code(&mut ws, EVENTUALLY).await;
    assert!(matches!(got, Some(1008) | None), "{got:?}");
    assert_eq!(
        s.metric("ws_send_queue_bytes "),
        0.0,
        "the queue left with the connection"
    );
    s.stop().await;
}
