//! The storage adapter contract (SPEC §1.6), one suite for every adapter: memory, embedded (redb),
//! Redis and Redis Cluster.
//!
//! A proptest state machine drives random sequences of `get`, `set`, `del`, `keys`, `atomic_incr`,
//! `init` and `scan_prefix` against the adapter and against a `BTreeMap` model, comparing every
//! answer. Values cover every JSON type, Unicode (astral plane included), nesting, floats that must
//! round-trip bit for bit, and now and then a 1 MiB value. Prefixes are drawn from the live keys —
//! the empty prefix, true prefixes, and prefixes differing from a live key only in their last
//! character — so off-by-one prefix matching shows up.
//!
//! A second property writes different values to one key from several tasks at once (and reads
//! meanwhile): every value seen must be exactly one of those written — never torn.
//!
//! Each case gets a fresh store (a new temporary directory; for Redis a new key namespace). Case
//! counts come from `PROPTEST_CASES` (default 256); the sequence length bounds the cost of a case.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};
use serde_json::{Map, Value, json};
use spiral_chaos::{Adapter, Fresh, redis_fixture};
use spiral_server::storage::Storage;
use spiral_server::storage::redis::{RedisConnectionInfo, RedisStorage, dial_stream};

// --- operations and the model ----------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Get(String),
    Set(String, Value),
    /// A 1 MiB string made of one repeated character (kept out of `Debug` output).
    SetHuge(String, char),
    Del(String),
    Keys(String),
    Incr(String, i64),
    Init,
    Scan(String),
}

/// The reference: what the store must hold.
struct Model;

/// JSON keys. No key starts with `ctr:` (the counters'), so `set` never lands on a counter.
fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "a", "ab", "abc", "abd", "ac", "b", "b/é", "b/😀", "b/😁", "node:1", "node:10",
            "node:2", "x{tag}y", "é", "😀",
        ])
        .prop_map(str::to_owned),
        2 => "[ab/é😀{}:]{1,4}",
    ]
}

fn counter_key() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["ctr:a", "ctr:ab", "ctr:b", "ctr:😀"]).prop_map(str::to_owned)
}

/// A key from the model (when it has any) or a fresh one.
fn some_key(state: &BTreeMap<String, Value>) -> BoxedStrategy<String> {
    let live: Vec<String> = state.keys().cloned().collect();
    if live.is_empty() {
        prop_oneof![json_key(), counter_key()].boxed()
    } else {
        prop_oneof![
            2 => prop::sample::select(live),
            1 => json_key(),
            1 => counter_key(),
        ]
        .boxed()
    }
}

/// Prefixes that often match: empty, a true prefix of a live key, a live key's prefix with the
/// last character changed (matches nothing the key's siblings should not), or random.
fn prefix(state: &BTreeMap<String, Value>) -> BoxedStrategy<String> {
    let live: Vec<String> = state.keys().cloned().collect();
    if live.is_empty() {
        return prop_oneof![Just(String::new()), "[ab/é😀c]{1,3}"].boxed();
    }
    let truncate = |key: &str, at: Index| -> String {
        let chars: Vec<char> = key.chars().collect();
        chars[..=at.index(chars.len())].iter().collect()
    };
    let cut = (prop::sample::select(live.clone()), any::<Index>())
        .prop_map(move |(k, at)| truncate(&k, at));
    let sibling =
        (prop::sample::select(live), any::<Index>(), any::<bool>()).prop_map(move |(k, at, up)| {
            let mut p: Vec<char> = truncate(&k, at).chars().collect();
            if let Some(last) = p.pop() {
                let code = if up {
                    u32::from(last) + 1
                } else {
                    u32::from(last).saturating_sub(1)
                };
                p.push(char::from_u32(code).unwrap_or(last));
            }
            p.into_iter().collect()
        });
    prop_oneof![
        1 => Just(String::new()),
        3 => cut,
        3 => sibling,
        1 => "[ab/é😀c]{1,3}",
    ]
    .boxed()
}

