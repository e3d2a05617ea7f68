//! The records of a run. Every world writes the same ones; the checkers read nothing else.
//!
//! A [`Record`] is an [`Event`] at a time (milliseconds since the run started, on the world's
//! clock) and is one JSON line of the trace: `{"t_ms":…,"ev":"op",…}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use spiral_server::protocol::{BreakerState, ErrorCode, Reply};

use crate::fault::FaultKind;

/// How a client's token was made, and so whether the server must accept it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    Valid,
    /// Signed with another key.
    Forged,
    /// `alg: none`, no signature.
    AlgNone,
    /// Not a JWT at all.
    Garbage,
    /// Signed with the right key, but a required claim is empty (`tenant: ""`).
    MissingClaims,
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

/// A well-behaved client's operation: what it asked, with what the checkers need to judge the
/// answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Op {
    /// `memory.store` of `content` at `priority` (none: the server's default).
    Store {
        content: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        priority: Option<i64>,
    },
    /// `memory.get` of one of the client's own ids.
    Get { id: String },
    /// `memory.get` of an id another tenant stored.
    ForeignGet { id: String },
    /// A collect of another tenant's id: must be `not_found`, and the node stays.
    ForeignCollect { id: String },
    /// `memory.collect` of one of the client's own ids.
    Collect { id: String },
    /// `memory.list`.
    List,
    /// `spiral.stats`.
    Stats,
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Store { .. } => "store",
            Op::Get { .. } => "get",
            Op::ForeignGet { .. } => "foreign_get",
            Op::ForeignCollect { .. } => "foreign_collect",
            Op::Collect { .. } => "collect",
            Op::List => "list",
            Op::Stats => "stats",
        }
    }

    /// The id the operation is about, if any.
    pub fn target(&self) -> Option<&str> {
        match self {
            Op::Get { id }
            | Op::ForeignGet { id }
            | Op::Collect { id }
            | Op::ForeignCollect { id } => Some(id),
            Op::Store { .. } | Op::List | Op::Stats => None,
        }
    }
}

/// What came back for an [`Op`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Answer {
    /// Nothing: the connection broke or the answer did not come in time. The operation may or
    /// may not have happened.
    Lost { error: String },
    /// A store, acknowledged under `id`.
    Stored { id: String },
    /// A read returned `content`.
    Read { content: Value },
    /// A collect succeeded.
    Collected,
    /// A list or the statistics: how many items it held, and for a list the ids it named (each
    /// as its JSON text when it is not a string), which `tenant_isolation` judges.
    Listed {
        items: usize,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ids: Vec<String>,
    },
    /// The statistics: the engine's `total_memories`, and the sum of its spirals' `node_count`
    /// (SPEC §1.5 invariant 1: equal, in every answer).
    Stats { total: u64, counted: u64 },
    /// An error envelope.
    Error { code: ErrorCode, message: String },
    /// A result of the wrong shape for its operation: the server broke the protocol.
    Malformed { detail: String },
}

impl Answer {
    /// The answer to `op` that a client read (`Err`: why no reply came).
    pub fn of(op: &Op, reply: Result<Reply, String>) -> Answer {
        let data = match reply {
            Err(error) => return Answer::Lost { error },
            Ok(Reply::Error { error, .. }) => {
                return Answer::Error {
                    code: error.code,
                    message: error.message,
                };
            }
            Ok(Reply::Result { data, .. }) => data,
        };
        let malformed = |what: &str| Answer::Malformed {
            detail: format!("a {} result without {what}: {data}", op.name()),
        };
        match op {
            Op::Store { .. } => match data["id"].as_str() {
                Some(id) => Answer::Stored { id: id.to_owned() },
                None => malformed("an `id`"),
            },
            Op::Get { .. } | Op::ForeignGet { .. } => match data.get("content") {
                Some(c) => Answer::Read { content: c.clone() },
                None => malformed("`content`"),
            },
            Op::Collect { .. } | Op::ForeignCollect { .. } => Answer::Collected,
            Op::List => match data["ids"].as_array() {
                Some(ids) => Answer::Listed {
                    items: ids.len(),
                    ids: ids
                        .iter()
                        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                        .collect(),
                },
                None => malformed("`ids`"),
            },
            Op::Stats => {
                let counted = data["spirals"].as_array().and_then(|s| {
                    s.iter()
                        .map(|sp| sp["node_count"].as_u64())
                        .sum::<Option<u64>>()
                });
                match (data["total_memories"].as_u64(), counted) {
                    (Some(total), Some(counted)) => Answer::Stats { total, counted },
                    _ => malformed("`total_memories` and each spiral's `node_count`"),
                }
            }
        }
    }

