//! The checkers: each one watches a run's [`Event`]s as they happen and says when a property
//! breaks. One module per property; a world feeds them through a [`Panel`], which keeps the
//! first violation. Each is unit-tested against a hand-made history that breaks it, so none is a
//! check that cannot fail; `tests/hand_made.rs` runs the whole panel over hand-made histories.
//!
//! | checker | property | class |
//! |---|---|---|
//! | `engine_invariants` | SPEC §1.5 invariant 1 on every live server at the end; at rest no store reservation or removal is left in flight | correctness |
//! | `acked_writes` | an acknowledged store is readable until collected (by a client or GC) | correctness |
//! | `refused_writes` | a store answered with a clear refusal (`storage_unavailable`, `bad_request`, …) is not in durable storage at the end | correctness |
//! | `reads` | no read returns a value never written, and none is answered `internal` | correctness |
//! | `tenant_isolation` | another tenant's id is `not_found`, never data; a list names only ids, none acknowledged to another tenant | correctness |
//! | `auth` | no handshake or request with an invalid, replayed or revoked token is accepted; tokens at the expiry edge are judged by the server's clock | correctness |
//! | `rate_limit` | accepted operations per user never exceed the bucket | correctness |
//! | `breaker` | every breaker transition is legal (never open → closed), and a probe goes through no sooner than `CB_WINDOW` after the breaker opened | correctness |
//! | `gc_budget` | a GC pass stays within its time budget (simulated time) | correctness |
//! | `gc_keeps_up` | at quiescence a GC pass can start and brings every server back within capacity; a store taking an engine over capacity runs a pass | correctness |
//! | `close_codes` | a silent peer is closed with 4001, an idle one with 4000, an oversized frame with 1009, a revoked subject with 4003 | correctness |
//! | `bad_input` | malformed frames get an error envelope and the connection stays up | correctness |
//! | `tokens` | every `jti` `/auth/refresh` mints is new, and no refreshed token outlives its chain's start plus `REFRESH_MAX_LIFETIME_S` | correctness |
//! | `connection_fairness` | one user gets no more than `SPIRAL_MAX_CONNECTIONS_PER_USER` WebSockets; the handshakes past that get 429 with `retry_after_ms`, and closed connections give their slots back; at quiescence every server's connection table is empty | correctness |
//! | `tenant_fairness` | GC takes nodes only from tenants over their fair share of the capacity, and only down to it; a priority past −1000..=1000 is a `bad_request` | correctness |
//! | `shared_state` | without Redis, every handshake `jti` a server admitted is still known as used at the end, across its restarts (storage persists) | correctness |
//! | `slow_clients` | a socket that never completes a request header is closed within `HTTP_HEADER_TIMEOUT_MS`, an idle keep-alive connection within `HTTP_IDLE_TIMEOUT_MS`; sockets not yet upgraded count towards `SPIRAL_MAX_CONNECTIONS` | correctness |
//! | `liveness` | after the last fault heals, every client completes work within a bound | liveness |
//! | `slo` | store p95 and error ratio within the scenario's SLOs | liveness |

pub mod acked_writes;
pub mod auth;
pub mod bad_input;
pub mod breaker;
pub mod close_codes;
pub mod connection_fairness;
pub mod gc_budget;
pub mod gc_keeps_up;
pub mod liveness;
pub mod rate_limit;
pub mod reads;
pub mod refused_writes;
pub mod second_chance;
pub mod shared_state;
pub mod slo;
pub mod slow_clients;
pub mod tenant_fairness;
pub mod tenant_isolation;
pub mod tokens;

use std::collections::BTreeSet;

use crate::event::{Event, Record};
use crate::failure::Failure;

pub use slo::Slo;

/// What kind of failure a checker reports (and so the exit code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Correctness,
    Liveness,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub checker: &'static str,
    pub class: Class,
    pub detail: String,
}

