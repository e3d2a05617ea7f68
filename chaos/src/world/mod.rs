//! `spiral-chaos run`: one scenario, for real. The release `spiral` binary as N server processes
//! on loopback ports (their clocks set to the run's epoch by libfaketime), a `redis-server` of
//! the run's own when the scenario stores in Redis, a [`spiral-proxy`](crate::proxy) on every
//! client-host → server link and every server → Redis link, and the simulator's own clients
//! ([`spiral_harness::world::real`]) speaking to the proxies. The scenario's faults become real
//! ones (`faults.rs`); the history is judged by the same checkers.
//!
//! A real run is not byte-replayable — the OS schedules it — but its settings, fault schedule
//! and workload are the seed's, exactly as in the simulator.
//!
//! The run directory (Jepsen's `store/`): `history.jsonl` (the trace), `faults.jsonl` (each
//! fault with the wall time it was applied and what was done), `proxies.jsonl` (every proxy
//! decision), `server-N/` (each lifetime's log, its storage and journal), `redis-PORT.log`,
//! `verdict.json` and `rerun.sh`.

mod faults;
mod finals;
pub mod procs;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::json;
use spiral_harness::scenario::{Fault, Scenario, StorageKind};
use spiral_harness::world::RunResult;
use spiral_harness::world::real::{self, Session};
use spiral_history::{Event, Phase};

use crate::proxy::{DecisionLog, Proxy, ProxyConfig, ProxyHandle, Stream, Toxic, ToxicKind};

use self::procs::{Disk, Redis, Server};

/// The longest real run: a scenario's `duration_s` is wall time here.
pub const MAX_DURATION_S: u64 = 90;

/// How a run is asked for.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub scenario: PathBuf,
    pub seed: u64,
    /// The run directory (emptied first).
    pub out: PathBuf,
    /// The release `spiral` binary.
    pub spiral_bin: PathBuf,
    /// Scenario fields this world cannot honour, accepted by name (`--accept`): the run goes on
    /// without them, and `verdict.json` says so.
    pub accept: Vec<String>,
    /// Each server's open-file limit (`RLIMIT_NOFILE`), for connection-exhaustion stories: a
    /// slowloris against a server that runs out of descriptors.
    pub fd_limit: Option<u64>,
}

/// A finished real run.
pub struct Outcome {
    pub result: RunResult,
    pub dir: PathBuf,
}

/// A link the proxies carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    /// Client host → server; `from_client`: the fault names the client host first.
    Client {
        host: u32,
        server: u32,
        from_client: bool,
    },
    /// Server → Redis; `from_server`: the fault names the server first.
    Redis { server: u32, from_server: bool },
}

impl Link {
    /// The direction that carries what the fault's first host sends.
    fn stream_from_a(self) -> Stream {
        match self {
            Link::Client {
                from_client: true, ..
            }
            | Link::Redis {
                from_server: true, ..
            } => Stream::Upstream,
            _ => Stream::Downstream,
        }
    }
}

/// Everything of one run the fault driver and the final checks act on.
pub(crate) struct World {
    session: Arc<Session>,
    servers: Vec<Server>,
    redis: Option<Redis>,
    /// Each server's journal disk, when the scenario fills disks.
    disks: Vec<Option<Disk>>,
    /// (client host, server, port) → proxy.
    client_proxies: BTreeMap<(u32, u32, u16), ProxyHandle>,
    /// server → its proxy to Redis.
    redis_proxies: BTreeMap<u32, ProxyHandle>,
    faults_log: Mutex<std::fs::File>,
}

impl World {
    fn proxies_of(&self, l: &Link) -> Vec<&ProxyHandle> {
        match *l {
            Link::Client { host, server, .. } => self
                .client_proxies
                .iter()
                .filter(|((h, s, _), _)| *h == host && *s == server)
                .map(|(_, p)| p)
                .collect(),
            Link::Redis { server, .. } => self.redis_proxies.get(&server).into_iter().collect(),
        }
    }

