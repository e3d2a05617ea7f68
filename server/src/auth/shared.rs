//! State every server instance must agree on: rate-limit buckets, single-use handshake `jti`s and
//! revocations. In memory for one instance; in Redis when the server stores there, so instances
//! sharing that Redis share one budget and one set of used and revoked tokens.
//!
//! While Redis is unreachable the Redis backend decides from process memory instead (counted in
//! `spiral_shared_state_fallback_total`): the server keeps admitting and limiting users, each
//! instance on its own, rather than refusing everyone until Redis returns.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use redis::Script;

use crate::error::StorageError;
use crate::ratelimit::{Decision, Limit, MemoryLimiter, REDIS_SCRIPT};
use crate::storage::redis::RedisStorage;
use crate::sync::{AtomicU64, Mutex, MutexGuard, Ordering};

static RATE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(REDIS_SCRIPT));

/// The rate-limit script as `(SHA1, source)`, for a simulated Redis to recognise.
pub fn rate_script() -> (String, &'static str) {
    (RATE_SCRIPT.get_hash().to_owned(), REDIS_SCRIPT)
}

/// Where shared state lives.
#[derive(Debug)]
pub struct Shared {
    redis: Option<Arc<RedisStorage>>,
    local: Local,
    fallbacks: AtomicU64,
}

/// Process-local state: the memory backend, and the Redis backend's fallback.
#[derive(Debug, Default)]
struct Local {
    limiter: MemoryLimiter,
    /// `jti` → until (unix ms).
    used: Mutex<BTreeMap<String, u64>>,
    revoked_jti: Mutex<BTreeMap<String, u64>>,
    /// `sub` → revoked at (unix ms): tokens issued at or before then are refused.
    revoked_sub: Mutex<BTreeMap<String, u64>>,
}

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    crate::sync::lock(m)
}

/// Drop entries whose time has passed, once a map grows.
fn sweep(map: &mut BTreeMap<String, u64>, now_ms: u64) {
    if map.len() >= 10_000 {
        map.retain(|_, until| *until > now_ms);
    }
}

impl Local {
    fn claim(&self, jti: &str, now_ms: u64, until_ms: u64) -> bool {
        let mut used = guard(&self.used);
        sweep(&mut used, now_ms);
        match used.get(jti) {
            Some(&until) if until > now_ms => false,
            _ => {
                used.insert(jti.to_owned(), until_ms);
                true
            }
        }
    }

    fn is_revoked(&self, jti: Option<&str>, sub: &str, issued_ms: u64, now_ms: u64) -> bool {
        let by_jti = jti.is_some_and(|j| {
            guard(&self.revoked_jti)
                .get(j)
                .is_some_and(|&until| until > now_ms)
        });
        by_jti
            || guard(&self.revoked_sub)
                .get(sub)
                .is_some_and(|&at| issued_ms <= at)
    }
}

/// What to revoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoke {
    /// One token, until it would have expired (unix ms).
    Jti { jti: String, until_ms: u64 },
    /// Every token of a subject issued up to now.
    Sub(String),
}

/// How long a subject's revocation is remembered: longer than any sensible token lifetime.
const SUB_REVOCATION_TTL_MS: u64 = 30 * 24 * 3600 * 1000;

impl Shared {
    /// State in this process only.
    pub fn memory() -> Self {
        Self {
            redis: None,
            local: Local::default(),
            fallbacks: AtomicU64::new(0),
        }
    }

    /// State in `redis`, shared with every instance using the same namespace.
    pub fn redis(redis: Arc<RedisStorage>) -> Self {
        Self {
            redis: Some(redis),
            local: Local::default(),
            fallbacks: AtomicU64::new(0),
        }
    }

