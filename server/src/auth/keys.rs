//! Key sets and token verification. jsonwebtoken checks `exp`/`nbf` against the host's clock with
//! no hook, so its time checks are off and [`Keys::verify`] compares against the injected clock,
//! with [`LEEWAY_S`]. Every refusal maps to one [`Reject`] reason.

use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::Value;

use super::{Claims, LEEWAY_S, Reject};

/// Minimum HS256 secret length (bytes): the HMAC key should be as long as its hash.
pub const MIN_SECRET_LEN: usize = 32;

/// Where the keys come from; each field is named after its env var.
#[derive(Debug, Clone, Default)]
pub struct KeyConfig {
    /// `JWT_SECRET`: HS256 signing and verification.
    pub jwt_secret: Option<String>,
    /// `JWT_SECRET_PREVIOUS`: also accepted for verification during a rotation.
    pub jwt_secret_previous: Option<String>,
    /// `JWK`: RS256 public key(s): one JWK or a JWKS, inline JSON or a file path.
    pub jwk: Option<String>,
    /// `JWT_PRIVATE_KEY`: RS256 private key (PEM file) for minting, with `JWK`.
    pub jwt_private_key: Option<PathBuf>,
}

/// The server's keys.
#[derive(Clone)]
pub struct Keys {
    /// HS256 secrets, current first.
    hs: Vec<DecodingKey>,
    /// RS256 public keys with their `kid`.
    rs: Vec<(Option<String>, DecodingKey)>,
    signer: Option<Signer>,
}

#[derive(Clone)]
struct Signer {
    alg: Algorithm,
    key: EncodingKey,
    kid: Option<String>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Keys")
            .field("hs256_secrets", &self.hs.len())
            .field("rs256_keys", &self.rs.len())
            .field("signs", &self.signer.as_ref().map(|s| s.alg))
            .finish()
    }
}

impl Keys {
    /// HS256 with one secret: tests, the harness and `spiral token`.
    pub fn hs256(secret: &[u8]) -> Self {
        Self {
            hs: vec![DecodingKey::from_secret(secret)],
            rs: Vec::new(),
            signer: Some(Signer {
                alg: Algorithm::HS256,
                key: EncodingKey::from_secret(secret),
                kid: None,
            }),
        }
    }

    /// Build from configuration; an error names the variable at fault.
    pub fn from_config(cfg: &KeyConfig) -> Result<Self, String> {
        let secret = |var: &str, s: &Option<String>| -> Result<Option<Vec<u8>>, String> {
            match s.as_deref() {
                None | Some("") => Ok(None),
                Some(s) if s.len() < MIN_SECRET_LEN => Err(format!(
                    "{var}: must be at least {MIN_SECRET_LEN} bytes (got {})",
                    s.len()
                )),
                Some(s) => Ok(Some(s.as_bytes().to_vec())),
            }
        };
        let current = secret("JWT_SECRET", &cfg.jwt_secret)?;
        let previous = secret("JWT_SECRET_PREVIOUS", &cfg.jwt_secret_previous)?;
        if previous.is_some() && current.is_none() {
            return Err("JWT_SECRET_PREVIOUS: set only together with JWT_SECRET".into());
        }
        let mut keys = Self {
            hs: current
                .iter()
                .chain(previous.iter())
                .map(|s| DecodingKey::from_secret(s))
                .collect(),
            rs: Vec::new(),
            signer: current.as_ref().map(|s| Signer {
                alg: Algorithm::HS256,
                key: EncodingKey::from_secret(s),
                kid: None,
            }),
        };
        if let Some(jwk) = cfg.jwk.as_deref().filter(|s| !s.is_empty()) {
            keys.rs = parse_jwks(jwk)?;
        }
        if let Some(path) = &cfg.jwt_private_key {
            if keys.rs.is_empty() {
                return Err("JWT_PRIVATE_KEY: set only together with JWK".into());
            }
            let pem = std::fs::read(path)
                .map_err(|e| format!("JWT_PRIVATE_KEY: cannot read {}: {e}", path.display()))?;
            let key = EncodingKey::from_rsa_pem(&pem)
                .map_err(|e| format!("JWT_PRIVATE_KEY: not an RSA private key in PEM: {e}"))?;
            let kid = keys.rs.first().and_then(|(k, _)| k.clone());
            if keys.signer.is_none() {
                keys.signer = Some(Signer {
                    alg: Algorithm::RS256,
                    key,
                    kid,
                });
            }
        }
        if keys.hs.is_empty() && keys.rs.is_empty() {
            return Err(
                "JWT_SECRET or JWK: set one (HS256 secret or RS256 public key) to verify tokens"
                    .into(),
            );
        }
        Ok(keys)
    }

