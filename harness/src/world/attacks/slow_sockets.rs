//! Slow sockets (slowloris): sockets that send half a request header and then nothing, on any of
//! the three ports, or (on the HTTP port) one whole request and then nothing, the connection kept
//! alive. The server must close each within its header timeout (`HTTP_HEADER_TIMEOUT_MS`) or idle
//! timeout (`HTTP_IDLE_TIMEOUT_MS`); on a WebSocket port the sockets fill the connection cap,
//! which counts sockets not yet upgraded, so a valid handshake meanwhile must be refused with 503.
//! One `slow_sockets` record says what the server did; `slow_clients` judges it.

use std::time::Duration;

use spiral_history::Event;
use spiral_server::auth::{Claims, STREAM_SCOPE};
use spiral_server::rng::SplitMix64;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::world::net::{self, Conn as TcpStream};
use crate::world::{Ctx, EPOCH_MS, now_ms};

/// Sockets on the HTTP port (the WebSocket ports get as many as the connection cap).
const HTTP_SOCKETS: usize = 8;
/// How long a crowd just ended may take to leave the server.
const SETTLE_MS: u64 = 2_000;
/// Probes admitted in a row that make a violation (at most the per-user cap of the simulator).
const PROBES: usize = 3;
/// Sockets past the cap on a WebSocket port.
const SPARE: usize = 4;
/// At most this many connects at once: below turmoil's listen backlog (64).
const BATCH: usize = 16;
/// How much later than its timeout a quiet socket may be closed (scheduling, latency).
const SLACK_MS: u64 = 1_500;

/// What the sockets do before they go quiet.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    HalfHeader,
    IdleKeepAlive,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::HalfHeader => "half header",
            Kind::IdleKeepAlive => "idle keep-alive",
        }
    }
}

/// Connect and do `kind`'s part; the socket, quiet from now on.
async fn open(server: u32, port: u16, kind: Kind) -> Option<TcpStream> {
    let host = format!("server-{server}");
    // A server that crashed or a cut link answers nothing, not even a refusal.
    let connect = net::tcp(&host, port);
    let mut s = tokio::time::timeout(net::ANSWER_TIMEOUT, connect)
        .await
        .ok()?
        .ok()?;
    let request = match kind {
        Kind::HalfHeader => format!("GET / HTTP/1.1\r\nhost: {host}\r\nx-slow: "),
        Kind::IdleKeepAlive => format!("GET /health HTTP/1.1\r\nhost: {host}\r\n\r\n"),
    };
    tokio::time::timeout(net::ANSWER_TIMEOUT, s.write_all(request.as_bytes()))
        .await
        .ok()?
        .ok()?;
    if kind == Kind::IdleKeepAlive {
        read_response(&mut s).await?;
    }
    Some(s)
}

/// Read one whole HTTP response (head and a `content-length` body).
async fn read_response(s: &mut TcpStream) -> Option<()> {
    let read = async {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text[..end]
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if got.len() >= end + 4 + len {
                    return Some(());
                }
            }
        }
    };
    tokio::time::timeout(net::ANSWER_TIMEOUT, read).await.ok()?
}

/// Whether the server closes `s` by `deadline_ms` (world time): the read ends, cleanly or not.
async fn closed_by(mut s: TcpStream, deadline_ms: u64) -> bool {
    let wait = Duration::from_millis(deadline_ms.saturating_sub(now_ms()));
    let read = async {
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                // An answer (a 408, say) before the close is fine.
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(wait, read).await.is_ok()
}

/// A valid token (with the stream scope) for probe `n`.
fn probe_token(sub: &str, n: usize) -> String {
    net::sign(
        &Claims::new(sub, "tenant-bad", EPOCH_MS / 1000 + 100_000)
            .roles(&["user"])
            .scope(STREAM_SCOPE)
            .jti(format!("{sub}-probe-{n}"))
            .issued_at(EPOCH_MS / 1000),
    )
}

/// Client `client`'s slow sockets on `server`.
pub(crate) async fn run(ctx: &Ctx, client: u32, server: u32, rng: &mut SplitMix64, sub: String) {
    let (port, kind) = match rng.next_u64() % 4 {
        0 => (3000, Kind::HalfHeader),
        1 => (3000, Kind::IdleKeepAlive),
        2 => (net::COMMANDS, Kind::HalfHeader),
        _ => (net::STREAM, Kind::HalfHeader),
    };
    let websocket = port != 3000;
    let t0 = now_ms();
    // Filling the cap disturbs every client of the server: one crowd at a time (see `flood`).
    let _crowd = if websocket {
        let crowd = ctx.crowd.lock().await;
        // A flood or hog that has just ended: let the server let go of its connections first,
        // or their places come free under the probe.
        tokio::time::sleep(Duration::from_millis(SETTLE_MS)).await;
        Some(crowd)
    } else {
        None
    };
    let cap = ctx.sc.world.max_connections;
    // On a WebSocket port, a few more than the cap: a place another client gives up while the
    // sockets are accepted goes to one of them, not to the probe behind them.
    let count = if websocket { cap + SPARE } else { HTTP_SOCKETS };
    let token = probe_token(&sub, 0);
    let mut held = Vec::new();
    let mut probed = None;
    for first in (0..count).step_by(BATCH) {
        let last = first + BATCH >= count;
        let batch = futures_util::future::join_all(
            (first..count.min(first + BATCH)).map(|_| open(server, port, kind)),
        );
        // The probe connects in the same step as the last batch, behind it.
        let probe = async {
            if last && websocket {
                Some(net::connect_to(server, port, Some(&token)).await)
            } else {
                None
            }
        };
        let (opened, probe) = futures_util::future::join(batch, probe).await;
        held.extend(opened.into_iter().flatten());
        probed = probed.or(probe);
    }
    let quiet_ms = now_ms();
    let opened = held.len() as u32;
    // Judged only when every socket got in ahead of it. Another client may give up its place
    // just then, and the probe take it: only a probe admitted PROBES times in a row — each held
    // open, so that none takes the place of the one before — is a violation.
    let mut admitted = Vec::new();
    let mut next = probed.filter(|_| held.len() == count);
    let probe = loop {
        let Some(h) = next.take() else { break None };
        match (h.ws, h.status) {
            (Some(ws), _) => {
                admitted.push(ws);
                if admitted.len() == PROBES {
                    break Some(true);
                }
                let token = probe_token(&sub, admitted.len());
                next = Some(net::connect_to(server, port, Some(&token)).await);
            }
            (None, Some(503)) => break Some(false),
            _ => break None,
        }
    };
    for mut ws in admitted {
        let close = futures_util::SinkExt::close(&mut ws);
        let _ = tokio::time::timeout(net::ANSWER_TIMEOUT, close).await;
    }
    let timeout_ms = match kind {
        Kind::HalfHeader => ctx.settings.get("http_header_timeout_ms"),
        Kind::IdleKeepAlive => ctx.settings.get("http_idle_timeout_ms"),
    };
    let deadline_ms = quiet_ms + timeout_ms + SLACK_MS;
    let closed = futures_util::future::join_all(held.into_iter().map(|s| closed_by(s, deadline_ms)))
        .await
        .into_iter()
        .filter(|c| *c)
        .count() as u32;
    ctx.record(Event::SlowSockets {
        client,
        server,
        port,
        kind: kind.name().into(),
        opened,
        closed,
        within_ms: timeout_ms + SLACK_MS,
        probe,
        disturbed: crate::world::lock(&ctx.disturbance).links_since(t0),
    });
}
