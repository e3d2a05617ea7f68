//! The checkers judge a history written by hand — no simulator, no server, no runtime: what any
//! world (the simulated one, the real-process one) must produce to be checked. A clean history
//! passes every checker; each broken variant of it fails with the right checker and exit code.

use std::collections::BTreeSet;

use serde_json::json;
use spiral_history::checkers::{self, NAMES, Panel, Settings, Slo};
use spiral_history::failure::{EXIT_CORRECTNESS, EXIT_LIVENESS, exit_code};
use spiral_history::hand::{collect, error, get, op, read, refresh, store, stored};
use spiral_history::{Answer, Event, FaultKind, Phase, Record, TokenKind};
use spiral_server::protocol::{BreakerState, ErrorCode};

fn settings() -> Settings {
    Settings {
        clients: 1,
        ws_rate_capacity: 100,
        ws_rate_window_ms: 1000,
        http_rate: spiral_server::ratelimit::Limit::new(100, 10_000, 60_000),
        gc_grace_ms: 50,
        liveness_within_ms: 10_000,
        end_ms: 30_000,
        truncated: false,
        slo: Slo {
            store_p95_ms: Some(100.0),
            max_error_ratio: Some(0.5),
        },
        disabled: BTreeSet::new(),
        refresh_max_lifetime_s: 3_600,
        max_connections_per_user: 4,
        cb_window_ms: 1_000,
        cb_failures: 3,
        gc_force_skip: 3,
    }
}

/// A bad client's user opening 8 WebSockets at once against a per-user cap of 4.
fn hog(accepted: u32) -> Event {
    Event::Hog {
        client: 1,
        server: 0,
        user: "hog-1".into(),
        opened: 8,
        accepted,
        refused_429: 8 - accepted,
        retry_after_ms: Some(1000),
        refused_other: Vec::new(),
        rejoined: Some(true),
        disturbed: false,
    }
}

fn at(t_ms: u64, event: Event) -> Record {
    Record { t_ms, event }
}

/// One client stores, reads and collects through a partition that heals; a breaker opens and
/// closes through a probe; GC runs within budget; the engine holds; nothing acknowledged is lost.
fn clean() -> Vec<Record> {
    let fault = |kind| Event::Fault {
        kind,
        a: Some("client-0".into()),
        b: Some("server-0".into()),
        detail: None,
    };
    let breaker = |from, to| Event::Breaker {
        server: 0,
        from,
        to,
        open_ms: None,
        failures: None,
    };
    vec![
        at(
            0,
            Event::Phase {
                phase: Phase::Safety,
                at_ms: 0,
            },
        ),
        at(
            10,
            Event::Connect {
                client: 0,
                server: 0,
                token: TokenKind::Valid,
                jti: Some("c0-1".into()),
                exp: None,
                accepted: true,
                status: None,
                error: None,
            },
        ),
        at(20, op(store(json!({"n": 1})), stored("a"), 20)),
        at(30, op(get("a"), read(json!({"n": 1})), 30)),
        at(1000, fault(FaultKind::Partition)),
        at(
            1500,
            op(
                get("a"),
                Answer::Lost {
                    error: "no answer in 5 s".into(),
                },
                1500,
            ),
        ),
        at(2000, breaker(BreakerState::Closed, BreakerState::Open)),
        at(6000, fault(FaultKind::Repair)),
        at(
            6000,
            Event::Phase {
                phase: Phase::Liveness,
                at_ms: 6000,
            },
        ),
        at(7000, breaker(BreakerState::Open, BreakerState::HalfOpen)),
        at(7001, breaker(BreakerState::HalfOpen, BreakerState::Closed)),
        at(8000, op(store(json!({"n": 2})), stored("b"), 8000)),
        at(
            9000,
            Event::Gc {
                server: 0,
                pause_ms: 3.0,
                budget_ms: 10,
                collected: 1,
                excess: Some(1),
                started_ms: None,
                spared: None,
            },
        ),
        at(
            9000,
            Event::GcRemoved {
                server: 0,
                id: "b".into(),
                tenant: Some("tenant-0".into()),
            },
        ),
        at(9500, op(collect("a"), Answer::Collected, 9500)),
        at(9600, op(get("a"), error(ErrorCode::NotFound), 9600)),
        at(9700, refresh(0, "r1", 4_000)),
        at(9800, hog(4)),
        at(
            30_000,
            Event::Phase {
                phase: Phase::Final,
                at_ms: 30_000,
            },
        ),
        at(
            30_100,
            Event::EngineCheck {
                server: 0,
                ok: true,
                detail: "invariant 1 holds".into(),
            },
        ),
    ]
}