    /// Whether [`mint`](Self::mint) can sign (HS256 secret, or RS256 private key).
    pub fn can_sign(&self) -> bool {
        self.signer.is_some()
    }

    /// Sign `claims` with the current key.
    pub fn mint(&self, claims: &Claims) -> Result<String, String> {
        let s = self
            .signer
            .as_ref()
            .ok_or("no signing key: set JWT_SECRET, or JWK with JWT_PRIVATE_KEY")?;
        let mut header = Header::new(s.alg);
        header.kid = s.kid.clone();
        jsonwebtoken::encode(&header, claims, &s.key).map_err(|e| e.to_string())
    }

    fn accepts(&self, alg: &str) -> Option<Algorithm> {
        match alg {
            "HS256" if !self.hs.is_empty() => Some(Algorithm::HS256),
            "RS256" if !self.rs.is_empty() => Some(Algorithm::RS256),
            _ => None,
        }
    }

    /// Verify `token` at `now_ms` (the injected wall clock). Signature and algorithm first, then
    /// the required claims, then expiry and not-before with [`LEEWAY_S`].
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<Claims, Reject> {
        let mut parts = token.split('.');
        let (Some(head), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Reject::Malformed);
        };
        let header: Value = URL_SAFE_NO_PAD
            .decode(head)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(Reject::Malformed)?;
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .and_then(|a| self.accepts(a))
            .ok_or(Reject::BadAlgorithm)?;
        let kid = header.get("kid").and_then(Value::as_str);

        let mut validation = Validation::new(alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        validation.leeway = 0;

        let candidates: Vec<&DecodingKey> = match alg {
            Algorithm::HS256 => self.hs.iter().collect(),
            _ => self
                .rs
                .iter()
                .filter(|(k, _)| kid.is_none() || k.is_none() || k.as_deref() == kid)
                .map(|(_, key)| key)
                .collect(),
        };
        let mut outcome = Err(Reject::BadSignature);
        for key in candidates {
            match jsonwebtoken::decode::<Value>(token, key, &validation) {
                Ok(data) => {
                    outcome = Ok(data.claims);
                    break;
                }
                Err(e) => {
                    outcome = Err(match e.kind() {
                        ErrorKind::InvalidSignature
                        | ErrorKind::InvalidRsaKey(_)
                        | ErrorKind::InvalidKeyFormat => Reject::BadSignature,
                        ErrorKind::InvalidAlgorithm
                        | ErrorKind::InvalidAlgorithmName
                        | ErrorKind::MissingAlgorithm
                        | ErrorKind::UnsupportedAlgorithm => Reject::BadAlgorithm,
                        _ => Reject::Malformed,
                    });
                    if outcome != Err(Reject::BadSignature) {
                        break;
                    }
                }
            }
        }
        let raw = outcome?;
        let required_ok = raw
            .get("sub")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
            && raw.get("exp").and_then(Value::as_u64).is_some()
            && raw
                .get("roles")
                .and_then(Value::as_array)
                .is_some_and(|r| r.iter().all(Value::is_string))
            && raw
                .get("tenant")
                .and_then(Value::as_str)
                .is_some_and(|t| !t.is_empty());
        if !required_ok {
            return Err(Reject::MissingClaims);
        }
        let claims: Claims = serde_json::from_value(raw).map_err(|_| Reject::MissingClaims)?;
        let now_s = now_ms / 1000;
        if now_s > claims.exp.saturating_add(LEEWAY_S) {
            return Err(Reject::Expired);
        }
        crate::reached!("auth.edge_leeway" if now_s > claims.exp);
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now_s.saturating_add(LEEWAY_S))
        {
            return Err(Reject::NotYetValid);
        }
        Ok(claims)
    }
}

/// One JWK or a JWKS, inline JSON or a file; only RSA keys are used.
fn parse_jwks(text: &str) -> Result<Vec<(Option<String>, DecodingKey)>, String> {
    let json = if text.trim_start().starts_with('{') {
        text.to_owned()
    } else {
        std::fs::read_to_string(text)
            .map_err(|e| format!("JWK: neither JSON nor a readable file ({text}): {e}"))?
    };
    let value: Value =
        serde_json::from_str(&json).map_err(|e| format!("JWK: not valid JSON: {e}"))?;
    let jwks: Vec<Jwk> = if value.get("keys").is_some() {
        serde_json::from_value::<JwkSet>(value)
            .map_err(|e| format!("JWK: not a valid JWKS: {e}"))?
            .keys
    } else {
        vec![serde_json::from_value(value).map_err(|e| format!("JWK: not a valid JWK: {e}"))?]
    };
    let mut out = Vec::new();
    for jwk in &jwks {
        if !matches!(
            jwk.algorithm,
            jsonwebtoken::jwk::AlgorithmParameters::RSA(_)
        ) {
            continue;
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("JWK: unusable RSA key: {e}"))?;
        out.push((jwk.common.key_id.clone(), key));
    }
    if out.is_empty() {
        return Err("JWK: holds no RSA key".into());
    }
    Ok(out)
}

