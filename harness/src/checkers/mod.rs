//! The checkers: each one watches the run's observations ([`Obs`]) as they happen and says when
//! a property breaks. One module per property; `world` feeds them, the verdict takes the first
//! violation. Each is unit-tested against a hand-made observation stream that breaks it, so none
//! is a check that cannot fail.
//!
//! | checker | property | class |
//! |---|---|---|
//! | `engine_invariants` | SPEC §1.5 invariant 1 on every live server at the end | correctness |
//! | `acked_writes` | an acknowledged store is readable until collected (by a client or GC) | correctness |
//! | `reads` | no read returns a value never written | correctness |
//! | `tenant_isolation` | another tenant's id is `not_found`, never data | correctness |
//! | `auth` | no handshake or request with an invalid, replayed or revoked token is accepted; tokens at the expiry edge are judged by the server's clock | correctness |
//! | `rate_limit` | accepted operations per user never exceed the bucket | correctness |
//! | `breaker` | every breaker transition is legal (never open → closed) | correctness |
//! | `gc_budget` | a GC pass stays within its time budget (simulated time) | correctness |
//! | `close_codes` | a silent peer is closed with 4001, an idle one with 4000, an oversized frame with 1009, a revoked subject with 4003 | correctness |
//! | `bad_input` | malformed frames get an error envelope and the connection stays up | correctness |
//! | `liveness` | after the last fault heals, every client completes work within a bound | liveness |
//! | `slo` | store p95 and error ratio within the scenario's SLOs | liveness |

pub mod acked_writes;
pub mod auth;
pub mod bad_input;
pub mod breaker;
pub mod close_codes;
pub mod gc_budget;
pub mod liveness;
pub mod rate_limit;
pub mod reads;
pub mod slo;
pub mod tenant_isolation;

use serde::Serialize;
use serde_json::Value;
use spiral_server::protocol::ErrorCode;

use crate::scenario::Scenario;

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

/// How a client's token was made, and so whether the server must accept it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    Valid,
    /// Signed with another key.
    Forged,
    /// `alg: none`, no signature.
    AlgNone,
    /// Not a JWT at all.
    Garbage,
    /// Expired beyond the leeway by the server's clock.
    Expired,
    /// Expired, but within the 60 s leeway by the server's clock: must be accepted.
    EdgeValid,
    /// A `jti` already used for a handshake.
    Replayed,
    /// The right outcome is not determined: one token offered to several servers at once (at
    /// most one may admit it), or a server clock that jumped during the attempt.
    Uncertain,
    /// Its subject was revoked after it was issued.
    Revoked,
    /// No token at all.
    Missing,
}

impl TokenKind {
    pub fn must_accept(self) -> bool {
        matches!(self, TokenKind::Valid | TokenKind::EdgeValid)
    }
}

/// One thing the run saw. Serialized into the trace, one JSON line each.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Obs {
    /// A client operation and its answer (`answer` is null when the connection broke first).
    Op {
        client: u32,
        user: String,
        tenant: String,
        server: u32,
        op: String,
        target: Option<String>,
        content: Option<Value>,
        sent_ms: u64,
        done_ms: u64,
        answer: Value,
        error: Option<String>,
    },
    /// A WebSocket handshake.
    Connect {
        client: u32,
        server: u32,
        token: TokenKind,
        jti: Option<String>,
        accepted: bool,
        status: Option<u16>,
        error: Option<String>,
    },
    /// An HTTP request of a bad client.
    Http {
        client: u32,
        server: u32,
        method: String,
        path: String,
        token: TokenKind,
        status: u16,
    },
    /// A connection ended the way a client provoked; `expected` lists the acceptable codes.
    Closed {
        client: u32,
        server: u32,
        why: String,
        expected: Vec<u16>,
        got: Option<u16>,
        after_ms: u64,
    },
    /// A malformed frame and what came back; `alive` is whether the connection still worked.
    BadFrame {
        client: u32,
        server: u32,
        frame: String,
        answer: Value,
        alive: bool,
    },
    /// A connection flood: how many connections were accepted before the first 503.
    Flood {
        client: u32,
        server: u32,
        accepted: u32,
        refused_503: bool,
        cap: usize,
    },
    /// A GC pass of a server's engine.
    Gc {
        server: u32,
        pause_ms: f64,
        budget_ms: u64,
        collected: usize,
    },
    /// A node removed by GC (a legal disappearance).
    GcRemoved { server: u32, id: String },
    /// A breaker transition of a server's storage.
    Breaker {
        server: u32,
        from: String,
        to: String,
    },
    /// A fault fired.
    Fault {
        kind: String,
        a: Option<String>,
        b: Option<String>,
        detail: Option<String>,
    },
    /// A server's engine against its storage at the end.
    EngineCheck {
        server: u32,
        ok: bool,
        detail: String,
    },
    /// Where a server's shared state (rate limits, `jti`s, revocations) was decided: how many
    /// decisions fell back to the instance's memory because Redis could not be reached.
    SharedState {
        server: u32,
        backend: String,
        fallbacks: u64,
    },
    /// An acknowledged store, looked up in durable storage at the end.
    Durable {
        id: String,
        server: u32,
        found: bool,
    },
    /// The workload ended (liveness and SLOs are judged here).
    End { last_heal_ms: u64 },
}

