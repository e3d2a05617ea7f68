//! State every server instance must agree on: rate-limit buckets, single-use handshake `jti`s and
//! revocations. In Redis when the server stores there, so instances sharing that Redis share one
//! budget and one set of used and revoked tokens. Otherwise in process memory, written through to
//! the server's own storage ([`Shared::durable`]) and loaded back at boot ([`Shared::load`]), so
//! used and revoked tokens survive a restart wherever storage does (SPEC §1.9); rate-limit
//! buckets stay in memory.
//!
//! While Redis is unreachable the Redis backend decides from process memory instead (counted in
//! `spiral_auth_shared_state_fallbacks_total`): the server keeps admitting and limiting users,
//! each instance on its own, rather than refusing everyone until Redis returns — unless it fails
//! closed (`AUTH_FAIL_CLOSED=true`), when a handshake whose `jti` or revocation Redis cannot
//! check is refused ([`Unavailable`], 503 `storage_unavailable`).

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use redis::Script;

use crate::error::StorageError;
use crate::ratelimit::{Decision, Limit, MemoryLimiter, REDIS_SCRIPT};
use crate::storage::SharedStorage;
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
    /// Where used and revoked tokens persist when there is no Redis: the server's own storage.
    store: Option<SharedStorage>,
    local: Local,
    fallbacks: AtomicU64,
    fail_closed: bool,
}

