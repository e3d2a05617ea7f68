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

use crate::world::net::{self, SimWs};
use crate::world::{Ctx, lock, now_ms};

/// Segments the simulated network holds unread per connection (turmoil's `tcp_capacity`).
const IN_FLIGHT: u64 = 64;
/// The pause after each command.
const PACE: Duration = Duration::from_millis(5);

/// Flood answers without reading, wait until the server's queue has reached its bound and then
/// past the slow-client limit, then read until the close; the acceptable close codes and the one
/// that came, if any.
///
/// The server answers at its own pace — every message passes the rate limiter, a Redis round trip
/// in some worlds, and a slow or faulty Redis slows it further — so the sends finishing says
/// nothing about when its queue filled. The world watches the server's drop counter
/// (`ws_backpressure_drops_total`) instead: the first drop after the attack began is when the
/// queue reached its bound, and the slow-client limit runs from there. Reading any earlier would
/// drain the queue and cancel the close the check is waiting for.
///
/// A peer that reads nothing answers no ping either: the heartbeat closes it with 4001 three ping
/// periods after it connected. 1008 is expected when the slow-client close was due well before
/// that. When the heartbeat's was due first, either close is right — and neither may arrive: a
/// close frame sent to a peer whose window is full waits behind the data, and the server drops
/// the connection when its close does not go out. The third value says so: the outcome is not
/// judged.
pub(crate) async fn run(ws: &mut SimWs, ctx: &Ctx, server: u32) -> (Vec<u16>, Option<u16>, bool) {
    let w = &ctx.sc.world;
    let opened_ms = now_ms();
    let drops = || {
        ctx.state(server)
            .map(|st| st.metrics.ws_backpressure_drops.get())
    };
    let baseline = drops().unwrap_or(0);
    let id_len = (w.max_message_size / 2).min(16 * 1024) as u64;
    let bound = ctx.settings.get("ws_send_queue_bytes");
    let frames = ctx.settings.get("ws_send_queue");
    // Enough to fill what the network holds and then the queue past its bound in bytes or in
    // frames, whichever is the smaller.
    let sent = IN_FLIGHT + (bound / id_len).min(frames) + 32;
    let id = "n".repeat(id_len as usize);
    let slow_ms = ctx.settings.get("ws_slow_client_ms");
    let slow_close = CloseCode::PolicyViolation.code();
    // A send blocks while the network holds all it can: the server must close the connection
    // within the slow-client limit. A send still blocked well past it means the peer is gone (a
    // crashed server answers nothing, not even a close): stop there.
    let patience = Duration::from_millis(slow_ms + 5_000);
    for _ in 0..sent {
        let frame = format!("{{\"id\":\"{id}\",\"command\":\"ping\"}}");
        match tokio::time::timeout(patience, ws.send(Message::Text(frame.into()))).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                return (
                    vec![slow_close],
                    net::close_code(ws, Duration::from_secs(1)).await,
                    false,
                );
            }
            Err(_) => return (vec![slow_close], None, false),
        }
        tokio::time::sleep(PACE).await;
    }
    // Wait for the server to reach its bound: what was sent is more than it may hold, so it must
    // drop, and by 50 ms a message it has had plenty of time to answer them all — unless Redis,
    // which each message's rate limit waits on, was faulty meanwhile (then the outcome is not
    // judged), or the server is gone (a link fault: not judged either).
    let give_up_ms = now_ms() + sent * 50 + 5_000;
    let (full_ms, dropped) = loop {
        let now = now_ms();
        let dropped = drops().is_some_and(|d| d > baseline);
        if dropped || now >= give_up_ms {
            break (now, dropped);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    if !dropped {
        // Never at its bound: a queue bounded in neither frames nor bytes. The close the check
        // waits for cannot come; reading now shows what did.
        let redis_faulty = lock(&ctx.disturbance).redis_since(opened_ms);
        let got = net::close_code(ws, Duration::from_secs(5)).await;
        return (vec![slow_close], got, redis_faulty);
    }
    let silent_close_ms = opened_ms + 3 * w.ws_ping_interval_ms;
    let read_ms = full_ms + slow_ms + 500;
    let heartbeat_first = read_ms >= silent_close_ms;
    let expected = if heartbeat_first {
        vec![slow_close, CloseCode::PongTimeout.code()]
    } else {
        vec![slow_close]
    };
    tokio::time::sleep(Duration::from_millis(read_ms - now_ms().min(read_ms))).await;
    let got = net::close_code(ws, Duration::from_secs(5)).await;
    (expected, got, heartbeat_first)
}
