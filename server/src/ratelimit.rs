//! Per-user token buckets (SPEC §1.3): one pure decision function, [`decide`], used by the
//! in-memory limiter and mirrored line by line by a Redis script ([`REDIS_SCRIPT`]), so every
//! instance sharing a Redis shares one budget. Both pass the same table of [`VECTORS`].
//!
//! The arithmetic is integer only, so the Lua mirror (whose numbers are doubles) computes exactly
//! the same results: a bucket of `capacity` tokens refilled over `window_ms` holds
//! `capacity × window_ms` *units*; a request costs `window_ms` units; every millisecond adds
//! `capacity` units. With the defaults (100 per 10 s) a full bucket is 10⁶ units, far below 2⁵³.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// A bucket's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    /// Requests a full bucket allows at once, and per window on average.
    pub capacity: u64,
    /// Time to refill an empty bucket (ms).
    pub window_ms: u64,
    /// After a denied request the user is refused for this long (ms); 0: no block.
    pub block_ms: u64,
}

impl Limit {
    pub const fn new(capacity: u64, window_ms: u64, block_ms: u64) -> Self {
        Self {
            capacity,
            window_ms,
            block_ms,
        }
    }

    /// Parse `"100,10"`: capacity and window in seconds. `var` names the setting in errors.
    pub fn parse(var: &str, text: &str, block_ms: u64) -> Result<Self, String> {
        let bad =
            || format!("{var}: expected `<requests>,<window seconds>` with both > 0, got {text:?}");
        let (cap, win) = text.split_once(',').ok_or_else(bad)?;
        let capacity: u64 = cap.trim().parse().map_err(|_| bad())?;
        let window_s: u64 = win.trim().parse().map_err(|_| bad())?;
        if capacity == 0 || window_s == 0 || capacity > 1_000_000 || window_s > 86_400 {
            return Err(bad());
        }
        Ok(Self::new(capacity, window_s * 1000, block_ms))
    }

    fn full(&self) -> u64 {
        self.capacity * self.window_ms
    }
}

/// What a bucket remembers between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// Units held (see the module docs).
    pub units: u64,
    /// When `units` was last brought up to date (unix ms).
    pub updated_ms: u64,
    /// Refused until then (unix ms); 0 when not blocked.
    pub blocked_until_ms: u64,
}

/// One decision, with what the `X-RateLimit-*` headers and `Retry-After` need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u64,
    /// Whole requests left after this one.
    pub remaining: u64,
    /// When denied: how long until a request can succeed (ms); 0 when allowed.
    pub retry_after_ms: u64,
    /// How long until the bucket is full again (ms).
    pub reset_after_ms: u64,
}

/// The planted `limiter-never-sweeps` bug's test of a bucket to keep: idleness judged by
/// deciding a request, which takes one from the bucket, so no bucket ever looks full. (Reached
/// only with the bug planted; out of the mutation scope as `planted_*`.)
fn planted_never_sweeps_keeps(b: &Bucket, now_ms: u64, l: &Limit) -> bool {
    let (probe, _) = decide(Some(*b), now_ms, l);
    probe.reset_after_ms > 0 || now_ms < b.blocked_until_ms
}

