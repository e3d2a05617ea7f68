//! `load --find-max-rate LO..HI`: the highest arrival rate whose phases meet every threshold,
//! by bisection. A rate passes only when each of its `repeats` phases passes (one noisy phase
//! fails it: the answer is the rate the server sustains repeatedly, not once). A rate at which
//! the generator fell behind is a ceiling the search stays under, and the result says so: above
//! it the figures would be the generator's, so what the server could do there is unknown.

/// One phase's outcome at a rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    Pass,
    Fail,
    Inconclusive,
}

/// The search's bounds and precision.
#[derive(Debug, Clone, Copy)]
pub struct Search {
    pub lo: u64,
    pub hi: u64,
    /// Stop when the bracket is this narrow, in % of its lower end (at least 1/s).
    pub resolution_pct: f64,
    /// Phases per rate tried.
    pub repeats: u32,
}

/// What the search found.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Found {
    /// The highest rate tried whose every phase passed.
    pub max_rate: Option<u64>,
    /// The lowest rate tried above it that failed (none: `hi` itself passed).
    pub failed_at: Option<u64>,
    /// The lowest rate at which the generator fell behind (the search stayed under it).
    pub inconclusive_at: Option<u64>,
    /// Every rate tried, in order, with its phases' outcomes.
    pub tried: Vec<(u64, Vec<Probe>)>,
}

/// Bisect `search.lo..=search.hi`; `probe(rate, repeat)` runs one phase.
pub fn find_max_rate(
    search: Search,
    mut probe: impl FnMut(u64, u32) -> anyhow::Result<Probe>,
) -> anyhow::Result<Found> {
    let mut found = Found::default();
    // One rate: every repeat, stopping at the first phase that does not pass.
    let mut try_rate = |rate: u64, found: &mut Found| -> anyhow::Result<Probe> {
        let mut outcomes = Vec::new();
        let mut verdict = Probe::Pass;
        for repeat in 0..search.repeats.max(1) {
            let p = probe(rate, repeat)?;
            outcomes.push(p);
            if p != Probe::Pass {
                verdict = p;
                break;
            }
        }
        found.tried.push((rate, outcomes));
        Ok(verdict)
    };
    let (mut lo, mut hi) = (search.lo.max(1), search.hi.max(search.lo.max(1)));
    match try_rate(lo, &mut found)? {
        Probe::Pass => found.max_rate = Some(lo),
        Probe::Fail => {
            found.failed_at = Some(lo);
            return Ok(found);
        }
        Probe::Inconclusive => {
            found.inconclusive_at = Some(lo);
            return Ok(found);
        }
    }
    if hi == lo {
        return Ok(found);
    }
    match try_rate(hi, &mut found)? {
        Probe::Pass => {
            found.max_rate = Some(hi);
            return Ok(found);
        }
        Probe::Fail => found.failed_at = Some(hi),
        Probe::Inconclusive => found.inconclusive_at = Some(hi),
    }
    loop {
        let step = ((lo as f64 * search.resolution_pct / 100.0) as u64).max(1);
        if hi - lo <= step {
            return Ok(found);
        }
        let mid = lo + (hi - lo) / 2;
        match try_rate(mid, &mut found)? {
            Probe::Pass => {
                lo = mid;
                found.max_rate = Some(mid);
            }
            Probe::Fail => {
                hi = mid;
                found.failed_at = Some(mid);
            }
            Probe::Inconclusive => {
                hi = mid;
                found.inconclusive_at = Some(mid);
            }
        }
    }
}

impl Found {
    /// Whether the generator, not the server, bounded the answer: it fell behind at a rate
    /// below any the server failed (or the server failed none).
    pub fn generator_bound(&self) -> bool {
        match (self.inconclusive_at, self.failed_at) {
            (Some(i), Some(f)) => i < f,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(lo: u64, hi: u64) -> Search {
        Search {
            lo,
            hi,
            resolution_pct: 5.0,
            repeats: 3,
        }
    }

    #[test]
    fn the_search_brackets_the_capacity_within_its_resolution() {
        // A server that holds up to 12,345/s.
        let f = find_max_rate(search(1_000, 40_000), |r, _| {
            Ok(if r <= 12_345 {
                Probe::Pass
            } else {
                Probe::Fail
            })
        })
        .unwrap();
        let (max, failed) = (f.max_rate.unwrap(), f.failed_at.unwrap());
        assert!(max <= 12_345 && failed > 12_345, "{f:?}");
        assert!(failed - max <= max / 20 + 1, "within 5 %: {f:?}");
        // Every passing rate ran all three repeats; a failing one stopped at its first failure.
        for (rate, outcomes) in &f.tried {
            if *rate <= 12_345 {
                assert_eq!(outcomes, &vec![Probe::Pass; 3], "{rate}");
            } else {
                assert_eq!(outcomes, &vec![Probe::Fail], "{rate}");
            }
        }
    }

    #[test]
    fn one_failing_repeat_fails_the_rate_and_the_edges_are_reported() {
        // The second repeat at any rate over 5,000 fails: flaky above 5,000.
        let f = find_max_rate(search(1_000, 20_000), |r, rep| {
            Ok(if r > 5_000 && rep == 1 {
                Probe::Fail
            } else {
                Probe::Pass
            })
        })
        .unwrap();
        assert!(f.max_rate.unwrap() <= 5_000, "{f:?}");
        // Nothing passes, everything passes.
        let none = find_max_rate(search(1_000, 2_000), |_, _| Ok(Probe::Fail)).unwrap();
        assert_eq!((none.max_rate, none.failed_at), (None, Some(1_000)));
        let all = find_max_rate(search(1_000, 2_000), |_, _| Ok(Probe::Pass)).unwrap();
        assert_eq!((all.max_rate, all.failed_at), (Some(2_000), None));
    }

    #[test]
    fn a_generator_that_falls_behind_caps_the_search_and_says_so() {
        let f = find_max_rate(search(1_000, 64_000), |r, _| {
            Ok(if r > 30_000 {
                Probe::Inconclusive
            } else {
                Probe::Pass
            })
        })
        .unwrap();
        let (max, ceiling) = (f.max_rate.unwrap(), f.inconclusive_at.unwrap());
        assert!(max <= 30_000 && ceiling > 30_000, "{f:?}");
        assert!(ceiling - max <= max / 20 + 1, "{f:?}");
        assert!(f.generator_bound(), "{f:?}");
        // A server that fails first bounds the answer itself.
        let f = find_max_rate(search(1_000, 64_000), |r, _| {
            Ok(match r {
                0..=10_000 => Probe::Pass,
                10_001..=30_000 => Probe::Fail,
                _ => Probe::Inconclusive,
            })
        })
        .unwrap();
        assert!(!f.generator_bound(), "{f:?}");
        assert!(f.max_rate.unwrap() <= 10_000 && f.failed_at.unwrap() > 10_000);
        // Behind at the lowest rate: nothing is known.
        let f = find_max_rate(search(1_000, 2_000), |_, _| Ok(Probe::Inconclusive)).unwrap();
        assert_eq!((f.max_rate, f.inconclusive_at), (None, Some(1_000)));
    }
}
