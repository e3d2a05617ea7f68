//! The command channel: envelope and commands, tenant isolation, close codes, the cap, backpressure.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use spiral_server::api::ServerConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data as OpData, OpCode};

use crate::support::*;

#[tokio::test]
async fn commands_answer_with_the_same_data_as_rest() {
    let s = start(ServerConfig::default()).await;
    let mut ws = ws_ready(s.ws, &s.user_token("ada", "t1")).await;
    let stored = command(
        &mut ws,
        1,
        "memory.store",
        json!({"content": {"text": "hi"}, "depth": 0.3, "priority": 2, "tags": ["a"]}),
    )
    .await;
    assert_eq!(stored["type"], "result", "{stored}");
    let id = stored["data"]["id"].as_str().unwrap().to_owned();
    assert_eq!(stored["data"]["depth"], 0.3);
    let got = command(&mut ws, 2, "memory.get", json!({"id": id})).await;
    assert_eq!(got["data"]["content"], json!({"text": "hi"}));
    let rest = s
        .http(
            axum::http::Method::GET,
            &format!("/v1/memories/{id}"),
            Some(&s.user_token("ada", "t1")),
            None,
        )
        .await;
    assert_eq!(rest.json(), got["data"]);
    let list = command(&mut ws, 3, "memory.list", Value::Null).await;
    assert_eq!(list["data"]["ids"], json!([id]));
    let stats = command(&mut ws, 4, "spiral.stats", Value::Null).await;
    assert_eq!(stats["data"]["total_memories"], 1);
    assert_eq!(
        command(&mut ws, 5, "memory.collect", json!({"id": id})).await["data"]["collected"],
        true
    );
    let gone = command(&mut ws, 6, "memory.get", json!({"id": id})).await;
    assert_eq!(gone["error"]["code"], "not_found");
    assert_eq!(
        command(&mut ws, "7".parse().unwrap(), "ping", Value::Null).await["data"]["pong"],
        true
    );
    s.stop().await;
}

#[tokio::test]
async fn another_tenant_gets_not_found_never_the_data() {
    let s = start(ServerConfig::default()).await;
    let mut a = ws_ready(s.ws, &s.user_token("ada", "t1")).await;
    let id = command(&mut a, 1, "memory.store", json!({"content": "secret"})).await["data"]["id"]
        .clone();
    let mut b = ws_ready(s.ws, &s.user_token("bob", "t2")).await;
    let missing = command(&mut b, 1, "memory.get", json!({"id": "0000000000"})).await;
    let other = command(&mut b, 2, "memory.get", json!({"id": id})).await;
    // Indistinguishable from a missing id.
    assert_eq!(other["error"], missing["error"]);
    assert_eq!(other["error"]["code"], "not_found");
    assert_eq!(
        command(&mut b, 3, "memory.collect", json!({"id": id})).await["error"]["code"],
        "not_found"
    );
    assert_eq!(
        command(&mut b, 4, "memory.list", Value::Null).await["data"]["ids"],
        json!([])
    );
    let bt = s.user_token("bob", "t2");
    let id = id.as_str().unwrap();
    assert_eq!(
        s.http(
            axum::http::Method::GET,
            &format!("/v1/memories/{id}"),
            Some(&bt),
            None
        )
        .await
        .status,
        404
    );
    assert_eq!(
        s.http(
            axum::http::Method::DELETE,
            &format!("/v1/memories/{id}"),
            Some(&bt),
            None
        )
        .await
        .status,
        404
    );
    // Still there for its owner.
    assert_eq!(
        command(&mut a, 2, "memory.get", json!({"id": id})).await["type"],
        "result"
    );
    s.stop().await;
}

/// Noise is not activity: binary frames and malformed text are answered, but a client that sends
/// nothing else is idle and closed with 4000 like one that sends nothing.
#[tokio::test]
async fn a_client_that_sends_only_noise_is_closed_with_4000() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let s = start(ServerConfig {
        ws_idle_timeout_ms: 300,
        ws_ping_interval_ms: 100,
        ..ServerConfig::default()
    })
    .await;
    let mut ws = ws_ready(s.ws, &s.user_token("ada", "t1")).await;
    let mut got = None;
    for n in 0u32..40 {
        let noise = if n.is_multiple_of(2) {
            Message::Binary(vec![1, 2, 3].into())
        } else {
            Message::Text("{\"id\": 1, \"command\": ".into())
        };
        if ws.send(noise).await.is_err() {
            break;
        }
        got = close_code(&mut ws, Duration::from_millis(100)).await;
        if got.is_some() {
            break;
        }
    }
    assert_eq!(got, Some(4000), "a peer sending only noise is idle");
    s.stop().await;
}