/// The decision for one request at `now_ms`, and the bucket to keep. `bucket` is `None` for a
/// user not seen before (or whose bucket expired): a full bucket.
pub fn decide(bucket: Option<Bucket>, now_ms: u64, limit: &Limit) -> (Decision, Bucket) {
    let full = limit.full();
    let mut b = bucket.unwrap_or(Bucket {
        units: full,
        updated_ms: now_ms,
        blocked_until_ms: 0,
    });
    // Refill; a clock that steps back (another instance's skew) refills nothing.
    if now_ms > b.updated_ms {
        let added = (now_ms - b.updated_ms).saturating_mul(limit.capacity);
        b.units = full.min(b.units.saturating_add(added));
        b.updated_ms = now_ms;
    }
    let cost = limit.window_ms;
    let reset = |units: u64| (full - units).div_ceil(limit.capacity);
    if now_ms < b.blocked_until_ms {
        let d = Decision {
            allowed: false,
            limit: limit.capacity,
            remaining: 0,
            retry_after_ms: b.blocked_until_ms - now_ms,
            reset_after_ms: reset(b.units).max(b.blocked_until_ms - now_ms),
        };
        return (d, b);
    }
    b.blocked_until_ms = 0;
    if b.units >= cost {
        b.units -= cost;
        let d = Decision {
            allowed: true,
            limit: limit.capacity,
            remaining: b.units / cost,
            retry_after_ms: 0,
            reset_after_ms: reset(b.units),
        };
        return (d, b);
    }
    let retry_after_ms = if limit.block_ms > 0 {
        b.blocked_until_ms = now_ms + limit.block_ms;
        limit.block_ms
    } else {
        (cost - b.units).div_ceil(limit.capacity)
    };
    let d = Decision {
        allowed: false,
        limit: limit.capacity,
        remaining: 0,
        retry_after_ms,
        reset_after_ms: reset(b.units).max(retry_after_ms),
    };
    (d, b)
}

/// [`decide`] as a Redis script over one hash (`u`, `t`, `b` fields). `KEYS[1]` = the bucket;
/// ARGV = now_ms, capacity, window_ms, block_ms; now_ms `redis` means Redis's own clock (`TIME`), the
/// one time base every instance sharing the bucket agrees on — an instance whose clock jumps
/// can then neither freeze a bucket's refills for everyone nor refill it early. Returns
/// {allowed, remaining, retry_after_ms, reset_after_ms}. The bucket expires once it would be
/// full and unblocked anyway.
pub const REDIS_SCRIPT: &str = r"local now = tonumber(ARGV[1])
if ARGV[1] == 'redis' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local cap = tonumber(ARGV[2])
local win = tonumber(ARGV[3])
local block = tonumber(ARGV[4])
local full = cap * win
local s = redis.call('HMGET', KEYS[1], 'u', 't', 'b')
local units = tonumber(s[1]) or full
local updated = tonumber(s[2]) or now
local blocked = tonumber(s[3]) or 0
if now > updated then
  units = math.min(full, units + (now - updated) * cap)
  updated = now
end
local function reset(u) return math.ceil((full - u) / cap) end
local allowed, remaining, retry = 0, 0, 0
if now < blocked then
  retry = blocked - now
else
  blocked = 0
  if units >= win then
    units = units - win
    allowed = 1
    remaining = math.floor(units / win)
  elseif block > 0 then
    blocked = now + block
    retry = block
  else
    retry = math.ceil((win - units) / cap)
  end
end
redis.call('HSET', KEYS[1], 'u', string.format('%d', units), 't', string.format('%d', updated), 'b', string.format('%d', blocked))
redis.call('PEXPIRE', KEYS[1], math.max(reset(units), blocked - now, 1))
return {allowed, remaining, retry, math.max(reset(units), retry)}";

/// One step of a test vector: a request at `at_ms` and the decision it must get.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub at_ms: u64,
    pub allowed: bool,
    pub remaining: u64,
    pub retry_after_ms: u64,
    pub reset_after_ms: u64,
}

/// A named sequence of requests against one fresh bucket.
#[derive(Debug, Clone, Copy)]
pub struct Vector {
    pub name: &'static str,
    pub limit: Limit,
    pub steps: &'static [Step],
}

const fn step(at_ms: u64, allowed: bool, remaining: u64, retry: u64, reset: u64) -> Step {
    Step {
        at_ms,
        allowed,
        remaining,
        retry_after_ms: retry,
        reset_after_ms: reset,
    }
}

