//! Hog: one user opens more WebSockets at once than its cap (`SPIRAL_MAX_CONNECTIONS_PER_USER`,
//! the `[server] max_connections_per_user` knob), on both ports — each handshake with a token of
//! its own, or every one with the same token without a `jti` (which no single-use check stops) —
//! holds what got in for a moment, closes it all, then tries again until it gets back in. One
//! `hog` record says what the server did; `connection_fairness` judges it.

use std::time::Duration;

use spiral_history::Event;
use spiral_server::auth::{Claims, STREAM_SCOPE};
use spiral_server::rng::SplitMix64;

use crate::world::net::{self, Handshake, SimWs};
use crate::world::{Ctx, EPOCH_MS};

/// Handshakes past the cap.
const OVER: u64 = 4;
/// At most this many handshakes at once: below turmoil's listen backlog (64).
const BATCH: u64 = 16;
/// Tries to get back in once everything is closed: the first 500 ms after the close, each wait
/// twice the one before (31.5 s in all). A close the network lost leaves its slot taken until the
/// server drops the silent peer, three ping intervals later; this outlasts intervals up to 10 s.
const REJOIN_TRIES: u32 = 6;

/// What the handshakes past the cap came back with.
#[derive(Default)]
struct Tally {
    held: Vec<SimWs>,
    refused_429: u32,
    /// The smallest `retry_after_ms` of a 429 so far; `None` once one came without it.
    retry_after_ms: Option<Option<u64>>,
    refused_other: Vec<u16>,
}

impl Tally {
    fn add(&mut self, h: Handshake) {
        match (h.ws, h.status) {
            (Some(ws), _) => self.held.push(ws),
            (None, Some(429)) => {
                self.refused_429 += 1;
                let least = match (self.retry_after_ms, h.retry_after_ms) {
                    (None, got) => got,
                    (Some(Some(a)), Some(b)) => Some(a.min(b)),
                    (Some(_), _) => None,
                };
                self.retry_after_ms = Some(least);
            }
            (None, Some(status)) => self.refused_other.push(status),
            // No HTTP answer: the network's doing, not a refusal.
            (None, None) => {}
        }
    }
}

/// Client `client`'s hog on `server`, as the fresh user `user`.
pub(crate) async fn run(ctx: &Ctx, client: u32, server: u32, rng: &mut SplitMix64, user: String) {
    let _crowd = ctx.crowd.lock().await;
    // A flood that has just ended: let its closes reach the server first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = crate::world::now_ms();
    let cap = ctx.settings.get("max_connections_per_user");
    // Well below the server-wide cap, so that no refusal is that cap's.
    let opened = (cap + OVER).min(ctx.sc.world.max_connections as u64 / 2);
    let shared = rng.next_u64().is_multiple_of(2);
    let mut n = 0;
    let mut mint = || {
        let c = Claims::new(user.as_str(), "tenant-bad", EPOCH_MS / 1000 + 100_000)
            .roles(&["user"])
            .scope(STREAM_SCOPE)
            .issued_at(EPOCH_MS / 1000);
        n += 1;
        net::sign(&if shared {
            c
        } else {
            c.jti(format!("{user}-{n}"))
        })
    };
    let mut tally = Tally::default();
    let mut i = 0;
    while i < opened {
        let batch: Vec<(u16, String)> = (i..opened.min(i + BATCH))
            .map(|_| {
                let port = if rng.next_u64().is_multiple_of(4) {
                    net::STREAM
                } else {
                    net::COMMANDS
                };
                (port, mint())
            })
            .collect();
        i += batch.len() as u64;
        let results = futures_util::future::join_all(
            batch
                .iter()
                .map(|(port, t)| net::connect_to(server, *port, Some(t))),
        )
        .await;
        results.into_iter().for_each(|h| tally.add(h));
    }
    let accepted = tally.held.len() as u32;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for mut ws in tally.held.drain(..) {
        let _ = ws.close(None).await;
    }
    // Every try takes a token from the user's handshake bucket: never so many that the bucket,
    // not the cap, could refuse one.
    let affordable = opened + u64::from(REJOIN_TRIES) <= ctx.settings.get("ws_rate_limit");
    let mut rejoined = None;
    let mut wait_ms = 500;
    for _ in 0..if affordable { REJOIN_TRIES } else { 0 } {
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        wait_ms *= 2;
        let h = net::connect(server, Some(&mint())).await;
        rejoined = match (h.ws, h.status) {
            (Some(mut ws), _) => {
                let _ = ws.close(None).await;
                Some(true)
            }
            (None, Some(_)) => Some(false),
            (None, None) => None,
        };
        if rejoined == Some(true) {
            break;
        }
    }
    ctx.record(Event::Hog {
        client,
        server,
        user,
        opened: opened as u32,
        accepted,
        refused_429: tally.refused_429,
        retry_after_ms: tally.retry_after_ms.flatten(),
        refused_other: tally.refused_other,
        rejoined,
        disturbed: {
            let d = crate::world::lock(&ctx.disturbance);
            d.links_since(t0) || d.redis_since(t0)
        },
    });
}
