//! Circuit-breaker legality: every transition a server's breaker made is one the state machine
//! allows (closed → open → half_open → closed | open; never open → closed without a probe), and an
//! open breaker lets its probe through (open → half_open) no sooner than `CB_WINDOW` after it
//! opened, and a closed breaker opens only after `CB_FAILURES` consecutive failed calls.
//!
//! The table is the checker's own, written from SPEC §1.6, not the server's: a check that asked
//! the server whether its transition was legal would agree with any bug in that answer.

use spiral_server::protocol::BreakerState::{self, Closed, HalfOpen, Open};

use super::Checker;
use crate::event::Event;

/// The transitions SPEC §1.6 allows: failures open a closed breaker; after its window an open
/// breaker lets one probe through (half_open); the probe's outcome closes or re-opens it.
const LEGAL: [(BreakerState, BreakerState); 4] = [
    (Closed, Open),
    (Open, HalfOpen),
    (HalfOpen, Closed),
    (HalfOpen, Open),
];

/// Legality, the open window, and what opens a closed breaker.
#[derive(Debug)]
pub struct BreakerCheck {
    window_ms: u64,
    failures: u32,
}

impl BreakerCheck {
    pub fn new(window_ms: u64, failures: u32) -> Self {
        Self {
            window_ms,
            failures,
        }
    }
}

impl Checker for BreakerCheck {
    fn name(&self) -> &'static str {
        "breaker"
    }

    fn observe(&mut self, event: &Event) -> Result<(), String> {
        judge(event)?;
        match event {
            // Whole milliseconds: a millisecond of rounding is allowed.
            Event::Breaker {
                server,
                open_ms: Some(open),
                ..
            } if open + 1 < self.window_ms => Err(format!(
                "server-{server}: the breaker let a probe through {open} ms after it opened, before its window of {} ms",
                self.window_ms
            )),
            Event::Breaker {
                server,
                failures: Some(n),
                ..
            } if *n < self.failures => Err(format!(
                "server-{server}: the breaker opened after {n} consecutive failed calls; CB_FAILURES is {}",
                self.failures
            )),
            _ => Ok(()),
        }
    }
}

/// The `breaker_state` gauge's value for each state (SPEC §1.6: 0 closed, 1 open, 2 half-open).
fn gauge(state: BreakerState) -> u8 {
    match state {
        Closed => 0,
        Open => 1,
        HalfOpen => 2,
    }
}

/// Legality, judged on each event alone; and what a breaker reports of itself (the state gauge,
/// the count of opens) against the transitions it made.
pub fn judge(event: &Event) -> Result<(), String> {
    match event {
        Event::BreakerStatus {
            server,
            gauge: reported,
            last,
            ..
        } if *reported != gauge(last.unwrap_or(Closed)) => Err(format!(
            "server-{server}: its breaker_state gauge says {reported}, but its last transition left it {}",
            last.unwrap_or(Closed).name()
        )),
        Event::BreakerStatus {
            server,
            opens_total,
            opens_logged,
            complete: true,
            ..
        } if opens_total != opens_logged => Err(format!(
            "server-{server}: its breaker counts {opens_total} opens, but it opened {opens_logged} times"
        )),
        Event::Breaker {
            server, from, to, ..
        } if !LEGAL.contains(&(*from, *to)) => Err(format!(
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
            open_ms: None,
            failures: None,
        }
    }

    #[test]
    fn a_probe_before_the_window_is_caught() {
        let probe = |ms| Event::Breaker {
            server: 0,
            from: Open,
            to: HalfOpen,
            open_ms: Some(ms),
            failures: None,
        };
        let mut ok = BreakerCheck::new(1000, 3);
        crate::hand::run(&mut ok, &[t(Closed, Open), probe(1000)]).unwrap();
        let mut early = BreakerCheck::new(1000, 3);
        let e = crate::hand::run(&mut early, &[t(Closed, Open), probe(400)]).unwrap_err();
        assert!(
            e.contains("400 ms after it opened, before its window of 1000 ms"),
            "{e}"
        );
    }

    #[test]
    fn a_breaker_opened_by_fewer_failures_than_cb_failures_is_caught() {
        let opened = |n| Event::Breaker {
            server: 0,
            from: Closed,
            to: Open,
            open_ms: None,
            failures: Some(n),
        };
        crate::hand::run(&mut BreakerCheck::new(1000, 3), &[opened(3)]).unwrap();
        let e = crate::hand::run(&mut BreakerCheck::new(1000, 3), &[opened(1)]).unwrap_err();
        assert!(
            e.contains("opened after 1 consecutive failed calls; CB_FAILURES is 3"),
            "{e}"
        );
    }

    #[test]
    fn a_breaker_misreporting_itself_is_caught() {
        let status = |gauge, opens_total, last, complete| Event::BreakerStatus {
            server: 0,
            gauge,
            opens_total,
            opens_logged: 2,
            last,
            complete,
        };
        run_each(judge, &[status(2, 2, Some(HalfOpen), true)]).unwrap();
        run_each(judge, &[status(0, 0, None, true)]).unwrap_err();
        let e = run_each(judge, &[status(1, 2, None, true)]).unwrap_err();
        assert!(
            e.contains("gauge says 1, but its last transition left it closed"),
            "{e}"
        );
        let e = run_each(judge, &[status(1, 3, Some(Open), true)]).unwrap_err();
        assert!(e.contains("counts 3 opens, but it opened 2 times"), "{e}");
        // Transitions the log no longer holds: the count cannot be judged.
        run_each(judge, &[status(1, 9, Some(Open), false)]).unwrap();
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