#[tokio::test]
async fn a_client_that_sends_no_data_is_closed_with_4000() {
    let s = start(ServerConfig {
        ws_idle_timeout_ms: 300,
        ws_ping_interval_ms: 100,
        ..ServerConfig::default()
    })
    .await;
    let mut ws = ws_ready(s.ws, &s.user_token("ada", "t1")).await;
    // Reading answers every ping, so only the missing data message can close it.
    assert_eq!(
        close_code(&mut ws, Duration::from_secs(5)).await,
        Some(4000)
    );
    assert_eq!(s.metric("ws_close_total{code=\"4000\"}"), 1.0);
    s.stop().await;
}

#[tokio::test]
async fn a_client_that_answers_no_ping_is_closed_with_4001() {
    let s = start(ServerConfig {
        ws_idle_timeout_ms: 60_000,
        ws_ping_interval_ms: 100,
        ..ServerConfig::default()
    })
    .await;
    let mut ws = ws_ready(s.ws, &s.user_token("ada", "t1")).await;
    // Not reading means tungstenite answers no ping: silence.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        close_code(&mut ws, Duration::from_secs(5)).await,
        Some(4001)
    );
    s.stop().await;
}

#[tokio::test]
async fn a_live_client_stays_connected_past_several_pings() {
    let s = start(ServerConfig {
        ws_idle_timeout_ms: 60_000,
        ws_ping_interval_ms: 50,
        ..ServerConfig::default()
    })
    .await;
    let mut ws = ws_ready(s.ws, &s.user_token("ada", "t1")).await;
    // Reading for 500 ms answers ~10 pings; the connection must still be open.
    assert_eq!(close_code(&mut ws, Duration::from_millis(500)).await, None);
    assert!(answers_ping(&mut ws, 1).await);
    s.stop().await;
}

