//! The circuit breaker: a pure, synchronous state machine on the injected clock.
//!
//! `Closed` counts consecutive outage failures; `CB_FAILURES` of them open it. `Open` rejects
//! every call until `CB_WINDOW` has passed; the next call is then admitted as the single probe
//! (`HalfOpen`) while every other call is still rejected. The probe's success closes the breaker,
//! its failure opens it again for another window.
//!
//! Nothing here locks, awaits or reads a clock: callers pass `now` and keep the breaker behind
//! whatever lock they like, so unit tests drive it with exact instants and loom models race it.

use std::collections::VecDeque;
use std::time::Duration;

use crate::clock::Instant;

/// How many transitions the breaker remembers for checkers (`Breaker::transitions`).
pub const TRANSITION_LOG_MAX: usize = 64;

/// SPEC §1.6 `CB_FAILURES`, `CB_WINDOW`, `CB_TIMEOUT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive outage failures that open the breaker (`CB_FAILURES`, 5).
    pub failures: u32,
    /// How long the breaker stays open before it admits a probe (`CB_WINDOW`, 30000 ms).
    pub window_ms: u64,
    /// Time limit of each storage call (`CB_TIMEOUT`, 20000 ms); a call that exceeds it failed.
    pub timeout_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: 5,
            window_ms: 30_000,
            timeout_ms: 20_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed {
        consecutive_failures: u32,
    },
    /// Rejecting every call until `until`; the first call at or after it becomes the probe.
    Open {
        until: Instant,
    },
    /// One probe is in flight; every other call is rejected until it reports.
    HalfOpen,
}

/// The state without its data: what transitions and the `breaker_state` gauge talk about
/// (`protocol::BreakerState` on the wire, serialized as [`StateKind::name`]).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum StateKind {
    Closed,
    Open,
    HalfOpen,
}

impl StateKind {
    /// The state's name wherever it is shown: `/status`, the event stream, simulation traces.
    pub fn name(self) -> &'static str {
        match self {
            StateKind::Closed => "closed",
            StateKind::Open => "open",
            StateKind::HalfOpen => "half_open",
        }
    }

    /// The state of a `breaker_state` gauge value.
    pub fn from_gauge(gauge: u8) -> Option<StateKind> {
        [StateKind::Closed, StateKind::Open, StateKind::HalfOpen]
            .into_iter()
            .find(|k| k.gauge() == gauge)
    }

    /// The `breaker_state` gauge: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> u8 {
        match self {
            StateKind::Closed => 0,
            StateKind::Open => 1,
            StateKind::HalfOpen => 2,
        }
    }
}

impl BreakerState {
    pub fn kind(&self) -> StateKind {
        match self {
            BreakerState::Closed { .. } => StateKind::Closed,
            BreakerState::Open { .. } => StateKind::Open,
            BreakerState::HalfOpen => StateKind::HalfOpen,
        }
    }
}