/// A property watcher. `observe` sees every event in order; `finish` runs once at the end.
pub trait Checker {
    fn name(&self) -> &'static str;
    fn class(&self) -> Class {
        Class::Correctness
    }
    /// `Err(detail)` on the first event that breaks the property.
    fn observe(&mut self, event: &Event) -> Result<(), String>;
    fn finish(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// Every checker's name, in panel order (for `checks.disable` and the summaries).
pub const NAMES: [&str; 20] = [
    "engine_invariants",
    "acked_writes",
    "refused_writes",
    "reads",
    "tenant_isolation",
    "auth",
    "rate_limit",
    "breaker",
    "gc_budget",
    "gc_keeps_up",
    "close_codes",
    "bad_input",
    "tokens",
    "connection_fairness",
    "tenant_fairness",
    "gc_second_chance",
    "shared_state",
    "slow_clients",
    "liveness",
    "slo",
];

/// What the checkers need to know of the run they judge.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Well-behaved clients, numbered `0..clients` (liveness expects work from each).
    pub clients: u32,
    /// The servers' WebSocket token bucket: capacity per window.
    pub ws_rate_capacity: u64,
    pub ws_rate_window_ms: u64,
    /// The servers' HTTP bucket (`HTTP_RATE_LIMIT`, `RATE_LIMIT_BLOCK_SECONDS`).
    pub http_rate: spiral_server::ratelimit::Limit,
    /// How far over its budget a GC pass may run (scheduling jitter).
    pub gc_grace_ms: u64,
    /// After the last fault heals, every client completes work within this.
    pub liveness_within_ms: u64,
    /// When the workload ends.
    pub end_ms: u64,
    /// The workload was cut short (shrinking): liveness has nothing to judge.
    pub truncated: bool,
    pub slo: Slo,
    /// Checkers left out, by name.
    pub disabled: BTreeSet<String>,
    /// The servers' `REFRESH_MAX_LIFETIME_S`.
    pub refresh_max_lifetime_s: u64,
    /// The servers' `SPIRAL_MAX_CONNECTIONS_PER_USER`.
    pub max_connections_per_user: u64,
    /// The servers' `CB_WINDOW` (ms).
    pub cb_window_ms: u64,
    /// Consecutive failed storage calls that open a closed breaker (`CB_FAILURES`).
    pub cb_failures: u32,
    /// The servers' `GC_FORCE_SKIP`.
    pub gc_force_skip: u64,
}

/// A property judged on each event alone, with no memory of the ones before: a name and a
/// function (most checkers that need no state are one).
pub struct EachEvent {
    name: &'static str,
    judge: fn(&Event) -> Result<(), String>,
}

impl EachEvent {
    pub fn new(name: &'static str, judge: fn(&Event) -> Result<(), String>) -> EachEvent {
        EachEvent { name, judge }
    }
}

impl Checker for EachEvent {
    fn name(&self) -> &'static str {
        self.name
    }

    fn observe(&mut self, event: &Event) -> Result<(), String> {
        (self.judge)(event)
    }
}

/// Every enabled checker for a run, fresh, in [`NAMES`] order.
pub fn all(s: &Settings) -> Vec<Box<dyn Checker + Send>> {
    let mut v: Vec<Box<dyn Checker + Send>> = vec![
        Box::new(EachEvent::new("engine_invariants", engine_invariants)),
        Box::new(acked_writes::AckedWrites::default()),
        Box::new(refused_writes::RefusedWrites::default()),
        Box::new(reads::Reads::default()),
        Box::new(tenant_isolation::TenantIsolation::default()),
        Box::new(auth::Auth::default()),
        Box::new(rate_limit::RateLimit::new(
            s.ws_rate_capacity,
            s.ws_rate_window_ms,
            s.http_rate,
        )),
        Box::new(breaker::BreakerCheck::new(s.cb_window_ms, s.cb_failures)),
        Box::new(gc_budget::GcBudget::new(s.gc_grace_ms)),
        Box::new(EachEvent::new("gc_keeps_up", gc_keeps_up::judge)),
        Box::new(EachEvent::new("close_codes", close_codes::judge)),
        Box::new(EachEvent::new("bad_input", bad_input::judge)),
        Box::new(tokens::Tokens::new(s.refresh_max_lifetime_s)),
        Box::new(connection_fairness::ConnectionFairness::new(
            s.max_connections_per_user,
        )),
        Box::new(EachEvent::new("tenant_fairness", tenant_fairness::judge)),
        Box::new(second_chance::SecondChance::new(s.gc_force_skip)),
        Box::new(EachEvent::new("shared_state", shared_state::judge)),
        Box::new(EachEvent::new("slow_clients", slow_clients::judge)),
        Box::new(liveness::Liveness::new(
            s.clients,
            s.liveness_within_ms,
            s.end_ms,
            s.truncated,
        )),
        Box::new(slo::SloCheck::new(s.slo.clone())),
    ];
    v.retain(|c| !s.disabled.contains(c.name()));
    v
}

