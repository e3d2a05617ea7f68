//! No operation accepted without a valid token: a handshake or HTTP request with a forged,
//! `alg: none`, garbage, expired, replayed, revoked or missing token is refused; a `jti` admits at
//! most one handshake, across every server; a valid token — including one expired but within the
//! leeway by the server's own (possibly skewed) clock — is never answered 401.

use std::collections::BTreeMap;

use super::Checker;
use crate::event::{Event, TokenKind};

#[derive(Debug, Default)]
pub struct Auth {
    /// Accepted handshakes per `jti`.
    admitted: BTreeMap<String, u32>,
}

impl Checker for Auth {
    fn name(&self) -> &'static str {
        "auth"
    }

    fn observe(&mut self, event: &Event) -> Result<(), String> {
        match event {
            Event::Connect {
                client,
                server,
                token,
                jti,
                accepted,
                status,
                ..
            } => {
                if *accepted && !token.must_accept() && *token != TokenKind::Uncertain {
                    return Err(format!(
                        "client-{client}: server-{server} accepted a WebSocket handshake with a {token:?} token"
                    ));
                }
                if !*accepted && token.must_accept() && *status == Some(401) {
                    return Err(format!(
                        "client-{client}: server-{server} refused a {token:?} token with 401"
                    ));
                }
                if *accepted && let Some(j) = jti {
                    let n = self.admitted.entry(j.clone()).or_default();
                    *n += 1;
                    if *n > 1 {
                        return Err(format!(
                            "jti {j} admitted {n} handshakes (the last on server-{server}): a replay got in"
                        ));
                    }
                }
            }
            Event::Http {
                client,
                server,
                method,
                path,
                token,
                status,
            } if (200..300).contains(status) && !token.must_accept() => {
                return Err(format!(
                    "client-{client}: server-{server} answered {status} to {method} {path} with a {token:?} token"
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hand::run;

    fn connect(token: TokenKind, jti: &str, accepted: bool, status: Option<u16>) -> Event {
        Event::Connect {
            client: 0,
            server: 0,
            token,
            jti: Some(jti.into()),
            exp: None,
            accepted,
            status,
            error: None,
        }
    }

    #[test]
    fn bad_tokens_replays_and_refused_edges_are_caught() {
        run(
            &mut Auth::default(),
            &[connect(TokenKind::Forged, "a", false, Some(401))],
        )
        .unwrap();
        assert!(
            run(
                &mut Auth::default(),
                &[connect(TokenKind::Forged, "a", true, None)]
            )
            .is_err()
        );
        assert!(
            run(
                &mut Auth::default(),
                &[connect(TokenKind::EdgeValid, "a", false, Some(401))]
            )
            .is_err()
        );
        let twice = [
            connect(TokenKind::Valid, "a", true, None),
            connect(TokenKind::Valid, "a", true, None),
        ];
        assert!(
            run(&mut Auth::default(), &twice)
                .unwrap_err()
                .contains("replay")
        );
        let uncertain = |ok, status| connect(TokenKind::Uncertain, "b", ok, status);
        run(
            &mut Auth::default(),
            &[uncertain(true, None), uncertain(false, Some(401))],
        )
        .unwrap();
        assert!(
            run(
                &mut Auth::default(),
                &[uncertain(true, None), uncertain(true, None)]
            )
            .is_err()
        );
        let http = Event::Http {
            client: 0,
            server: 0,
            method: "GET".into(),
            path: "/metrics".into(),
            token: TokenKind::Missing,
            status: 200,
        };
        assert!(run(&mut Auth::default(), &[http]).is_err());
    }
}