fn judge(history: &[Record]) -> Option<spiral_history::Failure> {
    Panel::new(checkers::all(&settings())).judge(history)
}

#[test]
fn a_clean_hand_made_history_passes_every_checker() {
    let panel = Panel::new(checkers::all(&settings()));
    assert_eq!(panel.names(), NAMES.to_vec(), "every checker runs");
    assert_eq!(panel.judge(&clean()), None);
    // Every record is one trace line that reads back as itself.
    for r in clean() {
        assert_eq!(serde_json::from_str::<Record>(&r.to_line()).unwrap(), r);
    }
}

#[test]
fn each_broken_variant_fails_with_its_checker_and_exit_code() {
    type Break = Box<dyn Fn(&mut Vec<Record>)>;
    let cases: Vec<(&str, u8, Break)> = vec![
        (
            "acked_writes",
            EXIT_CORRECTNESS,
            Box::new(|h| {
                h.push(at(
                    30_200,
                    Event::Durable {
                        id: "a2".into(),
                        server: 0,
                        found: false,
                    },
                ));
                h.insert(3, at(25, op(store(json!(3)), stored("a2"), 25)));
            }),
        ),
        (
            "refused_writes",
            EXIT_CORRECTNESS,
            // A store refused for a full journal, then found at rest after all.
            Box::new(|h| {
                let content = json!({"client": 0, "seq": 9, "body": "x"});
                h.insert(
                    3,
                    at(
                        26,
                        op(store(content), error(ErrorCode::StorageUnavailable), 26),
                    ),
                );
                h.push(at(
                    30_250,
                    Event::UnackedAtRest {
                        server: 0,
                        id: "a9".into(),
                        client: Some(0),
                        seq: Some(9),
                    },
                ));
            }),
        ),
        (
            "tokens",
            EXIT_CORRECTNESS,
            Box::new(|h| h.push(at(30_300, refresh(1, "r1", 4_000)))),
        ),
        (
            "connection_fairness",
            EXIT_CORRECTNESS,
            Box::new(|h| h.push(at(30_400, hog(8)))),
        ),
        (
            "reads",
            EXIT_CORRECTNESS,
            Box::new(|h| h[3] = at(30, op(get("a"), read(json!({"n": 9})), 30))),
        ),
        (
            "breaker",
            EXIT_CORRECTNESS,
            Box::new(|h| {
                h[9] = at(
                    7000,
                    Event::Breaker {
                        server: 0,
                        from: BreakerState::Open,
                        to: BreakerState::Closed,
                        open_ms: None,
                        failures: None,
                    },
                );
            }),
        ),
        (
            "engine_invariants",
            EXIT_CORRECTNESS,
            Box::new(|h| {
                if let Some(Record {
                    event: Event::EngineCheck { ok, .. },
                    ..
                }) = h.last_mut()
                {
                    *ok = false;
                }
            }),
        ),
        (
            "auth",
            EXIT_CORRECTNESS,
            Box::new(|h| {
                if let Event::Connect { token, .. } = &mut h[1].event {
                    *token = TokenKind::Forged;
                }
            }),
        ),
        (
            "liveness",
            EXIT_LIVENESS,
            // The only operations after the heal are removed: the client never recovered.
            Box::new(|h| {
                h.retain(|r| !matches!(r.event, Event::Op { sent_ms, .. } if sent_ms >= 6000))
            }),
        ),
    ];
    for (checker, code, breaks) in cases {
        let mut h = clean();
        breaks(&mut h);
        let f = judge(&h).unwrap_or_else(|| panic!("{checker}: the broken history passed"));
        assert!(f.class().ends_with(checker), "{checker}: {}", f.describe());
        assert_eq!(exit_code(Some(&f)), code, "{checker}");
    }
}
