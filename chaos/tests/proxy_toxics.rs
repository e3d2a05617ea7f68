//! `spiral-proxy` on real loopback sockets: each toxic's observable effect, toxicity, seeded
//! replay, per-direction toxics, `down`, the Toxiproxy-compatible HTTP API and the binary.
//!
//! Machines here are shared and noisy: delays are asserted as lower bounds (a toxic of 200 ms
//! makes a round trip take at least 200 ms); upper bounds appear only as sanity checks far
//! above anything a healthy run takes.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use spiral_chaos::proxy::http::{self, Registry};
use spiral_chaos::proxy::{
    Decision, DecisionLog, LogRecord, Proxy, ProxyConfig, ProxyHandle, Stream, Toxic, ToxicKind,
};
use spiral_server::rng::{SplitMix64, sub_seed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Wall time for the assertions (the tests measure the real proxy on real sockets).
#[allow(clippy::disallowed_methods)]
fn now() -> std::time::Instant {
    std::time::Instant::now()
}

const SANITY: Duration = Duration::from_secs(10);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// An upstream that greets each connection with `greeting` (if any), then echoes what it reads;
/// with `close_after_greeting` it closes right after the greeting instead.
async fn upstream(greeting: Vec<u8>, close_after_greeting: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let greeting = greeting.clone();
            tokio::spawn(async move {
                let _ = s.set_nodelay(true);
                if !greeting.is_empty() && s.write_all(&greeting).await.is_err() {
                    return;
                }
                if close_after_greeting {
                    let _ = s.shutdown().await;
                    // Keep reading so the close is a FIN, not a reset.
                    let mut sink = [0u8; 1024];
                    while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
                    return;
                }
                let mut buf = [0u8; 64 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

async fn echo() -> SocketAddr {
    upstream(Vec::new(), false).await
}

async fn proxy_to(upstream: SocketAddr, seed: u64) -> (ProxyHandle, DecisionLog) {
    let log = DecisionLog::memory();
    let config =
        ProxyConfig::new("p", "127.0.0.1:0".parse().unwrap(), upstream, seed).with_log(log.clone());
    (Proxy::start(config).await.unwrap(), log)
}

async fn connect(p: &ProxyHandle) -> TcpStream {
    let s = TcpStream::connect(p.listen_addr()).await.unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Send `msg`, read it back; the time that took.
async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Duration {
    let start = now();
    s.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(SANITY, s.read_exact(&mut back))
        .await
        .expect("echo within the sanity bound")
        .unwrap();
    assert_eq!(back, msg);
    start.elapsed()
}

/// Read until end of stream (or an error); what was read.
async fn read_to_close(s: &mut TcpStream) -> (Vec<u8>, std::io::Result<()>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(SANITY, s.read(&mut buf)).await {
            Err(_) => panic!("no close within the sanity bound"),
            Ok(Ok(0)) => return (got, Ok(())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return (got, Err(e)),
        }
    }
}

/// Nothing arrives, and the connection stays open, for `d`.
async fn assert_silent_and_open(s: &mut TcpStream, d: Duration) {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(d, s.read(&mut buf)).await {
        Err(_) => {}
        Ok(r) => panic!("expected silence on an open connection, got {r:?}"),
    }
}

fn toxic(name: &str, kind: ToxicKind, stream: Stream) -> Toxic {
    Toxic::new(kind, stream).named(name)
}

fn decisions_of(log: &DecisionLog, toxic: &str) -> Vec<(u64, Decision)> {
    log.records()
        .into_iter()
        .filter(|r| r.toxic.as_deref() == Some(toxic) && r.conn.is_some())
        .map(|r| (r.conn.unwrap_or(u64::MAX), r.decision))
        .collect()
}

/// `toxic` made `decision` on some connection.
fn assert_logged(log: &DecisionLog, toxic: &str, decision: Decision) {
    let made = decisions_of(log, toxic);
    assert!(
        made.iter().any(|(_, d)| *d == decision),
        "{toxic}: no {decision:?} in {made:?}"
    );
}

#[tokio::test]
async fn latency_delays_every_downstream_chunk_by_at_least_its_latency() {
    let (p, log) = proxy_to(echo().await, 1).await;
    p.add_toxic(toxic(
        "lat",
        ToxicKind::Latency {
            latency_ms: 200,
            jitter_ms: 0,
        },
        Stream::Downstream,
    ))
    .unwrap();
    let mut s = connect(&p).await;
    for i in 0..3 {
        let rtt = round_trip(&mut s, format!("ping {i}").as_bytes()).await;
        assert!(rtt >= ms(200), "round trip {i} took {rtt:?}");
    }
    let delays: Vec<_> = decisions_of(&log, "lat")
        .into_iter()
        .filter(|(_, d)| matches!(d, Decision::Delay { delay_ms: 200, .. }))
        .collect();
    assert_eq!(delays.len(), 3, "{delays:?}");
}

#[tokio::test]
async fn bandwidth_limits_a_downstream_transfer_to_its_rate() {
    // 5000 bytes at 10 KB/s: at least 500 ms.
    let (p, _) = proxy_to(upstream(vec![7u8; 5000], true).await, 1).await;
    p.add_toxic(toxic(
        "bw",
        ToxicKind::Bandwidth { rate_kb_per_s: 10 },
        Stream::Downstream,
    ))
    .unwrap();
    let start = now();
    let mut s = connect(&p).await;
    let (got, end) = read_to_close(&mut s).await;
    let took = start.elapsed();
    end.unwrap();
    assert_eq!(got.len(), 5000);
    assert!(took >= ms(490), "5000 bytes at 10 KB/s took {took:?}");
}

#[tokio::test]
async fn slow_close_delays_the_close_but_delivers_the_data() {
    let (p, log) = proxy_to(upstream(b"bye".to_vec(), true).await, 1).await;
    p.add_toxic(toxic(
        "sc",
        ToxicKind::SlowClose { delay_ms: 300 },
        Stream::Downstream,
    ))
    .unwrap();
    let start = now();
    let mut s = connect(&p).await;
    let (got, end) = read_to_close(&mut s).await;
    let took = start.elapsed();
    end.unwrap();
    assert_eq!(got, b"bye");
    assert!(took >= ms(300), "closed after {took:?}");
    assert_logged(&log, "sc", Decision::SlowClose { delay_ms: 300 });
}

#[tokio::test]
async fn timeout_passes_nothing_and_closes_the_connection_after_its_timeout() {
    let (p, log) = proxy_to(echo().await, 1).await;
    p.add_toxic(toxic(
        "to",
        ToxicKind::Timeout { timeout_ms: 300 },
        Stream::Downstream,
    ))
    .unwrap();
    let start = now();
    let mut s = connect(&p).await;
    s.write_all(b"ping").await.unwrap();
    let (got, _) = read_to_close(&mut s).await;
    let took = start.elapsed();
    assert!(got.is_empty(), "data passed a timeout toxic: {got:?}");
    assert!(took >= ms(300), "closed after {took:?}");
    assert_logged(&log, "to", Decision::TimedOut { timeout_ms: 300 });
}

#[tokio::test]
async fn timeout_zero_holds_the_connection_open_passing_nothing_until_removed() {
    let (p, _) = proxy_to(echo().await, 1).await;
    p.add_toxic(toxic(
        "hold",
        ToxicKind::Timeout { timeout_ms: 0 },
        Stream::Downstream,
    ))
    .unwrap();
    let mut s = connect(&p).await;
    s.write_all(b"lost").await.unwrap();
    assert_silent_and_open(&mut s, ms(400)).await;
    p.remove_toxic("hold").unwrap();
    // What was sent under the toxic was dropped (as in Toxiproxy); new data flows again.
    round_trip(&mut s, b"back").await;
}

#[tokio::test]
async fn reset_peer_resets_the_connection_after_its_timeout() {
    let (p, log) = proxy_to(echo().await, 1).await;
    p.add_toxic(toxic(
        "rst",
        ToxicKind::ResetPeer { timeout_ms: 200 },
        Stream::Downstream,
    ))
    .unwrap();
    let start = now();
    let mut s = connect(&p).await;
    round_trip(&mut s, b"before").await;
    let (_, end) = read_to_close(&mut s).await;
    let took = start.elapsed();
    let err = end.expect_err("a reset, not a clean close");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    assert!(took >= ms(200), "reset after {took:?}");
    assert_logged(&log, "rst", Decision::Reset { timeout_ms: 200 });
}

#[tokio::test]
async fn slicer_splits_each_chunk_into_slices_of_average_size_plus_or_minus_variation() {
    let (p, log) = proxy_to(upstream(vec![1u8; 1000], true).await, 1).await;
    p.add_toxic(toxic(
        "sl",
        ToxicKind::Slicer {
            average_size: 10,
            size_variation: 5,
            delay_us: 2000,
        },
        Stream::Downstream,
    ))
    .unwrap();
    let start = now();
    let mut s = connect(&p).await;
    let mut reads = 0;
    let mut got = 0;
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(SANITY, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            break;
        }
        reads += 1;
        got += n;
    }
    let took = start.elapsed();
    assert_eq!(got, 1000);
    // Unsliced, 1000 bytes arrive in a read or two.
    assert!(reads >= 10, "{reads} reads");
    let (mut slices, mut total, mut floor) = (0, 0, Duration::ZERO);
    for (_, d) in decisions_of(&log, "sl") {
        if let Decision::Sliced {
            bytes,
            slices: n,
            sizes,
            ..
        } = d
        {
            // Every slice but a chunk's last (its remainder) is 10 ± 5 bytes.
            let whole = if sizes.len() == n { n - 1 } else { sizes.len() };
            assert!(
                sizes[..whole].iter().all(|s| (5..=15).contains(s)),
                "{sizes:?}"
            );
            assert!(sizes.iter().all(|s| (1..=15).contains(s)), "{sizes:?}");
            slices += n;
            total += bytes;
            floor += ms(2) * u32::try_from(n - 1).unwrap();
        }
    }
    assert_eq!(total, 1000);
    assert!(slices >= 1000 / 15, "{slices} slices");
    assert!(
        took >= floor,
        "{slices} slices, 2 ms apart within a chunk, took {took:?}"
    );
}

#[tokio::test]
async fn limit_data_closes_the_connection_after_that_many_bytes() {
    // The upstream greets with 1000 bytes and stays open: the close can only be the toxic's.
    let (p, log) = proxy_to(upstream(vec![9u8; 1000], false).await, 1).await;
    p.add_toxic(toxic(
        "lim",
        ToxicKind::LimitData { bytes: 100 },
        Stream::Downstream,
    ))
    .unwrap();
    let mut s = connect(&p).await;
    let (got, end) = read_to_close(&mut s).await;
    end.unwrap();
    assert_eq!(got, vec![9u8; 100]);
    assert_logged(&log, "lim", Decision::LimitReached { bytes: 100 });
}

#[tokio::test]
async fn loss_of_a_chunk_stalls_the_direction_but_leaves_the_connection_open() {
    let (p, log) = proxy_to(echo().await, 1).await;
    p.add_toxic(toxic(
        "loss",
        ToxicKind::Loss { probability: 1.0 },
        Stream::Downstream,
    ))
    .unwrap();
    let mut s = connect(&p).await;
    s.write_all(b"ping").await.unwrap();
    assert_silent_and_open(&mut s, ms(400)).await;
    // Removing the toxic does not revive a stalled connection.
    p.remove_toxic("loss").unwrap();
    s.write_all(b"more").await.unwrap();
    assert_silent_and_open(&mut s, ms(200)).await;
    assert!(
        decisions_of(&log, "loss")
            .iter()
            .any(|(_, d)| matches!(d, Decision::Lost { chunk: 0, .. }))
    );
}

/// Where the documented derivation puts connection 0's first loss: the toxic's generator is
/// the connection's (`sub_seed(seed, "p/conn/0")`) forked by the toxic's name; its first draw is
/// the toxicity, then one draw per chunk.
fn first_loss(seed: u64, probability: f64) -> u64 {
    let mut rng = SplitMix64::new(sub_seed(seed, "p/conn/0")).fork("loss");
    let _toxicity = rng.next_f64();
    (0..).find(|_| rng.next_f64() < probability).unwrap()
}

#[tokio::test]
async fn loss_passes_every_chunk_before_the_first_lost_one() {
    // A seed whose first loss comes after a few chunks, so "before" is not empty.
    let seed = (0..)
        .find(|&s| (3..10).contains(&first_loss(s, 0.3)))
        .unwrap();
    let (p, log) = proxy_to(echo().await, seed).await;
    p.add_toxic(toxic(
        "loss",
        ToxicKind::Loss { probability: 0.3 },
        Stream::Downstream,
    ))
    .unwrap();
    let mut s = connect(&p).await;
    let mut passed = 0;
    for i in 0..60u64 {
        let msg = format!("message {i}");
        s.write_all(msg.as_bytes()).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        match tokio::time::timeout(ms(300), s.read_exact(&mut back)).await {
            Ok(r) => {
                r.unwrap();
                assert_eq!(back, msg.as_bytes());
                passed += 1;
            }
            Err(_) => break,
        }
    }
    let lost: Vec<u64> = decisions_of(&log, "loss")
        .into_iter()
        .filter_map(|(_, d)| match d {
            Decision::Lost { chunk, .. } => Some(chunk),
            _ => None,
        })
        .collect();
    assert_eq!(
        lost,
        vec![passed],
        "one loss, right after the chunks that passed"
    );
    assert_eq!(passed, first_loss(seed, 0.3), "seed {seed}");
}

#[tokio::test]
async fn down_refuses_new_connections_and_cuts_open_ones_until_enabled_again() {
    let (p, log) = proxy_to(echo().await, 1).await;
    let mut open = connect(&p).await;
    round_trip(&mut open, b"up").await;
    p.set_enabled(false).await.unwrap();
    let (_, _) = read_to_close(&mut open).await;
    let refused = TcpStream::connect(p.listen_addr()).await;
    assert_eq!(
        refused.map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
    assert!(log.records().iter().any(|r| r.decision == Decision::Cut));
    p.set_enabled(true).await.unwrap();
    let mut again = connect(&p).await;
    round_trip(&mut again, b"up again").await;
}

#[tokio::test]
async fn toxicity_zero_never_applies_and_toxicity_one_always_does() {
    let (p, log) = proxy_to(echo().await, 1).await;
    p.add_toxic(
        toxic(
            "never",
            ToxicKind::Latency {
                latency_ms: 5000,
                jitter_ms: 0,
            },
            Stream::Downstream,
        )
        .with_toxicity(0.0),
    )
    .unwrap();
    p.add_toxic(toxic(
        "always",
        ToxicKind::Latency {
            latency_ms: 50,
            jitter_ms: 0,
        },
        Stream::Downstream,
    ))
    .unwrap();
    for _ in 0..8 {
        let mut s = connect(&p).await;
        let rtt = round_trip(&mut s, b"x").await;
        assert!(rtt >= ms(50), "{rtt:?}");
        assert!(rtt < ms(4000), "the toxicity-0 toxic applied: {rtt:?}");
    }
    let verdicts = |name| -> Vec<bool> {
        decisions_of(&log, name)
            .into_iter()
            .filter_map(|(_, d)| match d {
                Decision::Applies { .. } => Some(true),
                Decision::Skips { .. } => Some(false),
                _ => None,
            })
            .collect()
    };
    assert_eq!(verdicts("never"), vec![false; 8]);
    assert_eq!(verdicts("always"), vec![true; 8]);
}

#[tokio::test]
async fn toxicity_one_half_applies_to_some_connections_and_not_to_others() {
    let (p, log) = proxy_to(echo().await, 1).await;
    p.add_toxic(
        toxic(
            "half",
            ToxicKind::Latency {
                latency_ms: 1,
                jitter_ms: 0,
            },
            Stream::Downstream,
        )
        .with_toxicity(0.5),
    )
    .unwrap();
    for _ in 0..16 {
        let mut s = connect(&p).await;
        round_trip(&mut s, b"x").await;
    }
    let applied = decisions_of(&log, "half")
        .iter()
        .filter(|(_, d)| matches!(d, Decision::Applies { .. }))
        .count();
    assert!((1..16).contains(&applied), "{applied} of 16");
}

/// The seeded part of a run's log: per connection and toxic, the decisions in order.
async fn seeded_decisions(seed: u64) -> Vec<(u64, String, Decision)> {
    let (p, log) = proxy_to(echo().await, seed).await;
    p.add_toxic(toxic(
        "lat",
        ToxicKind::Latency {
            latency_ms: 5,
            jitter_ms: 5,
        },
        Stream::Downstream,
    ))
    .unwrap();
    p.add_toxic(toxic(
        "sl",
        ToxicKind::Slicer {
            average_size: 20,
            size_variation: 10,
            delay_us: 100,
        },
        Stream::Downstream,
    ))
    .unwrap();
    p.add_toxic(
        toxic(
            "some",
            ToxicKind::Latency {
                latency_ms: 1,
                jitter_ms: 0,
            },
            Stream::Upstream,
        )
        .with_toxicity(0.5),
    )
    .unwrap();
    for _ in 0..4 {
        let mut s = connect(&p).await;
        for i in 0..3 {
            round_trip(&mut s, format!("{i:0>100}").as_bytes()).await;
        }
    }
    let mut seeded: Vec<(u64, String, Decision)> = log
        .records()
        .into_iter()
        .filter_map(|r: LogRecord| {
            let seeded = matches!(
                r.decision,
                Decision::Applies { .. }
                    | Decision::Skips { .. }
                    | Decision::Delay { .. }
                    | Decision::Sliced { .. }
            );
            Some((r.conn?, r.toxic?, r.decision)).filter(|_| seeded)
        })
        .collect();
    // Directions interleave by timing; within one toxic of one connection the order is fixed.
    seeded.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    seeded
}

#[tokio::test]
async fn the_same_seed_replays_the_same_decisions_and_another_seed_does_not() {
    let a = seeded_decisions(42).await;
    let b = seeded_decisions(42).await;
    let c = seeded_decisions(43).await;
    assert!(a.len() >= 4 * (1 + 3 + 1 + 3 + 1), "{a:?}");
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[tokio::test]
async fn an_upstream_only_toxic_does_not_delay_downstream() {
    let (p, _) = proxy_to(upstream(b"hello".to_vec(), false).await, 1).await;
    p.add_toxic(toxic(
        "up",
        ToxicKind::Latency {
            latency_ms: 1000,
            jitter_ms: 0,
        },
        Stream::Upstream,
    ))
    .unwrap();
    let start = now();
    let mut s = connect(&p).await;
    let mut hello = [0u8; 5];
    s.read_exact(&mut hello).await.unwrap();
    let greeted = start.elapsed();
    assert_eq!(&hello, b"hello");
    let rtt = round_trip(&mut s, b"ping").await;
    assert!(rtt >= ms(1000), "upstream latency not applied: {rtt:?}");
    // Sanity, far above a loopback greeting (about a millisecond).
    assert!(greeted < ms(750), "downstream delayed: {greeted:?}");
}

#[tokio::test]
async fn a_toxic_added_to_an_open_connection_applies_from_then_on() {
    let (p, _) = proxy_to(echo().await, 1).await;
    let mut s = connect(&p).await;
    round_trip(&mut s, b"before").await;
    p.add_toxic(toxic(
        "lat",
        ToxicKind::Latency {
            latency_ms: 200,
            jitter_ms: 0,
        },
        Stream::Downstream,
    ))
    .unwrap();
    let rtt = round_trip(&mut s, b"during").await;
    assert!(rtt >= ms(200), "{rtt:?}");
    p.add_toxic(toxic(
        "cap",
        ToxicKind::LimitData { bytes: 3 },
        Stream::Downstream,
    ))
    .unwrap();
    s.write_all(b"after").await.unwrap();
    let (got, _) = read_to_close(&mut s).await;
    assert_eq!(got, b"aft");
}

/// A raw HTTP/1.1 request, as any Toxiproxy client sends it; the status and the body.
async fn http_request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(SANITY, s.read_to_end(&mut resp))
        .await
        .unwrap()
        .unwrap();
    let resp = String::from_utf8(resp).unwrap();
    let status = resp[9..12].parse().unwrap();
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test]
async fn the_http_api_speaks_toxiproxys_json() {
    let upstream = echo().await;
    let registry = Arc::new(Registry::new(5, DecisionLog::memory()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap();
    tokio::spawn(http::serve(
        listener,
        registry.clone(),
        std::future::pending(),
    ));

    let (status, body) = http_request(api, "GET", "/version", "").await;
    assert_eq!(status, 200);
    assert!(json_of(&body)["version"].is_string());

    let create = json!({"name": "echo", "listen": "127.0.0.1:0",
                        "upstream": upstream.to_string(), "enabled": true});
    let (status, body) = http_request(api, "POST", "/proxies", &create.to_string()).await;
    assert_eq!(status, 201, "{body}");
    let created = json_of(&body);
    let listen: SocketAddr = created["listen"].as_str().unwrap().parse().unwrap();
    assert_ne!(listen.port(), 0);
    assert_eq!(created["enabled"], true);
    let (status, body) = http_request(api, "POST", "/proxies", &create.to_string()).await;
    assert_eq!(
        (status, json_of(&body)["status"].clone()),
        (409, json!(409))
    );

    // Exactly what toxiproxy-go's AddToxic sends.
    let lat = r#"{"name":"lat","type":"latency","stream":"downstream","toxicity":1.0,"attributes":{"latency":200,"jitter":0}}"#;
    let (status, body) = http_request(api, "POST", "/proxies/echo/toxics", lat).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_of(&body), json_of(lat));
    let (status, _) = http_request(api, "POST", "/proxies/echo/toxics", lat).await;
    assert_eq!(status, 409);

    let mut s = TcpStream::connect(listen).await.unwrap();
    let rtt = round_trip(&mut s, b"through the api").await;
    assert!(rtt >= ms(200), "{rtt:?}");

    let (status, body) = http_request(api, "GET", "/proxies", "").await;
    assert_eq!(status, 200);
    let all = json_of(&body);
    assert_eq!(all["echo"]["toxics"][0]["name"], "lat");
    assert_eq!(all["echo"]["upstream"], upstream.to_string());
    let (status, body) = http_request(api, "GET", "/proxies/echo/toxics", "").await;
    assert_eq!((status, json_of(&body)), (200, json!([json_of(lat)])));

    let (status, body) = http_request(
        api,
        "POST",
        "/proxies/echo/toxics/lat",
        r#"{"attributes":{"jitter":5}}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        json_of(&body)["attributes"],
        json!({"latency":200,"jitter":5})
    );

    for (method, path, body) in [
        ("GET", "/proxies/nope", ""),
        ("GET", "/proxies/nope/toxics", ""),
        ("GET", "/proxies/echo/toxics/nope", ""),
        ("DELETE", "/proxies/echo/toxics/nope", ""),
        ("POST", "/proxies/nope", r#"{"enabled":false}"#),
        ("GET", "/no/such/route", ""),
    ] {
        let (status, resp) = http_request(api, method, path, body).await;
        assert_eq!(status, 404, "{method} {path}: {resp}");
        assert_eq!(json_of(&resp)["status"], 404);
    }
    for (path, body) in [
        ("/proxies", "{not json"),
        ("/proxies", r#"{"name":"x"}"#),
        ("/proxies", r#"{"name":"x","upstream":"nowhere"}"#),
        ("/proxies/echo/toxics", r#"{"type":"earthquake"}"#),
        ("/proxies/echo/toxics", r#"{"type":"latency","toxicity":7}"#),
        (
            "/proxies/echo/toxics/lat",
            r#"{"attributes":{"latency":"soon"}}"#,
        ),
        ("/proxies/echo/toxics", "[]"),
    ] {
        let (status, resp) = http_request(api, "POST", path, body).await;
        assert_eq!(status, 400, "POST {path} {body}: {resp}");
        assert!(json_of(&resp)["error"].is_string());
    }

    // Down over the API, then /reset brings it back without toxics.
    let (status, body) = http_request(api, "POST", "/proxies/echo", r#"{"enabled":false}"#).await;
    assert_eq!(
        (status, json_of(&body)["enabled"].clone()),
        (200, json!(false))
    );
    assert!(TcpStream::connect(listen).await.is_err());
    let (status, _) = http_request(api, "POST", "/reset", "").await;
    assert_eq!(status, 204);
    let (_, body) = http_request(api, "GET", "/proxies/echo", "").await;
    assert_eq!(json_of(&body)["enabled"], true);
    assert_eq!(json_of(&body)["toxics"], json!([]));

    let (status, _) = http_request(api, "POST", "/proxies/echo/toxics", lat).await;
    assert_eq!(status, 200);
    let (status, _) = http_request(api, "DELETE", "/proxies/echo/toxics/lat", "").await;
    assert_eq!(status, 204);
    let (status, _) = http_request(api, "DELETE", "/proxies/echo", "").await;
    assert_eq!(status, 204);
    let (status, _) = http_request(api, "GET", "/proxies/echo", "").await;
    assert_eq!(status, 404);
    assert!(TcpStream::connect(listen).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_prints_its_seed_and_address_serves_its_config_and_stops_on_sigterm() {
    let upstream = echo().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxies.json");
    let spec = json!([{"name": "echo", "listen": "127.0.0.1:0",
                       "upstream": upstream.to_string(), "enabled": true}]);
    std::fs::write(&config, spec.to_string()).unwrap();
    let log = dir.path().join("decisions.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_spiral-proxy"))
        .args(["--seed", "7", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--log")
        .arg(&log)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let (lines, mut stdout) = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for _ in 0..3 {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            lines.push(line.trim_end().to_string());
        }
        (lines, stdout)
    })
    .await
    .unwrap();
    assert_eq!(lines[0], "spiral-proxy seed=7");
    let proxy_listen: SocketAddr = lines[1]
        .split_whitespace()
        .find_map(|w| w.strip_prefix("listen="))
        .unwrap()
        .parse()
        .unwrap();
    let api: SocketAddr = lines[2]
        .strip_prefix("spiral-proxy control=http://")
        .unwrap()
        .parse()
        .unwrap();
    let (status, _) = http_request(api, "GET", "/proxies/echo", "").await;
    assert_eq!(status, 200);
    let mut s = TcpStream::connect(proxy_listen).await.unwrap();
    round_trip(&mut s, b"via the binary").await;

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let (status, rest) = tokio::task::spawn_blocking(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut rest);
        (child.wait(), rest)
    })
    .await
    .unwrap();
    let status = status.unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(rest, "spiral-proxy stopped\n");
    let text = std::fs::read_to_string(&log).unwrap();
    let first: LogRecord = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first.proxy, "echo");
}
