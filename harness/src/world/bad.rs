//! A bad client: between pauses it picks a seeded attack — a forged, `alg: none`, garbage,
//! expired, replayed or revoked token; a token at the expiry edge (judged by the target server's
//! own, possibly skewed, clock); a malformed or oversized frame; HTTP without a valid token; a
//! connection flood; one user over its connection cap ([`hog`](super::attacks::hog)); a peer that
//! goes silent or idle; a request abandoned before its answer; sockets left with half a request
//! header ([`slow_sockets`](super::attacks::slow_sockets)); a peer that never reads
//! ([`non_reader`](super::attacks::non_reader)); a tenant crowding the engine at the top priority
//! ([`crowd`](super::attacks::crowd)); a reconnect storm ([`storm`](super::attacks::storm)) — and
//! records what the server did.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use spiral_server::auth::LEEWAY_S;
use spiral_server::protocol::{self, CloseCode, Command, ErrorCode};
use spiral_server::rng::SplitMix64;
use tokio_tungstenite::tungstenite::Message;

use super::net::{self, SimWs};
use super::{Ctx, EPOCH_MS, lock, now_ms};
use spiral_history::{Event, TokenKind};

// Expired tokens are judged against the server's leeway (`auth::LEEWAY_S`, SPEC §1.2); edge
// tokens keep ≥ 10 s from it.

/// What a bad client tries, one per turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attack {
    /// A handshake with a token signed by another key.
    Forged,
    /// A handshake with an `alg: none` token.
    AlgNone,
    /// A handshake with a token that is not a JWT, a well-signed one whose `tenant` is empty, or
    /// none at all.
    Garbage,
    /// A handshake with a token expired beyond the leeway by the server's clock.
    Expired,
    /// A handshake with a token expired within the leeway: must be accepted.
    EdgeValid,
    /// One `jti` offered to every server at once: at most one may admit it.
    Replay,
    /// Revoke a connected subject: 4003, and its older tokens refused.
    Revoke,
    /// A malformed frame: an error envelope, and the connection still works.
    Malformed,
    /// A frame over the size limit: 1009.
    Oversized,
    /// HTTP without a valid token: never 2xx.
    Http,
    /// Read nothing (so no pongs): 4001.
    Silent,
    /// Answer pings, send nothing: 4000.
    Idle,
    /// More handshakes than the connection cap: refused at the cap.
    Flood,
    /// Send a store or an admin GC over HTTP and hang up before the answer.
    Abandon,
    /// More binary frames than the message bucket holds, back to back: the surplus must be
    /// refused as `rate_limited` like any other message.
    BinaryBurst,
    /// One user opens more connections than its cap: refused past the cap with 429.
    Hog,
    /// Send only noise (binary frames, malformed text) and answer pings: still idle, 4000.
    Noise,
    /// Store the engine's capacity at the top priority (after one store past it): GC must take
    /// the crowd's nodes, not another tenant's within its share.
    Crowd,
    /// Connect and hang up a dozen times in a row as one user: no slot may stay taken.
    Storm,
    /// Sockets that send half a request header (or one request) and then nothing: closed at the
    /// header (idle) timeout; on a WebSocket port they count towards the connection cap.
    SlowSockets,
    /// Never read while large answers pile up: closed with 1008.
    NonReader,
    /// Authenticated HTTP past the HTTP bucket: refused with 429 and `retry_after_ms`, and let
    /// back in once that has passed.
    HttpFlood,
}

/// Every attack, in the order the seeded draw indexes.
const ATTACKS: [Attack; 22] = [
    Attack::Forged,
    Attack::AlgNone,
    Attack::Garbage,
    Attack::Expired,
    Attack::EdgeValid,
    Attack::Replay,
    Attack::Revoke,
    Attack::Malformed,
    Attack::Oversized,
    Attack::Http,
    Attack::Silent,
    Attack::Idle,
    Attack::Flood,
    Attack::Abandon,
    Attack::BinaryBurst,
    Attack::Hog,
    Attack::Noise,
    Attack::Crowd,
    Attack::Storm,
    Attack::SlowSockets,
    Attack::NonReader,
    Attack::HttpFlood,
];