    pub fn backend(&self) -> &'static str {
        if self.redis.is_some() {
            "redis"
        } else {
            "memory"
        }
    }

    /// Decisions taken from process memory because Redis failed.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    fn fell_back(&self, what: &str, e: &StorageError) {
        crate::reached!("auth.shared_fallback");
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %e, "shared state: {what} decided locally, Redis unreachable");
    }

    /// One rate-limit decision for `key` (e.g. `ws:ada`). A shared bucket runs on Redis's clock;
    /// the in-process one on `local_ms`, a monotonic time of this process — never a wall clock,
    /// which can jump (SPEC §2: the wall clock is for tokens and timestamps). `wall_ms` only
    /// serves the planted bug that keeps the old, wall-clock buckets.
    pub async fn rate(&self, key: &str, limit: &Limit, local_ms: u64, wall_ms: u64) -> Decision {
        if crate::planted!(BucketWallClock) {
            // Planted: both buckets on this instance's wall clock, as before.
            return self.rate_on(key, limit, Some(wall_ms), wall_ms).await;
        }
        self.rate_on(key, limit, None, local_ms).await
    }

    /// [`rate`](Self::rate) at given times: the shared bucket at `shared_ms` (`None`: Redis's own
    /// clock), the in-process one at `local_ms`. Tests replay rate-limit vectors with it.
    pub async fn rate_on(
        &self,
        key: &str,
        limit: &Limit,
        shared_ms: Option<u64>,
        local_ms: u64,
    ) -> Decision {
        if let Some(r) = &self.redis {
            // `redis`: the script reads Redis's own clock.
            let now = shared_ms.map_or_else(|| "redis".to_owned(), |n| n.to_string());
            let args = [
                now,
                limit.capacity.to_string(),
                limit.window_ms.to_string(),
                limit.block_ms.to_string(),
            ];
            let keys = [r.namespaced(&format!("rl:{key}"))];
            match r
                .invoke::<(u64, u64, u64, u64)>("rate limit", &RATE_SCRIPT, &keys, &args)
                .await
            {
                Ok((allowed, remaining, retry_after_ms, reset_after_ms)) => {
                    return Decision {
                        allowed: allowed == 1,
                        limit: limit.capacity,
                        remaining,
                        retry_after_ms,
                        reset_after_ms,
                    };
                }
                Err(e) => self.fell_back("rate limit", &e),
            }
        }
        self.local.limiter.check(key, local_ms, limit)
    }

    /// Mark a handshake `jti` used until `until_ms`; false if it already was (a replay).
    pub async fn claim_jti(&self, jti: &str, now_ms: u64, until_ms: u64) -> bool {
        let ttl_ms = until_ms.saturating_sub(now_ms).max(1);
        if let Some(r) = &self.redis {
            let key = r.namespaced(&format!("jti:{jti}"));
            let outcome = if crate::planted!(ReplayWindow) {
                // Planted: check, then insert, as two round trips — two instances can both
                // see the jti unused and both admit it.
                match r
                    .query::<Option<String>>("jti", redis::cmd("GET").arg(&key).to_owned())
                    .await
                {
                    Ok(Some(_)) => Ok(false),
                    Ok(None) => r
                        .query::<()>(
                            "jti",
                            redis::cmd("SET")
                                .arg(&key)
                                .arg(now_ms)
                                .arg("PX")
                                .arg(ttl_ms)
                                .to_owned(),
                        )
                        .await
                        .map(|()| true),
                    Err(e) => Err(e),
                }
            } else {
                let cmd = redis::cmd("SET")
                    .arg(&key)
                    .arg(now_ms)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .to_owned();
                r.query::<Option<String>>("jti", cmd)
                    .await
                    .map(|ok| ok.is_some())
            };
            match outcome {
                Ok(first) => return first,
                Err(e) => self.fell_back("jti replay check", &e),
            }
        }
        if crate::planted!(ReplayWindow) {
            let seen = guard(&self.local.used)
                .get(jti)
                .is_some_and(|&u| u > now_ms);
            tokio::task::yield_now().await;
            guard(&self.local.used).insert(jti.to_owned(), until_ms);
            return !seen;
        }
        self.local.claim(jti, now_ms, until_ms)
    }

    /// Record a revocation. Kept locally as well, so it holds on this instance even if Redis fails.
    pub async fn revoke(&self, what: &Revoke, now_ms: u64) -> Result<(), StorageError> {
        match what {
            Revoke::Jti { jti, until_ms } => {
                guard(&self.local.revoked_jti).insert(jti.clone(), *until_ms);
            }
            Revoke::Sub(sub) => {
                guard(&self.local.revoked_sub).insert(sub.clone(), now_ms);
            }
        }
        if let Some(r) = &self.redis {
            let (key, ttl) = match what {
                Revoke::Jti { jti, until_ms } => (
                    r.namespaced(&format!("revoked:jti:{jti}")),
                    until_ms.saturating_sub(now_ms).max(1),
                ),
                Revoke::Sub(sub) => (
                    r.namespaced(&format!("revoked:sub:{sub}")),
                    SUB_REVOCATION_TTL_MS,
                ),
            };
            let cmd = redis::cmd("SET")
                .arg(&key)
                .arg(now_ms)
                .arg("PX")
                .arg(ttl)
                .to_owned();
            r.query::<()>("revoke", cmd).await?;
        }
        Ok(())
    }

    /// Whether a token (`jti`, `sub`, issued at `issued_ms`) is revoked.
    pub async fn is_revoked(
        &self,
        jti: Option<&str>,
        sub: &str,
        issued_ms: u64,
        now_ms: u64,
    ) -> bool {
        if self.local.is_revoked(jti, sub, issued_ms, now_ms) {
            return true;
        }
        let Some(r) = &self.redis else {
            return false;
        };
        let mut keys = vec![r.namespaced(&format!("revoked:sub:{sub}"))];
        if let Some(j) = jti {
            keys.push(r.namespaced(&format!("revoked:jti:{j}")));
        }
        // One key per command: in a cluster they may live on different nodes.
        for (i, key) in keys.iter().enumerate() {
            match r
                .query::<Option<u64>>("revocation", redis::cmd("GET").arg(key).to_owned())
                .await
            {
                Ok(Some(at)) if i == 0 && issued_ms <= at => return true,
                Ok(Some(_)) if i == 1 => return true,
                Ok(_) => {}
                Err(e) => {
                    self.fell_back("revocation check", &e);
                    return false;
                }
            }
        }
        false
    }
}

#[cfg(all(test, not(spiral_loom)))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_jti_is_single_use_until_it_expires() {
        let s = Shared::memory();
        assert!(s.claim_jti("j", 1_000, 5_000).await);
        assert!(!s.claim_jti("j", 2_000, 5_000).await);
        assert!(s.claim_jti("j", 5_000, 9_000).await);
    }

    #[tokio::test]
    async fn revoking_a_subject_covers_tokens_issued_before() {
        let s = Shared::memory();
        s.revoke(&Revoke::Sub("ada".into()), 10_000).await.unwrap();
        assert!(s.is_revoked(None, "ada", 9_000, 11_000).await);
        assert!(s.is_revoked(None, "ada", 10_000, 11_000).await);
        assert!(!s.is_revoked(None, "ada", 10_001, 11_000).await);
        assert!(!s.is_revoked(None, "bob", 9_000, 11_000).await);
        s.revoke(
            &Revoke::Jti {
                jti: "j".into(),
                until_ms: 20_000,
            },
            10_000,
        )
        .await
        .unwrap();
        assert!(s.is_revoked(Some("j"), "bob", 0, 19_999).await);
        assert!(!s.is_revoked(Some("j"), "bob", 0, 20_000).await);
    }
}