/// Floats that JSON can hold (finite), including subnormals, ±0 and extremes.
fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("JSON numbers are finite", |f| f.is_finite()),
        prop::sample::select(vec![
            0.0,
            -0.0,
            0.1,
            1e-308,
            5e-324,
            f64::MAX,
            f64::MIN,
            f64::EPSILON,
            1e21,
            9007199254740993.0,
        ]),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        float().prop_map(Value::from),
        // Any Unicode scalar values, astral plane and control characters included.
        any::<String>().prop_map(Value::from),
        "[a-zé😀𝄞\u{10FFFF}\"\\\\/\n]{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn huge(fill: char) -> Value {
    Value::String(fill.to_string().repeat((1 << 20) / fill.len_utf8()))
}

impl ReferenceStateMachine for Model {
    type State = BTreeMap<String, Value>;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Self::State> {
        Just(BTreeMap::new()).boxed()
    }

    fn transitions(state: &Self::State) -> BoxedStrategy<Self::Transition> {
        prop_oneof![
            6 => (json_key(), json_value()).prop_map(|(k, v)| Op::Set(k, v)),
            3 => some_key(state).prop_map(Op::Get),
            2 => some_key(state).prop_map(Op::Del),
            4 => prefix(state).prop_map(Op::Keys),
            2 => prefix(state).prop_map(Op::Scan),
            3 => (counter_key(), prop_oneof![-3i64..=3, -1_000_000_000_000i64..=1_000_000_000_000])
                .prop_map(|(k, d)| Op::Incr(k, d)),
            1 => Just(Op::Init),
            // Rare: a 1 MiB value costs milliseconds per write.
            1 => (json_key(), prop_oneof![Just('x'), Just('é'), Just('😀')], 0u8..40)
                .prop_map(|(k, fill, roll)| if roll == 0 { Op::SetHuge(k, fill) } else { Op::Get(k) }),
        ]
        .boxed()
    }

    fn apply(mut state: Self::State, op: &Self::Transition) -> Self::State {
        match op {
            Op::Set(k, v) => {
                state.insert(k.clone(), v.clone());
            }
            Op::SetHuge(k, fill) => {
                state.insert(k.clone(), huge(*fill));
            }
            Op::Del(k) => {
                state.remove(k);
            }
            Op::Incr(k, d) => {
                let current = state.get(k).and_then(Value::as_i64).unwrap_or(0);
                state.insert(k.clone(), Value::from(current + d));
            }
            Op::Get(_) | Op::Keys(_) | Op::Init | Op::Scan(_) => {}
        }
        state
    }
}

// --- the system under test ---------------------------------------------------------------------

/// Names one adapter at the type level, for `prop_state_machine!`'s generic instantiation.
trait Which {
    const ADAPTER: Adapter;

    /// A fresh store of this adapter, or `None` when its service is missing.
    async fn open() -> Option<Fresh> {
        Self::ADAPTER.open().await
    }
}
struct MemoryAdapter;
impl Which for MemoryAdapter {
    const ADAPTER: Adapter = Adapter::Memory;
}
struct EmbeddedAdapter;
impl Which for EmbeddedAdapter {
    const ADAPTER: Adapter = Adapter::Embedded;
}
struct RedisAdapter;
impl Which for RedisAdapter {
    const ADAPTER: Adapter = Adapter::Redis;
}
struct ClusterAdapter;
impl Which for ClusterAdapter {
    const ADAPTER: Adapter = Adapter::RedisCluster;
}

/// The Redis adapter over connections it does not dial itself — the path the simulator takes
/// with turmoil streams — here over plain tokio TCP streams to the real Redis.
struct DialedRedisAdapter;
impl Which for DialedRedisAdapter {
    const ADAPTER: Adapter = Adapter::Redis;