/// Redis could not answer a `jti` or revocation check and the instance fails closed
/// (`AUTH_FAIL_CLOSED`): the caller must refuse rather than guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// Storage keys of the persisted state (values: unix ms — until when, or revoked at).
const KEY_USED: &str = "auth:jti:";
const KEY_REVOKED_JTI: &str = "auth:revoked:jti:";
const KEY_REVOKED_SUB: &str = "auth:revoked:sub:";

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
    fn new(redis: Option<Arc<RedisStorage>>, store: Option<SharedStorage>) -> Self {
        Self {
            redis,
            store,
            local: Local::default(),
            fallbacks: AtomicU64::new(0),
            fail_closed: false,
        }
    }

    /// State in this process only.
    pub fn memory() -> Self {
        Self::new(None, None)
    }

    /// State in process memory, used and revoked tokens written through to `store` (the
    /// server's own storage) and read back by [`load`](Self::load) at boot.
    pub fn durable(store: SharedStorage) -> Self {
        if crate::planted!(AuthVolatile) {
            // Planted: in memory only, as before — a restart forgets used and revoked tokens.
            return Self::memory();
        }
        Self::new(None, Some(store))
    }

    /// State in `redis`, shared with every instance using the same namespace.
    pub fn redis(redis: Arc<RedisStorage>) -> Self {
        Self::new(Some(redis), None)
    }

    /// Refuse (`Unavailable`) instead of deciding locally when Redis cannot answer a `jti` or
    /// revocation check (`AUTH_FAIL_CLOSED`).
    pub fn fail_closed(mut self, yes: bool) -> Self {
        self.fail_closed = yes;
        self
    }

    /// Rate-limit buckets this process holds (the memory backend's, or the Redis backend's
    /// fallback ones).
    pub fn local_buckets(&self) -> usize {
        self.local.limiter.len()
    }

    /// Rate-limit buckets kept in this process (the memory backend, and the Redis backend's
    /// fallback) before the idle ones are swept (`SPIRAL_RATE_LIMIT_BUCKETS`).
    pub fn bucket_limit(mut self, buckets: usize) -> Self {
        self.local.limiter = MemoryLimiter::with_sweep_at(buckets);
        self
    }

    pub fn backend(&self) -> &'static str {
        match (&self.redis, &self.store) {
            (Some(_), _) => "redis",
            (None, Some(_)) => "storage",
            (None, None) => "memory",
        }
    }

    /// Read the used and revoked tokens a previous boot persisted, dropping those whose time has
    /// passed. A no-op unless the state is [`durable`](Self::durable).
    pub async fn load(&self, now_ms: u64) -> Result<(), StorageError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let maps = [
            (KEY_USED, &self.local.used, true),
            (KEY_REVOKED_JTI, &self.local.revoked_jti, true),
            (KEY_REVOKED_SUB, &self.local.revoked_sub, false),
        ];
        for (prefix, map, expires) in maps {
            for key in store.keys(prefix).await? {
                let Some(ms) = store.get(&key).await?.and_then(|v| v.as_u64()) else {
                    continue;
                };
                if expires && ms <= now_ms {
                    store.del(&key).await?;
                    continue;
                }
                guard(map).insert(key[prefix.len()..].to_owned(), ms);
            }
        }
        Ok(())
    }

    /// Write one entry through to storage; a failure leaves the decision to this process alone
    /// (counted as a fallback).
    async fn persist(&self, key: String, ms: u64) {
        if let Some(store) = &self.store
            && let Err(e) = store.set(&key, &serde_json::json!(ms)).await
        {
            self.fell_back("persisting a used or revoked token", &e);
        }
    }

    /// Whether this instance knows `jti` as used for a handshake until after `now_ms` (the
    /// local record: on the Redis backend, what this process saw or decided alone).
    pub fn jti_known(&self, jti: &str, now_ms: u64) -> bool {
        guard(&self.local.used)
            .get(jti)
            .is_some_and(|&until| until > now_ms)
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
    /// `Unavailable`: Redis could not answer and the instance fails closed.
    pub async fn claim_jti(
        &self,
        jti: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<bool, Unavailable> {
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
                Ok(first) => {
                    if first {
                        // Remembered here too: what this instance admitted, it refuses again
                        // even while Redis is away.
                        guard(&self.local.used).insert(jti.to_owned(), until_ms);
                    }
                    return Ok(first);
                }
                Err(e) if self.fail_closed => {
                    crate::reached!("auth.fail_closed");
                    tracing::warn!(error = %e, "jti replay check refused: Redis unreachable and AUTH_FAIL_CLOSED");
                    return Err(Unavailable);
                }
                Err(e) => self.fell_back("jti replay check", &e),
            }
        }
        if crate::planted!(ReplayWindow) {
            let seen = self.jti_known(jti, now_ms);
            tokio::task::yield_now().await;
            guard(&self.local.used).insert(jti.to_owned(), until_ms);
            return Ok(!seen);
        }
        let first = self.local.claim(jti, now_ms, until_ms);
        if first {
            self.persist(format!("{KEY_USED}{jti}"), until_ms).await;
        }
        Ok(first)
    }

    /// Record a revocation. Kept locally as well, so it holds on this instance even if Redis fails.
    pub async fn revoke(&self, what: &Revoke, now_ms: u64) -> Result<(), StorageError> {
        match what {
            Revoke::Jti { jti, until_ms } => {
                guard(&self.local.revoked_jti).insert(jti.clone(), *until_ms);
                self.persist(format!("{KEY_REVOKED_JTI}{jti}"), *until_ms)
                    .await;
            }
            Revoke::Sub(sub) => {
                guard(&self.local.revoked_sub).insert(sub.clone(), now_ms);
                self.persist(format!("{KEY_REVOKED_SUB}{sub}"), now_ms)
                    .await;
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

    /// Whether a token (`jti`, `sub`, issued at `issued_ms`) is revoked. `Unavailable`: Redis
    /// could not answer and the instance fails closed.
    pub async fn is_revoked(
        &self,
        jti: Option<&str>,
        sub: &str,
        issued_ms: u64,
        now_ms: u64,
    ) -> Result<bool, Unavailable> {
        if self.local.is_revoked(jti, sub, issued_ms, now_ms) {
            return Ok(true);
        }
        let Some(r) = &self.redis else {
            return Ok(false);
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
                Ok(Some(at)) if i == 0 && issued_ms <= at => return Ok(true),
                Ok(Some(_)) if i == 1 => return Ok(true),
                Ok(_) => {}
                Err(e) if self.fail_closed => {
                    crate::reached!("auth.fail_closed");
                    tracing::warn!(error = %e, "revocation check refused: Redis unreachable and AUTH_FAIL_CLOSED");
                    return Err(Unavailable);
                }
                Err(e) => {
                    self.fell_back("revocation check", &e);
                    return Ok(false);
                }
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
#[cfg(not(spiral_loom))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_jti_is_single_use_until_it_expires() {
        let s = Shared::memory();
        assert_eq!(s.claim_jti("j", 1_000, 5_000).await, Ok(true));
        assert_eq!(s.claim_jti("j", 2_000, 5_000).await, Ok(false));
        assert_eq!(s.claim_jti("j", 5_000, 9_000).await, Ok(true));
    }

    #[tokio::test]
    async fn revoking_a_subject_covers_tokens_issued_before() {
        let s = Shared::memory();
        s.revoke(&Revoke::Sub("ada".into()), 10_000).await.unwrap();
        assert_eq!(s.is_revoked(None, "ada", 9_000, 11_000).await, Ok(true));
        assert_eq!(s.is_revoked(None, "ada", 10_000, 11_000).await, Ok(true));
        assert_eq!(s.is_revoked(None, "ada", 10_001, 11_000).await, Ok(false));
        assert_eq!(s.is_revoked(None, "bob", 9_000, 11_000).await, Ok(false));
        s.revoke(
            &Revoke::Jti {
                jti: "j".into(),
                until_ms: 20_000,
            },
            10_000,
        )
        .await
        .unwrap();
        assert_eq!(s.is_revoked(Some("j"), "bob", 0, 19_999).await, Ok(true));
        assert_eq!(s.is_revoked(Some("j"), "bob", 0, 20_000).await, Ok(false));
    }

    #[tokio::test]
    async fn used_and_revoked_tokens_survive_a_restart_on_durable_state() {
        let disk: SharedStorage = Arc::new(crate::storage::memory::MemoryStorage::default());
        let before = Shared::durable(disk.clone());
        assert_eq!(before.claim_jti("old", 1_000, 5_000).await, Ok(true));
        assert_eq!(before.claim_jti("used", 1_000, 50_000).await, Ok(true));
        before
            .revoke(&Revoke::Sub("ada".into()), 2_000)
            .await
            .unwrap();
        let one = Revoke::Jti {
            jti: "r".into(),
            until_ms: 40_000,
        };
        before.revoke(&one, 2_000).await.unwrap();
        drop(before);
        // A new boot over the same storage, after "old" expired.
        let after = Shared::durable(disk.clone());
        after.load(10_000).await.unwrap();
        assert_eq!(after.claim_jti("used", 10_000, 50_000).await, Ok(false));
        assert_eq!(after.claim_jti("old", 10_000, 50_000).await, Ok(true));
        assert_eq!(after.is_revoked(None, "ada", 1_500, 10_000).await, Ok(true));
        assert_eq!(
            after.is_revoked(Some("r"), "bob", 0, 10_000).await,
            Ok(true)
        );
        assert_eq!(after.backend(), "storage");
        // Memory-only state forgets: the contrast the durable one exists for.
        let volatile = Shared::memory();
        volatile.load(10_000).await.unwrap();
        assert_eq!(volatile.claim_jti("used", 10_000, 50_000).await, Ok(true));
    }
}