#[tokio::test]
async fn an_oversized_frame_closes_with_1009_and_spares_the_others() {
    let s = start(ServerConfig {
        max_message_size: 4096,
        ..ServerConfig::default()
    })
    .await;
    let mut other = ws_ready(s.ws, &s.user_token("bob", "t1")).await;
    let mut ws = ws_ready(s.ws, &s.user_token("ada", "t1")).await;
    let big = json!({"id": 1, "command": "memory.store", "args": {"content": "x".repeat(10_000)}});
    send_json(&mut ws, &big).await;
    assert_eq!(
        close_code(&mut ws, Duration::from_secs(5)).await,
        Some(1009)
    );
    assert!(answers_ping(&mut other, 1).await);
    // Over HTTP the same limit is a 413 with the JSON error.
    let r = s
        .http(
            axum::http::Method::POST,
            "/v1/memories",
            Some(&s.user_token("c", "t1")),
            Some(json!({"content": "x".repeat(10_000)})),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    s.stop().await;
}

/// A frame is refused on its header, and the rest of it is never read: a frame larger than the
/// socket buffers can hold is still being sent when the server closes. The server must read and
/// discard the rest (a lingering close) so that the client finishes sending and reads the 1009,
/// where a socket dropped with unread input is reset under the sender (planted `ws-no-linger`).
#[tokio::test]
async fn a_frame_far_over_the_limit_still_gets_its_1009() {
    let limit = 2 * 1024 * 1024;
    let s = start(ServerConfig {
        max_message_size: limit,
        ..ServerConfig::default()
    })
    .await;
    let mut ws = ws_ready(s.ws, &s.user_token("ada", "t1")).await;
    let big =
        json!({"id": 1, "command": "memory.store", "args": {"content": "x".repeat(3 * limit)}});
    let sent = ws.send(Message::Text(big.to_string().into())).await;
    assert!(
        sent.is_ok(),
        "the server reset the connection under the frame it refused: {sent:?}"
    );
    assert_eq!(
        close_code(&mut ws, Duration::from_secs(5)).await,
        Some(1009)
    );
    s.stop().await;
}

/// A single data frame with any opcode and payload, even ones tungstenite would never send.
fn raw_frame(opcode: OpData, payload: &[u8]) -> Message {
    Message::Frame(Frame::message(payload.to_vec(), OpCode::Data(opcode), true))
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007_and_a_protocol_violation_with_1002() {
    let s = start(ServerConfig::default()).await;
    let mut other = ws_ready(s.ws, &s.user_token("bob", "t1")).await;
    let mut ws = ws_ready(s.ws, &s.user_token("ada", "t1")).await;
    // A text frame that is not UTF-8 (`\xc0\xaf` is an overlong `/`).
    ws.send(raw_frame(
        OpData::Text,
        b"{\"id\":1,\"command\":\"\xc0\xaf\"}",
    ))
    .await
    .unwrap();
    assert_eq!(
        close_code(&mut ws, Duration::from_secs(5)).await,
        Some(1007)
    );
    let mut ws = ws_ready(s.ws, &s.user_token("ada", "t1")).await;
    // A continuation frame with no message to continue.
    ws.send(raw_frame(OpData::Continue, b"{}")).await.unwrap();
    assert_eq!(
        close_code(&mut ws, Duration::from_secs(5)).await,
        Some(1002)
    );
    assert_eq!(s.metric("ws_close_total{code=\"1007\"}"), 1.0);
    assert_eq!(s.metric("ws_close_total{code=\"1002\"}"), 1.0);
    assert!(answers_ping(&mut other, 1).await);
    s.stop().await;
}

#[tokio::test]
async fn handshakes_over_the_connection_cap_get_503() {
    let s = start(ServerConfig {
        max_connections: 2,
        ..ServerConfig::default()
    })
    .await;
    let _a = ws_ready(s.ws, &s.user_token("a", "t")).await;
    let b = ws_ready(s.stream, &s.stream_token("b", "t")).await;
    let (code, body) = ws_connect(s.ws, Some(&s.user_token("c", "t")))
        .await
        .err()
        .unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body["error"]["retry_after_ms"].as_u64().is_some());
    drop(b);
    // The place comes back once a connection ends.
    let mut admitted = false;
    for _ in 0..50 {
        if ws_connect(s.ws, Some(&s.user_token("c", "t")))
            .await
            .is_ok()
        {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(admitted);
    s.stop().await;
}

#[tokio::test]
async fn one_user_gets_429_past_its_own_cap_and_its_place_back_when_a_socket_closes() {
    let s = start(ServerConfig {
        max_connections_per_user: 3,
        ..ServerConfig::default()
    })
    .await;
    // The cap counts both ports together.
    let mut first = ws_ready(s.ws, &s.user_token("ada", "t1")).await;
    let _second = ws_ready(s.ws, &s.user_token("ada", "t1")).await;
    let _third = ws_ready(s.stream, &s.stream_token("ada", "t1")).await;
    assert_eq!(s.state.conns.held_by("ada"), 3);
    let refused = s.user_token("ada", "t1");
    let (code, body) = ws_connect(s.ws, Some(&refused)).await.err().unwrap();
    assert_eq!(code, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert!(
        body["error"]["retry_after_ms"]
            .as_u64()
            .is_some_and(|ms| ms > 0),
        "{body}"
    );
    let (code, body) = ws_connect(s.stream, Some(&s.stream_token("ada", "t1")))
        .await
        .err()
        .unwrap();
    assert_eq!(code, 429, "{body}");
    assert_eq!(
        s.metric("spiral_ws_rate_limit_exceeded_total{endpoint=\"ws_user_connections\"}"),
        2.0
    );
    // Another user is not held back by the first one's cap.
    let mut bob = ws_ready(s.ws, &s.user_token("bob", "t1")).await;
    assert!(answers_ping(&mut bob, 1).await);
    // One of ada's sockets closes: ada gets in again, with the very token refused before (a
    // refusal at the cap does not use up its `jti`).
    first.close(None).await.unwrap();
    let mut admitted = None;
    for _ in 0..50 {
        match ws_connect(s.ws, Some(&refused)).await {
            Ok(ws) => {
                admitted = Some(ws);
                break;
            }
            Err((code, body)) => assert_eq!(code, 429, "{body}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        admitted.is_some(),
        "ada was kept out after closing a socket"
    );
    assert_eq!(s.state.conns.held_by("ada"), 3);
    s.stop().await;
}

/// Wait up to 5 s for `user` to hold `n` places under its own cap.
async fn held_comes_to(s: &TestServer, user: &str, n: usize) -> bool {
    for _ in 0..250 {
        if s.state.conns.held_by(user) == n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn every_way_a_handshake_or_connection_ends_gives_the_users_place_back() {
    let s = start(ServerConfig {
        max_connections_per_user: 1,
        ws_idle_timeout_ms: 300,
        allow_anonymous_ws: true,
        ws_rate: spiral_server::ratelimit::Limit::new(2, 60_000, 0),
        ..ServerConfig::default()
    })
    .await;
    // Closed by the server (idle, 4000).
    let mut ws = ws_ready(s.ws, &s.user_token("ada", "t1")).await;
    assert_eq!(
        close_code(&mut ws, Duration::from_secs(5)).await,
        Some(4000)
    );
    assert!(
        held_comes_to(&s, "ada", 0).await,
        "idle close kept the place"
    );
    // Closed by the client.
    let mut ws = ws_ready(s.ws, &s.user_token("ada", "t1")).await;
    ws.close(None).await.unwrap();
    assert!(
        held_comes_to(&s, "ada", 0).await,
        "client close kept the place"
    );
    // Refused by the handshake bucket after the place was taken: given back with the refusal.
    let (code, body) = ws_connect(s.ws, Some(&s.user_token("ada", "t1")))
        .await
        .err()
        .unwrap();
    assert_eq!(code, 429, "{body}");
    assert_eq!(
        s.metric("spiral_ws_rate_limit_exceeded_total{endpoint=\"ws_handshake\"}"),
        1.0
    );
    assert_eq!(s.state.conns.held_by("ada"), 0);
    // Refused for a bad token: no place taken at all.
    let (code, _) = ws_connect(s.ws, Some("not-a-token")).await.err().unwrap();
    assert_eq!(code, 401);
    // Anonymous clients are all the one user `anonymous`.
    let _anonymous = ws_connect(s.ws, None).await.expect("admitted");
    assert!(held_comes_to(&s, "anonymous", 1).await);
    let (code, body) = ws_connect(s.ws, None).await.err().unwrap();
    assert_eq!(code, 429, "{body}");
    assert_eq!(
        s.metric("spiral_ws_rate_limit_exceeded_total{endpoint=\"ws_user_connections\"}"),
        1.0
    );
    s.stop().await;
}

#[tokio::test]
async fn a_client_that_does_not_read_loses_frames_counted_as_backpressure() {
    let s = start(ServerConfig {
        ws_send_queue: 2,
        ws_rate: spiral_server::ratelimit::Limit::new(10_000, 1_000, 0),
        ..ServerConfig::default()
    })
    .await;
    let mut ws = ws_ready(s.ws, &s.user_token("ada", "t1")).await;
    let id = command(
        &mut ws,
        1,
        "memory.store",
        json!({"content": "y".repeat(512 * 1024)}),
    )
    .await["data"]["id"]
        .clone();
    // Ask for 0.5 MiB a hundred times and read nothing: socket buffers fill, then the queue.
    for i in 0..100 {
        let m = json!({"id": 100 + i, "command": "memory.get", "args": {"id": id}});
        send_json(&mut ws, &m).await;
    }
    let mut dropped = 0.0;
    for _ in 0..100 {
        dropped = s.metric("ws_backpressure_drops_total");
        if dropped > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(dropped > 0.0, "no frame was dropped");
    s.stop().await;
}

#[tokio::test]
async fn shutdown_closes_websockets_with_1001() {
    let s = start(ServerConfig::default()).await;
    let mut ws = ws_ready(s.ws, &s.user_token("ada", "t1")).await;
    let reader = tokio::spawn(async move { close_code(&mut ws, Duration::from_secs(5)).await });
    s.stop().await;
    assert_eq!(reader.await.unwrap(), Some(1001));
}

#[tokio::test]
async fn messages_over_the_ws_limit_get_rate_limited_envelopes() {
    let s = start(ServerConfig {
        ws_rate: spiral_server::ratelimit::Limit::new(3, 10_000, 0),
        ..ServerConfig::default()
    })
    .await;
    // The handshake takes one token of the user's WebSocket bucket.
    let mut ws = ws_ready(s.ws, &s.user_token("ada", "t1")).await;
    assert!(answers_ping(&mut ws, 1).await);
    assert!(answers_ping(&mut ws, 2).await);
    let limited = command(&mut ws, 3, "ping", Value::Null).await;
    assert_eq!(limited["error"]["code"], "rate_limited", "{limited}");
    assert!(limited["error"]["retry_after_ms"].as_u64().unwrap() > 0);
    s.stop().await;
}
