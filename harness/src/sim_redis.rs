//! A simulated Redis: speaks RESP2 over any byte stream (a turmoil socket in the simulated world,
//! a loopback socket in tests) and implements exactly the commands the server's Redis adapter
//! sends — including its three scripts, recognised by hash (`EVALSHA`) or text (`EVAL`) and run
//! natively. So the real redis-rs client code runs against it, under faults it injects:
//! latency, a seeded error rate, and outages that either hang (calls time out, like a frozen
//! server) or refuse (connections are closed).
//!
//! The data lives behind an `Arc`, outside any simulated host, so it survives a host crash or
//! bounce the way a durable Redis would.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spiral_server::auth::shared::rate_script;
use spiral_server::ratelimit::{Bucket, Limit, decide};
use spiral_server::rng::SplitMix64;
use spiral_server::storage::redis::scripts;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::watch;

/// How the simulated Redis misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Faults {
    /// Delay before every reply.
    pub latency_ms: u64,
    /// Probability that a command is answered with an error instead of being run.
    pub error_rate: f64,
    pub outage: Outage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Outage {
    #[default]
    None,
    /// Commands are read but not answered until the outage ends (a frozen server).
    Hang,
    /// Connections are closed at once (a dead server).
    Refuse,
}

#[derive(Debug, Default)]
struct Data {
    strings: BTreeMap<Vec<u8>, Vec<u8>>,
    sets: BTreeMap<Vec<u8>, BTreeSet<Vec<u8>>>,
    /// Rate-limit buckets (the rate script's hash, natively).
    buckets: BTreeMap<Vec<u8>, Bucket>,
    /// Key expiry, in simulated ms since the run began (`SET … PX`).
    expires: BTreeMap<Vec<u8>, u64>,
}

impl Data {
    /// Drop `key` if its time is up.
    fn expire(&mut self, key: &[u8], now: u64) {
        if self.expires.get(key).is_some_and(|&at| at <= now) {
            self.expires.remove(key);
            self.strings.remove(key);
            self.buckets.remove(key);
        }
    }
}

/// Simulated time for expiries (0 outside the simulator, where nothing expires).
fn now_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64)
}

/// One simulated Redis server; clones share its data and its fault knobs.
#[derive(Debug, Clone)]
pub struct SimRedis {
    data: Arc<Mutex<Data>>,
    rng: Arc<Mutex<SplitMix64>>,
    faults: watch::Sender<Faults>,
    /// `(sha, source, script)` of the adapter's scripts.
    scripts: Arc<Vec<(String, &'static str, Script)>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Script {
    Put,
    Remove,
    Incr,
    /// The shared rate limiter's token bucket.
    Rate,
}

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Ok,
    Pong,
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
    Error(String),
}

