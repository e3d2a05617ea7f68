//! A well-behaved client: a seeded operation stream over one WebSocket to its server, valid
//! tokens, reconnecting (with a fresh token) whenever the connection breaks.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use spiral_server::auth::LEEWAY_S;
use spiral_server::engine::StoreRequest;
use spiral_server::protocol::{self, Command};
use spiral_server::rng::SplitMix64;
use tokio_tungstenite::tungstenite::Message;

use super::net::{self, SimWs};
use super::{Ctx, EPOCH_MS, now_ms};
use spiral_history::{Answer, Event, Op, TokenKind};

pub(crate) async fn main(ctx: &Ctx, c: u32, mut rng: SplitMix64) {
    let sc = &ctx.sc;
    let tenant = format!("tenant-{}", c % sc.workload.tenants);
    let user = format!("user-{}", c % sc.user_count());
    let server = c % sc.world.servers;
    let end_ms = sc.world.duration_s * 1000;
    let exp_s = EPOCH_MS / 1000 + sc.world.duration_s + 3600;
    let weights = sc.workload.mix.weights();
    let total: u64 = weights.iter().map(|(_, w)| u64::from(*w)).sum();
    let mean_gap_ms = 1000.0 / sc.workload.ops_per_s;
    let max_ops = sc.workload.max_ops_per_client.unwrap_or(u64::MAX);
    let mut ws: Option<SimWs> = None;
    let mut conn = 0u64;
    let mut seq = 0u64;
    let mut mine: Vec<String> = Vec::new();
    // The token of the open connection, and a refreshed one waiting for the next handshake.
    // Every token the harness mints for this client is issued at one time, up to 15 minutes
    // before the epoch (a session that began earlier): that is where its refresh chain starts,
    // so short REFRESH_MAX_LIFETIME_S settings exhaust some chains within the run.
    let chain_start_s = EPOCH_MS / 1000 - rng.fork("chain-start").next_u64() % 900;
    let mut token = String::new();
    let mut refreshed: Option<(String, String)> = None;
    // When the open connection was opened, and how many graceful stops its server had had.
    let mut opened = (0, 0);
    // A new connection's first command is the session note.
    let mut session_note = false;
    while now_ms() < end_ms && seq < max_ops {
        let gap = (mean_gap_ms * (0.5 + rng.next_f64())) as u64;
        tokio::time::sleep(Duration::from_millis(gap.max(1))).await;
        if ws.is_none() {
            conn += 1;
            let jti = match refreshed.take() {
                Some((t, jti)) => {
                    token = t;
                    jti
                }
                None => {
                    let jti = format!("c{c}-{conn}");
                    token = net::sign(&net::claims(
                        &user,
                        &tenant,
                        &["user"],
                        jti.clone(),
                        exp_s,
                        chain_start_s,
                    ));
                    jti
                }
            };
            let skew_before = ctx.skew_ms(server);
            let h = net::connect(server, Some(&token)).await;
            let kind = token_kind(ctx, server, &token, skew_before);
            ctx.record(Event::Connect {
                client: c,
                server,
                token: kind,
                jti: Some(jti),
                exp: net::peek_claims(&token).map(|c| c.exp),
                accepted: h.ws.is_some(),
                status: h.status,
                error: h.error,
            });
            match h.ws {
                Some(s) => {
                    ws = Some(s);
                    opened = (now_ms(), stops(ctx, server));
                    session_note = true;
                }
                None => {
                    // Back off before the next attempt.
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
            }
        }
        let Some(socket) = ws.as_mut() else { continue };
        let op = if std::mem::take(&mut session_note) {
            "session_note"
        } else {
            let mut roll = rng.next_u64() % total.max(1);
            weights
                .iter()
                .find(|(_, w)| {
                    let hit = roll < u64::from(*w);
                    roll = roll.saturating_sub(u64::from(*w));
                    hit
                })
                .map_or("stats", |(name, _)| *name)
        };
        let (command, op) = match op {
            // Every session opens with the same note, as a real client's "signed in" entry
            // would: the one content that repeats, so a restarted server's ids are tried
            // against the ids its earlier boots gave (`acked_writes`).
            "session_note" => {
                let req = StoreRequest {
                    content: json!({"session": "started"}),
                    depth: Some(0.5),
                    priority: Some(0),
                    tags: Vec::new(),
                };
                let op = Op::Store {
                    content: req.content.clone(),
                    priority: req.priority,
                };
                (Command::MemoryStore(req), op)
            }
            "store" => {
                let req = store_request(&mut rng, c, seq, sc.world.max_message_size);
                let op = Op::Store {
                    content: req.content.clone(),
                    priority: req.priority,
                };
                (Command::MemoryStore(req), op)
            }
            "get" | "collect" if !mine.is_empty() => {
                let i = (rng.next_u64() % mine.len() as u64) as usize;
                if op == "collect" {
                    let id = mine.swap_remove(i);
                    (
                        Command::MemoryCollect { id: id.clone() },
                        Op::Collect { id },
                    )
                } else {
                    let id = mine[i].clone();
                    (Command::MemoryGet { id: id.clone() }, Op::Get { id })
                }
            }
            "foreign_get" | "foreign_collect" => {
                let foreign = ctx.foreign_ids(&tenant, 64);
                if foreign.is_empty() {
                    continue;
                }
                let id = foreign[(rng.next_u64() % foreign.len() as u64) as usize].clone();
                if op == "foreign_collect" {
                    (
                        Command::MemoryCollect { id: id.clone() },
                        Op::ForeignCollect { id },
                    )
                } else {
                    (Command::MemoryGet { id: id.clone() }, Op::ForeignGet { id })
                }
            }
            "list" => (Command::MemoryList { limit: Some(20) }, Op::List),
            "refresh" => {
                refreshed = refresh(ctx, c, server, &user, &token, chain_start_s).await;
                // The new token serves the next handshake: hang up to use it.
                if refreshed.is_some()
                    && let Some(mut s) = ws.take()
                {
                    let _ = s.close(None).await;
                }
                continue;
            }
            // "get"/"collect" with nothing of its own yet fall through to stats.
            _ => (Command::SpiralStats, Op::Stats),
        };
        seq += 1;
        let sent_ms = now_ms();
        let msg = protocol::request(&json!(seq), &command);
        let reply = match socket.send(Message::Text(msg.into())).await {
            Ok(()) => net::next_reply(socket).await,
            Err(e) => Err(e.to_string()),
        };
        // No TCP retransmit in the simulator: a connection that crossed a partition is dead for
        // good. Drop it and reconnect.
        if let Err(e) = &reply {
            ws = None;
            // A graceful stop of the server during this connection: it must have said so
            // (1001), unless a link fault may have swallowed the close frame.
            if stops(ctx, server) != opened.1 {
                ctx.record(Event::Closed {
                    client: c,
                    server,
                    why: "server stopped gracefully".into(),
                    expected: vec![1001],
                    got: e
                        .strip_prefix("closed by server: ")
                        .and_then(|code| code.parse().ok()),
                    after_ms: now_ms() - opened.0,
                    disturbed: super::lock(&ctx.disturbance).links_only_since(opened.0),
                });
            }
        }
        let answer = Answer::of(&op, reply);
        if let Answer::Stored { id } = &answer {
            mine.push(id.clone());
        }
        ctx.record(Event::Op {
            client: c,
            user: user.clone(),
            tenant: tenant.clone(),
            server,
            op,
            sent_ms,
            done_ms: now_ms(),
            answer,
        });
        ctx.check_journal(server);
    }
    if let Some(mut s) = ws {
        let _ = s.close(None).await;
    }
}

/// `POST /auth/refresh` with `token`; the new token and its `jti`, recorded for the `tokens`
/// checker.
async fn refresh(
    ctx: &Ctx,
    c: u32,
    server: u32,
    user: &str,
    token: &str,
    chain_start_s: u64,
) -> Option<(String, String)> {
    let reply = ctx
        .http_reply(c, server, ("POST", "/auth/refresh"), Some(token), None)
        .await;
    let minted = reply
        .as_ref()
        .ok()
        .filter(|r| r.status == 200)
        .and_then(|r| {
            let body: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
            let token = body["token"].as_str()?.to_owned();
            let claims = net::peek_claims(&token)?;
            Some((token, claims))
        });
    ctx.record(Event::Refresh {
        client: c,
        server,
        user: user.to_owned(),
        chain_start_s,
        jti: minted.as_ref().and_then(|(_, cl)| cl.jti.clone()),
        exp: minted.as_ref().map(|(_, cl)| cl.exp),
        status: reply.as_ref().ok().map(|r| r.status),
    });
    let (token, claims) = minted?;
    Some((token, claims.jti?))
}

/// Text a store's body draws from: empty, ASCII, several scripts, emoji, escapes.
const TEXTS: [&str; 8] = [
    "",
    "plain ascii",
    "ünïcödé ß",
    "日本語のメモ",
    "🦀🌀 spiral",
    "quote \" back\\slash",
    "line\nbreak\ttab",
    "\u{202e}rtl\u{200d}zwj",
];

const TAGS: [&str; 5] = ["work", "home", "ideas", "日記", "🌀"];

/// A well-behaved client's store: a body from empty to large (up to 192 KiB, and a few KiB below
/// the message size limit — a frame over it is a hostile client's, not this one's; Unicode),
/// a depth anywhere in [0, 1], a priority anywhere in its bounds — and now and then past them,
/// which the server must refuse with `bad_request` (`tenant_fairness`) — and up to three tags.
/// The `client` and `seq` fields keep every content unique.
fn store_request(rng: &mut SplitMix64, c: u32, seq: u64, max_message: usize) -> StoreRequest {
    let text = TEXTS[(rng.next_u64() % TEXTS.len() as u64) as usize];
    let body = match rng.next_u64() % 100 {
        // Large: a text repeated to 16–192 KiB (7 bytes a repetition).
        0..=1 => {
            let kib = 16 + (rng.next_u64() % 177) as usize;
            let bytes = (kib * 1024).min(max_message.saturating_sub(4096));
            json!("ü🌀x".repeat(bytes / 7))
        }
        2..=9 => json!([text, [1, 2.5, -3], {"nested": {"deeper": [null, true]}}]),
        _ => json!(text),
    };
    let priority = if rng.next_u64().is_multiple_of(40) {
        // Past the bounds: anywhere else in i64.
        let p = rng.next_u64() as i64;
        if spiral_server::engine::PRIORITY_RANGE.contains(&p) {
            i64::MIN
        } else {
            p
        }
    } else {
        (rng.next_u64() % 2001) as i64 - 1000
    };
    let depth = match rng.next_u64() % 10 {
        0 => 0.0,
        1 => 1.0,
        _ => rng.next_f64(),
    };
    let tags = (0..rng.next_u64() % 4)
        .map(|_| TAGS[(rng.next_u64() % TAGS.len() as u64) as usize].to_owned())
        .collect();
    StoreRequest {
        content: json!({"client": c, "seq": seq, "body": body}),
        depth: Some(depth),
        priority: Some(priority),
        tags,
    }
}

/// What a well-behaved client's token is by `server`'s clock when it is offered. A refreshed
/// token's expiry came from the clock of the server that refreshed it; a skewed clock may since
/// have jumped past it (and its leeway): then the token is `Expired`, and `Uncertain` within a
/// few seconds of that edge or when the clock jumped during the handshake.
fn token_kind(ctx: &Ctx, server: u32, token: &str, skew_before: i64) -> TokenKind {
    const MARGIN_S: u64 = 5;
    let Some(exp) = net::peek_claims(token).map(|c| c.exp) else {
        return TokenKind::Valid;
    };
    if ctx.skew_ms(server) != skew_before {
        return TokenKind::Uncertain;
    }
    let now_s = ctx.server_unix_ms(server) / 1000;
    let deadline = exp + LEEWAY_S;
    if deadline + MARGIN_S < now_s {
        TokenKind::Expired
    } else if deadline < now_s + MARGIN_S {
        TokenKind::Uncertain
    } else {
        TokenKind::Valid
    }
}

/// Graceful stops asked of `server` so far.
fn stops(ctx: &Ctx, server: u32) -> u32 {
    ctx.servers[server as usize]
        .terminations
        .load(std::sync::atomic::Ordering::SeqCst)
}
