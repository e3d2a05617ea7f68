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
use crate::world::{Ctx, lock, now_ms, real};

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
///
/// In the real world the network holds what the kernel's socket buffers and the fault proxy hold
/// — megabytes, not 64 segments — and the drop counter is the server's `/metrics`: the attack
/// sends until the counter moves (looking every [`REAL_LOOK_EVERY`] commands), at most
/// [`REAL_MAX_SENT`] commands.
pub(crate) async fn run(ws: &mut SimWs, ctx: &Ctx, server: u32) -> (Vec<u16>, Option<u16>, bool) {
    let w = &ctx.sc.world;
    let opened_ms = now_ms();
    let mut looks = 0;
    let baseline = drops(ctx, server, &mut looks).await.unwrap_or(0);
    let id_len = (w.max_message_size / 2).min(16 * 1024) as u64;
    let bound = ctx.settings.get("ws_send_queue_bytes");
    let frames = ctx.settings.get("ws_send_queue");
    let real = real::world().is_some();
    // Enough to fill what the network holds and then the queue past its bound in bytes or in
    // frames, whichever is the smaller.
    let sent = if real {
        REAL_MAX_SENT
    } else {
        IN_FLIGHT + (bound / id_len).min(frames) + 32
    };
    let id = "n".repeat(id_len as usize);
    let slow_ms = ctx.settings.get("ws_slow_client_ms");
    let slow_close = CloseCode::PolicyViolation.code();
    // A send blocks while the network holds all it can: the server must close the connection
    // within the slow-client limit. A send still blocked well past it means the peer is gone (a
    // crashed server answers nothing, not even a close): stop there.
    let patience = Duration::from_millis(slow_ms + 5_000);
    // The heartbeat's close is due three ping periods after connecting: from then on either
    // close is right, and neither may come out (see above).
    let silent_close_ms = opened_ms + 3 * w.ws_ping_interval_ms;
    let expected = |heartbeat_first: bool| {
        if heartbeat_first {
            vec![slow_close, CloseCode::PongTimeout.code()]
        } else {
            vec![slow_close]
        }
    };
    // The real network holds megabytes: paced like the simulated one, the attack would still be
    // filling it when the heartbeat closes the peer.
    let pace = if real { Duration::ZERO } else { PACE };
    for n in 1..=sent {
        if real
            && n % REAL_LOOK_EVERY == 0
            && drops(ctx, server, &mut looks)
                .await
                .is_some_and(|d| d > baseline)
        {
            break;
        }
        let frame = format!("{{\"id\":\"{id}\",\"command\":\"ping\"}}");
        match tokio::time::timeout(patience, ws.send(Message::Text(frame.into()))).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                let heartbeat_first = now_ms() >= silent_close_ms;
                return (
                    expected(heartbeat_first),
                    net::close_code(ws, Duration::from_secs(1)).await,
                    heartbeat_first,
                );
            }
            Err(_) => {
                let heartbeat_first = now_ms() >= silent_close_ms;
                return (expected(heartbeat_first), None, heartbeat_first);
            }
        }
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
    }
    // Wait for the server to reach its bound: what was sent is more than it may hold, so it must
    // drop, and by 50 ms a message it has had plenty of time to answer them all — unless Redis,
    // which each message's rate limit waits on, was faulty meanwhile (then the outcome is not
    // judged), or the server is gone (a link fault: not judged either).
    let give_up_ms = now_ms() + if real { 5_000 } else { sent * 50 + 5_000 };
    let look = Duration::from_millis(if real { 100 } else { 10 });
    let (full_ms, dropped) = loop {
        let now = now_ms();
        let dropped = drops(ctx, server, &mut looks)
            .await
            .is_some_and(|d| d > baseline);
        if dropped || now >= give_up_ms {
            break (now, dropped);
        }
        tokio::time::sleep(look).await;
    };
    if !dropped {
        // Never at its bound: a queue bounded in neither frames nor bytes. The close the check
        // waits for cannot come; reading now shows what did.
        let redis_faulty = lock(&ctx.disturbance).redis_since(opened_ms);
        let got = net::close_code(ws, Duration::from_secs(5)).await;
        return (vec![slow_close], got, redis_faulty);
    }
    let read_ms = full_ms + slow_ms + 500;
    let heartbeat_first = read_ms >= silent_close_ms;
    tokio::time::sleep(Duration::from_millis(read_ms - now_ms().min(read_ms))).await;
    let got = net::close_code(ws, Duration::from_secs(5)).await;
    (expected(heartbeat_first), got, heartbeat_first)
}

/// Commands between two looks at a real server's drop counter.
const REAL_LOOK_EVERY: u64 = 16;
/// The most commands the attack sends a real server before its queue must have reached a bound.
const REAL_MAX_SENT: u64 = 20_000;

/// The server's count of frames dropped at a full send queue (`ws_backpressure_drops_total`):
/// its state in the simulator; in the real world its `/metrics`, fetched as a new observer each
/// time (`looks` numbers them), so that no rate limit of the attacker's — or of the observer's —
/// stands in the way.
async fn drops(ctx: &Ctx, server: u32, looks: &mut u32) -> Option<u64> {
    if real::world().is_none() {
        return ctx
            .state(server)
            .map(|st| st.metrics.ws_backpressure_drops.get());
    }
    *looks += 1;
    let sub = format!("observer-drops-{server}-{looks}");
    let token = net::sign(&net::claims(
        &sub,
        "observer",
        &[],
        sub.clone(),
        ctx.server_unix_ms(server) / 1000 + 3_600,
        ctx.server_unix_ms(server) / 1000,
    ));
    let reply = net::http_reply(server, "GET", "/metrics", Some(&token), None)
        .await
        .ok()
        .filter(|r| r.status == 200)?;
    String::from_utf8_lossy(&reply.body)
        .lines()
        .find_map(|l| l.strip_prefix("ws_backpressure_drops_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}
