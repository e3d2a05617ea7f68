//! Reconnect storm: one user connects and hangs up again and again, as fast as it can, each time
//! with a fresh token — a client stuck in a reconnect loop. Every connection the server let in
//! must give its slot back: once the storm is over, the server holds none for the user. One
//! `storm` record says what happened; `connection_fairness` judges it.

use std::time::Duration;

use spiral_history::Event;
use spiral_server::auth::Claims;

use crate::world::net;
use crate::world::{Ctx, EPOCH_MS, lock, now_ms};

/// Connections in one storm.
const ROUNDS: u32 = 12;
/// After the storm, how long the server gets to notice the last close.
const SETTLE_MS: u64 = 1_000;

/// Client `client`'s storm on `server` as the fresh user `user`.
pub(crate) async fn run(ctx: &Ctx, client: u32, server: u32, user: String) {
    let _crowd = ctx.crowd.lock().await;
    let t0 = now_ms();
    let (mut accepted, mut refused) = (0u32, 0u32);
    for n in 0..ROUNDS {
        let token = net::sign(
            &Claims::new(user.as_str(), "tenant-bad", EPOCH_MS / 1000 + 100_000)
                .roles(&["user"])
                .issued_at(EPOCH_MS / 1000)
                .jti(format!("{user}-{n}")),
        );
        let h = net::connect(server, Some(&token)).await;
        match h.ws {
            Some(mut ws) => {
                accepted += 1;
                // Half hang up politely, half just vanish (the socket dropped mid-session).
                if n % 2 == 0 {
                    let _ = ws.close(None).await;
                }
            }
            None => refused += 1,
        }
    }
    tokio::time::sleep(Duration::from_millis(SETTLE_MS)).await;
    let held_after = ctx.state(server).map(|st| st.conns.held_by(&user) as u64);
    let disturbed = lock(&ctx.disturbance).links_since(t0);
    ctx.record(Event::Storm {
        client,
        server,
        user,
        rounds: ROUNDS,
        accepted,
        refused,
        held_after,
        disturbed,
    });
}