/// The only transitions a breaker may make. In particular `Open → Closed` is illegal: an open
/// breaker closes only through a successful probe.
pub fn legal(from: StateKind, to: StateKind) -> bool {
    use StateKind::*;
    matches!(
        (from, to),
        (Closed, Open) | (Open, HalfOpen) | (HalfOpen, Closed) | (HalfOpen, Open)
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: StateKind,
    pub to: StateKind,
    pub at: Instant,
    /// Closed → open: the consecutive failed calls that opened it (SPEC §1.6: `CB_FAILURES`);
    /// 0 for every other transition.
    pub failures: u32,
}

/// Leave to make one call, handed out by [`Breaker::admit`] and handed back with its outcome.
///
/// It carries the breaker's epoch (bumped on every transition), so an outcome that arrives after
/// the breaker has moved on — a slow call admitted before it opened — is ignored instead of
/// closing or re-opening a breaker it knows nothing about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a permit must be reported back with the call's outcome"]
pub struct Permit {
    probe: bool,
    epoch: u64,
}

impl Permit {
    /// This call is the half-open probe: its outcome decides whether the breaker closes.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

/// What a finished call tells the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The backend answered (a `Corrupt` or `Config` error is an answer too).
    Answered,
    /// An outage: unavailable, refused, timed out.
    Outage,
    /// The caller gave up before the call finished (its future was dropped). Says nothing about
    /// the backend, but a probe that never reports must not leave the breaker half-open forever,
    /// so an abandoned probe counts as failed.
    Abandoned,
}

#[derive(Debug, Clone)]
pub struct Breaker {
    cfg: BreakerConfig,
    state: BreakerState,
    /// Bumped on every transition: it is also the count of transitions ever made.
    epoch: u64,
    opens_total: u64,
    log: VecDeque<Transition>,
}

impl Breaker {
    pub fn new(cfg: BreakerConfig) -> Self {
        Self {
            cfg,
            state: BreakerState::Closed {
                consecutive_failures: 0,
            },
            epoch: 0,
            opens_total: 0,
            log: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.cfg
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    pub fn kind(&self) -> StateKind {
        self.state.kind()
    }

    /// Times the breaker has opened, a failed probe included (`circuit_breaker_open_total`).
    pub fn opens_total(&self) -> u64 {
        self.opens_total
    }

    /// Transitions ever made (the log keeps the last [`TRANSITION_LOG_MAX`]).
    pub fn transitions_total(&self) -> u64 {
        self.epoch
    }

    /// The last [`TRANSITION_LOG_MAX`] transitions, oldest first.
    pub fn transitions(&self) -> impl ExactSizeIterator<Item = &Transition> {
        self.log.iter()
    }

    /// Would [`admit`](Self::admit) hand out a permit at `now`? Changes nothing.
    pub fn would_admit(&self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { until } => now >= until,
            BreakerState::HalfOpen => false,
        }
    }

    /// Ask to make a call at `now`: `None` means fail fast without touching the backend.
    pub fn admit(&mut self, now: Instant) -> Option<Permit> {
        match self.state {
            BreakerState::Closed { .. } => Some(self.permit(false)),
            BreakerState::Open { until } if now >= until => {
                if crate::planted!(BreakerSkipsProbe) {
                    // Planted: the window alone closes the breaker; nothing proved the backend
                    // is back, and every waiting call rushes at it at once.
                    self.go(
                        BreakerState::Closed {
                            consecutive_failures: 0,
                        },
                        now,
                        0,
                    );
                    return Some(self.permit(false));
                }
                self.go(BreakerState::HalfOpen, now, 0);
                Some(self.permit(true))
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen => None,
        }
    }

    /// Report how the call admitted with `permit` ended.
    pub fn record(&mut self, permit: Permit, outcome: Outcome, now: Instant) {
        if permit.epoch != self.epoch {
            return; // admitted under a state the breaker has since left
        }
        match (self.state, outcome) {
            (BreakerState::Closed { .. }, Outcome::Answered) => {
                self.state = BreakerState::Closed {
                    consecutive_failures: 0,
                };
            }
            (
                BreakerState::Closed {
                    consecutive_failures,
                },
                Outcome::Outage,
            ) => {
                let n = consecutive_failures.saturating_add(1);
                if n >= self.cfg.failures {
                    self.open(now, n);
                } else {
                    self.state = BreakerState::Closed {
                        consecutive_failures: n,
                    };
                }
            }
            (BreakerState::Closed { .. }, Outcome::Abandoned) => {}
            (BreakerState::HalfOpen, Outcome::Answered) if permit.probe => {
                crate::reached!("breaker.closed_by_probe");
                self.go(
                    BreakerState::Closed {
                        consecutive_failures: 0,
                    },
                    now,
                    0,
                );
            }
            (BreakerState::HalfOpen, Outcome::Outage | Outcome::Abandoned) if permit.probe => {
                crate::reached!("breaker.probe_failed");
                self.open(now, 0)
            }
            // Open, or a non-probe permit in half-open: cannot happen with a current epoch.
            _ => {}
        }
    }

    fn permit(&self, probe: bool) -> Permit {
        Permit {
            probe,
            epoch: self.epoch,
        }
    }

    /// Open the breaker; `failures`: the consecutive failed calls that opened a closed one.
    fn open(&mut self, now: Instant, failures: u32) {
        let until = deadline(now, self.cfg.window_ms);
        crate::reached!("breaker.opened");
        self.opens_total += 1;
        self.go(BreakerState::Open { until }, now, failures);
    }

    fn go(&mut self, to: BreakerState, now: Instant, failures: u32) {
        let from = self.state.kind();
        self.state = to;
        self.epoch += 1;
        if self.log.len() == TRANSITION_LOG_MAX {
            self.log.pop_front();
        }
        self.log.push_back(Transition {
            from,
            to: to.kind(),
            at: now,
            failures,
        });
    }
}

/// `now + ms`, saturating far in the future instead of panicking on an absurd window.
fn deadline(now: Instant, ms: u64) -> Instant {
    now.checked_add(Duration::from_millis(ms))
        .or_else(|| now.checked_add(Duration::from_secs(10 * 365 * 86_400)))
        .unwrap_or(now)
}

#[cfg(test)]
#[cfg(not(spiral_loom))]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    const W: u64 = 30_000;

    fn setup() -> (Breaker, ManualClock) {
        (Breaker::new(BreakerConfig::default()), ManualClock::new(0))
    }

    fn fail(b: &mut Breaker, c: &ManualClock) {
        let p = b.admit(c.now()).expect("admitted");
        b.record(p, Outcome::Outage, c.now());
    }

    fn ms(c: &ManualClock, n: u64) {
        c.advance(Duration::from_millis(n));
    }

    fn all_legal(b: &Breaker) {
        for t in b.transitions() {
            assert!(legal(t.from, t.to), "illegal transition {t:?}");
        }
    }

    #[test]
    fn closed_opens_after_exactly_cb_failures_consecutive_outages() {
        let (mut b, c) = setup();
        for i in 1..5 {
            fail(&mut b, &c);
            assert_eq!(
                b.state(),
                BreakerState::Closed {
                    consecutive_failures: i
                }
            );
        }
        fail(&mut b, &c);
        assert_eq!(b.kind(), StateKind::Open);
        assert_eq!(b.opens_total(), 1);
        assert_eq!(b.kind().gauge(), 1);
        assert!(b.admit(c.now()).is_none(), "open rejects");
        all_legal(&b);
    }

    #[test]
    fn an_answer_resets_the_failure_count() {
        let (mut b, c) = setup();
        for _ in 0..4 {
            fail(&mut b, &c);
        }
        let p = b.admit(c.now()).unwrap();
        b.record(p, Outcome::Answered, c.now());
        for _ in 0..4 {
            fail(&mut b, &c);
        }
        assert_eq!(
            b.state(),
            BreakerState::Closed {
                consecutive_failures: 4
            }
        );
        assert_eq!(b.transitions_total(), 0);
    }

    #[test]
    fn abandoned_calls_in_closed_count_for_nothing() {
        let (mut b, c) = setup();
        fail(&mut b, &c);
        let p = b.admit(c.now()).unwrap();
        b.record(p, Outcome::Abandoned, c.now());
        assert_eq!(
            b.state(),
            BreakerState::Closed {
                consecutive_failures: 1
            }
        );
    }

    #[test]
    fn open_rejects_until_the_window_has_passed_to_the_millisecond() {
        let (mut b, c) = setup();
        for _ in 0..5 {
            fail(&mut b, &c);
        }
        ms(&c, W - 1);
        assert!(!b.would_admit(c.now()));
        assert!(b.admit(c.now()).is_none(), "1 ms before the window ends");
        ms(&c, 1);
        assert!(b.would_admit(c.now()));
        let p = b.admit(c.now()).expect("probe at exactly CB_WINDOW");
        assert!(p.is_probe());
        assert_eq!(b.kind(), StateKind::HalfOpen);
        assert_eq!(b.kind().gauge(), 2);
    }

    #[test]
    fn half_open_admits_a_single_probe() {
        let (mut b, c) = setup();
        for _ in 0..5 {
            fail(&mut b, &c);
        }
        ms(&c, W);
        let _probe = b.admit(c.now()).unwrap();
        assert!(b.admit(c.now()).is_none());
        ms(&c, 10 * W);
        assert!(
            b.admit(c.now()).is_none(),
            "still one probe, however long it takes"
        );
    }

    #[test]
    fn probe_success_closes() {
        let (mut b, c) = setup();
        for _ in 0..5 {
            fail(&mut b, &c);
        }
        ms(&c, W);
        let p = b.admit(c.now()).unwrap();
        b.record(p, Outcome::Answered, c.now());
        assert_eq!(
            b.state(),
            BreakerState::Closed {
                consecutive_failures: 0
            }
        );
        assert_eq!(b.kind().gauge(), 0);
        let kinds: Vec<_> = b.transitions().map(|t| (t.from, t.to)).collect();
        use StateKind::*;
        assert_eq!(
            kinds,
            [(Closed, Open), (Open, HalfOpen), (HalfOpen, Closed)]
        );
        all_legal(&b);
    }

    #[test]
    fn probe_failure_reopens_for_a_whole_new_window() {
        let (mut b, c) = setup();
        for _ in 0..5 {
            fail(&mut b, &c);
        }
        ms(&c, W);
        let p = b.admit(c.now()).unwrap();
        ms(&c, 7);
        b.record(p, Outcome::Outage, c.now());
        assert_eq!(b.kind(), StateKind::Open);
        assert_eq!(b.opens_total(), 2);
        ms(&c, W - 1);
        assert!(
            b.admit(c.now()).is_none(),
            "window counts from the failed probe"
        );
        ms(&c, 1);
        assert!(b.admit(c.now()).unwrap().is_probe());
        all_legal(&b);
    }

    #[test]
    fn an_abandoned_probe_reopens_instead_of_wedging_half_open() {
        let (mut b, c) = setup();
        for _ in 0..5 {
            fail(&mut b, &c);
        }
        ms(&c, W);
        let p = b.admit(c.now()).unwrap();
        b.record(p, Outcome::Abandoned, c.now());
        assert_eq!(b.kind(), StateKind::Open);
    }

    #[test]
    fn stale_outcomes_from_before_a_transition_are_ignored() {
        let (mut b, c) = setup();
        let slow = b.admit(c.now()).unwrap();
        for _ in 0..5 {
            fail(&mut b, &c);
        }
        // The slow call admitted while closed answers now: it must not close the open breaker.
        b.record(slow, Outcome::Answered, c.now());
        assert_eq!(b.kind(), StateKind::Open);
        ms(&c, W);
        let probe = b.admit(c.now()).unwrap();
        b.record(slow, Outcome::Outage, c.now());
        assert_eq!(b.kind(), StateKind::HalfOpen, "nor decide the probe's fate");
        b.record(probe, Outcome::Answered, c.now());
        assert_eq!(b.kind(), StateKind::Closed);
        b.record(slow, Outcome::Outage, c.now());
        assert_eq!(
            b.state(),
            BreakerState::Closed {
                consecutive_failures: 0
            },
            "nor count against the closed breaker it predates"
        );
    }

    #[test]
    fn a_threshold_of_one_opens_on_the_first_outage() {
        let mut b = Breaker::new(BreakerConfig {
            failures: 1,
            ..BreakerConfig::default()
        });
        let c = ManualClock::new(0);
        fail(&mut b, &c);
        assert_eq!(b.kind(), StateKind::Open);
    }

    #[test]
    fn an_absurd_window_saturates_instead_of_panicking() {
        let mut b = Breaker::new(BreakerConfig {
            failures: 1,
            window_ms: u64::MAX,
            ..BreakerConfig::default()
        });
        let c = ManualClock::new(0);
        fail(&mut b, &c);
        ms(&c, 86_400_000);
        assert!(b.admit(c.now()).is_none());
    }

    #[test]
    fn the_transition_log_is_bounded() {
        let mut b = Breaker::new(BreakerConfig {
            failures: 1,
            window_ms: 0,
            ..BreakerConfig::default()
        });
        let c = ManualClock::new(0);
        for _ in 0..100 {
            fail(&mut b, &c); // Closed → Open, then Open → HalfOpen → Open with window 0
        }
        assert_eq!(b.transitions().len(), TRANSITION_LOG_MAX);
        assert_eq!(b.transitions_total(), 1 + 2 * 99);
        all_legal(&b);
    }

    #[test]
    fn legal_transitions_are_exactly_the_four_edges() {
        use StateKind::*;
        let all = [Closed, Open, HalfOpen];
        let legal_edges: Vec<_> = all
            .iter()
            .flat_map(|&f| all.iter().map(move |&t| (f, t)))
            .filter(|&(f, t)| legal(f, t))
            .collect();
        assert_eq!(
            legal_edges,
            [
                (Closed, Open),
                (Open, HalfOpen),
                (HalfOpen, Closed),
                (HalfOpen, Open)
            ]
        );
    }
}