/// The shared table: the in-memory limiter's unit tests and the Redis script's integration test
/// (`chaos/tests/rate_limit_redis.rs`) both replay it.
pub const VECTORS: &[Vector] = &[
    Vector {
        name: "burst of three then refill one per second",
        limit: Limit::new(3, 3_000, 0),
        steps: &[
            step(1_000, true, 2, 0, 1_000),
            step(1_000, true, 1, 0, 2_000),
            step(1_000, true, 0, 0, 3_000),
            step(1_000, false, 0, 1_000, 3_000),
            step(1_500, false, 0, 500, 2_500),
            step(2_000, true, 0, 0, 3_000),
            step(9_000, true, 2, 0, 1_000),
        ],
    },
    Vector {
        name: "a denied request blocks for the block time",
        limit: Limit::new(2, 10_000, 60_000),
        steps: &[
            step(0, true, 1, 0, 5_000),
            step(0, true, 0, 0, 10_000),
            step(100, false, 0, 60_000, 60_000),
            step(30_000, false, 0, 30_100, 30_100),
            step(60_099, false, 0, 1, 1),
            step(60_100, true, 1, 0, 5_000),
        ],
    },
    Vector {
        name: "the defaults: 100 per 10 s",
        limit: Limit::new(100, 10_000, 0),
        steps: &[
            step(5, true, 99, 0, 100),
            step(5, true, 98, 0, 200),
            step(105, true, 98, 0, 200),
            step(20_000, true, 99, 0, 100),
        ],
    },
    Vector {
        name: "a clock that steps back refills nothing",
        limit: Limit::new(1, 1_000, 0),
        steps: &[
            step(10_000, true, 0, 0, 1_000),
            step(9_000, false, 0, 1_000, 1_000),
            step(10_999, false, 0, 1, 1),
            step(11_000, true, 0, 0, 1_000),
        ],
    },
];

/// Buckets of one process. Idle buckets are dropped once the map grows, since a dropped bucket
/// and a full one decide the same.
#[derive(Debug)]
pub struct MemoryLimiter {
    buckets: crate::sync::Mutex<HashMap<String, (Bucket, Limit)>>,
    /// Buckets kept before idle ones are swept (`SPIRAL_RATE_LIMIT_BUCKETS`).
    sweep_at: usize,
}

/// Whether forgetting `b` changes no decision at `now_ms`: refilled to full and not blocked, it
/// is the bucket a user never seen gets.
fn idle(b: &Bucket, now_ms: u64, limit: &Limit) -> bool {
    let refilled = b.units.saturating_add(
        now_ms
            .saturating_sub(b.updated_ms)
            .saturating_mul(limit.capacity),
    );
    refilled >= limit.full() && now_ms >= b.blocked_until_ms
}

/// Buckets kept before idle ones are swept, unless configured otherwise.
pub const SWEEP_AT: usize = 10_000;

impl Default for MemoryLimiter {
    fn default() -> Self {
        Self::with_sweep_at(SWEEP_AT)
    }
}

impl MemoryLimiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// A limiter that, holding `sweep_at` buckets, forgets the idle ones (full again and not
    /// blocked: forgetting them changes no decision) before it adds another.
    pub fn with_sweep_at(sweep_at: usize) -> Self {
        Self {
            buckets: Default::default(),
            sweep_at: sweep_at.max(1),
        }
    }

    /// Buckets held now: the limiter's memory (`spiral_ratelimit_buckets`).
    pub fn len(&self) -> usize {
        crate::sync::lock(&self.buckets).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decide for `key` at `now_ms` and remember the bucket.
    pub fn check(&self, key: &str, now_ms: u64, limit: &Limit) -> Decision {
        let mut map = crate::sync::lock(&self.buckets);
        if let Some(entry) = map.get_mut(key) {
            let (d, b) = decide(Some(entry.0), now_ms, limit);
            *entry = (b, *limit);
            return d;
        }
        let (d, b) = decide(None, now_ms, limit);
        if map.len() >= self.sweep_at {
            crate::reached!("ratelimit.swept");
            if crate::planted!(LimiterNeverSweeps) {
                // Planted: idleness judged by deciding a request, which takes one from the
                // bucket, so no bucket ever looks full and nothing is swept.
                map.retain(|_, (b, l)| planted_never_sweeps_keeps(b, now_ms, l));
            } else {
                map.retain(|_, (b, l)| !idle(b, now_ms, l));
            }
        }
        map.insert(key.to_owned(), (b, *limit));
        d
    }
}