/// The longest one attack may take: far past any timeout an attack waits for.
const ATTACK_LIMIT: Duration = Duration::from_secs(60);

struct Bad<'a> {
    ctx: &'a Ctx,
    c: u32,
    rng: SplitMix64,
    n: u64,
}

pub(crate) async fn main(ctx: &Ctx, c: u32, rng: SplitMix64) {
    let mut b = Bad { ctx, c, rng, n: 0 };
    let end_ms = ctx.sc.world.duration_s * 1000;
    // Floods are costly and disturb everyone: at most one per client and run.
    let mut flooded = false;
    while now_ms() < end_ms {
        let pause = 500 + b.rng.next_u64() % 2_000;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let mut attack = ATTACKS[(b.rng.next_u64() % ATTACKS.len() as u64) as usize];
        if attack == Attack::Flood && flooded {
            attack = Attack::Forged;
        }
        flooded |= attack == Attack::Flood;
        // An attack still waiting on a peer that is gone for good (a crashed server answers
        // nothing, not even a close) is abandoned, so that the run can end.
        let _ = tokio::time::timeout(ATTACK_LIMIT, b.attack(attack)).await;
    }
}

impl Bad<'_> {
    fn server(&mut self) -> u32 {
        (self.rng.next_u64() % u64::from(self.ctx.sc.world.servers)) as u32
    }

    fn jti(&mut self) -> String {
        self.n += 1;
        format!("bad{}-{}", self.c, self.n)
    }

    /// A valid token for `sub`, issued `iat_s` and expiring `exp_s` (unix seconds).
    fn token(&mut self, sub: &str, exp_s: u64, iat_s: u64) -> (String, String) {
        self.token_nbf(sub, exp_s, iat_s, None, false)
    }

    /// [`token`](Self::token) with a `nbf` claim, signed RS256 when `rs256`.
    fn token_nbf(
        &mut self,
        sub: &str,
        exp_s: u64,
        iat_s: u64,
        nbf_s: Option<u64>,
        rs256: bool,
    ) -> (String, String) {
        let jti = self.jti();
        let mut claims = net::claims(sub, "tenant-bad", &["user"], jti.clone(), exp_s, iat_s);
        claims.nbf = nbf_s;
        let token = if rs256 {
            net::sign_rs256(&claims)
        } else {
            net::sign(&claims)
        };
        (token, jti)
    }

    fn fresh(&mut self) -> (String, String) {
        let sub = format!("bad-{}", self.c);
        self.token(&sub, EPOCH_MS / 1000 + 100_000, EPOCH_MS / 1000)
    }

    fn skew(&self, server: u32) -> i64 {
        self.ctx.skew_ms(server)
    }

    /// A connection with a fresh valid token, or `None` (recorded either way).
    async fn open(&mut self, server: u32) -> Option<SimWs> {
        let (token, jti) = self.fresh();
        self.handshake(server, Some(&token), TokenKind::Valid, Some(jti))
            .await
    }

    /// Connect and record it.
    async fn handshake(
        &self,
        server: u32,
        token: Option<&str>,
        kind: TokenKind,
        jti: Option<String>,
    ) -> Option<SimWs> {
        self.handshake_since(server, token, kind, jti, self.skew(server))
            .await
    }

    /// Connect and record it. A token judged by the server's clock (expired, edge, revoked) is
    /// judged only if that clock did not jump since `skew_before` was read.
    async fn handshake_since(
        &self,
        server: u32,
        token: Option<&str>,
        kind: TokenKind,
        jti: Option<String>,
        skew_before: i64,
    ) -> Option<SimWs> {
        let h = net::connect(server, token).await;
        let kind = if self.skew(server) == skew_before {
            kind
        } else {
            TokenKind::Uncertain
        };
        self.ctx.record(Event::Connect {
            client: self.c,
            server,
            token: kind,
            jti,
            exp: token.and_then(net::peek_claims).map(|c| c.exp),
            accepted: h.ws.is_some(),
            status: h.status,
            error: h.error,
        });
        h.ws
    }

    async fn attack(&mut self, attack: Attack) {
        let s = self.server();
        let sub = format!("bad-{}", self.c);
        let long = EPOCH_MS / 1000 + 100_000;
        match attack {
            Attack::Forged | Attack::AlgNone | Attack::Garbage => {
                let jti = self.jti();
                // Of the garbage handshakes, one in three carries a well-signed token with an
                // empty tenant, one in three no token at all (anonymous WebSockets are off).
                let pick = (attack == Attack::Garbage).then(|| self.rng.next_u64() % 3);
                if pick == Some(1) {
                    self.handshake(s, None, TokenKind::Missing, None).await;
                    return;
                }
                let claimless = pick == Some(0);
                let cl = net::claims(
                    &sub,
                    if claimless { "" } else { "tenant-bad" },
                    &["user", "admin"],
                    jti.clone(),
                    long,
                    EPOCH_MS / 1000,
                );
                let (token, kind) = match attack {
                    Attack::Forged => (net::forge(&cl), TokenKind::Forged),
                    Attack::AlgNone => (net::alg_none(&cl), TokenKind::AlgNone),
                    _ if claimless => (net::sign(&cl), TokenKind::MissingClaims),
                    _ => (
                        format!("garbage.{}", self.rng.next_u64()),
                        TokenKind::Garbage,
                    ),
                };
                self.handshake(s, Some(&token), kind, Some(jti)).await;
            }
            Attack::Expired | Attack::EdgeValid => {
                // By the target server's clock: beyond the leeway, or inside it by 10–40 s. One
                // token in two is about `nbf` instead of `exp`: not valid until 10–40 s past the
                // leeway (refused), or exactly at the leeway's edge (accepted: `nbf` may be up to
                // the leeway ahead of the server's clock).
                let skew = self.skew(s);
                let server_now = self.ctx.server_unix_ms(s) / 1000;
                let margin = 10 + self.rng.next_u64() % 31;
                let by_nbf = self.rng.next_u64().is_multiple_of(2);
                let kind = if attack == Attack::Expired {
                    TokenKind::Expired
                } else {
                    TokenKind::EdgeValid
                };
                let (exp, nbf) = match (by_nbf, kind) {
                    (false, TokenKind::Expired) => (server_now - LEEWAY_S - margin, None),
                    (false, _) => (server_now - LEEWAY_S + margin, None),
                    (true, TokenKind::Expired) => {
                        (server_now + 3600, Some(server_now + LEEWAY_S + margin))
                    }
                    (true, _) => (server_now + 3600, Some(server_now + LEEWAY_S)),
                };
                // One in two of these tokens is RS256 (`kid` test-1), the servers' other key.
                let rs256 = margin % 2 == 1;
                let (token, jti) = self.token_nbf(&sub, exp, exp - 3600, nbf, rs256);
                if let Some(mut ws) = self
                    .handshake_since(s, Some(&token), kind, Some(jti), skew)
                    .await
                {
                    let _ = ws.close(None).await;
                }
            }
            Attack::Replay => {
                let (token, jti) = self.fresh();
                let servers = self.ctx.sc.world.servers;
                if servers > 1 {
                    // The same token at two servers at once: at most one may let it in.
                    let other = (s + 1) % servers;
                    let (a, b) = tokio::join!(
                        net::connect(s, Some(&token)),
                        net::connect(other, Some(&token))
                    );
                    for (server, h) in [(s, a), (other, b)] {
                        self.ctx.record(Event::Connect {
                            client: self.c,
                            server,
                            token: TokenKind::Uncertain,
                            jti: Some(jti.clone()),
                            exp: net::peek_claims(&token).map(|c| c.exp),
                            accepted: h.ws.is_some(),
                            status: h.status,
                            error: h.error,
                        });
                    }
                } else {
                    let first = self
                        .handshake(s, Some(&token), TokenKind::Valid, Some(jti.clone()))
                        .await;
                    if let Some(mut ws) = first {
                        let _ = ws.close(None).await;
                        if let Some(mut ws) = self
                            .handshake(s, Some(&token), TokenKind::Replayed, Some(jti))
                            .await
                        {
                            let _ = ws.close(None).await;
                        }
                    }
                }
            }
            Attack::Revoke => self.revoke(s).await,
            Attack::Malformed => {
                let Some(mut ws) = self.open(s).await else {
                    return;
                };
                let frames = [
                    "{not json",
                    "{\"command\": \"no.such.command\", \"id\": 1}",
                    "[1,2,3]",
                    "{\"command\": \"memory.get\", \"args\": {\"id\": 7}}",
                ];
                let frame = frames[(self.rng.next_u64() % frames.len() as u64) as usize];
                let t0 = now_ms();
                let answer = match ws.send(Message::Text(frame.into())).await {
                    Ok(()) => net::next_reply(&mut ws).await.ok(),
                    Err(_) => None,
                };
                let probe = protocol::request(&json!(2), &Command::SpiralStats);
                let alive = match ws.send(Message::Text(probe.into())).await {
                    // Alive: it answers (even `rate_limited` is an answer).
                    Ok(()) => net::next_reply(&mut ws).await.is_ok(),
                    Err(_) => false,
                };
                self.ctx.record(Event::BadFrame {
                    client: self.c,
                    server: s,
                    frame: frame.into(),
                    answer,
                    alive,
                    disturbed: lock(&self.ctx.disturbance).links_since(t0),
                });
                let _ = ws.close(None).await;
            }
            Attack::Oversized => {
                let Some(mut ws) = self.open(s).await else {
                    return;
                };
                let size =
                    self.ctx.sc.world.max_message_size + 1 + (self.rng.next_u64() % 1024) as usize;
                let frame = format!(
                    "{{\"command\":\"memory.store\",\"args\":{{\"content\":\"{}\"}}}}",
                    "x".repeat(size)
                );
                let t0 = now_ms();
                let got = match ws.send(Message::Text(frame.into())).await {
                    Ok(()) => net::close_code(&mut ws, Duration::from_secs(5)).await,
                    Err(_) => None,
                };
                self.closed(
                    s,
                    "oversized frame",
                    vec![CloseCode::TooBig.code()],
                    got,
                    t0,
                );
            }
            Attack::Http => {
                let forged = net::forge(&net::claims(
                    &sub,
                    "tenant-bad",
                    &["admin"],
                    self.jti(),
                    long,
                    EPOCH_MS / 1000,
                ));
                let requests: [(&str, &str, Option<&str>, TokenKind); 4] = [
                    ("GET", "/metrics", None, TokenKind::Missing),
                    ("GET", "/v1/spirals", None, TokenKind::Missing),
                    ("GET", "/status", Some(&forged), TokenKind::Forged),
                    ("POST", "/admin/gc", Some(&forged), TokenKind::Forged),
                ];
                let (method, path, token, kind) = requests[(self.rng.next_u64() % 4) as usize];
                if let Ok(status) = net::http(s, method, path, token, None).await {
                    self.ctx.record(Event::Http {
                        client: self.c,
                        server: s,
                        method: method.into(),
                        path: path.into(),
                        token: kind,
                        status,
                    });
                }
            }
            Attack::Silent | Attack::Idle => {
                let Some(mut ws) = self.open(s).await else {
                    return;
                };
                let w = &self.ctx.sc.world;
                let t0 = now_ms();
                let (why, expected, got) = if attack == Attack::Silent {
                    // Read nothing (so no pongs) for three ping intervals, then see how it ended.
                    tokio::time::sleep(Duration::from_millis(w.ws_ping_interval_ms * 3 + 1_000))
                        .await;
                    let got = net::close_code(&mut ws, Duration::from_secs(5)).await;
                    ("silent peer", vec![CloseCode::PongTimeout.code()], got)
                } else {
                    // Answer pings but send nothing.
                    let within = Duration::from_millis(
                        w.ws_idle_timeout_ms + w.ws_ping_interval_ms * 2 + 1_000,
                    );
                    (
                        "idle peer",
                        vec![CloseCode::IdleTimeout.code()],
                        net::close_code(&mut ws, within).await,
                    )
                };
                self.closed(s, why, expected, got, t0);
            }
            Attack::Flood => self.flood(s).await,
            Attack::Abandon => self.abandon(s).await,
            Attack::BinaryBurst => self.binary_burst(s).await,
            Attack::Hog => {
                let user = format!("hog-{}", self.jti());
                super::attacks::hog::run(self.ctx, self.c, s, &mut self.rng, user).await;
            }
            Attack::Noise => {
                let Some(mut ws) = self.open(s).await else {
                    return;
                };
                let t0 = now_ms();
                let got = super::attacks::noise::run(&mut ws, &self.ctx.sc.world).await;
                let expected = vec![CloseCode::IdleTimeout.code()];
                self.closed(s, "noisy idle peer", expected, got, t0);
            }
            Attack::Crowd => {
                let Some(ws) = self.open(s).await else {
                    return;
                };
                super::attacks::crowd::run(self.ctx, self.c, s, "tenant-bad", ws).await;
            }
            Attack::HttpFlood => {
                let user = format!("flood-{}", self.jti());
                super::attacks::http_flood::run(self.ctx, self.c, s, user).await;
            }
            Attack::Storm => {
                let user = format!("storm-{}", self.jti());
                super::attacks::storm::run(self.ctx, self.c, s, user).await;
            }
            Attack::SlowSockets => {
                let sub = format!("slow-{}", self.jti());
                super::attacks::slow_sockets::run(self.ctx, self.c, s, &mut self.rng, sub).await;
            }
            Attack::NonReader => {
                let _alone = self.ctx.servers[s as usize].non_reader.lock().await;
                let Some(mut ws) = self.open(s).await else {
                    return;
                };
                let t0 = now_ms();
                let (expected, got, heartbeat_first) =
                    super::attacks::non_reader::run(&mut ws, self.ctx, s).await;
                let why = if heartbeat_first {
                    "non-reading peer, heartbeat due first"
                } else {
                    "non-reading peer"
                };
                self.record_closed(s, why, expected, got, t0, heartbeat_first);
            }
        }
    }

    /// Valid requests the client does not wait for: a burst of stores (each may run a GC pass)
    /// and on-demand GC passes, each dropped 0–12 ms after it was sent.
    async fn abandon(&mut self, s: u32) {
        let jti = self.jti();
        let token = net::sign(&net::claims(
            &format!("bad-{}", self.c),
            "tenant-bad",
            &["user", "admin"],
            jti,
            EPOCH_MS / 1000 + 100_000,
            EPOCH_MS / 1000,
        ));
        for _ in 0..8 {
            let (path, body) = if self.rng.next_u64().is_multiple_of(2) {
                let n = self.rng.next_u64() % 1000;
                ("/v1/memories", json!({"content": {"abandoned": n}}))
            } else {
                ("/admin/gc", json!({}))
            };
            let after_ms = self.rng.next_u64() % 13;
            let t = Duration::from_millis(after_ms);
            if net::abandon(s, "POST", path, &token, &body, t)
                .await
                .is_ok()
            {
                self.ctx.record(Event::Abandoned {
                    client: self.c,
                    server: s,
                    method: "POST".into(),
                    path: path.into(),
                    after_ms,
                });
            }
        }
    }

    /// The message bucket's capacity plus 20 binary frames on one connection, back to back; then
    /// read the answers and count the ones that were not `rate_limited`.
    async fn binary_burst(&mut self, s: u32) {
        let Some(mut ws) = self.open(s).await else {
            return;
        };
        let sent = spiral_server::api::ServerConfig::default().ws_rate.capacity as u32 + 20;
        let t0 = now_ms();
        // The bucket refills by the server's clock, which a skew fault can move forward.
        let server_t0 = self.ctx.server_unix_ms(s);
        for i in 0..sent {
            if ws
                .send(Message::Binary(vec![0xB1, i as u8].into()))
                .await
                .is_err()
            {
                return;
            }
        }
        let mut admitted = 0;
        for _ in 0..sent {
            match net::next_reply(&mut ws).await {
                Ok(r) if r.error_code() == Some(ErrorCode::RateLimited) => {}
                Ok(_) => admitted += 1,
                Err(_) => return,
            }
        }
        self.ctx.record(Event::BinaryBurst {
            client: self.c,
            server: s,
            user: format!("bad-{}", self.c),
            sent,
            admitted,
            span_ms: (now_ms() - t0).max(self.ctx.server_unix_ms(s).saturating_sub(server_t0)),
            disturbed: lock(&self.ctx.disturbance).redis_since(t0),
        });
        let _ = ws.close(None).await;
    }

    fn closed(&self, server: u32, why: &str, expected: Vec<u16>, got: Option<u16>, t0: u64) {
        self.record_closed(server, why, expected, got, t0, false);
    }

    /// [`closed`](Self::closed), also not judged when `unjudged` (a close that could not reach
    /// the peer whatever the server did).
    fn record_closed(
        &self,
        server: u32,
        why: &str,
        expected: Vec<u16>,
        got: Option<u16>,
        t0: u64,
        unjudged: bool,
    ) {
        self.ctx.record(Event::Closed {
            client: self.c,
            server,
            why: why.into(),
            expected,
            got,
            after_ms: now_ms() - t0,
            disturbed: unjudged || lock(&self.ctx.disturbance).links_since(t0),
        });
    }

    /// Open a connection for a subject, revoke the subject through the admin API, and see the
    /// connection closed with 4003 and a token issued before the revocation refused.
    async fn revoke(&mut self, s: u32) {
        let sub = format!("rv-{}-{}", self.c, self.n);
        let skew = self.skew(s);
        let issued = self.ctx.server_unix_ms(s) / 1000 - 5;
        let (token, jti) = self.token(&sub, issued + 100_000, issued);
        let Some(mut ws) = self
            .handshake(s, Some(&token), TokenKind::Valid, Some(jti))
            .await
        else {
            return;
        };
        let admin = net::sign(&net::claims(
            "admin-bad",
            "tenant-bad",
            &["admin"],
            self.jti(),
            issued + 100_000,
            issued,
        ));
        let t0 = now_ms();
        match self
            .ctx
            .http_reply(
                self.c,
                s,
                ("POST", "/admin/tokens/revoke"),
                Some(&admin),
                Some(&json!({"sub": sub})),
            )
            .await
            .map(|r| r.status)
        {
            Ok(200) => {}
            // Not revoked (rate limited, unreachable): nothing to judge.
            _ => return,
        }
        let within = Duration::from_millis(self.ctx.sc.world.ws_ping_interval_ms * 2 + 1_000);
        let got = net::close_code(&mut ws, within).await;
        self.closed(
            s,
            "subject revoked",
            vec![CloseCode::Revoked.code()],
            got,
            t0,
        );
        let (old, jti) = self.token(&sub, issued + 100_000, issued);
        if let Some(mut ws) = self
            .handshake_since(s, Some(&old), TokenKind::Revoked, Some(jti), skew)
            .await
        {
            let _ = ws.close(None).await;
        }
    }

    /// More connections than the cap, in concurrent batches (well inside the ping timeout, so
    /// the server closes none of them meanwhile), each by its own user: the server must refuse
    /// before it holds more than `max_connections`.
    async fn flood(&mut self, s: u32) {
        let cap = self.ctx.sc.world.max_connections;
        let _crowd = self.ctx.crowd.lock().await;
        let mut held = Vec::new();
        let mut refused = false;
        let mut i = 0;
        while i < cap + 4 && !refused {
            // Below turmoil's listen backlog (64).
            let batch: Vec<String> = (i..(cap + 4).min(i + 16))
                .map(|k| {
                    self.token(
                        &format!("flood-{}-{k}", self.c),
                        EPOCH_MS / 1000 + 100_000,
                        EPOCH_MS / 1000,
                    )
                    .0
                })
                .collect();
            i += batch.len();
            let results =
                futures_util::future::join_all(batch.iter().map(|t| net::connect(s, Some(t))))
                    .await;
            for h in results {
                match h.ws {
                    Some(ws) => held.push(ws),
                    None => refused |= h.status == Some(503),
                }
            }
        }
        self.ctx.record(Event::Flood {
            client: self.c,
            server: s,
            accepted: held.len() as u32,
            refused_503: refused,
            cap,
            places: self.ctx.state(s).map(|st| st.conns.open() as u64),
        });
        for mut ws in held {
            let _ = ws.close(None).await;
        }
    }
}
