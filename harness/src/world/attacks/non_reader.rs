//! A peer that never reads: it sends commands whose answers are large (each echoes a long request
//! `id`, even the `rate_limited` ones) and reads nothing, so the answers pile up in the server's
//! outbound queue. The queue is bounded in bytes (`WS_SEND_QUEUE_BYTES`) as well as frames; a
//! connection held at its bound for `WS_SLOW_CLIENT_MS` must be closed with 1008 (SPEC §1.9).
//!
//! turmoil's TCP has end-to-end flow control (0.7.2: at most `tcp_capacity`, 64, segments unread
//! per direction), so a peer that does not read does stop the server's writer, as a closed TCP
//! window would; what the server holds beyond that is its own queue. The commands go one per
//! few milliseconds: sent back to back, a burst's answers outrun the writer within one step and
//! are dropped at the bound before 64 of them reach the network — a burst, not a slow reader.

use std::time::Duration;

use futures_util::SinkExt;
use spiral_server::protocol::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::world::Ctx;
use crate::world::net::{self, SimWs};

/// Segments the simulated network holds unread per connection (turmoil's `tcp_capacity`).
const IN_FLIGHT: u64 = 64;
/// The pause after each command.
const PACE: Duration = Duration::from_millis(5);

/// Flood answers without reading, wait past the slow-client limit, then read until the close;
/// the close code, if any. Expected: 1008.
pub(crate) async fn run(ws: &mut SimWs, ctx: &Ctx) -> (Vec<u16>, Option<u16>) {
    let w = &ctx.sc.world;
    let id_len = (w.max_message_size / 2).min(16 * 1024) as u64;
    let bound = ctx.settings.get("ws_send_queue_bytes");
    let frames = ctx.settings.get("ws_send_queue");
    // Enough to fill what the network holds and then the queue past its bound in bytes or in
    // frames, whichever is the smaller.
    let sent = IN_FLIGHT + (bound / id_len).min(frames) + 32;
    let id = "n".repeat(id_len as usize);
    let expected = vec![CloseCode::PolicyViolation.code()];
    let slow_ms = ctx.settings.get("ws_slow_client_ms");
    // A send blocks while the network holds all it can: the server must close the connection
    // within the slow-client limit. A send still blocked well past it means the peer is gone (a
    // crashed server answers nothing, not even a close): stop there.
    let patience = Duration::from_millis(slow_ms + 5_000);
    for _ in 0..sent {
        let frame = format!("{{\"id\":\"{id}\",\"command\":\"ping\"}}");
        match tokio::time::timeout(patience, ws.send(Message::Text(frame.into()))).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return (expected, net::close_code(ws, Duration::from_secs(1)).await),
            Err(_) => return (expected, None),
        }
        tokio::time::sleep(PACE).await;
    }
    tokio::time::sleep(Duration::from_millis(slow_ms + 500)).await;
    (expected, net::close_code(ws, Duration::from_secs(5)).await)
}