    async fn open() -> Option<Fresh> {
        let fixture = redis_fixture::redis()?;
        let addr = fixture.url().trim_start_matches("redis://").to_owned();
        let dial = move || {
            let addr = addr.clone();
            async move {
                let stream = tokio::net::TcpStream::connect(&addr).await?;
                dial_stream(&RedisConnectionInfo::default(), stream).await
            }
        };
        let storage = RedisStorage::with_dialer("dialed", dial)
            .with_namespace(redis_fixture::fresh_namespace())
            .expect("namespace")
            .with_timeouts(5_000, 5_000);
        storage.init().await.expect("init over a dialed stream");
        Some(Fresh::new(Arc::new(storage)))
    }
}

/// The contract suite, for adapter `A`.
struct Contract<A>(PhantomData<A>);

/// The adapter under test and the runtime its calls run on (proptest-state-machine is synchronous).
struct Sut {
    rt: tokio::runtime::Runtime,
    /// `None`: the adapter's service is missing and the fixture said so (a skip outside CI).
    store: Option<Fresh>,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn range(model: &BTreeMap<String, Value>, prefix: &str) -> Vec<(String, Value)> {
    model
        .range(prefix.to_owned()..)
        .take_while(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Value equality that also tells -0.0 from 0.0 and compares floats bit for bit.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            _ if x.is_f64() != y.is_f64() => false,
            (Some(fx), Some(fy)) if x.is_f64() => fx.to_bits() == fy.to_bits(),
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((ka, va), (kb, vb))| ka == kb && same(va, vb))
        }
        _ => a == b,
    }
}

/// `Debug` of a value, shortened: a failing 1 MiB value must not flood the report.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 300 {
        let cut = (0..=300)
            .rev()
            .find(|i| s.is_char_boundary(*i))
            .unwrap_or(0);
        format!("{}… ({} bytes)", &s[..cut], s.len())
    } else {
        s
    }
}

async fn step(store: &dyn Storage, model: &BTreeMap<String, Value>, op: Op) {
    let name = store.backend();
    match op {
        Op::Get(k) => {
            let got = store.get(&k).await.expect("get");
            let want = model.get(&k);
            let ok = match (&got, want) {
                (Some(g), Some(w)) => same(g, w),
                (None, None) => true,
                _ => false,
            };
            assert!(
                ok,
                "{name}: get({k:?}) = {:?}, model has {:?}",
                got.as_ref().map(short),
                want.map(short)
            );
        }
        Op::Set(k, v) => store.set(&k, &v).await.expect("set"),
        Op::SetHuge(k, fill) => store.set(&k, &huge(fill)).await.expect("set 1 MiB"),
        Op::Del(k) => store
            .del(&k)
            .await
            .expect("del of a present or missing key"),
        Op::Keys(p) => {
            let got = store.keys(&p).await.expect("keys");
            let want: Vec<String> = range(model, &p).into_iter().map(|(k, _)| k).collect();
            assert_eq!(got, want, "{name}: keys({p:?})");
        }
        Op::Scan(p) => {
            let got = store.scan_prefix(&p).await.expect("scan_prefix");
            let want = range(model, &p);
            let got_keys: Vec<&String> = got.iter().map(|(k, _)| k).collect();
            let want_keys: Vec<&String> = want.iter().map(|(k, _)| k).collect();
            assert_eq!(got_keys, want_keys, "{name}: scan_prefix({p:?}) keys");
            for ((k, g), (_, w)) in got.iter().zip(&want) {
                assert!(
                    same(g, w),
                    "{name}: scan_prefix({p:?}) at {k:?}: {} != {}",
                    short(g),
                    short(w)
                );
            }
        }
        Op::Incr(k, d) => {
            let got = store.atomic_incr(&k, d).await.expect("atomic_incr");
            let want = model.get(&k).and_then(Value::as_i64);
            assert_eq!(Some(got), want, "{name}: atomic_incr({k:?}, {d})");
            let read = store.get(&k).await.expect("get counter");
            assert_eq!(
                read,
                Some(json!(got)),
                "{name}: a counter reads back as a JSON integer"
            );
        }
        Op::Init => store.init().await.expect("init again"),
    }
}

