//! The server's own `api::serve` on turmoil's simulated sockets: the same code that serves real
//! sockets answers HTTP and WebSocket clients on other simulated hosts, with the simulated clock
//! deciding token expiry.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::http::Method;
use serde_json::json;
use spiral_harness::world::EPOCH_MS;
use spiral_server::api::client::request;
use spiral_server::api::{ServerBuilder, ServerConfig};
use spiral_server::auth::Claims;
use spiral_server::clock::{EpochClock, SharedClock};
use spiral_server::test_support::{bearer, keys, mint, next_json, send_json, ws_request};

/// A token for `sub` in tenant `t1`, issued at the simulation's epoch, expiring at `exp_s`.
fn token(sub: &str, exp_s: u64) -> String {
    let c = Claims::new(sub, "t1", exp_s)
        .jti(format!("{sub}-{exp_s}"))
        .issued_at(EPOCH_MS / 1000);
    mint(&c)
}

fn world(seed: u64) -> turmoil::Sim<'static> {
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(UNIX_EPOCH + Duration::from_millis(EPOCH_MS))
        .simulation_duration(Duration::from_secs(300))
        .build();
    sim.host("server", || async {
        let clock: SharedClock = Arc::new(EpochClock::new(EPOCH_MS));
        let (state, _) = ServerBuilder::new(keys(), clock)
            .config(ServerConfig {
                ws_ping_interval_ms: 1_000,
                ..ServerConfig::default()
            })
            .seed(3)
            .open()
            .await?;
        spiral_harness::sim_net::serve(state, std::future::pending()).await?;
        Ok(())
    });
    sim
}

async fn http(
    path: &str,
    token: Option<&str>,
) -> turmoil::Result<spiral_server::api::client::Reply> {
    let s = turmoil::net::TcpStream::connect(("server", 3000)).await?;
    Ok(request(s, Method::GET, "server", path, token, None).await?)
}

#[test]
fn the_server_library_serves_simulated_clients() {
    let mut sim = world(1);
    sim.client("client", async {
        let r = http("/health", None).await?;
        assert_eq!(r.status, 200);
        assert_eq!(http("/metrics", None).await?.status, 401);

        let exp = EPOCH_MS / 1000 + 600;
        let req = ws_request("ws://server:3001/", Some(bearer(&token("ada", exp))));
        let stream = turmoil::net::TcpStream::connect(("server", 3001)).await?;
        let (mut ws, _) = tokio_tungstenite::client_async(req, stream).await?;
        assert_eq!(next_json(&mut ws).await["type"], "welcome");
        let store = json!({"id": 1, "command": "memory.store", "args": {"content": {"k": "v"}}});
        send_json(&mut ws, &store).await;
        let answer = next_json(&mut ws).await;
        assert_eq!(answer["type"], "result", "{answer}");
        Ok(())
    });
    sim.run().unwrap();
}

#[test]
fn token_expiry_follows_simulated_time() {
    let mut sim = world(2);
    sim.client("client", async {
        // Valid for 100 simulated seconds (+60 s leeway).
        let t = token("ada", EPOCH_MS / 1000 + 100);
        assert_eq!(http("/v1/spirals", Some(&t)).await?.status, 200);
        tokio::time::sleep(Duration::from_secs(150)).await;
        assert_eq!(
            http("/v1/spirals", Some(&t)).await?.status,
            200,
            "within the leeway"
        );
        tokio::time::sleep(Duration::from_secs(15)).await;
        let r = http("/v1/spirals", Some(&t)).await?;
        assert_eq!(
            (r.status, r.json()["error"]["message"].as_str()),
            (401, Some("the token has expired"))
        );
        Ok(())
    });
    sim.run().unwrap();
}
