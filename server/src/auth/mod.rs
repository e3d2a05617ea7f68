//! Authentication (SPEC §1.2): JWT verification on the injected clock, token extraction, and the
//! state shared by every instance (token replay, revocation, rate-limit buckets).
//!
//! # Layout
//! - [`keys`] — HS256 / RS256 key sets: verify a token into [`Claims`], mint one.
//! - [`shared`] — [`Shared`]: rate-limit buckets, single-use `jti`s and revocations, in memory
//!   or in Redis (all instances then share them), falling back to memory while Redis is away.
//! - this module — claims, the rejection reasons, and where a token is read from.

pub mod keys;
pub mod shared;

use serde::{Deserialize, Serialize};

pub use keys::{KeyConfig, Keys};
pub use shared::{Shared, Unavailable};

/// Leeway on `exp` and `nbf` (s).
pub const LEEWAY_S: u64 = 60;

/// Scope the event stream requires.
pub const STREAM_SCOPE: &str = "metacog.stream";

/// The claims the server reads. `sub`, `exp`, `roles` and `tenant` are required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    pub roles: Vec<String>,
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// When the subject originally authenticated (unix seconds); `/auth/refresh` carries it over,
    /// so a chain of refreshes is bounded by `REFRESH_MAX_LIFETIME_S` from it and a revocation
    /// covers every token of the chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<u64>,
}

impl Claims {
    /// The required claims: `sub` in `tenant` with role `user`, expiring at `exp` (unix seconds).
    /// The optional ones are set with the methods below, so a token reads as what it is:
    /// `Claims::new("ada", "t1", exp).roles(&["user", "admin"]).jti("j1").issued_at(now)`.
    pub fn new(sub: impl Into<String>, tenant: impl Into<String>, exp: u64) -> Self {
        Claims {
            sub: sub.into(),
            exp,
            roles: vec!["user".to_owned()],
            tenant: tenant.into(),
            scope: None,
            jti: None,
            nbf: None,
            iat: None,
            auth_time: None,
        }
    }

    pub fn roles<R: AsRef<str>>(mut self, roles: &[R]) -> Self {
        self.roles = roles.iter().map(|r| r.as_ref().to_owned()).collect();
        self
    }

    /// Space-separated scopes, e.g. `metacog.stream`.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    pub fn jti(mut self, jti: impl Into<String>) -> Self {
        self.jti = Some(jti.into());
        self
    }

    /// `iat`, unix seconds.
    pub fn issued_at(mut self, iat: u64) -> Self {
        self.iat = Some(iat);
        self
    }

    /// When the chain of tokens this one belongs to began: `auth_time`, else `iat`.
    pub fn authenticated_at(&self) -> Option<u64> {
        self.auth_time.or(self.iat)
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope
            .as_deref()
            .is_some_and(|s| s.split(' ').any(|x| x == scope))
    }
}

/// Who a request acts for, once admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub claims: Claims,
    /// Admitted without a token (`ALLOW_ANONYMOUS_WS`).
    pub anonymous: bool,
}

impl Principal {
    pub fn anonymous() -> Self {
        Self {
            claims: Claims::new("anonymous", "anonymous", u64::MAX).roles::<&str>(&[]),
            anonymous: true,
        }
    }

    pub fn user(&self) -> &str {
        &self.claims.sub
    }

    pub fn tenant(&self) -> &str {
        &self.claims.tenant
    }
}

/// Why a token was refused. Each is answered with 401 and counted by its [`label`](Self::label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reject {
    Missing,
    /// Not three base64url parts of JSON.
    Malformed,
    BadSignature,
    /// `alg` is not one the server is configured for (`none`, HS/RS confusion, anything else).
    BadAlgorithm,
    Expired,
    NotYetValid,
    MissingClaims,
    Revoked,
    Blocked,
    Replayed,
    /// Shared state could not be checked (Redis unreachable) and the server fails closed
    /// (`AUTH_FAIL_CLOSED`): 503 `storage_unavailable`, not 401 — the token may be fine.
    Unavailable,
}

