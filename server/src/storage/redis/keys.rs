//! The key layout: shards, data keys and index sets (see the module docs of `storage::redis`).

use super::*;

/// The shard of a key: FNV-1a (64-bit) of its bytes, modulo [`SHARDS`]. Stable forever.
pub fn shard_of(key: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % SHARDS as u64) as usize
}

/// `<ns>:{sNN}:k:<key>`.
pub fn data_key(namespace: &str, key: &str) -> String {
    format!("{namespace}:{{s{:02}}}:k:{key}", shard_of(key))
}

/// `<ns>:{sNN}:idx`.
pub fn index_key(namespace: &str, shard: usize) -> String {
    format!("{namespace}:{{s{shard:02}}}:idx")
}
