//! Rate-limit conformance: the operations a user gets past the WebSocket limiter never exceed
//! what the token bucket allows — over any interval of length T, at most
//! `capacity + capacity × T / window` (+1 for the boundary), counted across every connection and
//! server of the user. An operation is "past the limiter" when it is answered with anything but
//! `rate_limited`; it happened somewhere between its send and its answer, so an interval spans
//! from the first one's send to the last one's answer. A burst of binary frames is judged the same
//! way on its own: every message counts against the bucket, whatever its opcode.
//!
//! The HTTP bucket's headers (SPEC §1.3) are judged on every authenticated answer the world
//! reads: `X-RateLimit-Limit` is the configured capacity, `X-RateLimit-Remaining` no more than
//! that, and `X-RateLimit-Reset` (unix seconds, rounded up) no earlier than the request was sent
//! and no later than one window after the answer — a refused request's block may take it to the
//! block's end instead. Judged only when no clock fault moved the server's clock meanwhile. A
//! refusal carries a `retry_after_ms` of at least 1.
//!
//! The limiter's memory: at rest, with every bucket idle, a server holds no more buckets than
//! its bound (`SPIRAL_RATE_LIMIT_BUCKETS`) once a new user's request has made it sweep.

use std::collections::BTreeMap;

use spiral_server::protocol::ErrorCode;
use spiral_server::ratelimit::Limit;

use super::Checker;
use crate::event::Event;

#[derive(Debug)]
pub struct RateLimit {
    capacity: u64,
    window_ms: u64,
    /// The servers' HTTP bucket.
    http: Limit,
    /// Per user: (sent, answered) of each admitted operation.
    admitted: BTreeMap<String, Vec<(u64, u64)>>,
}

impl RateLimit {
    pub fn new(capacity: u64, window_ms: u64, http: Limit) -> Self {
        Self {
            capacity,
            window_ms: window_ms.max(1),
            http,
            admitted: BTreeMap::new(),
        }
    }
}

/// One answer's rate-limit headers against the HTTP bucket `http` (see the module docs).
fn judge_headers(http: &Limit, event: &Event) -> Result<(), String> {
    let Event::RateHeaders {
        server,
        path,
        status,
        limit,
        remaining,
        reset_s,
        retry_after_ms,
        sent_server_ms,
        answered_server_ms,
        steady,
        ..
    } = event
    else {
        return Ok(());
    };
    let what = format!("server-{server}'s {status} to {path}");
    if *limit != http.capacity {
        return Err(format!(
            "{what}: X-RateLimit-Limit {limit}, but the bucket holds {}",
            http.capacity
        ));
    }
    if remaining > limit {
        return Err(format!(
            "{what}: X-RateLimit-Remaining {remaining} over X-RateLimit-Limit {limit}"
        ));
    }
    if *status == 429 && retry_after_ms.is_none() {
        return Err(format!("{what}: a refusal without retry_after_ms"));
    }
    // A bucket refuses only what it cannot admit yet: "retry after 0 ms" names the very moment
    // it refused, so a client that obeys it asks again at once, in a loop.
    if *status == 429 && *retry_after_ms == Some(0) {
        return Err(format!(
            "{what}: a refusal with retry_after_ms 0 (the moment it refused: a client obeying it retries at once, in a loop)"
        ));
    }
    if !steady {
        return Ok(());
    }
    // The bucket cannot be full again before the user may ask again.
    let retry_ms = retry_after_ms.unwrap_or(0);
    if reset_s.saturating_mul(1000) < sent_server_ms + retry_ms {
        return Err(format!(
            "{what}: X-RateLimit-Reset {reset_s} comes before its retry_after_ms {retry_ms} has passed (sent at {sent_server_ms} ms on its clock)"
        ));
    }
    // Refilling takes at most a window; only a refusal can block for longer.
    let refill_ms = if *status == 429 {
        http.window_ms.max(http.block_ms)
    } else {
        http.window_ms
    };
    let reset_ms = reset_s.saturating_mul(1000);
    let latest_ms = answered_server_ms + refill_ms;
    if reset_ms >= latest_ms + 1000 {
        return Err(format!(
            "{what}: X-RateLimit-Reset {reset_s} is {} ms after the answer ({answered_server_ms} ms on its clock); a bucket of {} per {} ms is full again within {refill_ms} ms",
            reset_ms - answered_server_ms,
            http.capacity,
            http.window_ms
        ));
    }
    Ok(())
}