    /// Whether any answer came (the server saw the operation).
    pub fn answered(&self) -> bool {
        !matches!(self, Answer::Lost { .. })
    }

    /// A result (not an error envelope, not lost).
    pub fn is_result(&self) -> bool {
        matches!(
            self,
            Answer::Stored { .. }
                | Answer::Read { .. }
                | Answer::Collected
                | Answer::Listed { .. }
                | Answer::Stats { .. }
                | Answer::Malformed { .. }
        )
    }

    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            Answer::Error { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Where a run is. A world records each phase as it begins, in this order: faults are on during
/// [`Phase::Safety`]; [`Phase::Liveness`] begins when the last fault has healed, and every
/// client must complete work within the bound; [`Phase::Final`] comes after the workload, when
/// the servers have settled, and holds the end-of-run checks (engine, breakers, durability).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Safety,
    Liveness,
    Final,
}

/// One thing the run saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Event {
    /// The server settings this run drew (`[server]`), before anything else happened.
    Settings { values: BTreeMap<String, u64> },
    /// A phase of the run began at `at_ms`.
    Phase { phase: Phase, at_ms: u64 },
    /// A well-behaved client's operation and its answer.
    Op {
        client: u32,
        user: String,
        tenant: String,
        server: u32,
        op: Op,
        sent_ms: u64,
        done_ms: u64,
        answer: Answer,
    },
    /// A WebSocket handshake.
    Connect {
        client: u32,
        server: u32,
        token: TokenKind,
        jti: Option<String>,
        /// The token's `exp` (unix s), when it had a readable one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exp: Option<u64>,
        accepted: bool,
        status: Option<u16>,
        error: Option<String>,
    },
    /// The rate-limit headers of an authenticated HTTP answer (SPEC §1.3), with the server's
    /// wall clock just before the request went out and just after its answer came; `steady`
    /// when no clock fault moved that clock in between.
    RateHeaders {
        client: u32,
        server: u32,
        path: String,
        status: u16,
        limit: u64,
        remaining: u64,
        reset_s: u64,
        /// A refusal's `retry_after_ms` (its body's).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
        sent_server_ms: u64,
        answered_server_ms: u64,
        steady: bool,
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
    /// A connection ended the way a client provoked; `expected` lists the acceptable close
    /// codes, `got` the one that came (none: no close frame).
    Closed {
        client: u32,
        server: u32,
        why: String,
        expected: Vec<u16>,
        got: Option<u16>,
        after_ms: u64,
        /// A link fault (partition, hold, crash, restart) was in effect while the client waited:
        /// a close frame may have been lost with the link, so the outcome is not judged. Also set
        /// when the close could not reach the peer whatever the server did (a non-reading peer
        /// whose heartbeat close was due first: the close frame waits behind a full window).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        disturbed: bool,
    },
    /// A malformed frame and what came back (`None`: nothing readable); `alive` is whether the
    /// connection still worked.
    BadFrame {
        client: u32,
        server: u32,
        frame: String,
        answer: Option<Reply>,
        alive: bool,
        /// A link fault was in effect meanwhile: a missing answer or a dead connection may be
        /// the network's doing, so only an answer that came is judged.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        disturbed: bool,
    },
    /// A careless client sent a whole HTTP request and hung up `after_ms` later without reading
    /// the answer (the server may have been in the middle of it).
    Abandoned {
        client: u32,
        server: u32,
        method: String,
        path: String,
        after_ms: u64,
    },
    /// A burst of binary frames from one user on one connection, sent back to back: how many the
    /// server let past its message limiter (answered with anything but `rate_limited`) within
    /// `span_ms` (from the first send to the last answer, by the world's clock or the server's,
    /// whichever moved further: the bucket refills by the server's).
    BinaryBurst {
        client: u32,
        server: u32,
        user: String,
        sent: u32,
        admitted: u32,
        span_ms: u64,
        /// Redis was faulty during the burst: each instance may have decided from its own
        /// bucket (the SPEC's fallback), so the shared bound is not judged.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        disturbed: bool,
    },
    /// `POST /auth/refresh` by a client whose token chain began at `chain_start_s` (the `iat` of
    /// the token the harness minted for it): the new token's `jti` and `exp` when it got one,
    /// else the status (none: no answer).
    Refresh {
        client: u32,
        server: u32,
        user: String,
        chain_start_s: u64,
        jti: Option<String>,
        exp: Option<u64>,
        status: Option<u16>,
    },
    /// A connection flood: how many connections were accepted before the first 503.
    Flood {
        client: u32,
        server: u32,
        accepted: u32,
        refused_503: bool,
        cap: usize,
        /// The places (admitted handshakes and open WebSockets) the server counted under its
        /// cap once the flood's handshakes were done, everyone's (none: the server was down).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        places: Option<u64>,
    },
    /// One user's connections past its cap (`SPIRAL_MAX_CONNECTIONS_PER_USER`): `opened`
    /// handshakes at once (on both WebSocket ports), of which `accepted` got in, `refused_429`
    /// were refused with 429 and `refused_other` with another status (the rest got no HTTP
    /// answer); `retry_after_ms` is the smallest a 429 carried (none: a 429 came without one, or
    /// none came). Once every connection was closed, the user tries again until it gets in, within
    /// the time a server takes to drop a peer that vanished: `rejoined` is whether it got in (none:
    /// the last try had no HTTP answer, or the user's handshake bucket could not afford the tries —
    /// the world never lets a rejoin run the bucket dry, so a refusal there is the cap's).
    Hog {
        client: u32,
        server: u32,
        user: String,
        opened: u32,
        accepted: u32,
        refused_429: u32,
        retry_after_ms: Option<u64>,
        refused_other: Vec<u16>,
        rejoined: Option<bool>,
        /// A link or Redis fault was in effect during the attack: a refusal other than 429 (a
        /// 503 from a server failing closed) and a failed rejoin are not judged; the cap is.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        disturbed: bool,
    },
    /// What a server's breaker reports of itself when the server stops or the run ends: the
    /// `breaker_state` gauge and `opens_total`, beside what its transition log holds — how many
    /// opens, and the state of the last transition (none: it never left closed). `complete` when
    /// the log holds every transition it made.
    BreakerStatus {
        server: u32,
        gauge: u8,
        opens_total: u64,
        opens_logged: u64,
        last: Option<BreakerState>,
        complete: bool,
    },
    /// Fair shares at a GC pass's selection (only for a pass that selected something): each
    /// tenant's share of the capacity, and what every tenant holding nodes held and gave up.
    GcShares {
        server: u32,
        /// The share the server used.
        share: u64,
        tenants: Vec<TenantShare>,
        /// The server's capacity (the world's setting): the fair share is this ÷ the tenants.
        #[serde(default)]
        max_nodes: u64,
    },
    /// A tenant crowding the engine: a bad client stored `sent` nodes at the top priority
    /// (`stored` acknowledged), after one store at a priority past the top, whose answer was
    /// `probe` (`stored`, an error code, or none: no answer).
    Crowd {
        client: u32,
        server: u32,
        tenant: String,
        priority: i64,
        probe: Option<String>,
        sent: u32,
        stored: u32,
    },
    /// A reconnect storm: one user connected `rounds` times in a row, hanging up (or vanishing)
    /// each time; `accepted` got in, `refused` did not. A second after the last hang-up the
    /// server held `held_after` connections for the user (none: the server was down).
    Storm {
        client: u32,
        server: u32,
        user: String,
        rounds: u32,
        accepted: u32,
        refused: u32,
        held_after: Option<u64>,
        /// A link fault was in effect meanwhile (a hang-up may not have reached the server).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        disturbed: bool,
    },
    /// One user sent `sent` authenticated HTTP requests to one server: back to back until the
    /// HTTP bucket of `capacity` refused one, two more while blocked, then one after waiting out
    /// the last refusal's `retry_after_ms` (`Some(None)`: a 429 without it; `None`: no 429 came).
    /// `admitted` were not refused, the last `span_ms` after the first was sent; `after_block`
    /// is the status of the request after the wait (none: not sent or not answered).
    HttpFlood {
        client: u32,
        server: u32,
        user: String,
        capacity: u64,
        sent: u32,
        admitted: u32,
        span_ms: u64,
        retry_after_ms: Option<Option<u64>>,
        after_block: Option<u16>,
        /// A Redis or link fault, or a clock fault on the server, meanwhile.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        disturbed: bool,
    },
    /// Sockets a bad client opened to one port of a server and then left alone: `kind` "half
    /// header" sent half a request header and nothing more; "idle keep-alive" sent one whole
    /// request, read its answer and sent nothing more. `closed` of the `opened` sockets were closed
    /// by the server within `within_ms` of going quiet (its header or idle timeout plus slack).
    /// On a WebSocket port the sockets fill the connection cap (`opened` is the cap): `probe` is
    /// what a valid handshake got while they were held — `Some(true)` admitted, `Some(false)`
    /// refused with 503 (none: no HTTP answer, or not tried).
    SlowSockets {
        client: u32,
        server: u32,
        port: u16,
        kind: String,
        opened: u32,
        closed: u32,
        within_ms: u64,
        probe: Option<bool>,
        /// A link fault was in effect meanwhile (a crash or restart frees the cap, a cut link
        /// eats the close): not judged.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        disturbed: bool,
    },
    /// At quiescence (the final phase, every client finished): what a live server's connection
    /// table still counts — places under the connection cap (`open`: admitted handshakes and
    /// open connections) and registered subjects (`users`, the `ws_active_users` gauge) — after
    /// it had `waited_ms` to let the last connections end. Both must be back to 0.
    ConnectionsAtRest {
        server: u32,
        open: usize,
        users: usize,
        waited_ms: u64,
    },
    /// At quiescence, a server still not serving `waited_ms` after the workload ended (every
    /// fault healed before): it never came back from a crash or a stop — e.g. a boot that
    /// waits on storage which answers again, but whose breaker never lets it find out.
    NotServing { server: u32, waited_ms: u64 },
    /// The degraded journal, looked at after an operation: holding more than `JOURNAL_MAX`
    /// (`max`) plus `slack` — the writes that can be in flight when an outage begins, which are
    /// journaled past the bound rather than refused — or reporting a bound (`reported`) outside
    /// `max..=max + slack` (a journal left by an earlier run is loaded whole). Recorded once per
    /// server, only when it happens.
    JournalBound {
        server: u32,
        len: usize,
        reported: usize,
        max: usize,
        slack: usize,
    },
    /// At quiescence, once every bucket of the run is idle (full again and not blocked: the
    /// world waited out the longest window and block since its last request), a request from a
    /// user the server has not seen, then how many rate-limit buckets the server holds in
    /// memory. A limiter bounded by `bound` (`SPIRAL_RATE_LIMIT_BUCKETS`) that swept its idle
    /// buckets holds at most `bound`.
    LimiterAtRest {
        server: u32,
        buckets: u64,
        bound: u64,
    },
    /// A GC pass of a server's engine.
    Gc {
        server: u32,
        pause_ms: f64,
        budget_ms: u64,
        collected: usize,
        /// How far over its capacity the engine was when the pass selected (none: not known).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        excess: Option<u64>,
        /// When the pass started (simulated ms: its end less its pause; none: not known).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        started_ms: Option<u64>,
        /// Nodes the pass spared for a second chance (none: not known).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        spared: Option<u64>,
    },
    /// A node removed by GC (a legal disappearance), with the tenant the engine announced it
    /// for: its event stream tells that tenant, and only it (none: not known).
    GcRemoved {
        server: u32,
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tenant: Option<String>,
    },
    /// A server stopped (crash or bounce) while removing these nodes — GC passes or collects in
    /// flight, whose removal events died with it: each may or may not be gone.
    RemovalsInFlight { server: u32, ids: Vec<String> },
    /// A breaker transition of a server's storage. For open → half_open, `open_ms` is how long
    /// the breaker had been open (none: its opening is not on record).
    Breaker {
        server: u32,
        from: BreakerState,
        to: BreakerState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        open_ms: Option<u64>,
        /// Closed → open: the consecutive failed storage calls that opened it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failures: Option<u32>,
    },
    /// A fault fired.
    Fault {
        kind: FaultKind,
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
    /// At the end, without Redis: of the `admitted` handshake `jti`s a server admitted during the
    /// run (restarts included), how many it no longer knows as used (`forgotten_count`; the
    /// first few in `forgotten`) — each one it would admit again.
    SharedDurable {
        server: u32,
        backend: String,
        admitted: u64,
        forgotten_count: u64,
        forgotten: Vec<String>,
    },
    /// At quiescence (the final phase), a server's engine asked for GC passes on demand:
    /// whether one could start at all (`false`: one is marked running and never ends), and how
    /// many nodes it holds afterwards against its capacity.
    GcQuiescent {
        server: u32,
        started: bool,
        total: u64,
        max_nodes: u64,
    },
    /// At quiescence, after the on-demand GC: the capacity trigger tried. With the engine at
    /// capacity (`before` nodes, no pass running, nothing else in flight) one more store was
    /// made; `ran` is whether a GC pass ran before that store was answered, `after` the nodes
    /// held once it was. SPEC §1.5: GC is triggered when over capacity, not only every
    /// `gcTriggerInterval` operations.
    GcCapacityTrigger {
        server: u32,
        before: u64,
        max_nodes: u64,
        ran: bool,
        after: u64,
    },
    /// At quiescence, after the on-demand GC: what a server's engine still holds in the middle of
    /// an operation — stores reserved and never committed or rolled back (`pending`), removals
    /// never finished (`collecting`). Both must be 0: every operation completes or is undone,
    /// whoever went away (SPEC §1.9).
    EngineAtRest {
        server: u32,
        pending: u64,
        collecting: u64,
    },
    /// An acknowledged store, looked up in durable storage at the end.
    Durable {
        id: String,
        server: u32,
        found: bool,
    },
    /// A node in durable storage at the end (server: whose storage; 0 when every server shares
    /// one) that no store was acknowledged for, with the `client` and `seq` its content names
    /// (none: content a well-behaved client did not write). Only these are recorded.
    UnackedAtRest {
        server: u32,
        id: String,
        client: Option<u32>,
        seq: Option<u64>,
    },
}

/// One tenant's holding at a GC selection (the server's figure), and how many of its nodes the
/// pass removed (in the simulator, the world's own count of the removals of nodes it saw that
/// tenant store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantShare {
    pub tenant: String,
    pub held: u64,
    pub taken: u64,
}

/// An event at a time: one line of the trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub t_ms: u64,
    #[serde(flatten)]
    pub event: Event,
}

