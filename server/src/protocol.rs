//! The wire protocol's fixed vocabulary, defined once for the server and for every client of it
//! (the harness's simulated and real clients, `spiral tail`, the load generator).
//!
//! - [`Command`]: what a client asks on the command channel (`{"id","command","args"}`), parsed
//!   by the server from the wire and built by clients with [`request`];
//! - [`Reply`]: what the server answers on the command channel (a result or an error envelope);
//! - [`Event`]: a frame of the event stream (`spiral tail`), named by [`EventKind`];
//! - [`ErrorCode`]: the `code` of every error envelope, HTTP and WebSocket alike (SPEC §1.1);
//! - [`BreakerState`]: the storage breaker's state, as `/status`, the event stream and the
//!   simulation's history name it;
//! - [`CloseCode`]: the WebSocket close codes the server sends (SPEC §1.4, RFC 6455 §7.4).
//!
//! The wire format is unchanged by these types: they name what was strings on both sides.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::engine::StoreRequest;

/// A command on the WebSocket command channel (SPEC §1.4): the same arguments as the REST
/// routes.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `memory.store`: the body of `POST /v1/memories`.
    MemoryStore(StoreRequest),
    /// `memory.get {id}`.
    MemoryGet { id: String },
    /// `memory.collect {id}`.
    MemoryCollect { id: String },
    /// `memory.list {limit?}` (default 100, at most 1000).
    MemoryList { limit: Option<usize> },
    /// `spiral.stats`: the body of `GET /v1/spirals`.
    SpiralStats,
    /// `ping`: `{"pong": true, "time_ms"}`.
    Ping,
}

/// Every command name, as the unknown-command error lists them.
pub const COMMAND_NAMES: [&str; 6] = [
    "memory.store",
    "memory.get",
    "memory.collect",
    "memory.list",
    "spiral.stats",
    "ping",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdArgs {
    id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    #[serde(default)]
    limit: Option<usize>,
}

fn args<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, String> {
    let v = if v.is_null() { json!({}) } else { v };
    serde_json::from_value(v).map_err(|e| format!("bad args: {e}"))
}

impl Command {
    /// The command's name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Command::MemoryStore(_) => "memory.store",
            Command::MemoryGet { .. } => "memory.get",
            Command::MemoryCollect { .. } => "memory.collect",
            Command::MemoryList { .. } => "memory.list",
            Command::SpiralStats => "spiral.stats",
            Command::Ping => "ping",
        }
    }

    /// The command's `args` on the wire (`null` for the commands that take none).
    pub fn args(&self) -> Value {
        match self {
            Command::MemoryStore(req) => {
                serde_json::to_value(req).expect("a StoreRequest serializes")
            }
            Command::MemoryGet { id } | Command::MemoryCollect { id } => json!({"id": id}),
            Command::MemoryList { limit: Some(l) } => json!({"limit": l}),
            Command::MemoryList { limit: None } => json!({}),
            Command::SpiralStats | Command::Ping => Value::Null,
        }
    }

    /// A command from its wire name and `args`; the error is the `bad_request` message.
    pub fn parse(name: &str, a: Value) -> Result<Command, String> {
        Ok(match name {
            "memory.store" => {
                if !a.is_object() {
                    return Err("args must be an object with `content`".into());
                }
                Command::MemoryStore(args(a)?)
            }
            "memory.get" => Command::MemoryGet {
                id: args::<IdArgs>(a)?.id,
            },
            "memory.collect" => Command::MemoryCollect {
                id: args::<IdArgs>(a)?.id,
            },
            "memory.list" => Command::MemoryList {
                limit: args::<ListArgs>(a)?.limit,
            },
            "spiral.stats" => Command::SpiralStats,
            "ping" => Command::Ping,
            other => {
                return Err(format!(
                    "unknown command {:?}; known: {}",
                    other.chars().take(64).collect::<String>(),
                    COMMAND_NAMES.join(", ")
                ));
            }
        })
    }
}

/// The text of a request envelope: `{"id", "command", "args"}`.
pub fn request(id: &Value, command: &Command) -> String {
    json!({"id": id, "command": command.name(), "args": command.args()}).to_string()
}