/// Messages a bucket of `capacity` per `window_ms` can let through within `span_ms` (+1 for the
/// boundary).
fn allowed(capacity: u64, window_ms: u64, span_ms: u64) -> u64 {
    capacity + capacity * span_ms / window_ms + 1
}

/// One user's HTTP flood (see [`Event::HttpFlood`]): the bucket let through no more than it
/// holds plus its refill, and a user that waited out its `retry_after_ms` is let back in.
fn judge_flood(http: &Limit, event: &Event) -> Result<(), String> {
    let Event::HttpFlood {
        server,
        user,
        sent,
        admitted,
        span_ms,
        retry_after_ms,
        after_block,
        disturbed: false,
        ..
    } = event
    else {
        return Ok(());
    };
    let allowed = allowed(http.capacity, http.window_ms, *span_ms);
    if u64::from(*admitted) > allowed {
        return Err(format!(
            "{user}: server-{server} let {admitted} of {sent} HTTP requests through within {span_ms} ms; a bucket of {} per {} ms allows {allowed}",
            http.capacity, http.window_ms
        ));
    }
    if let (Some(Some(wait)), Some(429)) = (retry_after_ms, after_block) {
        return Err(format!(
            "{user}: server-{server} still refused it with 429 after its retry_after_ms of {wait} had passed"
        ));
    }
    Ok(())
}

