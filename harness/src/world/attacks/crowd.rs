//! Crowd: a tenant stores as many nodes as the engine holds, all at the top priority, to make GC
//! delete the other tenants' nodes instead of its own. First it tries a priority past the top
//! (the server must refuse it with `bad_request`); then it stores one node after another at the
//! top, waiting out `rate_limited` answers, until it has sent the engine's capacity or its time
//! is up. One `crowd` record says what it did; the GC passes it provokes are judged by
//! `tenant_fairness` from their `gc_shares` records.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use spiral_history::Event;
use spiral_server::engine::{PRIORITY_RANGE, StoreRequest};
use spiral_server::protocol::{self, Command, ErrorCode, Reply};
use tokio_tungstenite::tungstenite::Message;

use crate::world::net::{self, SimWs};
use crate::world::{Ctx, now_ms};

/// At most this many stores (the engine's capacity, if smaller).
const MOST: u64 = 256;
/// The attack's time: it stops sending after this.
const SPAN_MS: u64 = 20_000;

/// One store at `priority`; what came back (`Err`: no answer).
async fn store(ws: &mut SimWs, n: u64, priority: i64) -> Result<Reply, String> {
    let req = StoreRequest {
        content: json!({"crowd": n}),
        priority: Some(priority),
        ..StoreRequest::default()
    };
    let msg = protocol::request(&json!(n), &Command::MemoryStore(req));
    ws.send(Message::Text(msg.into()))
        .await
        .map_err(|e| e.to_string())?;
    net::next_reply(ws).await
}

/// Client `client`'s crowd on `server`, over the open connection `ws` of tenant `tenant`.
pub(crate) async fn run(ctx: &Ctx, client: u32, server: u32, tenant: &str, mut ws: SimWs) {
    let probe_priority = i64::MAX;
    let probe = match store(&mut ws, 0, probe_priority).await {
        Ok(Reply::Result { .. }) => Some("stored".to_owned()),
        Ok(Reply::Error { error, .. }) => Some(error.code.as_str().to_owned()),
        Err(_) => None,
    };
    let want = ctx.sc.world.max_nodes.min(MOST);
    let top = *PRIORITY_RANGE.end();
    let deadline = now_ms() + SPAN_MS;
    let (mut sent, mut stored) = (0u32, 0u32);
    while u64::from(sent) < want && now_ms() < deadline {
        sent += 1;
        match store(&mut ws, u64::from(sent), top).await {
            Ok(Reply::Result { .. }) => stored += 1,
            Ok(Reply::Error { error, .. }) if error.code == ErrorCode::RateLimited => {
                let wait = error.retry_after_ms.unwrap_or(100).clamp(10, 2_000);
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            Ok(Reply::Error { .. }) => {}
            Err(_) => break,
        }
    }
    ctx.record(Event::Crowd {
        client,
        server,
        tenant: tenant.to_owned(),
        priority: probe_priority,
        probe,
        sent,
        stored,
    });
    let _ = ws.close(None).await;
}