/// The `error` object of an error envelope (SPEC §1.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    #[serde(default)]
    pub message: String,
    /// How long to wait before retrying (`rate_limited`, a full server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// An answer on the command channel: `{"id","type":"result","data"}` or
/// `{"id","type":"error","error":{"code","message"}}`. `id` echoes the request's (null when the
/// request could not be read). `data` is the same object the REST route returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    Result {
        #[serde(default)]
        id: Value,
        data: Value,
    },
    Error {
        #[serde(default)]
        id: Value,
        error: ErrorBody,
    },
}

impl Reply {
    /// The reply as a JSON value (object keys in order: the bytes `json!` gave before).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// A reply read from a text frame; the error names what was wrong with it.
    pub fn parse(text: &str) -> Result<Reply, String> {
        serde_json::from_str(text).map_err(|e| format!("not a reply: {e}"))
    }

    /// The error code, for an error envelope.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            Reply::Error { error, .. } => Some(error.code),
            Reply::Result { .. } => None,
        }
    }

    /// The result's `data`, for a result.
    pub fn data(&self) -> Option<&Value> {
        match self {
            Reply::Result { data, .. } => Some(data),
            Reply::Error { .. } => None,
        }
    }
}

/// What an event-stream frame reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A memory was stored (the engine's `stored` event).
    Stored,
    /// A memory was collected, by a client or by GC.
    Collected,
    /// A GC pass ran.
    Gc,
    /// A statistics rebuild ran.
    Rebuild,
    /// The storage breaker changed state.
    Breaker,
    /// The stream's periodic heartbeat.
    Heartbeat,
    /// A kind this build does not know (another version's server).
    #[serde(other)]
    Unknown,
}

/// A frame of the event stream: `{"type":"event","event","data"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "event")]
pub struct Event {
    pub event: EventKind,
    #[serde(default)]
    pub data: Value,
}