#[cfg(test)]
#[cfg(not(spiral_loom))]
mod tests {
    use super::*;

    /// The limiter's memory bound: at `sweep_at` buckets it forgets the idle ones (full again,
    /// not blocked) and only those, so a sweep changes no decision.
    #[test]
    fn a_sweep_forgets_idle_buckets_and_keeps_used_and_blocked_ones() {
        let limit = Limit::new(2, 1_000, 5_000);
        let limiter = MemoryLimiter::with_sweep_at(3);
        assert!(limiter.check("idle", 0, &limit).allowed);
        assert!(limiter.check("used", 1_400, &limit).allowed);
        for _ in 0..3 {
            limiter.check("blocked", 900, &limit);
        }
        // At 1 500 ms `idle` is full again (2 a second refill it); `used`, used 100 ms ago, is
        // not; `blocked` is refused until 5 900.
        assert!(limiter.check("new", 1_500, &limit).allowed);
        let keys: Vec<String> = {
            let map = crate::sync::lock(&limiter.buckets);
            let mut k: Vec<String> = map.keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys, ["blocked", "new", "used"]);
        assert!(
            !limiter.check("blocked", 1_500, &limit).allowed,
            "still blocked"
        );
        let used = limiter.check("used", 1_500, &limit);
        assert!(
            used.allowed && used.remaining == 0,
            "{used:?}: its bucket was kept"
        );
    }

    #[test]
    fn every_vector_holds_in_memory() {
        for v in VECTORS {
            let limiter = MemoryLimiter::new();
            for (i, s) in v.steps.iter().enumerate() {
                let d = limiter.check("u", s.at_ms, &v.limit);
                let got = (d.allowed, d.remaining, d.retry_after_ms, d.reset_after_ms);
                let want = (s.allowed, s.remaining, s.retry_after_ms, s.reset_after_ms);
                assert_eq!(got, want, "{}: step {i} at {} ms", v.name, s.at_ms);
            }
        }
    }

    #[test]
    fn users_have_separate_buckets() {
        let limiter = MemoryLimiter::new();
        let l = Limit::new(1, 1_000, 0);
        assert!(limiter.check("a", 0, &l).allowed);
        assert!(!limiter.check("a", 0, &l).allowed);
        assert!(limiter.check("b", 0, &l).allowed);
    }

    #[test]
    fn parse_names_the_variable() {
        assert_eq!(
            Limit::parse("SPIRAL_RATE_LIMIT", "100,10", 0).unwrap(),
            Limit::new(100, 10_000, 0)
        );
        for bad in ["100", "0,10", "x,1", "10,0", ""] {
            let e = Limit::parse("SPIRAL_RATE_LIMIT", bad, 0).unwrap_err();
            assert!(e.contains("SPIRAL_RATE_LIMIT"), "{e}");
        }
    }

    proptest::proptest! {
        /// Over any sequence of requests, accepted requests never exceed what the bucket can
        /// hold plus what it refilled: capacity + elapsed × capacity / window.
        #[test]
        fn accepted_never_exceed_the_bucket(
            cap in 1u64..20, window_s in 1u64..5, gaps in proptest::collection::vec(0u64..700, 1..200)
        ) {
            let limit = Limit::new(cap, window_s * 1000, 0);
            let limiter = MemoryLimiter::new();
            let (mut now, mut accepted) = (1_000u64, 0u64);
            let start = now;
            for g in gaps {
                now += g;
                if limiter.check("u", now, &limit).allowed {
                    accepted += 1;
                }
                let bound = cap + (now - start) * cap / limit.window_ms;
                proptest::prop_assert!(accepted <= bound, "{accepted} > {bound}");
            }
        }
    }
}
