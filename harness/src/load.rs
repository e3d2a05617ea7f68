//! The load generator (SPEC §3, "Load"): WebSocket `memory.store` round trips against a running
//! server on real sockets, open loop. Each connection sends on a fixed schedule whether or not
//! answers have come back, and a latency is measured from the *intended* send time into an
//! HdrHistogram, so a stalled server shows up as latency instead of as a slower sender
//! (no coordinated omission).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use spiral_server::auth::{Claims, Keys};
use spiral_server::engine::StoreRequest;
use spiral_server::protocol::{self, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// One phase: a constant arrival rate for a duration.
#[derive(Debug, Clone)]
pub struct Phase {
    pub rate_per_s: u64,
    pub duration: Duration,
}

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub ws_url: String,
    /// HS256 secret to mint one token per connection (user `load-<n>`).
    pub jwt_secret: String,
    pub connections: usize,
    /// Discarded from the figures at the start of each phase.
    pub warmup: Duration,
    /// Bytes of content per store.
    pub payload_bytes: usize,
}

/// Figures of one phase.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PhaseReport {
    pub rate_per_s: u64,
    pub sent: u64,
    pub answered: u64,
    pub errors: u64,
    pub achieved_per_s: f64,
    pub p50_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// Real time: the load generator measures the wall clock of a real system, outside any server
/// logic, so the determinism seam does not apply here.
#[allow(clippy::disallowed_methods)]
fn now() -> std::time::Instant {
    std::time::Instant::now()
}

fn mint(secret: &str, n: usize, run: u64) -> String {
    let exp =
        spiral_server::clock::Clock::unix_ms(&spiral_server::clock::SystemClock) / 1000 + 3600;
    let claims = Claims::new(format!("load-{n}"), format!("load-{}", n % 4), exp)
        .jti(format!("load-{run}-{n}"));
    Keys::hs256(secret.as_bytes())
        .mint(&claims)
        .unwrap_or_default()
}

/// Run one phase over fresh connections.
pub async fn run_phase(cfg: &LoadConfig, phase: &Phase, run: u64) -> anyhow::Result<PhaseReport> {
    let conns = cfg.connections.max(1);
    // Each connection sends every `interval`; together they make the phase's rate.
    let interval = Duration::from_secs_f64(conns as f64 / phase.rate_per_s.max(1) as f64);
    let per_conn = (phase.duration.as_secs_f64() / interval.as_secs_f64()).ceil() as u64;
    let content = "x".repeat(cfg.payload_bytes);
    let mut sockets = Vec::with_capacity(conns);
    for n in 0..conns {
        let mut req = cfg.ws_url.as_str().into_client_request()?;
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", mint(&cfg.jwt_secret, n, run)).parse()?,
        );
        let (ws, _) = tokio_tungstenite::connect_async(req).await?;
        let _ = match ws.get_ref() {
            tokio_tungstenite::MaybeTlsStream::Plain(s) => s.set_nodelay(true),
            _ => Ok(()),
        };
        sockets.push(ws);
    }
    let start = now() + Duration::from_millis(100);
    let warm_until = start + cfg.warmup;
    // Offsets stagger the connections across one interval so the arrivals are even.
    let offsets: Vec<Duration> = (0..conns)
        .map(|n| interval.mul_f64(n as f64 / conns as f64))
        .collect();
    let mut tasks = Vec::new();
    let mut triggers = Vec::new();
    for (n, ws) in sockets.into_iter().enumerate() {
        let (mut sink, mut stream) = ws.split();
        let offset = offsets[n];
        let store = Command::MemoryStore(StoreRequest {
            content: Value::String(content.clone()),
            ..StoreRequest::default()
        });
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
        triggers.push(tx);
        let sender = tokio::spawn(async move {
            while let Some(seq) = rx.recv().await {
                let msg = protocol::request(&json!(seq), &store);
                if sink.send(Message::Text(msg.into())).await.is_err() {
                    break;
                }
            }
            sink
        });
        let reader = tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            let (mut answered, mut errors) = (0u64, 0u64);
            let deadline =
                tokio::time::sleep(phase_len(per_conn, interval) + Duration::from_secs(5));
            tokio::pin!(deadline);
            while answered + errors < per_conn {
                let msg = tokio::select! {
                    m = stream.next() => m,
                    () = &mut deadline => break,
                };
                let Some(Ok(Message::Text(t))) = msg else {
                    if msg.is_none() { break } else { continue }
                };
                let v: Value = serde_json::from_str(t.as_str()).unwrap_or_default();
                let Some(seq) = v["id"].as_u64() else {
                    continue;
                };
                let intended = start + offset + interval.mul_f64(seq as f64);
                if v["type"] == "result" {
                    answered += 1;
                    if intended >= warm_until {
                        let us = now().saturating_duration_since(intended).as_micros() as u64;
                        let _ = hist.record(us.max(1));
                    }
                } else {
                    errors += 1;
                }
            }
            (hist, answered, errors)
        });
        tasks.push((sender, reader));
    }
    // The schedule runs on its own OS thread with the OS's sleep (tens of µs precise) instead
    // of tokio's 1 ms timer wheel, whose lateness would otherwise count as server latency.
    let pacer = spawn_pacer(start, interval, offsets, per_conn, triggers);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let (mut answered, mut errors) = (0, 0);
    for (sender, reader) in tasks {
        let sink = sender.await?;
        let (h, a, e) = reader.await?;
        drop(sink);
        hist.add(&h).ok();
        answered += a;
        errors += e;
    }
    let _ = tokio::task::spawn_blocking(move || pacer.join()).await;
    let sent = per_conn * conns as u64;
    let measured = phase
        .duration
        .saturating_sub(cfg.warmup)
        .as_secs_f64()
        .max(1e-9);
    Ok(PhaseReport {
        rate_per_s: phase.rate_per_s,
        sent,
        answered,
        errors,
        achieved_per_s: hist.len() as f64 / measured,
        p50_us: hist.value_at_quantile(0.50),
        p95_us: hist.value_at_quantile(0.95),
        p99_us: hist.value_at_quantile(0.99),
        max_us: hist.max(),
    })
}

/// Fire every connection's sends at their intended times, in time order.
#[allow(clippy::disallowed_methods)] // a load generator's pacing thread, not server logic
fn spawn_pacer(
    start: std::time::Instant,
    interval: Duration,
    offsets: Vec<Duration>,
    per_conn: u64,
    triggers: Vec<tokio::sync::mpsc::UnboundedSender<u64>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for seq in 0..per_conn {
            for (n, tx) in triggers.iter().enumerate() {
                let intended = start + offsets[n] + interval.mul_f64(seq as f64);
                let t = now();
                if intended > t {
                    std::thread::sleep(intended - t);
                }
                let _ = tx.send(seq);
            }
        }
    })
}

fn phase_len(per_conn: u64, interval: Duration) -> Duration {
    interval.mul_f64(per_conn as f64)
}

/// A table row.
pub fn row(r: &PhaseReport) -> String {
    format!(
        "{:>8}/s  sent {:>7}  ok {:>7}  err {:>5}  p50 {:>7} µs  p95 {:>7} µs  p99 {:>7} µs  max {:>8} µs",
        r.rate_per_s, r.sent, r.answered, r.errors, r.p50_us, r.p95_us, r.p99_us, r.max_us
    )
}
