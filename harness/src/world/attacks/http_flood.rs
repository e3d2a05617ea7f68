//! HTTP flood: one user sends authenticated requests back to back until the HTTP bucket
//! (`HTTP_RATE_LIMIT`, the `[server] http_rate_limit` knob) refuses one with 429, sends two more
//! while it is blocked, then waits out the `retry_after_ms` the last refusal gave and asks once
//! more — a client that retries as soon as it is told it may. Every answer's rate-limit headers
//! are recorded ([`Event::RateHeaders`]) and judged on their own; one `http_flood` record says
//! what the bucket let through and whether the user got back in; `rate_limit` judges it.

use std::time::Duration;

use spiral_history::Event;
use spiral_server::auth::Claims;

use crate::world::net;
use crate::world::{Ctx, EPOCH_MS, lock, now_ms};

/// Requests sent while blocked, after the first refusal.
const WHILE_BLOCKED: u32 = 2;
/// The longest `retry_after_ms` the flood waits out; a longer block is not retried.
const LONGEST_WAIT_MS: u64 = 20_000;
/// After `retry_after_ms`, how much longer the flood waits before asking again (the server's
/// clock and this host's may round differently).
const MARGIN_MS: u64 = 1_000;

/// Client `client`'s flood on `server` as the fresh user `user` (its bucket starts full).
pub(crate) async fn run(ctx: &Ctx, client: u32, server: u32, user: String) {
    let capacity = ctx.settings.get("http_rate_limit");
    let token = net::sign(
        &Claims::new(user.as_str(), "tenant-bad", EPOCH_MS / 1000 + 100_000)
            .roles(&["user"])
            .issued_at(EPOCH_MS / 1000),
    );
    let skew = ctx.skew_ms(server);
    let t0 = now_ms();
    let ask = || ctx.http_reply(client, server, ("GET", "/v1/spirals"), Some(&token), None);
    let (mut sent, mut admitted, mut last_admitted_ms) = (0u32, 0u32, t0);
    let mut retry_after_ms = None;
    // Twice the bucket is more than it can refill while the flood runs.
    while u64::from(sent) < 2 * capacity + 10 {
        sent += 1;
        match ask().await {
            Ok(r) if r.status == 429 => {
                retry_after_ms = Some(r.json()["error"]["retry_after_ms"].as_u64());
                break;
            }
            Ok(_) => {
                admitted += 1;
                last_admitted_ms = now_ms();
            }
            // No answer (a fault, a crashed server): nothing to judge.
            Err(_) => return,
        }
    }
    let mut after_block = None;
    if let Some(Some(_)) = retry_after_ms {
        for _ in 0..WHILE_BLOCKED {
            sent += 1;
            if let Ok(r) = ask().await {
                if r.status == 429 {
                    retry_after_ms = Some(r.json()["error"]["retry_after_ms"].as_u64());
                } else {
                    admitted += 1;
                    last_admitted_ms = now_ms();
                }
            }
        }
        if let Some(Some(wait)) = retry_after_ms.filter(|w| w.is_some_and(|w| w <= LONGEST_WAIT_MS))
        {
            tokio::time::sleep(Duration::from_millis(wait + MARGIN_MS)).await;
            sent += 1;
            after_block = ask().await.ok().map(|r| r.status);
        }
    }
    // Answers a fault may have changed: the bucket's state lives in Redis (an instance deciding
    // alone starts from a full bucket) and its refills follow the server's clock.
    let disturbed = {
        let d = lock(&ctx.disturbance);
        d.redis_since(t0) || d.links_since(t0)
    } || ctx.skew_ms(server) != skew;
    ctx.record(Event::HttpFlood {
        client,
        server,
        user,
        capacity,
        sent,
        admitted,
        span_ms: last_admitted_ms - t0,
        retry_after_ms,
        after_block,
        disturbed,
    });
}