impl Checker for RateLimit {
    fn name(&self) -> &'static str {
        "rate_limit"
    }

    fn observe(&mut self, event: &Event) -> Result<(), String> {
        if let Event::LimiterAtRest {
            server,
            buckets,
            bound,
        } = event
            && *buckets > *bound
        {
            return Err(format!(
                "server-{server} holds {buckets} rate-limit buckets at rest, every one idle but the last; it keeps at most {bound} before sweeping the idle ones"
            ));
        }
        judge_headers(&self.http, event)?;
        judge_flood(&self.http, event)?;
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

    const HTTP: Limit = Limit::new(100, 10_000, 60_000);

    fn headers(status: u16, remaining: u64, reset_s: u64, steady: bool) -> Event {
        Event::RateHeaders {
            client: 0,
            server: 0,
            path: "/auth/refresh".into(),
            status,
            limit: 100,
            remaining,
            reset_s,
            retry_after_ms: (status == 429).then_some(60_000),
            sent_server_ms: 1_000_000,
            answered_server_ms: 1_000_020,
            steady,
        }
    }

    fn flood(admitted: u32, span_ms: u64, after_block: Option<u16>, disturbed: bool) -> Event {
        Event::HttpFlood {
            client: 0,
            server: 0,
            user: "flood-1".into(),
            capacity: 100,
            sent: admitted + 3,
            admitted,
            span_ms,
            retry_after_ms: Some(Some(1_500)),
            after_block,
            disturbed,
        }
    }

    #[test]
    fn an_http_flood_gets_the_bucket_and_back_in_after_its_wait() {
        let judge = |e: Event| run(&mut RateLimit::new(10, 1000, HTTP), &[e]);
        // 100 at once plus 10 per second of refill (and 1 for the boundary).
        judge(flood(111, 1_000, Some(200), false)).unwrap();
        let e = judge(flood(112, 1_000, Some(200), false)).unwrap_err();
        assert!(e.contains("allows 111"), "{e}");
        let e = judge(flood(100, 500, Some(429), false)).unwrap_err();
        assert!(e.contains("after its retry_after_ms of 1500"), "{e}");
        // Redis or a clock fault meanwhile: nothing to judge.
        judge(flood(300, 500, Some(429), true)).unwrap();
    }

    #[test]
    fn rate_limit_headers_must_describe_the_bucket() {
        let judge = |e: Event| run(&mut RateLimit::new(10, 1000, HTTP), &[e]);
        // One request taken from a full bucket: full again 100 ms later, rounded up to 1001 s.
        judge(headers(200, 99, 1001, true)).unwrap();
        // A whole window after the answer is the latest a bucket can need.
        judge(headers(200, 0, 1010, true)).unwrap();
        // Two windows: the bucket cannot take that long to refill.
        let e = judge(headers(200, 99, 1020, true)).unwrap_err();
        assert!(e.contains("full again within 10000 ms"), "{e}");
        // A refusal blocks for 60 s: its reset may be that far.
        judge(headers(429, 0, 1060, true)).unwrap();
        assert!(judge(headers(429, 0, 1062, true)).is_err());
        // In the past.
        let e = judge(headers(200, 99, 999, true)).unwrap_err();
        assert!(e.contains("comes before"), "{e}");
        // A refusal's bucket is not full before the block ends, and says when to come back.
        let e = judge(headers(429, 0, 1010, true)).unwrap_err();
        assert!(e.contains("retry_after_ms 60000"), "{e}");
        let mut bare = headers(429, 0, 1060, true);
        if let Event::RateHeaders { retry_after_ms, .. } = &mut bare {
            *retry_after_ms = None;
        }
        assert!(judge(bare).unwrap_err().contains("without retry_after_ms"));
        // "Retry after 0 ms": the moment it refused.
        let mut now = headers(429, 0, 1060, false);
        if let Event::RateHeaders { retry_after_ms, .. } = &mut now {
            *retry_after_ms = Some(0);
        }
        assert!(judge(now).unwrap_err().contains("retry_after_ms 0"));
        // A clock fault in between: the times say nothing, the counts still do.
        judge(headers(200, 99, 1020, false)).unwrap();
        let e = judge(headers(200, 101, 1001, false)).unwrap_err();
        assert!(e.contains("over X-RateLimit-Limit"), "{e}");
    }
    #[test]
    fn a_burst_beyond_the_bucket_is_caught() {
        // 10 per second allowed with capacity 10: 12 at once is too many, 10 is fine.
        let burst = |n: u64| {
            (0..n)
                .map(|i| op(Op::Stats, listed(), i))
                .collect::<Vec<_>>()
        };
        run(&mut RateLimit::new(10, 1000, HTTP), &burst(10)).unwrap();
        let e = run(&mut RateLimit::new(10, 1000, HTTP), &burst(13)).unwrap_err();
        assert!(e.contains("user-0"), "{e}");
        // Denials do not count.
        let mut denied = burst(10);
        denied.extend((0..5).map(|i| op(Op::Stats, error(ErrorCode::RateLimited), 20 + i)));
        run(&mut RateLimit::new(10, 1000, HTTP), &denied).unwrap();
        // Spread over time, the refill allows more.
        let spread: Vec<_> = (0..40).map(|i| op(Op::Stats, listed(), i * 100)).collect();
        run(&mut RateLimit::new(10, 1000, HTTP), &spread).unwrap();
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
        run(&mut RateLimit::new(10, 1000, HTTP), &[burst(11)]).unwrap();
        let e = run(&mut RateLimit::new(10, 1000, HTTP), &[burst(30)]).unwrap_err();
        assert!(e.contains("binary frames"), "{e}");
        // Redis was faulty: each instance decided alone, as the SPEC allows.
        let mut fallback = burst(30);
        if let Event::BinaryBurst { disturbed, .. } = &mut fallback {
            *disturbed = true;
        }
        run(&mut RateLimit::new(10, 1000, HTTP), &[fallback]).unwrap();
    }
}