impl Event {
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The storage breaker's state (SPEC §1.6).
pub use crate::resilience::StateKind as BreakerState;

/// The `code` of an error envelope (SPEC §1.1), the same on HTTP and WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Unauthorized,
    Forbidden,
    NotFound,
    BadRequest,
    PayloadTooLarge,
    RateLimited,
    StorageUnavailable,
    Timeout,
    Internal,
    /// A code this build does not know. The server never sends one; a client reading another
    /// version's answers may see one.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::StorageUnavailable => "storage_unavailable",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
        }
    }

    /// The code of an error envelope (`{"type":"error","error":{"code"}}` on the WebSocket,
    /// `{"error":{"code"}}` over HTTP), or `None` for anything else.
    pub fn of(answer: &Value) -> Option<ErrorCode> {
        let code = answer.get("error")?.get("code")?;
        Some(serde_json::from_value(code.clone()).unwrap_or(ErrorCode::Unknown))
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the server closed a WebSocket: the code of its close frame and the reason sent with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CloseCode {
    /// 1001: the server is shutting down.
    GoingAway,
    /// 1002: a frame broke RFC 6455 (reserved bits, a bad opcode, a bad continuation, …).
    ProtocolError,
    /// 1007: a text message (or a close reason) that is not UTF-8.
    InvalidUtf8,
    /// 1008: the peer does not read its answers: its outbound queue stayed at its bound for
    /// `WS_SLOW_CLIENT_MS`.
    PolicyViolation,
    /// 1009: a message over `SPIRAL_MAX_MESSAGE_SIZE`.
    TooBig,
    /// 4000: no data message for `WS_IDLE_TIMEOUT_MS`.
    IdleTimeout,
    /// 4001: two pings went unanswered.
    PongTimeout,
    /// 4003: the token or its subject was revoked.
    Revoked,
}

impl CloseCode {
    pub const ALL: [CloseCode; 8] = [
        CloseCode::GoingAway,
        CloseCode::ProtocolError,
        CloseCode::InvalidUtf8,
        CloseCode::PolicyViolation,
        CloseCode::TooBig,
        CloseCode::IdleTimeout,
        CloseCode::PongTimeout,
        CloseCode::Revoked,
    ];

    /// The number in the close frame.
    pub const fn code(self) -> u16 {
        match self {
            CloseCode::GoingAway => 1001,
            CloseCode::ProtocolError => 1002,
            CloseCode::InvalidUtf8 => 1007,
            CloseCode::PolicyViolation => 1008,
            CloseCode::TooBig => 1009,
            CloseCode::IdleTimeout => 4000,
            CloseCode::PongTimeout => 4001,
            CloseCode::Revoked => 4003,
        }
    }

    /// The reason text sent in the close frame.
    pub const fn reason(self) -> &'static str {
        match self {
            CloseCode::GoingAway => "server shutting down",
            CloseCode::ProtocolError => "protocol error",
            CloseCode::InvalidUtf8 => "invalid UTF-8",
            CloseCode::PolicyViolation => "too slow: answers not read",
            CloseCode::TooBig => "message too big",
            CloseCode::IdleTimeout => "idle timeout",
            CloseCode::PongTimeout => "no pong to two pings",
            CloseCode::Revoked => "token revoked",
        }
    }

    /// The close code of a close frame's number, if the server ever sends it.
    pub fn from_code(code: u16) -> Option<CloseCode> {
        CloseCode::ALL.into_iter().find(|c| c.code() == code)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_through_the_wire() {
        let store = StoreRequest {
            content: json!({"note": "ü", "n": [1, 2]}),
            priority: Some(3),
            ..StoreRequest::default()
        };
        let all = [
            Command::MemoryStore(store),
            Command::MemoryGet { id: "ab12".into() },
            Command::MemoryCollect { id: "ab12".into() },
            Command::MemoryList { limit: Some(20) },
            Command::MemoryList { limit: None },
            Command::SpiralStats,
            Command::Ping,
        ];
        for c in all {
            let text = request(&json!(7), &c);
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["id"], 7);
            assert!(COMMAND_NAMES.contains(&c.name()));
            let back = Command::parse(v["command"].as_str().unwrap(), v["args"].clone());
            assert_eq!(back.as_ref(), Ok(&c), "{text}");
        }
        // The store args carry only what is set (the wire stays as clients wrote it by hand).
        let text = request(
            &json!(1),
            &Command::MemoryStore(StoreRequest {
                content: json!("x"),
                priority: Some(2),
                ..StoreRequest::default()
            }),
        );
        assert_eq!(
            text,
            r#"{"args":{"content":"x","priority":2},"command":"memory.store","id":1}"#
        );
    }

    #[test]
    fn bad_commands_are_named_errors() {
        let err = |name: &str, a: Value| Command::parse(name, a).unwrap_err();
        assert!(err("memory.nope", json!({})).starts_with("unknown command \"memory.nope\""));
        assert!(err("memory.store", json!([1])).contains("`content`"));
        assert!(err("memory.get", json!({})).starts_with("bad args:"));
        assert!(err("memory.get", json!({"id": "a", "x": 1})).starts_with("bad args:"));
        assert_eq!(
            Command::parse("memory.list", Value::Null),
            Ok(Command::MemoryList { limit: None })
        );
    }

    #[test]
    fn error_codes_read_from_envelopes() {
        let ws = json!({"id": 1, "type": "error", "error": {"code": "not_found", "message": "x"}});
        assert_eq!(ErrorCode::of(&ws), Some(ErrorCode::NotFound));
        let http = json!({"error": {"code": "rate_limited", "retry_after_ms": 5}});
        assert_eq!(ErrorCode::of(&http), Some(ErrorCode::RateLimited));
        let odd = json!({"type": "error", "error": {"code": "teapot"}});
        assert_eq!(ErrorCode::of(&odd), Some(ErrorCode::Unknown));
        assert_eq!(ErrorCode::of(&json!({"type": "result", "data": {}})), None);
        for c in [
            ErrorCode::NotFound,
            ErrorCode::PayloadTooLarge,
            ErrorCode::Internal,
        ] {
            assert_eq!(serde_json::to_value(c).unwrap(), json!(c.as_str()));
        }
    }

    #[test]
    fn codes_round_trip_and_are_distinct() {
        for c in CloseCode::ALL {
            assert_eq!(CloseCode::from_code(c.code()), Some(c));
        }
        let mut codes: Vec<u16> = CloseCode::ALL.iter().map(|c| c.code()).collect();
        codes.dedup();
        assert_eq!(codes.len(), CloseCode::ALL.len());
        assert_eq!(CloseCode::from_code(1000), None);
    }
}