    /// Where the servers keep their nodes.
    fn storage(&self) -> StorageKind {
        self.session.scenario().world.storage
    }

    fn redis_proxies(&self) -> impl Iterator<Item = &ProxyHandle> {
        self.redis_proxies.values()
    }
}

/// What this world cannot do of `scenario`: each a named field with the reason.
pub fn unfaithful(
    scenario: &Scenario,
    schedule: &[spiral_harness::scenario::FaultAt],
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let w = &scenario.world;
    if w.duration_s > MAX_DURATION_S {
        out.push((
            "duration_s".into(),
            format!(
                "{} s of wall time; a real run lasts at most {MAX_DURATION_S} s",
                w.duration_s
            ),
        ));
    }
    if w.storage_latency_ms > 0 {
        out.push((
            "storage_latency_ms".into(),
            "a real disk's latency is what it is: the simulator's injected storage latency has no \
             real counterpart"
                .into(),
        ));
    }
    for f in schedule {
        let (a, b) = f.fault.hosts();
        let named = [a, b].into_iter().flatten();
        for host in named {
            let known = host == "redis"
                || host
                    .strip_prefix("server-")
                    .and_then(|s| s.parse::<u32>().ok())
                    .is_some_and(|s| s < w.servers)
                || host.starts_with("client-");
            if !known {
                out.push((
                    format!("faults: {host}"),
                    "no such process in the real world".into(),
                ));
            }
        }
        if let Fault::Crash { a } | Fault::Bounce { a } | Fault::Terminate { a } = &f.fault
            && a == "redis"
        {
            out.push((
                format!("faults: {} redis", f.kind().name()),
                "the run's Redis persists nothing, so restarting it would lose every write; \
                 use redis-outage"
                    .into(),
            ));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Run `opts.scenario` with `opts.seed` for real.
pub fn run(opts: &RunOptions) -> anyhow::Result<Outcome> {
    let scenario = Scenario::load(&opts.scenario).map_err(|e| anyhow::anyhow!("{e}"))?;
    if !opts.spiral_bin.is_file() {
        bail!(
            "{}: no spiral binary there (build it: cargo build --release -p spiral-server --bin spiral)",
            opts.spiral_bin.display()
        );
    }
    let session = Arc::new(Session::new(&scenario, opts.seed));
    let refused: Vec<_> = unfaithful(session.scenario(), session.schedule())
        .into_iter()
        .filter(|(field, _)| !opts.accept.iter().any(|a| field.starts_with(a.as_str())))
        .collect();
    if !refused.is_empty() {
        let list = refused
            .iter()
            .map(|(f, why)| format!("  {f}: {why}"))
            .collect::<Vec<_>>()
            .join("\n");
        bail!(
            "{}: the real world cannot honour:\n{list}\n(accept one with --accept FIELD to run without it)",
            opts.scenario.display()
        );
    }
    if opts.out.exists() {
        std::fs::remove_dir_all(&opts.out)
            .with_context(|| format!("emptying {}", opts.out.display()))?;
    }
    std::fs::create_dir_all(&opts.out)?;
    let dir = opts.out.canonicalize()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // Interrupted (Ctrl-C, SIGTERM), the run is dropped: its servers, Redis and proxies are
    // killed and its tmpfs disks unmounted, as at a normal end.
    let result = rt.block_on(async {
        tokio::select! {
            biased;
            () = spiral_server::signal::shutdown() => bail!("interrupted; run directory {}", dir.display()),
            r = run_in(opts, session.clone(), &dir) => r,
        }
    })?;
    write_outputs(opts, &session, &dir, &result)?;
    Ok(Outcome { result, dir })
}

/// The run's real start: the next whole second of the real clock (a whole-second libfaketime
/// offset then puts every server's clock exactly at the epoch).
async fn start_on_a_whole_second() -> (std::time::Instant, i64) {
    #[allow(clippy::disallowed_methods)] // the real world runs on the real clock
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let wait = 1000 - now_ms % 1000;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    #[allow(clippy::disallowed_methods)] // the real world runs on the real clock
    let start = std::time::Instant::now();
    let t0 = now_ms + wait;
    (start, (real::EPOCH_UNIX_MS as i64 - t0 as i64) / 1000)
}

async fn run_in(opts: &RunOptions, session: Arc<Session>, dir: &Path) -> anyhow::Result<RunResult> {
    let sc = session.scenario().clone();
    let w = &sc.world;
    let (start, base_offset_s) = start_on_a_whole_second().await;
    let redis = if w.storage == StorageKind::Redis {
        let r = Redis::start(dir)?;
        println!(
            "redis: a redis-server process of the run's own at {} (pid {})",
            r.addr,
            r.pid()
        );
        Some(r)
    } else {
        println!(
            "storage: {:?}, in each server process (no Redis)",
            w.storage
        );
        None
    };
    let needs_disks = session
        .schedule()
        .iter()
        .any(|f| matches!(f.fault, Fault::DiskFull { .. }));
    let proxy_log = DecisionLog::file(dir.join("proxies.jsonl"))?;
    let seed = session.seed();
    let mut redis_proxies = BTreeMap::new();
    let mut servers = Vec::new();
    let mut disks = Vec::new();
    for s in 0..w.servers {
        let sdir = dir.join(format!("server-{s}"));
        let mut env = session.server_env(s).map_err(|e| anyhow::anyhow!(e))?;
        // Stream frames are how the run sees GC removals: never throttle them.
        env.push(("SPIRAL_STREAM_MAX_FPS".into(), "100000".into()));
        let disk = if needs_disks {
            Some(Disk::mount(sdir.join("disk"))?)
        } else {
            None
        };
        let journal_dir = disk
            .as_ref()
            .map_or_else(|| sdir.join("disk"), |d| d.dir.clone());
        std::fs::create_dir_all(&journal_dir)?;
        env.push((
            "DEGRADED_JOURNAL_PATH".into(),
            journal_dir.join("journal.jsonl").display().to_string(),
        ));
        match w.storage {
            StorageKind::Redis => {
                let Some(r) = &redis else { bail!("no Redis") };
                let p = Proxy::start(
                    ProxyConfig::new(
                        format!("server-{s}>redis"),
                        SocketAddr::from(([127, 0, 0, 1], 0)),
                        r.addr,
                        seed,
                    )
                    .with_log(proxy_log.clone()),
                )
                .await?;
                if w.redis_latency_ms > 0 {
                    p.add_toxic(
                        Toxic::new(
                            ToxicKind::Latency {
                                latency_ms: w.redis_latency_ms,
                                jitter_ms: 0,
                            },
                            Stream::Downstream,
                        )
                        .named("world-latency"),
                    )?;
                }
                env.push(("SPIRAL_STORAGE".into(), "redis".into()));
                env.push(("REDIS_URL".into(), format!("redis://{}", p.listen_addr())));
                env.push(("SPIRAL_REDIS_NAMESPACE".into(), namespace(s)));
                redis_proxies.insert(s, p);
            }
            StorageKind::Embedded => {
                env.push(("SPIRAL_STORAGE".into(), "embedded".into()));
                env.push((
                    "SPIRAL_DB_PATH".into(),
                    sdir.join("spiral.redb").display().to_string(),
                ));
            }
            StorageKind::Memory => env.push(("SPIRAL_STORAGE".into(), "memory".into())),
        }
        let mut server = Server::new(s, &opts.spiral_bin, sdir, env, base_offset_s)?;
        server.fd_limit = opts.fd_limit;
        servers.push(server);
        disks.push(disk);
    }
    let mut client_proxies = BTreeMap::new();
    let mut endpoints = BTreeMap::new();
    for h in 0..w.client_host_count() {
        for (s, server) in servers.iter().enumerate() {
            for (i, port) in real::PORTS.into_iter().enumerate() {
                let p = Proxy::start(
                    ProxyConfig::new(
                        format!("client-{h}>server-{s}:{port}"),
                        SocketAddr::from(([127, 0, 0, 1], 0)),
                        server.addrs[i],
                        seed,
                    )
                    .with_log(proxy_log.clone()),
                )
                .await?;
                if w.latency_ms_max > 0 {
                    let (lo, hi) = (w.latency_ms_min, w.latency_ms_max.max(w.latency_ms_min));
                    for stream in [Stream::Upstream, Stream::Downstream] {
                        p.add_toxic(
                            Toxic::new(
                                ToxicKind::Latency {
                                    latency_ms: (lo + hi) / 2,
                                    jitter_ms: (hi - lo) / 2,
                                },
                                stream,
                            )
                            .named(format!("world-latency-{}", stream.as_str())),
                        )?;
                    }
                }
                endpoints.insert((h, format!("server-{s}"), port), p.listen_addr());
                client_proxies.insert((h, s as u32, port), p);
            }
        }
    }
    for s in &mut servers {
        s.start().await?;
        println!(
            "server-{}: {} (pid {:?}), HTTP {}{}",
            s.index,
            opts.spiral_bin.display(),
            s.pid(),
            s.addrs[0],
            opts.fd_limit
                .map(|n| format!(", open-file limit {n}"))
                .unwrap_or_default()
        );
    }
    real::enter(endpoints, start).map_err(|e| anyhow::anyhow!(e))?;
    session.record(Event::Phase {
        phase: Phase::Safety,
        at_ms: 0,
    });
    let world = Arc::new(tokio::sync::Mutex::new(World {
        session: session.clone(),
        servers,
        redis,
        disks,
        client_proxies,
        redis_proxies,
        faults_log: Mutex::new(std::fs::File::create(dir.join("faults.jsonl"))?),
    }));
    let supervising = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let supervisor = tokio::spawn(supervise(world.clone(), supervising.clone()));
    let observers = finals::observe(world.clone()).await;
    let driver = tokio::spawn(drive_faults(world.clone(), session.clone()));
    session.run_clients().await;
    let driven = driver.await;
    let crash = match driven {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("a fault could not be applied: {e:#}")),
        Err(e) => Some(format!("the fault driver failed: {e}")),
    };
    if crash.is_none() {
        finals::final_checks(&world, &session, observers).await;
    }
    supervising.store(false, std::sync::atomic::Ordering::SeqCst);
    let _ = supervisor.await;
    let result = session.finish(crash);
    // Everything stops: proxies, servers (killed), Redis, disks.
    let mut w = world.lock().await;
    for p in std::mem::take(&mut w.client_proxies).into_values() {
        p.stop().await;
    }
    for p in std::mem::take(&mut w.redis_proxies).into_values() {
        p.stop().await;
    }
    for s in &mut w.servers {
        let _ = s.kill().await;
    }
    w.redis = None;
    w.disks.clear();
    Ok(result)
}

/// A supervisor, as systemd or Kubernetes would be: a server that exits while it should run (a
/// boot that could not reach storage, say) is started again a second later — as the simulator's
/// server hosts keep trying to open.
async fn supervise(world: Arc<tokio::sync::Mutex<World>>, on: Arc<std::sync::atomic::AtomicBool>) {
    while on.load(std::sync::atomic::Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut w = world.lock().await;
        for s in &mut w.servers {
            if let Some(status) = s.exited_unwanted() {
                let started = s.spawn();
                println!(
                    "supervisor t={}ms: server-{} exited ({status}); started again{}",
                    real::elapsed_ms(),
                    s.index,
                    started
                        .err()
                        .map(|e| format!(": {e:#}"))
                        .unwrap_or_default()
                );
            }
        }
    }
}

/// Server `s`'s data namespace in Redis, as in the simulator: each instance keeps — and counts
/// — its own nodes; rate limits, token ids and revocations are shared.
pub fn namespace(s: u32) -> String {
    format!("spiral-s{s}")
}

/// Apply each fault at its time; record the liveness phase once the last healing one is in.
async fn drive_faults(
    world: Arc<tokio::sync::Mutex<World>>,
    session: Arc<Session>,
) -> anyhow::Result<()> {
    let schedule = session.schedule().to_vec();
    let last_heal_ms = schedule
        .iter()
        .filter(|f| f.kind().heals())
        .map(|f| f.at_ms())
        .max()
        .unwrap_or(0);
    let mut healed = false;
    for f in &schedule {
        if !healed && f.at_ms() > last_heal_ms {
            healed = true;
            session.record(Event::Phase {
                phase: Phase::Liveness,
                at_ms: last_heal_ms,
            });
        }
        let now = real::elapsed_ms();
        if f.at_ms() > now {
            tokio::time::sleep(Duration::from_millis(f.at_ms() - now)).await;
        }
        let done = world.lock().await.apply(f).await?;
        println!(
            "fault t={}ms {}: {done}",
            real::elapsed_ms(),
            f.kind().name()
        );
        session.fault(f, Some(done));
    }
    if !healed {
        let now = real::elapsed_ms();
        if last_heal_ms > now {
            tokio::time::sleep(Duration::from_millis(last_heal_ms - now)).await;
        }
        session.record(Event::Phase {
            phase: Phase::Liveness,
            at_ms: last_heal_ms,
        });
    }
    Ok(())
}

/// Each checker's final verdict in a trace: name → held.
pub fn verdicts(trace: &[String]) -> BTreeMap<String, bool> {
    let mut out = BTreeMap::new();
    for line in trace {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let (Some(check), Some(verdict)) = (v["check"].as_str(), v["verdict"].as_str())
            && v.get("detail").is_none()
        {
            out.insert(check.to_owned(), verdict == "held");
        }
    }
    out
}

fn write_outputs(
    opts: &RunOptions,
    session: &Session,
    dir: &Path,
    result: &RunResult,
) -> anyhow::Result<()> {
    let mut history = String::new();
    for line in &result.trace {
        history.push_str(line);
        history.push('\n');
    }
    std::fs::write(dir.join("history.jsonl"), history)?;
    let accepted: Vec<_> = unfaithful(session.scenario(), session.schedule())
        .into_iter()
        .map(|(f, why)| json!({"field": f, "why": why}))
        .collect();
    let rerun = rerun_command(opts);
    let verdict = json!({
        "scenario": opts.scenario.display().to_string(),
        "seed": opts.seed,
        "world": "real",
        "verdict": result.class(),
        "exit_code": result.exit_code(),
        "failure": result.failure.as_ref().map(|f| f.describe()),
        "checks": verdicts(&result.trace),
        "settings": session.settings().values(),
        "accepted_unfaithful": accepted,
        "fd_limit": opts.fd_limit,
        "ops": result.ops,
        "faults_fired": result.faults_fired,
        "rerun": rerun,
    });
    std::fs::write(
        dir.join("verdict.json"),
        serde_json::to_string_pretty(&verdict)? + "\n",
    )?;
    std::fs::write(
        dir.join("rerun.sh"),
        format!("#!/usr/bin/env bash\n# Runs this scenario and seed for real again.\n{rerun}\n"),
    )?;
    Ok(())
}

fn rerun_command(opts: &RunOptions) -> String {
    let mut cmd = format!(
        "cargo run --release -p spiral-chaos --bin spiral-chaos -- run {} --seed {} --spiral-bin {}",
        opts.scenario.display(),
        opts.seed,
        opts.spiral_bin.display()
    );
    for a in &opts.accept {
        cmd.push_str(&format!(" --accept {a}"));
    }
    if let Some(n) = opts.fd_limit {
        cmd.push_str(&format!(" --fd-limit {n}"));
    }
    cmd
}
