//! The Lua scripts that change a data key and its index set together.

use super::*;

/// KEYS = index, data keys…; ARGV = user keys…, values… (same order).
pub(super) const PUT_SRC: &str = r"local n = #KEYS - 1
for i = 1, n do
  redis.call('SET', KEYS[i + 1], ARGV[n + i])
  redis.call('SADD', KEYS[1], ARGV[i])
end
return n";
pub(super) static PUT: LazyLock<Script> = LazyLock::new(|| Script::new(PUT_SRC));

/// KEYS = index, data keys…; ARGV = user keys… (same order).
pub(super) const REMOVE_SRC: &str = r"for i = 2, #KEYS do
  redis.call('DEL', KEYS[i])
  redis.call('SREM', KEYS[1], ARGV[i - 1])
end
return #KEYS - 1";
pub(super) static REMOVE: LazyLock<Script> = LazyLock::new(|| Script::new(REMOVE_SRC));

/// KEYS = index, data key; ARGV = user key, delta. Returns the new value as Redis stores it
/// (a string): Lua numbers are doubles and would round counters beyond 2^53.
pub(super) const INCR_SRC: &str = r"redis.call('INCRBY', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[1], ARGV[1])
return redis.call('GET', KEYS[2])";
pub(super) static INCR: LazyLock<Script> = LazyLock::new(|| Script::new(INCR_SRC));

/// The adapter's scripts as `(name, SHA1, source)`: `put`, `remove`, `incr`. A simulated Redis
/// implements exactly these, so it must recognise them by hash (`EVALSHA`) and by text (`EVAL`).
pub fn scripts() -> [(&'static str, String, &'static str); 3] {
    [
        ("put", PUT.get_hash().to_owned(), PUT_SRC),
        ("remove", REMOVE.get_hash().to_owned(), REMOVE_SRC),
        ("incr", INCR.get_hash().to_owned(), INCR_SRC),
    ]
}