impl Record {
    /// The trace line: `{"t_ms":…,` then the event's own fields, in one serialization.
    pub fn to_line(&self) -> String {
        let body = serde_json::to_string(&self.event).unwrap_or_default();
        format!(
            "{{\"t_ms\":{},{}",
            self.t_ms,
            body.strip_prefix('{').unwrap_or("}")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use spiral_server::protocol::ErrorBody;

    fn result(data: Value) -> Result<Reply, String> {
        Ok(Reply::Result { id: json!(1), data })
    }

    #[test]
    fn answers_are_read_by_the_operation_they_answer() {
        let store = Op::Store {
            content: json!("x"),
            priority: None,
        };
        assert_eq!(
            Answer::of(&store, result(json!({"id": "ab", "spiral": 3}))),
            Answer::Stored { id: "ab".into() }
        );
        assert!(matches!(
            Answer::of(&store, result(json!({}))),
            Answer::Malformed { .. }
        ));
        let get = Op::Get { id: "ab".into() };
        assert_eq!(
            Answer::of(&get, result(json!({"id": "ab", "content": {"n": 1}}))),
            Answer::Read {
                content: json!({"n": 1})
            }
        );
        let nf = Ok(Reply::Error {
            id: json!(2),
            error: ErrorBody {
                code: ErrorCode::NotFound,
                message: "no such memory".into(),
                retry_after_ms: None,
            },
        });
        let a = Answer::of(&get, nf);
        assert_eq!(a.error_code(), Some(ErrorCode::NotFound));
        assert!(a.answered() && !a.is_result());
        let lost = Answer::of(&get, Err("closed".into()));
        assert!(!lost.answered() && lost.error_code().is_none());
        assert_eq!(
            Answer::of(
                &Op::Stats,
                result(
                    json!({"total_memories": 5, "spirals": [{"node_count": 2}, {"node_count": 3}]})
                )
            ),
            Answer::Stats {
                total: 5,
                counted: 5
            }
        );
        assert!(matches!(
            Answer::of(&Op::Stats, result(json!({"spirals": [1, 2]}))),
            Answer::Malformed { .. }
        ));
        assert_eq!(
            Answer::of(&Op::List, result(json!({"ids": ["ab", 7]}))),
            Answer::Listed {
                items: 2,
                ids: vec!["ab".into(), "7".into()]
            }
        );
    }

    #[test]
    fn a_record_is_one_json_line_that_reads_back() {
        let r = Record {
            t_ms: 12,
            event: Event::Breaker {
                server: 1,
                from: BreakerState::Open,
                to: BreakerState::HalfOpen,
                open_ms: None,
                failures: None,
            },
        };
        let line = r.to_line();
        assert_eq!(
            line,
            r#"{"t_ms":12,"ev":"breaker","server":1,"from":"open","to":"half_open"}"#
        );
        assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), r);
    }
}