#[cfg(test)]
#[cfg(not(spiral_loom))]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW_MS: u64 = 1_800_000_000_000;

    fn claims() -> Claims {
        Claims::new("ada", "t1", NOW_MS / 1000 + 3600)
            .jti("j1")
            .issued_at(NOW_MS / 1000)
    }

    fn forge(header: &str, payload: &Value, sig: &str) -> String {
        format!(
            "{}.{}.{sig}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        )
    }

    #[test]
    fn a_good_token_round_trips() {
        let keys = Keys::hs256(SECRET);
        let t = keys.mint(&claims()).unwrap();
        assert_eq!(keys.verify(&t, NOW_MS), Ok(claims()));
    }

    #[test]
    fn expiry_and_not_before_follow_the_injected_clock_with_leeway() {
        let keys = Keys::hs256(SECRET);
        let mut c = claims();
        c.exp = NOW_MS / 1000;
        let t = keys.mint(&c).unwrap();
        assert!(keys.verify(&t, NOW_MS + 60_000).is_ok());
        assert_eq!(keys.verify(&t, NOW_MS + 61_000), Err(Reject::Expired));
        let mut c = claims();
        c.nbf = Some(NOW_MS / 1000 + 120);
        let t = keys.mint(&c).unwrap();
        assert_eq!(keys.verify(&t, NOW_MS), Err(Reject::NotYetValid));
        assert!(keys.verify(&t, NOW_MS + 60_000).is_ok());
    }

    #[test]
    fn every_forgery_has_its_reason() {
        let keys = Keys::hs256(SECRET);
        let payload = serde_json::to_value(claims()).unwrap();
        assert_eq!(
            keys.verify(&forge(r#"{"alg":"none"}"#, &payload, ""), NOW_MS),
            Err(Reject::BadAlgorithm)
        );
        assert_eq!(
            keys.verify(&forge(r#"{"alg":"RS256"}"#, &payload, "AAAA"), NOW_MS),
            Err(Reject::BadAlgorithm)
        );
        assert_eq!(
            keys.verify(&forge(r#"{"alg":"HS256"}"#, &payload, "AAAA"), NOW_MS),
            Err(Reject::BadSignature)
        );
        let other = Keys::hs256(b"another-secret-another-secret-xx");
        let t = other.mint(&claims()).unwrap();
        assert_eq!(keys.verify(&t, NOW_MS), Err(Reject::BadSignature));
        for junk in ["", "abc", "a.b", "a.b.c.d", "!!.!!.!!"] {
            assert_eq!(keys.verify(junk, NOW_MS), Err(Reject::Malformed), "{junk}");
        }
        let mut p = payload.clone();
        p.as_object_mut().unwrap().remove("tenant");
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &p,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(keys.verify(&t, NOW_MS), Err(Reject::MissingClaims));
    }

    #[test]
    fn the_previous_secret_is_accepted_during_rotation() {
        let old = "old-secret-old-secret-old-secret-0";
        let new = "new-secret-new-secret-new-secret-0";
        let t = Keys::hs256(old.as_bytes()).mint(&claims()).unwrap();
        let rotated = Keys::from_config(&KeyConfig {
            jwt_secret: Some(new.into()),
            jwt_secret_previous: Some(old.into()),
            ..KeyConfig::default()
        })
        .unwrap();
        assert!(rotated.verify(&t, NOW_MS).is_ok());
        let after = Keys::from_config(&KeyConfig {
            jwt_secret: Some(new.into()),
            ..KeyConfig::default()
        })
        .unwrap();
        assert_eq!(after.verify(&t, NOW_MS), Err(Reject::BadSignature));
    }

    #[test]
    fn configuration_errors_name_the_variable() {
        let e = Keys::from_config(&KeyConfig::default()).unwrap_err();
        assert!(e.contains("JWT_SECRET"), "{e}");
        let e = Keys::from_config(&KeyConfig {
            jwt_secret: Some("short".into()),
            ..KeyConfig::default()
        })
        .unwrap_err();
        assert!(e.starts_with("JWT_SECRET:"), "{e}");
        let e = Keys::from_config(&KeyConfig {
            jwk: Some("{not json".into()),
            ..KeyConfig::default()
        })
        .unwrap_err();
        assert!(e.starts_with("JWK:"), "{e}");
    }
}
