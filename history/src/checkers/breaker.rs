//! Circuit-breaker legality: every transition a server's breaker made is one the state machine
//! allows (closed → open → half_open → closed | open; never open → closed without a probe).
//!
//! The table is the checker's own, written from SPEC §1.6, not the server's: a check that asked
//! the server whether its transition was legal would agree with any bug in that answer.

use spiral_server::protocol::BreakerState::{self, Closed, HalfOpen, Open};

use crate::event::Event;

/// The transitions SPEC §1.6 allows: failures open a closed breaker; after its window an open
/// breaker lets one probe through (half_open); the probe's outcome closes or re-opens it.
const LEGAL: [(BreakerState, BreakerState); 4] = [
    (Closed, Open),
    (Open, HalfOpen),
    (HalfOpen, Closed),
    (HalfOpen, Open),
];

/// The property, judged on each event alone.
pub fn judge(event: &Event) -> Result<(), String> {
    match event {
        Event::Breaker { server, from, to } if !LEGAL.contains(&(*from, *to)) => Err(format!(
            "server-{server}: illegal breaker transition {} → {}",
            from.name(),
            to.name()
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hand::run_each;

    fn t(from: BreakerState, to: BreakerState) -> Event {
        Event::Breaker {
            server: 0,
            from,
            to,
        }
    }

    #[test]
    fn the_legal_cycle_passes() {
        run_each(
            judge,
            &[
                t(Closed, Open),
                t(Open, HalfOpen),
                t(HalfOpen, Open),
                t(Open, HalfOpen),
                t(HalfOpen, Closed),
            ],
        )
        .unwrap();
    }

    #[test]
    fn an_illegal_transition_is_caught() {
        for (from, to) in [
            (Open, Closed),
            (Closed, HalfOpen),
            (Closed, Closed),
            (Open, Open),
        ] {
            assert!(
                run_each(judge, &[t(from, to)]).is_err(),
                "{from:?} → {to:?}"
            );
        }
    }
}