/// A set of checkers fed one history in order. It keeps every violation's checker and the
/// first violation with the index of the record that caused it.
pub struct Panel {
    checkers: Vec<Box<dyn Checker + Send>>,
    first: Option<(Violation, usize)>,
    violated: BTreeSet<&'static str>,
}

impl Panel {
    pub fn new(checkers: Vec<Box<dyn Checker + Send>>) -> Panel {
        Panel {
            checkers,
            first: None,
            violated: BTreeSet::new(),
        }
    }

    /// The checkers' names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.checkers.iter().map(|c| c.name()).collect()
    }

    /// Every checker sees `event` (record number `at`); the violations it caused.
    pub fn observe(&mut self, event: &Event, at: usize) -> Vec<Violation> {
        self.each(at, |c| c.observe(event))
    }

    /// The end of the history: every checker's final judgement; the violations.
    pub fn finish(&mut self, at: usize) -> Vec<Violation> {
        self.each(at, |c| c.finish())
    }

    fn each(
        &mut self,
        at: usize,
        mut f: impl FnMut(&mut dyn Checker) -> Result<(), String>,
    ) -> Vec<Violation> {
        let mut found = Vec::new();
        for c in &mut self.checkers {
            if let Err(detail) = f(c.as_mut()) {
                found.push(Violation {
                    checker: c.name(),
                    class: c.class(),
                    detail,
                });
            }
        }
        for v in &found {
            self.violated.insert(v.checker);
            if self.first.is_none() {
                self.first = Some((v.clone(), at));
            }
        }
        found
    }

    /// The first violation and where it was seen.
    pub fn first(&self) -> Option<&(Violation, usize)> {
        self.first.as_ref()
    }

    /// Each checker's name and whether it held, in order.
    pub fn verdicts(&self) -> Vec<(&'static str, bool)> {
        self.checkers
            .iter()
            .map(|c| (c.name(), !self.violated.contains(c.name())))
            .collect()
    }

    /// The whole of a recorded history, judged: the failure of its first violation, if any.
    pub fn judge(mut self, history: &[Record]) -> Option<Failure> {
        for (i, r) in history.iter().enumerate() {
            self.observe(&r.event, i);
        }
        self.finish(history.len());
        self.first.map(|(v, _)| Failure::of(v))
    }
}

/// Whether `id` has the form of a memory id the server hands out (hex digits), as anything the
/// server names as a node must.
pub fn is_node_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// SPEC §1.5 invariant 1, as each server's engine reports it against its storage at the end.
pub fn engine_invariants(event: &Event) -> Result<(), String> {
    match event {
        Event::Op {
            server,
            answer: crate::event::Answer::Stats { total, counted },
            ..
        } if total != counted => Err(format!(
            "server-{server}: its statistics say total_memories {total}, but its spirals' node_count sum to {counted}"
        )),
        Event::EngineCheck {
            server,
            ok: false,
            detail,
        } => Err(format!("server-{server}: {detail}")),
        Event::EngineAtRest {
            server,
            pending,
            collecting,
        } if pending + collecting > 0 => Err(format!(
            "server-{server}: at rest its engine still holds {pending} store reservations and {collecting} removals in flight: an operation left them behind"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hand::run_each;

    #[test]
    fn an_engine_holding_operations_at_rest_is_caught() {
        let at_rest = |pending, collecting| Event::EngineAtRest {
            server: 0,
            pending,
            collecting,
        };
        run_each(engine_invariants, &[at_rest(0, 0)]).unwrap();
        let e = run_each(engine_invariants, &[at_rest(1, 0)]).unwrap_err();
        assert!(e.contains("1 store reservations"), "{e}");
        assert!(run_each(engine_invariants, &[at_rest(0, 2)]).is_err());
    }

    #[test]
    fn statistics_that_disagree_with_themselves_are_caught() {
        use crate::event::{Answer, Op};
        let stats =
            |total, counted| crate::hand::op(Op::Stats, Answer::Stats { total, counted }, 0);
        run_each(engine_invariants, &[stats(7, 7)]).unwrap();
        let e = run_each(engine_invariants, &[stats(0, 7)]).unwrap_err();
        assert!(e.contains("total_memories 0"), "{e}");
    }
}
