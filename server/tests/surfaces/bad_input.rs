//! Arbitrary bytes, arbitrary JSON and arbitrary token strings: every one gets an error envelope
//! or a 4xx, the server never panics, and a bystander's connection keeps working.

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::Method;
use futures_util::{SinkExt, StreamExt};
use proptest::prelude::*;
use serde_json::{Value, json};
use spiral_server::api::ServerConfig;
use spiral_server::ratelimit::Limit;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

struct World {
    rt: tokio::runtime::Runtime,
    server: TestServer,
}

/// One server for all cases (starting one per case would test start-up, not input handling).
fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = rt.block_on(start(ServerConfig {
            ws_rate: Limit::new(1_000_000, 1_000, 0),
            http_rate: Limit::new(1_000_000, 1_000, 0),
            store_rate: Limit::new(1_000_000, 1_000, 0),
            ..ServerConfig::default()
        }));
        World { rt, server }
    })
}

/// Send `frame` on a fresh connection; the answer must be an error envelope (or, for input
/// that is a valid command, a result) and the connection must stay open.
async fn send_and_expect_an_envelope(s: &TestServer, frame: Message) -> Result<(), String> {
    let mut ws = ws_ready(s.ws, &s.user_token("fuzz", "tf")).await;
    ws.send(frame).await.map_err(|e| e.to_string())?;
    let reply = loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .map_err(|_| "no answer within 10 s".to_owned())?
            .ok_or("connection closed")?
            .map_err(|e| e.to_string())?;
        match msg {
            Message::Text(t) => {
                break serde_json::from_str::<Value>(t.as_str()).map_err(|e| e.to_string())?;
            }
            Message::Close(f) => return Err(format!("closed: {f:?}")),
            _ => {}
        }
    };
    match reply["type"].as_str() {
        Some("error") => {
            let code = reply["error"]["code"].as_str().unwrap_or("");
            if !["bad_request", "not_found", "rate_limited"].contains(&code) {
                return Err(format!("unexpected error code: {reply}"));
            }
        }
        Some("result") => {}
        _ => return Err(format!("not an envelope: {reply}")),
    }
    // Still open: a ping is answered.
    let ping = json!({"id": "after", "command": "ping"});
    ws.send(Message::Text(ping.to_string().into()))
        .await
        .map_err(|e| e.to_string())?;
    let after = command_reply(&mut ws).await?;
    if after["type"] != "result" {
        return Err(format!("connection unusable after bad input: {after}"));
    }
    Ok(())
}

async fn command_reply(ws: &mut Ws) -> Result<Value, String> {
    loop {
        let v = next_json(ws).await;
        if v["id"] == "after" {
            return Ok(v);
        }
    }
}

/// The bystander: a long-lived connection that must keep answering throughout.
async fn bystander_answers(s: &TestServer) -> bool {
    let mut ws = ws_ready(s.ws, &s.user_token("bystander", "tb")).await;
    answers_ping(&mut ws, 1).await
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        prop_oneof![
            Just("memory.store"),
            Just("memory.get"),
            Just("memory.collect"),
            Just("memory.list"),
            Just("spiral.stats"),
            Just("ping"),
            Just("command"),
            Just("args"),
            Just("id")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("id".to_owned()),
                    Just("command".to_owned()),
                    Just("args".to_owned()),
                    Just("content".to_owned()),
                    Just("depth".to_owned()),
                    "[a-z]{1,8}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_get_an_error_envelope(bytes in prop::collection::vec(any::<u8>(), 0..2048), as_text in any::<bool>()) {
        let w = world();
        let frame = if as_text {
            Message::Text(String::from_utf8_lossy(&bytes).into_owned().into())
        } else {
            Message::Binary(bytes.into())
        };
        let r = w.rt.block_on(send_and_expect_an_envelope(&w.server, frame));
        prop_assert!(r.is_ok(), "{:?}", r);
        prop_assert!(w.rt.block_on(bystander_answers(&w.server)));
    }

    #[test]
    fn arbitrary_json_gets_an_envelope(v in arbitrary_json()) {
        let w = world();
        let r = w.rt.block_on(send_and_expect_an_envelope(&w.server, Message::Text(v.to_string().into())));
        prop_assert!(r.is_ok(), "{v}: {:?}", r);
    }

    #[test]
    fn arbitrary_commands_with_arbitrary_args_get_an_envelope(
        cmd in prop_oneof![Just("memory.store"), Just("memory.get"), Just("memory.collect"), Just("memory.list"), Just("spiral.stats"), Just("ping"), Just("nope")],
        args in arbitrary_json(),
        id in arbitrary_json(),
    ) {
        let w = world();
        let msg = json!({"id": id, "type": "command", "command": cmd, "args": args});
        let r = w.rt.block_on(send_and_expect_an_envelope(&w.server, Message::Text(msg.to_string().into())));
        prop_assert!(r.is_ok(), "{msg}: {:?}", r);
    }

    #[test]
    fn arbitrary_token_strings_get_a_401(token in "[ -~]{0,300}") {
        let w = world();
        let s = &w.server;
        // Printable ASCII always makes a valid header value.
        let r = w.rt.block_on(s.http(Method::GET, "/v1/spirals", Some(&token), None));
        prop_assert_eq!(r.status, 401, "{}", token);
        let body = r.json();
        prop_assert_eq!(body["error"]["code"].as_str(), Some("unauthorized"));
        let ws = w.rt.block_on(ws_connect(s.ws, Some(&token)));
        prop_assert_eq!(ws.err().map(|e| e.0), Some(401));
        prop_assert!(w.rt.block_on(bystander_answers(s)));
    }
}
