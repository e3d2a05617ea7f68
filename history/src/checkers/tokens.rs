//! Tokens the server mints: every `jti` from `/auth/refresh` is new — across restarts and
//! instances, never one handed out before — and no refreshed token outlives its chain's start
//! plus `REFRESH_MAX_LIFETIME_S` (SPEC §1.9).

use std::collections::BTreeMap;

use crate::event::Event;

pub struct Tokens {
    max_lifetime_s: u64,
    /// Every `jti` minted so far: who got it.
    minted: BTreeMap<String, (u32, String)>,
}

impl Tokens {
    pub fn new(max_lifetime_s: u64) -> Self {
        Self {
            max_lifetime_s,
            minted: BTreeMap::new(),
        }
    }
}

impl super::Checker for Tokens {
    fn name(&self) -> &'static str {
        "tokens"
    }

    fn observe(&mut self, event: &Event) -> Result<(), String> {
        // A well-behaved client's refresh is a valid request to a server holding a signing key:
        // a new token, or refused for the token (401), the rate limit (429) or shared state that
        // cannot be checked (503) — never another answer.
        if let Event::Refresh {
            server,
            user,
            status: Some(status),
            ..
        } = event
            && ![200, 401, 429, 503].contains(status)
        {
            return Err(format!(
                "server-{server} answered {user}'s refresh with {status}"
            ));
        }
        let Event::Refresh {
            client,
            server,
            user,
            chain_start_s,
            jti: Some(jti),
            exp,
            ..
        } = event
        else {
            return Ok(());
        };
        if let Some((c, u)) = self.minted.get(jti) {
            return Err(format!(
                "server-{server} minted jti {jti} for {user} (client {client}), already minted for {u} (client {c})"
            ));
        }
        self.minted.insert(jti.clone(), (*client, user.clone()));
        let deadline = chain_start_s.saturating_add(self.max_lifetime_s);
        if let Some(exp) = exp
            && *exp > deadline
        {
            return Err(format!(
                "server-{server} refreshed {user}'s token to expire at {exp}, {} s past its chain's start {chain_start_s} + REFRESH_MAX_LIFETIME_S {}",
                exp - deadline,
                self.max_lifetime_s
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::Checker;
    use crate::hand::refresh;

    #[test]
    fn fresh_ids_within_the_lifetime_pass() {
        let mut t = Tokens::new(100);
        t.observe(&refresh(0, "a", 1_050)).unwrap();
        t.observe(&refresh(1, "b", 1_100)).unwrap();
        let answered = |status| Event::Refresh {
            client: 0,
            server: 0,
            user: "user-0".into(),
            chain_start_s: 1_000,
            jti: None,
            exp: None,
            status: Some(status),
        };
        t.observe(&answered(401)).unwrap();
        let e = t.observe(&answered(400)).unwrap_err();
        assert!(e.contains("refresh with 400"), "{e}");
    }

    #[test]
    fn a_jti_minted_twice_fails() {
        let mut t = Tokens::new(100);
        t.observe(&refresh(0, "a", 1_050)).unwrap();
        let e = t.observe(&refresh(1, "a", 1_050)).unwrap_err();
        assert!(e.contains("already minted for user-0"), "{e}");
    }

    #[test]
    fn a_token_past_its_chain_lifetime_fails() {
        let mut t = Tokens::new(100);
        let e = t.observe(&refresh(0, "a", 1_101)).unwrap_err();
        assert!(e.contains("1 s past its chain's start 1000"), "{e}");
    }
}
