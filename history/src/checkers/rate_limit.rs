//! Rate-limit conformance: the operations a user gets past the WebSocket limiter never exceed
//! what the token bucket allows — over any interval of length T, at most
//! `capacity + capacity × T / window` (+1 for the boundary), counted across every connection and
//! server of the user. An operation is "past the limiter" when it is answered with anything but
//! `rate_limited`; it happened somewhere between its send and its answer, so an interval spans
//! from the first one's send to the last one's answer. A burst of binary frames is judged the same
//! way on its own: every message counts against the bucket, whatever its opcode.

use std::collections::BTreeMap;

use spiral_server::protocol::ErrorCode;

use super::Checker;
use crate::event::Event;

#[derive(Debug)]
pub struct RateLimit {
    capacity: u64,
    window_ms: u64,
    /// Per user: (sent, answered) of each admitted operation.
    admitted: BTreeMap<String, Vec<(u64, u64)>>,
}

impl RateLimit {
    pub fn new(capacity: u64, window_ms: u64) -> Self {
        Self {
            capacity,
            window_ms: window_ms.max(1),
            admitted: BTreeMap::new(),
        }
    }
}

/// Messages a bucket of `capacity` per `window_ms` can let through within `span_ms` (+1 for the
/// boundary).
fn allowed(capacity: u64, window_ms: u64, span_ms: u64) -> u64 {
    capacity + capacity * span_ms / window_ms + 1
}

impl Checker for RateLimit {
    fn name(&self) -> &'static str {
        "rate_limit"
    }

    fn observe(&mut self, event: &Event) -> Result<(), String> {
        if let Event::Op {
            user,
            answer,
            sent_ms,
            done_ms,
            ..
        } = event
            && answer.answered()
            && answer.error_code() != Some(ErrorCode::RateLimited)
        {
            self.admitted
                .entry(user.clone())
                .or_default()
                .push((*sent_ms, *done_ms));
        }
        if let Event::BinaryBurst {
            user,
            sent,
            admitted,
            span_ms,
            disturbed: false,
            ..
        } = event
        {
            let allowed = allowed(self.capacity, self.window_ms, *span_ms);
            if u64::from(*admitted) > allowed {
                return Err(format!(
                    "{user}: {admitted} of {sent} binary frames admitted within {span_ms} ms; the bucket allows {allowed}"
                ));
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), String> {
        for (user, ops) in &mut self.admitted {
            ops.sort_unstable();
            for i in 0..ops.len() {
                // Answers can come back out of send order across connections: track the latest.
                let mut last_done = ops[i].1;
                for (j, op) in ops.iter().enumerate().skip(i) {
                    last_done = last_done.max(op.1);
                    let span = last_done - ops[i].0;
                    let allowed = allowed(self.capacity, self.window_ms, span);
                    let n = (j - i + 1) as u64;
                    if n > allowed {
                        return Err(format!(
                            "{user}: {n} operations admitted within {span} ms ({}..{} ms); the bucket allows {allowed}",
                            ops[i].0, last_done
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Op;
    use crate::hand::*;
    #[test]
    fn a_burst_beyond_the_bucket_is_caught() {
        // 10 per second allowed with capacity 10: 12 at once is too many, 10 is fine.
        let burst = |n: u64| {
            (0..n)
                .map(|i| op(Op::Stats, listed(), i))
                .collect::<Vec<_>>()
        };
        run(&mut RateLimit::new(10, 1000), &burst(10)).unwrap();
        let e = run(&mut RateLimit::new(10, 1000), &burst(13)).unwrap_err();
        assert!(e.contains("user-0"), "{e}");
        // Denials do not count.
        let mut denied = burst(10);
        denied.extend((0..5).map(|i| op(Op::Stats, error(ErrorCode::RateLimited), 20 + i)));
        run(&mut RateLimit::new(10, 1000), &denied).unwrap();
        // Spread over time, the refill allows more.
        let spread: Vec<_> = (0..40).map(|i| op(Op::Stats, listed(), i * 100)).collect();
        run(&mut RateLimit::new(10, 1000), &spread).unwrap();
        // A binary burst counts against the bucket too.
        let burst = |admitted| Event::BinaryBurst {
            client: 0,
            server: 0,
            user: "user-0".into(),
            sent: 30,
            admitted,
            span_ms: 50,
            disturbed: false,
        };
        run(&mut RateLimit::new(10, 1000), &[burst(11)]).unwrap();
        let e = run(&mut RateLimit::new(10, 1000), &[burst(30)]).unwrap_err();
        assert!(e.contains("binary frames"), "{e}");
        // Redis was faulty: each instance decided alone, as the SPEC allows.
        let mut fallback = burst(30);
        if let Event::BinaryBurst { disturbed, .. } = &mut fallback {
            *disturbed = true;
        }
        run(&mut RateLimit::new(10, 1000), &[fallback]).unwrap();
    }
}