impl<A: Which> StateMachineTest for Contract<A> {
    type SystemUnderTest = Sut;
    type Reference = Model;

    fn init_test(_: &BTreeMap<String, Value>) -> Sut {
        let rt = runtime();
        let store = rt.block_on(A::open());
        Sut { rt, store }
    }

    fn apply(sut: Sut, model: &BTreeMap<String, Value>, op: Op) -> Sut {
        if let Some(store) = &sut.store {
            sut.rt.block_on(step(&**store, model, op));
        }
        sut
    }

    fn teardown(sut: Sut, model: BTreeMap<String, Value>) {
        if let Some(store) = &sut.store {
            sut.rt.block_on(async {
                let keys = store.keys("").await.expect("keys");
                let want: Vec<String> = model.keys().cloned().collect();
                assert_eq!(keys, want, "{}: every key, at the end", store.backend());
                store.clear().await.expect("clear");
            });
        }
    }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

prop_state_machine! {
    #![proptest_config(config())]

    #[test]
    fn adapter_contract_memory(sequential 1..40 => Contract<MemoryAdapter>);

    #[test]
    fn adapter_contract_embedded(sequential 1..25 => Contract<EmbeddedAdapter>);

    #[test]
    fn adapter_contract_redis(sequential 1..40 => Contract<RedisAdapter>);

    #[test]
    fn adapter_contract_redis_dialed(sequential 1..40 => Contract<DialedRedisAdapter>);

    #[test]
    fn adapter_contract_redis_cluster(sequential 1..30 => Contract<ClusterAdapter>);
}

// --- concurrent writers ------------------------------------------------------------------------

/// Writers' values: distinct (each names its writer) and large enough that a torn write shows.
fn writers() -> impl Strategy<Value = Vec<Value>> {
    prop::collection::vec(
        (
            prop_oneof![Just('a'), Just('é'), Just('😀')],
            1usize..20_000,
        ),
        2..6,
    )
    .prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(
                |(i, (fill, n))| json!({ "writer": i, "body": fill.to_string().repeat(n), "n": n }),
            )
            .collect()
    })
}

/// Several tasks write their own value to one key (twice each) while a reader polls it; every
/// value read, during and after, must be exactly one of the written values.
fn concurrent_writers(adapter: Adapter, values: Vec<Value>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let Some(fresh) = adapter.open().await else {
            return Ok(());
        };
        let store = fresh.storage.clone();
        let key = "contended";
        let mut tasks = Vec::new();
        for v in values.clone() {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..2 {
                    store.set(key, &v).await.expect("set");
                    tokio::task::yield_now().await;
                }
                Vec::new()
            }));
        }
        {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                for _ in 0..8 {
                    if let Some(v) = store.get(key).await.expect("get") {
                        seen.push(v);
                    }
                    tokio::task::yield_now().await;
                }
                seen
            }));
        }
        let mut seen = Vec::new();
        for t in tasks {
            seen.extend(t.await.expect("task"));
        }
        seen.push(store.get(key).await.expect("get").expect("written"));
        for v in &seen {
            prop_assert!(
                values.contains(v),
                "{}: read a value no writer wrote (torn?): {}",
                store.backend(),
                short(v)
            );
        }
        prop_assert_eq!(store.keys("").await.expect("keys"), vec![key.to_owned()]);
        fresh.clear().await.expect("clear");
        Ok(())
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn concurrent_writers_never_tear_memory(values in writers()) {
        concurrent_writers(Adapter::Memory, values)?;
    }

    #[test]
    fn concurrent_writers_never_tear_embedded(values in writers()) {
        concurrent_writers(Adapter::Embedded, values)?;
    }

    #[test]
    fn concurrent_writers_never_tear_redis(values in writers()) {
        concurrent_writers(Adapter::Redis, values)?;
    }

    #[test]
    fn concurrent_writers_never_tear_redis_cluster(values in writers()) {
        concurrent_writers(Adapter::RedisCluster, values)?;
    }
}