impl Reject {
    pub const ALL: [Reject; 11] = [
        Reject::Missing,
        Reject::Malformed,
        Reject::BadSignature,
        Reject::BadAlgorithm,
        Reject::Expired,
        Reject::NotYetValid,
        Reject::MissingClaims,
        Reject::Revoked,
        Reject::Blocked,
        Reject::Replayed,
        Reject::Unavailable,
    ];

    /// The `status` label of `spiral_ws_auth_attempts_total`.
    pub fn label(self) -> &'static str {
        match self {
            Reject::Missing => "missing_token",
            Reject::Malformed => "malformed",
            Reject::BadSignature => "bad_signature",
            Reject::BadAlgorithm => "bad_algorithm",
            Reject::Expired => "expired",
            Reject::NotYetValid => "not_yet_valid",
            Reject::MissingClaims => "missing_claims",
            Reject::Revoked => "revoked",
            Reject::Blocked => "blocked",
            Reject::Replayed => "replayed",
            Reject::Unavailable => "unavailable",
        }
    }

    /// The message a client sees: what is wrong, never how the server checked it.
    pub fn message(self) -> &'static str {
        match self {
            Reject::Missing => "a token is required",
            Reject::Malformed => "the token is not a JWT",
            Reject::BadSignature => "the token's signature is not valid",
            Reject::BadAlgorithm => "the token's algorithm is not accepted",
            Reject::Expired => "the token has expired",
            Reject::NotYetValid => "the token is not valid yet",
            Reject::MissingClaims => "the token lacks a required claim (sub, exp, roles, tenant)",
            Reject::Revoked => "the token has been revoked",
            Reject::Blocked => "this user is blocked",
            Reject::Replayed => "the token has already been used for a connection",
            Reject::Unavailable => "the token cannot be checked now; retry later",
        }
    }
}

/// The token of a request: `Authorization: Bearer`, then the `token` query parameter, then (for
/// WebSocket handshakes) a `Sec-WebSocket-Protocol` entry that looks like a JWT.
pub fn token_from(
    authorization: Option<&str>,
    query: Option<&str>,
    ws_protocols: Option<&str>,
) -> Option<String> {
    if let Some(v) = authorization {
        let v = v.trim();
        if let Some(t) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
        {
            return Some(t.trim().to_owned());
        }
    }
    if let Some(q) = query {
        for pair in q.split('&') {
            if let Some(t) = pair.strip_prefix("token=") {
                return Some(percent_decode(t));
            }
        }
    }
    ws_protocols.and_then(|p| {
        p.split(',')
            .map(str::trim)
            .find(|s| looks_like_jwt(s))
            .map(str::to_owned)
    })
}

/// Three non-empty-header dot-separated parts: a JWT, as opposed to a subprotocol name.
pub fn looks_like_jwt(s: &str) -> bool {
    s.split('.').count() == 3 && !s.starts_with('.')
}

/// Query values are percent-encoded; JWTs normally are not, but a client may encode anyway.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[cfg(not(spiral_loom))]
mod tests {
    use super::*;

    #[test]
    fn token_sources_in_order() {
        assert_eq!(
            token_from(Some("Bearer a.b.c"), Some("token=x.y.z"), None).as_deref(),
            Some("a.b.c")
        );
        assert_eq!(
            token_from(None, Some("x=1&token=x.y.z"), None).as_deref(),
            Some("x.y.z")
        );
        assert_eq!(
            token_from(None, None, Some("spiral, h.p.s")).as_deref(),
            Some("h.p.s")
        );
        assert_eq!(token_from(None, None, Some("spiral")), None);
        assert_eq!(token_from(Some("Basic abc"), None, None), None);
        assert_eq!(percent_decode("a%2Eb%zz%"), "a.b%zz%");
    }

    #[test]
    fn scopes_are_space_separated() {
        let mut c = Principal::anonymous().claims;
        c.scope = Some("read metacog.stream".into());
        assert!(c.has_scope(STREAM_SCOPE));
        c.scope = Some("metacog.streamx".into());
        assert!(!c.has_scope(STREAM_SCOPE));
    }
}
