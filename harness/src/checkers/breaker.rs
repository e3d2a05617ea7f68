//! Circuit-breaker legality: every transition a server's breaker made is one the state machine
//! allows (closed → open → half-open → closed | open; never open → closed without a probe).

use super::{Checker, Obs};

pub struct Breaker;

impl Checker for Breaker {
    fn name(&self) -> &'static str {
        "breaker"
    }

    fn observe(&mut self, obs: &Obs) -> Result<(), String> {
        match obs {
            Obs::Breaker {
                server,
                from,
                to,
                legal: false,
            } => Err(format!(
                "server-{server}: illegal breaker transition {from} → {to}"
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::test_support::run;

    #[test]
    fn an_illegal_transition_is_caught() {
        let t = |legal| Obs::Breaker {
            server: 0,
            from: "open".into(),
            to: "closed".into(),
            legal,
        };
        run(&mut Breaker, &[t(true)]).unwrap();
        assert!(run(&mut Breaker, &[t(false)]).is_err());
    }
}
