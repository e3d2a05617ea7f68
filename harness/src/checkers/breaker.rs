//! Circuit-breaker legality: every transition a server's breaker made is one the state machine
//! allows (closed → open → half_open → closed | open; never open → closed without a probe).
//!
//! The table is the checker's own, written from SPEC §1.6, not the server's: a check that asked
//! the server whether its transition was legal would agree with any bug in that answer.

use super::{Checker, Obs};

pub struct Breaker;

/// The transitions SPEC §1.6 allows: failures open a closed breaker; after its window an open
/// breaker lets one probe through (half_open); the probe's outcome closes or re-opens it.
const LEGAL: [(&str, &str); 4] = [
    ("closed", "open"),
    ("open", "half_open"),
    ("half_open", "closed"),
    ("half_open", "open"),
];

impl Checker for Breaker {
    fn name(&self) -> &'static str {
        "breaker"
    }

    fn observe(&mut self, obs: &Obs) -> Result<(), String> {
        match obs {
            Obs::Breaker { server, from, to } if !LEGAL.contains(&(from.as_str(), to.as_str())) => {
                Err(format!(
                    "server-{server}: illegal breaker transition {from} → {to}"
                ))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::test_support::run;

    fn t(from: &str, to: &str) -> Obs {
        Obs::Breaker {
            server: 0,
            from: from.into(),
            to: to.into(),
        }
    }

    #[test]
    fn the_legal_cycle_passes() {
        run(
            &mut Breaker,
            &[
                t("closed", "open"),
                t("open", "half_open"),
                t("half_open", "open"),
                t("open", "half_open"),
                t("half_open", "closed"),
            ],
        )
        .unwrap();
    }

    #[test]
    fn an_illegal_transition_is_caught() {
        for (from, to) in [
            ("open", "closed"),
            ("closed", "half_open"),
            ("closed", "closed"),
            ("halfopen", "closed"),
        ] {
            assert!(run(&mut Breaker, &[t(from, to)]).is_err(), "{from} → {to}");
        }
    }
}