impl Reply {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Ok => out.extend_from_slice(b"+OK\r\n"),
            Reply::Pong => out.extend_from_slice(b"+PONG\r\n"),
            Reply::Int(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
            Reply::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
            Reply::Bulk(Some(b)) => {
                out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Array(items) => {
                out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
                for i in items {
                    i.encode(out);
                }
            }
            Reply::Error(e) => out.extend_from_slice(format!("-{e}\r\n").as_bytes()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn wrong_args(cmd: &str) -> Reply {
    Reply::Error(format!("ERR wrong number of arguments for '{cmd}' command"))
}

impl SimRedis {
    /// A server with no data and no faults; `seed` drives the error-rate draws.
    pub fn new(seed: u64) -> Self {
        let (rate_sha, rate_src) = rate_script();
        let scripts = scripts()
            .into_iter()
            .map(|(name, sha, src)| {
                let kind = match name {
                    "put" => Script::Put,
                    "remove" => Script::Remove,
                    _ => Script::Incr,
                };
                (sha, src, kind)
            })
            .chain(std::iter::once((rate_sha, rate_src, Script::Rate)))
            .collect();
        Self {
            data: Arc::default(),
            rng: Arc::new(Mutex::new(SplitMix64::new(seed))),
            faults: watch::channel(Faults::default()).0,
            scripts: Arc::new(scripts),
        }
    }

    pub fn faults(&self) -> Faults {
        *self.faults.borrow()
    }

    pub fn set_faults(&self, faults: Faults) {
        self.faults.send_replace(faults);
    }

    /// The JSON value stored under `key` (for the checkers, read outside the simulation).
    pub fn get_json(&self, key: &str) -> Option<serde_json::Value> {
        let data = lock(&self.data);
        data.strings
            .get(key.as_bytes())
            .and_then(|v| serde_json::from_slice(v).ok())
    }

    /// Every JSON value stored under a key starting with `prefix`, in key order (for the
    /// checkers, read outside the simulation).
    pub fn scan_json(&self, prefix: &str) -> Vec<(String, serde_json::Value)> {
        let data = lock(&self.data);
        data.strings
            .range(prefix.as_bytes().to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix.as_bytes()))
            .filter_map(|(k, v)| {
                let v = serde_json::from_slice(v).ok()?;
                Some((String::from_utf8_lossy(k).into_owned(), v))
            })
            .collect()
    }

    /// Number of string keys held (for checkers and tests).
    pub fn dbsize(&self) -> usize {
        lock(&self.data).strings.len()
    }

    /// Accept connections on `port` of the current simulated host and serve each (the body of a
    /// `redis` host).
    pub async fn listen(&self, port: u16) -> std::io::Result<()> {
        let listener = turmoil::net::TcpListener::bind(("0.0.0.0", port)).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            let redis = self.clone();
            tokio::spawn(async move {
                let _ = redis.serve_connection(stream).await;
            });
        }
    }

    /// Serve one client connection until it closes or an outage refuses it.
    pub async fn serve_connection<S>(&self, stream: S) -> std::io::Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut faults = self.faults.subscribe();
        if faults.borrow().outage == Outage::Refuse {
            return Ok(());
        }
        let (read, mut write) = tokio::io::split(stream);
        let mut read = BufReader::new(read);
        let mut out = Vec::new();
        loop {
            let Some(args) = read_command(&mut read).await? else {
                return Ok(());
            };
            // Faults apply when the command arrives.
            loop {
                let now = *faults.borrow_and_update();
                match now.outage {
                    Outage::None => break,
                    Outage::Refuse => return Ok(()),
                    Outage::Hang => {
                        if faults.changed().await.is_err() {
                            return Ok(());
                        }
                    }
                }
            }
            let f = *faults.borrow();
            if f.latency_ms > 0 {
                tokio::time::sleep(Duration::from_millis(f.latency_ms)).await;
            }
            let fail = f.error_rate > 0.0 && lock(&self.rng).next_f64() < f.error_rate;
            let reply = if fail {
                Reply::Error("ERR simulated fault".into())
            } else {
                self.run(&args)
            };
            out.clear();
            reply.encode(&mut out);
            write.write_all(&out).await?;
        }
    }

    fn script(&self, by: impl Fn(&(String, &'static str, Script)) -> bool) -> Option<Script> {
        self.scripts.iter().find(|s| by(s)).map(|s| s.2)
    }

    fn run(&self, args: &[Vec<u8>]) -> Reply {
        let Some(name) = args.first() else {
            return Reply::Error("ERR empty command".into());
        };
        let cmd = String::from_utf8_lossy(name).to_ascii_uppercase();
        let a = &args[1..];
        let mut d = lock(&self.data);
        match cmd.as_str() {
            "PING" => Reply::Pong,
            "CLIENT" | "SELECT" | "AUTH" => Reply::Ok,
            "GET" if a.len() == 1 => {
                d.expire(&a[0], now_ms());
                Reply::Bulk(d.strings.get(&a[0]).cloned())
            }
            "MGET" if !a.is_empty() => {
                let now = now_ms();
                a.iter().for_each(|k| d.expire(k, now));
                Reply::Array(
                    a.iter()
                        .map(|k| Reply::Bulk(d.strings.get(k).cloned()))
                        .collect(),
                )
            }
            "SET" if a.len() >= 2 => set(&mut d, a),
            "DEL" if !a.is_empty() => Reply::Int(
                a.iter()
                    .filter(|k| d.strings.remove(*k).is_some() | d.sets.remove(*k).is_some())
                    .count() as i64,
            ),
            "SMEMBERS" if a.len() == 1 => Reply::Array(
                d.sets
                    .get(&a[0])
                    .into_iter()
                    .flatten()
                    .map(|m| Reply::Bulk(Some(m.clone())))
                    .collect(),
            ),
            "SADD" if a.len() >= 2 => {
                let set = d.sets.entry(a[0].clone()).or_default();
                Reply::Int(a[1..].iter().filter(|m| set.insert((*m).clone())).count() as i64)
            }
            "SREM" if a.len() >= 2 => {
                let set = d.sets.entry(a[0].clone()).or_default();
                Reply::Int(a[1..].iter().filter(|m| set.remove(*m)).count() as i64)
            }
            "INCRBY" if a.len() == 2 => incr_by(&mut d, &a[0], &a[1]),
            "DBSIZE" => Reply::Int((d.strings.len() + d.sets.len()) as i64),
            "FLUSHALL" | "FLUSHDB" => {
                *d = Data::default();
                Reply::Ok
            }
            "SCRIPT" if a.len() == 2 && a[0].eq_ignore_ascii_case(b"LOAD") => {
                match self
                    .scripts
                    .iter()
                    .find(|s| s.1.as_bytes() == a[1].as_slice())
                {
                    Some(s) => Reply::Bulk(Some(s.0.clone().into_bytes())),
                    None => Reply::Error(
                        "ERR the simulated Redis runs only the adapter's scripts".into(),
                    ),
                }
            }
            "EVALSHA" | "EVAL" if a.len() >= 2 => {
                let script = if cmd == "EVAL" {
                    self.script(|s| s.1.as_bytes() == a[0].as_slice())
                } else {
                    self.script(|s| s.0.as_bytes().eq_ignore_ascii_case(&a[0]))
                };
                let Some(script) = script else {
                    return Reply::Error("NOSCRIPT No matching script. Please use EVAL.".into());
                };
                let Some(numkeys) = std::str::from_utf8(&a[1])
                    .ok()
                    .and_then(|n| n.parse::<usize>().ok())
                else {
                    return Reply::Error("ERR value is not an integer or out of range".into());
                };
                if a.len() < 2 + numkeys {
                    return wrong_args(&cmd);
                }
                let (keys, argv) = a[2..].split_at(numkeys);
                run_script(&mut d, script, keys, argv)
            }
            "GET" | "MGET" | "SET" | "DEL" | "SMEMBERS" | "SADD" | "SREM" | "INCRBY"
            | "EVALSHA" | "EVAL" | "SCRIPT" => wrong_args(&cmd),
            other => Reply::Error(format!("ERR unknown command '{other}'")),
        }
    }
}

/// `SET key value [NX|XX] [PX ms|EX s]`: the options the shared state uses.
fn set(d: &mut Data, a: &[Vec<u8>]) -> Reply {
    let now = now_ms();
    d.expire(&a[0], now);
    let (mut nx, mut xx, mut ttl) = (false, false, None);
    let mut opts = a[2..].iter();
    while let Some(o) = opts.next() {
        let num = |v: Option<&Vec<u8>>| {
            v.and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| s.parse::<u64>().ok())
                .filter(|n| *n > 0)
        };
        match o.to_ascii_uppercase().as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"PX" => match num(opts.next()) {
                Some(ms) => ttl = Some(ms),
                None => return Reply::Error("ERR invalid expire time in 'set' command".into()),
            },
            b"EX" => match num(opts.next()) {
                Some(s) => ttl = Some(s * 1000),
                None => return Reply::Error("ERR invalid expire time in 'set' command".into()),
            },
            _ => return Reply::Error("ERR syntax error".into()),
        }
    }
    let exists = d.strings.contains_key(&a[0]);
    if (nx && exists) || (xx && !exists) {
        return Reply::Bulk(None);
    }
    d.strings.insert(a[0].clone(), a[1].clone());
    match ttl {
        Some(ms) => d.expires.insert(a[0].clone(), now + ms),
        None => d.expires.remove(&a[0]),
    };
    Reply::Ok
}

fn incr_by(d: &mut Data, key: &[u8], delta: &[u8]) -> Reply {
    let parse = |b: &[u8]| {
        std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
    };
    let Some(delta) = parse(delta) else {
        return Reply::Error("ERR value is not an integer or out of range".into());
    };
    let current = match d.strings.get(key) {
        Some(v) => match parse(v) {
            Some(n) => n,
            None => return Reply::Error("ERR value is not an integer or out of range".into()),
        },
        None => 0,
    };
    let Some(next) = current.checked_add(delta) else {
        return Reply::Error("ERR increment or decrement would overflow".into());
    };
    d.strings
        .insert(key.to_vec(), next.to_string().into_bytes());
    Reply::Int(next)
}

/// The adapter's scripts, natively: the same effects, atomically (the data lock is held).
fn run_script(d: &mut Data, script: Script, keys: &[Vec<u8>], argv: &[Vec<u8>]) -> Reply {
    let Some((index, data_keys)) = keys.split_first() else {
        return wrong_args("EVALSHA");
    };
    let n = data_keys.len();
    match script {
        Script::Put if argv.len() == 2 * n => {
            for i in 0..n {
                d.strings.insert(data_keys[i].clone(), argv[n + i].clone());
                d.sets
                    .entry(index.clone())
                    .or_default()
                    .insert(argv[i].clone());
            }
            Reply::Int(n as i64)
        }
        Script::Remove if argv.len() == n => {
            for i in 0..n {
                d.strings.remove(&data_keys[i]);
                if let Some(set) = d.sets.get_mut(index) {
                    set.remove(&argv[i]);
                }
            }
            Reply::Int(n as i64)
        }
        Script::Incr if n == 1 && argv.len() == 2 => match incr_by(d, &data_keys[0], &argv[1]) {
            Reply::Int(_) => {
                d.sets
                    .entry(index.clone())
                    .or_default()
                    .insert(argv[0].clone());
                Reply::Bulk(d.strings.get(&data_keys[0]).cloned())
            }
            err => err,
        },
        Script::Rate if data_keys.is_empty() && argv.len() == 4 => {
            // `redis` for the time: the script's own clock (`TIME`), the Redis host's — here
            // simulated time.
            let args: Option<Vec<u64>> = argv
                .iter()
                .map(|b| match std::str::from_utf8(b).ok()? {
                    "redis" => Some(now_ms()),
                    s => s.parse().ok(),
                })
                .collect();
            let Some([now, capacity, window_ms, block_ms]) = args
                .as_deref()
                .map(<[u64]>::to_vec)
                .and_then(|v| <[u64; 4]>::try_from(v).ok())
            else {
                return Reply::Error("ERR rate script: bad arguments".into());
            };
            let limit = Limit::new(capacity, window_ms, block_ms);
            let (decision, bucket) = decide(d.buckets.get(index).copied(), now, &limit);
            d.buckets.insert(index.clone(), bucket);
            Reply::Array(
                [
                    u64::from(decision.allowed),
                    decision.remaining,
                    decision.retry_after_ms,
                    decision.reset_after_ms,
                ]
                .map(|n| Reply::Int(n as i64))
                .to_vec(),
            )
        }
        _ => wrong_args("EVALSHA"),
    }
}

/// Read one command: a RESP array of bulk strings (`None` at a clean end of stream).
async fn read_command<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
) -> std::io::Result<Option<Vec<Vec<u8>>>> {
    let bad =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("RESP: {what}"));
    let mut line = String::new();
    if r.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let count: usize = line
        .trim_end()
        .strip_prefix('*')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| bad("expected an array"))?;
    if count > 1_000_000 {
        return Err(bad("array too long"));
    }
    let mut args = Vec::with_capacity(count);
    for _ in 0..count {
        line.clear();
        r.read_line(&mut line).await?;
        let len: usize = line
            .trim_end()
            .strip_prefix('$')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| bad("expected a bulk string"))?;
        if len > 512 * 1024 * 1024 {
            return Err(bad("bulk string too long"));
        }
        let mut buf = vec![0; len + 2];
        r.read_exact(&mut buf).await?;
        buf.truncate(len);
        args.push(buf);
    }
    Ok(Some(args))
}
