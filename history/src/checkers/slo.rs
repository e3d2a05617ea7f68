//! SLOs over simulated time: the p95 of well-behaved `memory.store` round trips and the share of
//! operations answered with a real error (not `not_found` or `rate_limited`).

use spiral_server::protocol::ErrorCode;

use serde::{Deserialize, Serialize};

use super::{Checker, Class};
use spiral_server::engine::PRIORITY_RANGE;

use crate::event::{Event, Op};

/// Service-level objectives over the world's time; a miss is a liveness failure (exit 128).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// p95 of well-behaved clients' `memory.store` round trips, ms.
    #[serde(default)]
    pub store_p95_ms: Option<f64>,
    /// Largest share of well-behaved operations answered with an error other than
    /// `not_found` / `rate_limited`.
    #[serde(default)]
    pub max_error_ratio: Option<f64>,
}

pub struct SloCheck {
    slo: Slo,
    store_ms: Vec<u64>,
    ops: u64,
    errors: u64,
}

impl SloCheck {
    pub fn new(slo: Slo) -> Self {
        Self {
            slo,
            store_ms: Vec::new(),
            ops: 0,
            errors: 0,
        }
    }
}

impl Checker for SloCheck {
    fn name(&self) -> &'static str {
        "slo"
    }

    fn class(&self) -> Class {
        Class::Liveness
    }

    fn observe(&mut self, event: &Event) -> Result<(), String> {
        if let Event::Op {
            op,
            answer,
            sent_ms,
            done_ms,
            ..
        } = event
            && answer.answered()
        {
            self.ops += 1;
            // A store past the priority bounds is meant to be refused (`tenant_fairness`).
            let refused_as_asked = matches!(op, Op::Store { priority: Some(p), .. } if !PRIORITY_RANGE.contains(p))
                && answer.error_code() == Some(ErrorCode::BadRequest);
            if answer
                .error_code()
                .is_some_and(|c| !matches!(c, ErrorCode::NotFound | ErrorCode::RateLimited))
                && !refused_as_asked
            {
                self.errors += 1;
            }
            if matches!(op, Op::Store { .. }) {
                self.store_ms.push(done_ms - sent_ms);
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), String> {
        if let Some(target) = self.slo.store_p95_ms
            && !self.store_ms.is_empty()
        {
            self.store_ms.sort_unstable();
            let i = (self.store_ms.len() * 95).div_ceil(100).saturating_sub(1);
            let p95 = self.store_ms[i] as f64;
            if p95 > target {
                return Err(format!(
                    "store p95 {p95} ms (simulated) over the SLO {target} ms"
                ));
            }
        }
        if let Some(max) = self.slo.max_error_ratio
            && self.ops > 0
        {
            let ratio = self.errors as f64 / self.ops as f64;
            if ratio > max {
                return Err(format!(
                    "{} of {} operations failed ({ratio:.4}), SLO {max}",
                    self.errors, self.ops
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hand::*;
    use serde_json::json;

    #[test]
    fn slow_stores_and_errors_miss_the_slo() {
        let slo = Slo {
            store_p95_ms: Some(10.0),
            max_error_ratio: Some(0.1),
        };
        let fast: Vec<_> = (0..20)
            .map(|i| op(store(json!(i)), stored("x"), i))
            .collect();
        run(&mut SloCheck::new(slo.clone()), &fast).unwrap();
        let mut slow = fast.clone();
        for o in &mut slow {
            if let Event::Op { done_ms, .. } = o {
                *done_ms += 50;
            }
        }
        assert!(
            run(&mut SloCheck::new(slo.clone()), &slow)
                .unwrap_err()
                .contains("p95")
        );
        let mut failing = fast;
        failing.extend((0..5).map(|i| op(Op::Stats, error(ErrorCode::Internal), i)));
        assert!(run(&mut SloCheck::new(slo), &failing).is_err());
    }
}
