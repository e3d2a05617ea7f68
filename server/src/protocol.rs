//! The wire protocol's fixed vocabulary, defined once for the server and for every client of it
//! (the harness's simulated and real clients, `spiral tail`, the load generator).
//!
//! So far: the WebSocket close codes the server sends (SPEC §1.4, RFC 6455 §7.4).

use std::fmt;

/// Why the server closed a WebSocket: the code of its close frame and the reason sent with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CloseCode {
    /// 1001: the server is shutting down.
    GoingAway,
    /// 1002: a frame broke RFC 6455 (reserved bits, a bad opcode, a bad continuation, …).
    ProtocolError,
    /// 1007: a text message (or a close reason) that is not UTF-8.
    InvalidUtf8,
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
    pub const ALL: [CloseCode; 7] = [
        CloseCode::GoingAway,
        CloseCode::ProtocolError,
        CloseCode::InvalidUtf8,
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
