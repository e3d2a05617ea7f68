//! The adapter's own rules, without a Redis: shard and key layout, the TLS policy, cluster mode,
//! configuration errors, batching by shard, and an unreachable or hanging Redis (unavailable,
//! timed out, re-dialled). The storage contract against a real Redis is `chaos/tests`.

use super::*;

#[test]
fn shard_is_fnv1a_mod_16_and_stable() {
    // FNV-1a 64 of "" is the offset basis; of "a" is 0xaf63dc4c8601ec8c.
    assert_eq!(shard_of(""), (0xcbf2_9ce4_8422_2325u64 % 16) as usize);
    assert_eq!(shard_of("a"), (0xaf63_dc4c_8601_ec8cu64 % 16) as usize);
    let mut seen = [false; SHARDS];
    for i in 0..1000 {
        let s = shard_of(&format!("node:{i}"));
        assert!(s < SHARDS);
        seen[s] = true;
    }
    assert!(seen.iter().all(|s| *s), "1000 keys reach every shard");
}

#[test]
fn key_layout_puts_the_hash_tag_first() {
    let s = shard_of("node:{x}:1");
    assert_eq!(
        data_key("spiral", "node:{x}:1"),
        format!("spiral:{{s{s:02}}}:k:node:{{x}}:1")
    );
    assert_eq!(index_key("spiral", 3), "spiral:{s03}:idx");
    assert_eq!(index_key("t1", 15), "t1:{s15}:idx");
    // Redis hashes the first {…}: the data key and its index share it.
    let dk = data_key("spiral", "k");
    let tag = |k: &str| k[k.find('{').unwrap_or(0)..=k.find('}').unwrap_or(0)].to_owned();
    assert_eq!(tag(&dk), tag(&index_key("spiral", shard_of("k"))));
}

#[test]
fn loopback_detection() {
    for host in [
        "localhost",
        "LOCALHOST",
        "localhost.",
        "127.0.0.1",
        "127.8.9.10",
        "::1",
        "[::1]",
        "::ffff:127.0.0.1",
    ] {
        assert!(is_loopback_host(host), "{host} is loopback");
    }
    for host in [
        "10.0.0.5",
        "redis",
        "redis.example.com",
        "128.0.0.1",
        "::",
        "0.0.0.0",
        "localhost.example.com",
        "fe80::1",
    ] {
        assert!(!is_loopback_host(host), "{host} is not loopback");
    }
}

fn refused(url: &str, allow: bool) -> Option<String> {
    let mut cfg = RedisConfig::new(url);
    cfg.allow_insecure = allow;
    match RedisStorage::open(cfg) {
        Err(StorageError::Config(m)) => Some(m),
        Err(e) => panic!("unexpected {e}"),
        Ok(_) => None,
    }
}

#[test]
fn plain_text_to_a_remote_host_is_refused_unless_allowed() {
    let m = refused("redis://10.1.2.3:6379", false).expect("refused");
    assert!(m.contains("ALLOW_INSECURE_REDIS"), "{m}");
    assert!(
        refused("redis://:secret@redis.internal:6379", false)
            .is_some_and(|m| !m.contains("secret"))
    );
    assert_eq!(refused("redis://10.1.2.3:6379", true), None);
    assert_eq!(refused("redis://127.0.0.1:6379", false), None);
    assert_eq!(refused("redis://localhost:6379/2", false), None);
    assert_eq!(refused("redis://[::1]:6379", false), None);
    assert_eq!(refused("rediss://redis.example.com:6380", false), None);
    assert_eq!(refused("redis+unix:///run/redis.sock", false), None);
    // One remote node in a cluster list is enough to refuse.
    assert!(refused("redis://127.0.0.1:7000,10.0.0.2:7001", false).is_some());
}

#[test]
fn cluster_mode_from_flag_or_list() {
    let c = RedisConfig::new("redis://127.0.0.1:7000, 127.0.0.1:7001");
    assert!(c.is_cluster());
    assert_eq!(
        c.node_urls(),
        ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]
    );
    assert!(!RedisConfig::new("redis://127.0.0.1:7000").is_cluster());
    let mut one = RedisConfig::new("redis://127.0.0.1:7000");
    one.cluster = true;
    assert!(one.is_cluster());
    let s = RedisStorage::open(c).expect("valid");
    assert_eq!(s.backend(), "redis-cluster");
    let s = RedisStorage::open(RedisConfig::new("redis://127.0.0.1:7000")).expect("valid");
    assert_eq!(s.backend(), "redis");
}

#[test]
fn bad_configuration_is_a_config_error() {
    let mut c = RedisConfig::new("redis://127.0.0.1:6379");
    c.namespace = "a{b}".into();
    assert!(matches!(
        RedisStorage::open(c),
        Err(StorageError::Config(_))
    ));
    assert!(matches!(
        RedisStorage::open(RedisConfig::new("")),
        Err(StorageError::Config(_))
    ));
    let mut c = RedisConfig::new("rediss://127.0.0.1:6379");
    c.ca_path = Some("/nonexistent/ca.pem".into());
    let e = RedisStorage::open(c).expect_err("unreadable CA");
    assert!(e.to_string().contains("REDIS_CA"), "{e}");
}

#[test]
fn batches_stay_within_one_shard() {
    let keys: Vec<String> = (0..5000).map(|i| format!("k{i}")).collect();
    let batches = RedisStorage::by_shard(keys.iter().map(String::as_str), |k| k);
    assert_eq!(batches.iter().map(|(_, b)| b.len()).sum::<usize>(), 5000);
    for (shard, batch) in &batches {
        assert!(batch.len() <= BATCH && !batch.is_empty());
        assert!(batch.iter().all(|k| shard_of(k) == *shard));
    }
}

#[tokio::test]
async fn an_unreachable_redis_is_unavailable_and_redialled() {
    use std::sync::atomic::AtomicUsize;
    let dials = Arc::new(AtomicUsize::new(0));
    let counter = dials.clone();
    let s = RedisStorage::with_dialer("nowhere", move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async {
            Err::<Dialed, _>(RedisError::from(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused,
            )))
        }
    });
    assert!(matches!(
        s.get("k").await,
        Err(StorageError::Unavailable(_))
    ));
    assert!(matches!(s.init().await, Err(StorageError::Unavailable(_))));
    assert_eq!(
        dials.load(Ordering::SeqCst),
        2,
        "each call after a failure dials again"
    );
}

#[tokio::test]
async fn a_dial_that_hangs_times_out() {
    let s = RedisStorage::with_dialer("black-hole", || async {
        std::future::pending::<RedisResult<Dialed>>().await
    })
    .with_timeouts(500, 20);
    let e = s.set("k", &Value::Null).await.expect_err("no connection");
    assert!(matches!(e, StorageError::Unavailable(_)), "{e}");
    assert!(e.to_string().contains("20 ms"), "{e}");
}