/// A property watcher. `observe` sees every observation in order; `finish` runs once at the end.
pub trait Checker {
    fn name(&self) -> &'static str;
    fn class(&self) -> Class {
        Class::Correctness
    }
    /// `Err(detail)` on the first observation that breaks the property.
    fn observe(&mut self, obs: &Obs) -> Result<(), String>;
    fn finish(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// Every enabled checker of `scenario`, fresh.
pub fn all(scenario: &Scenario) -> Vec<Box<dyn Checker + Send>> {
    let clients = scenario.world.clients - scenario.workload.bad_clients;
    let wl = &scenario.workload;
    // The world's servers run the default WebSocket limit.
    let ws_rate = spiral_server::api::ServerConfig::default().ws_rate;
    let mut v: Vec<Box<dyn Checker + Send>> = vec![
        Box::new(EngineInvariants),
        Box::new(acked_writes::AckedWrites::default()),
        Box::new(reads::Reads::default()),
        Box::new(tenant_isolation::TenantIsolation),
        Box::new(auth::Auth::default()),
        Box::new(rate_limit::RateLimit::new(
            ws_rate.capacity,
            ws_rate.window_ms,
        )),
        Box::new(breaker::Breaker),
        Box::new(gc_budget::GcBudget::new(scenario.checks.gc_grace_ms)),
        Box::new(close_codes::CloseCodes),
        Box::new(bad_input::BadInput),
        Box::new(liveness::Liveness::new(
            clients,
            (scenario.checks.liveness_within_s * 1000.0) as u64,
            scenario.world.duration_s * 1000,
            wl.max_ops_per_client.is_some(),
        )),
        Box::new(slo::SloCheck::new(scenario.slo.clone())),
    ];
    v.retain(|c| scenario.enabled(c.name()));
    v
}

/// SPEC §1.5 invariant 1, as each server's engine reports it against its storage at the end.
pub struct EngineInvariants;

impl Checker for EngineInvariants {
    fn name(&self) -> &'static str {
        "engine_invariants"
    }
    fn observe(&mut self, obs: &Obs) -> Result<(), String> {
        match obs {
            Obs::EngineCheck {
                server,
                ok: false,
                detail,
            } => Err(format!("server-{server}: {detail}")),
            _ => Ok(()),
        }
    }
}

/// The error code of an error envelope, if it is one (an envelope without a readable code is
/// [`ErrorCode::Unknown`]).
pub fn error_code(answer: &Value) -> Option<ErrorCode> {
    (answer["type"] == "error").then(|| ErrorCode::of(answer).unwrap_or(ErrorCode::Unknown))
}

pub fn is_result(answer: &Value) -> bool {
    answer["type"] == "result"
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use serde_json::json;

    /// A successful operation of client 0 (user-0, tenant-0, server 0) at `t` ms.
    pub fn op(
        op: &str,
        target: Option<&str>,
        content: Option<Value>,
        answer: Value,
        t: u64,
    ) -> Obs {
        Obs::Op {
            client: 0,
            user: "user-0".into(),
            tenant: "tenant-0".into(),
            server: 0,
            op: op.into(),
            target: target.map(str::to_owned),
            content,
            sent_ms: t,
            done_ms: t + 1,
            answer,
            error: None,
        }
    }

    pub fn result(data: Value) -> Value {
        json!({"type": "result", "data": data})
    }

    pub fn error(code: &str) -> Value {
        json!({"type": "error", "error": {"code": code}})
    }

    /// Feed `obs` in order; the first violation, if any.
    pub fn run(c: &mut dyn Checker, obs: &[Obs]) -> Result<(), String> {
        for o in obs {
            c.observe(o)?;
        }
        c.finish()
    }
}
