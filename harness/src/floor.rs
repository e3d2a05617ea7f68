//! The floor: the least a server on Spiral's stack (tokio, axum, its WebSocket) can do for the
//! load generator's workload — `GET /health`, and a WebSocket at any path that reads each text
//! frame as a request envelope (`protocol::Command::parse`, as the server does) and answers it with
//! a result envelope shaped like a store's (`Reply::Result` with a `Stored`). No token check, no
//! rate limit, no engine, no storage: what the server spends above the floor is what those cost.
//!
//! `load --vs-floor` runs every phase against the target and against a floor in the same run,
//! alternating, and reports each figure also as a ratio to the floor's (docs/PERFORMANCE.md).

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};
use spiral_server::engine::Stored;
use spiral_server::protocol::{Command, ErrorBody, ErrorCode, Reply};

/// The floor's routes: `/health`, and the WebSocket on every other path.
pub fn router() -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .fallback(upgrade)
}

async fn upgrade(ws: WebSocketUpgrade) -> impl IntoResponse {
    ws.on_upgrade(answer_frames)
}

/// Answer each request on `socket` until it closes.
async fn answer_frames(mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.recv().await {
        let Message::Text(text) = msg else { continue };
        let reply = answer(text.as_str());
        if socket
            .send(Message::Text(reply.to_value().to_string().into()))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// The reply to one request frame: a store-shaped result, or the server's error envelope for a
/// frame that is not a request.
pub fn answer(text: &str) -> Reply {
    let parsed = serde_json::from_str::<Value>(text)
        .map_err(|e| e.to_string())
        .and_then(|v| {
            let name = v["command"].as_str().unwrap_or_default().to_owned();
            Command::parse(&name, v["args"].clone()).map(|c| (v["id"].clone(), c))
        });
    match parsed {
        Ok((id, _command)) => Reply::Result {
            id,
            data: json!(Stored {
                id: "0000000000".into(),
                spiral_id: "spiral-0".into(),
                depth: 0.5,
                priority: 0,
                created_ms: 0,
            }),
        },
        Err(message) => Reply::Error {
            id: Value::Null,
            error: ErrorBody {
                code: ErrorCode::BadRequest,
                message,
                retry_after_ms: None,
            },
        },
    }
}

/// Serve the floor on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, router()).await
}

/// Start a floor on its own OS thread with a one-worker runtime (as `scripts/perf-figures.sh`
/// runs the server), so it never shares the load generator's thread; its address.
#[allow(clippy::disallowed_methods)] // a harness tool's thread, not server logic
pub fn spawn_on_loopback() -> std::io::Result<std::net::SocketAddr> {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(format!("{}-worker", crate::load::FLOOR_THREADS))
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(crate::load::FLOOR_THREADS.into())
        .spawn(move || {
            rt.block_on(async move {
                if let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) {
                    let _ = serve(listener).await;
                }
            });
        })?;
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_gets_a_store_shaped_result_and_garbage_the_error_envelope() {
        let ok = answer(r#"{"id": 7, "command": "memory.store", "args": {"content": "x"}}"#);
        match &ok {
            Reply::Result { id, data } => {
                assert_eq!(id, &json!(7));
                assert_eq!(data["id"], "0000000000");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(answer("not json").error_code(), Some(ErrorCode::BadRequest));
        assert_eq!(
            answer(r#"{"id": 1, "command": "no.such", "args": {}}"#).error_code(),
            Some(ErrorCode::BadRequest)
        );
    }
}
