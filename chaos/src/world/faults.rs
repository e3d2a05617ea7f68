//! A scenario's faults as real faults. Each applied fault is one line of `faults.jsonl` (wall
//! time, the fault, what was done) and one `fault` record in the history, as in the simulator.
//!
//! | scenario fault | done for real |
//! |---|---|
//! | `partition` / `repair` (client host ↔ server) | the proxies of that link down / up (connects refused, connections cut) |
//! | `partition` (server ↔ `redis`) | that server's Redis proxy down / up |
//! | `partition-oneway` / `repair-oneway` | a `timeout` toxic (0: hold for ever) on one direction of the link's proxies |
//! | `hold` / `release` | a `timeout` toxic (0) on both directions, removed on release |
//! | `link-latency` | a `latency` toxic on both directions |
//! | `link-loss` | a `loss` toxic on both directions (per chunk; a lost chunk stalls the connection, as in turmoil) |
//! | `link-restore` | the link's latency and loss toxics removed |
//! | `crash` / `bounce` | SIGKILL / start the `spiral` process again |
//! | `terminate` | SIGTERM, wait for the exit, start it again |
//! | `redis-outage` hang / refuse | SIGSTOP `redis-server` / every Redis proxy down |
//! | `redis-slow` | a `latency` toxic on every Redis proxy |
//! | `redis-errors` | a `reset_peer` toxic (toxicity = the rate) on every Redis proxy |
//! | `redis-restore` | SIGCONT, proxies up, their toxics removed |
//! | `clock-skew` | the server's libfaketime offset moved (whole seconds) |
//! | `disk-full` / `disk-restore` | the server's journal tmpfs filled by a ballast file / freed |
//!
//! A partition between two servers changes nothing: servers do not talk to each other.

use std::time::Duration;

use serde_json::json;
use spiral_harness::scenario::{Fault, FaultAt, OutageMode};

use crate::proxy::{Stream, Toxic, ToxicKind};

use super::{Link, World};

/// How long a graceful stop may take before the process is killed.
const GRACE: Duration = Duration::from_secs(15);

/// A start that failed (a boot that could not reach storage exits) is the supervisor's to retry.
fn supervised(started: anyhow::Result<()>) -> String {
    match started {
        Ok(()) => String::new(),
        Err(e) => format!("; {e:#} — the supervisor starts it again"),
    }
}

fn server_index(host: &str) -> Option<u32> {
    host.strip_prefix("server-")?.parse().ok()
}

fn client_host(host: &str) -> Option<u32> {
    host.strip_prefix("client-")?.parse().ok()
}

/// The link between hosts `a` and `b`, as proxies see it.
fn link(a: &str, b: &str) -> Option<Link> {
    match (
        client_host(a),
        server_index(a),
        client_host(b),
        server_index(b),
    ) {
        (Some(h), _, _, Some(s)) => Some(Link::Client {
            host: h,
            server: s,
            from_client: true,
        }),
        (_, Some(s), Some(h), _) => Some(Link::Client {
            host: h,
            server: s,
            from_client: false,
        }),
        (_, Some(s), ..) if b == "redis" => Some(Link::Redis {
            server: s,
            from_server: true,
        }),
        (.., Some(s)) if a == "redis" => Some(Link::Redis {
            server: s,
            from_server: false,
        }),
        _ => None,
    }
}

impl World {
    /// Apply `f`; what was done, for the record.
    pub(super) async fn apply(&mut self, f: &FaultAt) -> anyhow::Result<String> {
        let done = match &f.fault {
            Fault::Partition { a, b } | Fault::Repair { a, b } => {
                let up = matches!(f.fault, Fault::Repair { .. });
                match link(a, b) {
                    Some(l) => {
                        let names = self.set_link_enabled(&l, up).await?;
                        format!("proxies {} {names}", if up { "up" } else { "down" })
                    }
                    None => "no proxy between them: nothing to cut".into(),
                }
            }
            Fault::PartitionOneway { a, b } | Fault::RepairOneway { a, b } => {
                let on = matches!(f.fault, Fault::PartitionOneway { .. });
                match link(a, b) {
                    Some(l) => {
                        let stream = l.stream_from_a();
                        let toxic = Toxic::new(ToxicKind::Timeout { timeout_ms: 0 }, stream)
                            .named(format!("oneway-{}", stream.as_str()));
                        self.toxic(&l, on, toxic)?
                    }
                    None => "no proxy between them".into(),
                }
            }
            Fault::Hold { a, b } | Fault::Release { a, b } => {
                let on = matches!(f.fault, Fault::Hold { .. });
                match link(a, b) {
                    Some(l) => {
                        let mut out = Vec::new();
                        for stream in [Stream::Upstream, Stream::Downstream] {
                            let t = Toxic::new(ToxicKind::Timeout { timeout_ms: 0 }, stream)
                                .named(format!("hold-{}", stream.as_str()));
                            out.push(self.toxic(&l, on, t)?);
                        }
                        out.join("; ")
                    }
                    None => "no proxy between them".into(),
                }
            }
            Fault::LinkLatency { a, b, ms } => match link(a, b) {
                Some(l) => self.both_ways(
                    &l,
                    "link-latency",
                    &ToxicKind::Latency {
                        latency_ms: *ms,
                        jitter_ms: 0,
                    },
                )?,
                None => "no proxy between them".into(),
            },
            Fault::LinkLoss { a, b, rate } => match link(a, b) {
                Some(l) => {
                    self.both_ways(&l, "link-loss", &ToxicKind::Loss { probability: *rate })?
                }
                None => "no proxy between them".into(),
            },
            Fault::LinkRestore { a, b } => match link(a, b) {
                Some(l) => {
                    let mut removed = 0;
                    for p in self.proxies_of(&l) {
                        for t in p.toxics() {
                            if t.name.starts_with("link-") && p.remove_toxic(&t.name).is_ok() {
                                removed += 1;
                            }
                        }
                    }
                    format!("{removed} link toxics removed")
                }
                None => "no proxy between them".into(),
            },
            Fault::Crash { a } => {
                let s = self.server(a)?;
                let pid = self.servers[s].pid();
                self.servers[s].kill().await?;
                format!("SIGKILL {a} (pid {pid:?})")
            }
            Fault::Bounce { a } => {
                let s = self.server(a)?;
                let was = self.servers[s].running();
                if was {
                    self.servers[s].kill().await?;
                }
                let started = self.servers[s].spawn();
                format!(
                    "{}{a} started (pid {:?}){}",
                    if was { "SIGKILL, then " } else { "" },
                    self.servers[s].pid(),
                    supervised(started)
                )
            }
            Fault::Terminate { a } => {
                let s = self.server(a)?;
                if !self.servers[s].running() {
                    "not running: nothing to stop".into()
                } else {
                    let pid = self.servers[s].pid();
                    self.session.stopping(s as u32, true);
                    let clean = self.servers[s].terminate(GRACE).await?;
                    let started = self.servers[s].spawn();
                    self.session.stopping(s as u32, false);
                    format!(
                        "SIGTERM {a} (pid {pid:?}), {}, started again (pid {:?}){}",
                        if clean { "exited" } else { "killed after 15 s" },
                        self.servers[s].pid(),
                        supervised(started)
                    )
                }
            }
            Fault::RedisOutage { mode } => {
                let redis = self
                    .redis
                    .as_mut()
                    .ok_or_else(|| anyhow::anyhow!("no Redis"))?;
                match mode.unwrap_or_default() {
                    OutageMode::Hang => {
                        redis.pause()?;
                        format!("SIGSTOP redis-server (pid {})", redis.pid())
                    }
                    OutageMode::Refuse => {
                        let names = self.set_redis_enabled(false).await?;
                        format!("Redis proxies down {names}")
                    }
                }
            }
            Fault::RedisSlow { ms } => self.redis_toxic(
                "redis-slow",
                ToxicKind::Latency {
                    latency_ms: *ms,
                    jitter_ms: 0,
                },
                1.0,
            )?,
            Fault::RedisErrors { rate } => self.redis_toxic(
                "redis-errors",
                ToxicKind::ResetPeer { timeout_ms: 0 },
                *rate,
            )?,
            Fault::RedisRestore {} => {
                if let Some(r) = self.redis.as_mut() {
                    r.resume()?;
                }
                self.set_redis_enabled(true).await?;
                let mut removed = 0;
                for p in self.redis_proxies() {
                    for t in p.toxics() {
                        if t.name.starts_with("redis-") && p.remove_toxic(&t.name).is_ok() {
                            removed += 1;
                        }
                    }
                }
                format!("SIGCONT redis-server, Redis proxies up, {removed} toxics removed")
            }
            Fault::ClockSkew { a, ms } => {
                let s = self.server(a)?;
                let total = self.servers[s].skew(*ms)?;
                format!(
                    "libfaketime offset of {a} moved {ms:+} ms (skew now {total:+} ms, whole seconds)"
                )
            }
            Fault::DiskFull { a } | Fault::DiskRestore { a } => {
                let s = self.server(a)?;
                let disk = self.disks[s]
                    .as_ref()
                    .ok_or_else(|| anyhow::anyhow!("{a} has no disk of its own"))?;
                if matches!(f.fault, Fault::DiskFull { .. }) {
                    disk.fill()?;
                    format!("{} filled", disk.dir.display())
                } else {
                    disk.clear()?;
                    format!("{} freed", disk.dir.display())
                }
            }
        };
        self.log_fault(f, &done);
        Ok(done)
    }

    fn server(&self, host: &str) -> anyhow::Result<usize> {
        server_index(host)
            .map(|s| s as usize)
            .filter(|s| *s < self.servers.len())
            .ok_or_else(|| anyhow::anyhow!("{host}: the real world can only do this to a server"))
    }

    async fn set_link_enabled(&self, l: &Link, up: bool) -> anyhow::Result<String> {
        let mut names = Vec::new();
        for p in self.proxies_of(l) {
            p.set_enabled(up).await?;
            names.push(p.name().to_owned());
        }
        Ok(names.join(","))
    }

    async fn set_redis_enabled(&self, up: bool) -> anyhow::Result<String> {
        let mut names = Vec::new();
        for p in self.redis_proxies() {
            p.set_enabled(up).await?;
            names.push(p.name().to_owned());
        }
        Ok(names.join(","))
    }

    /// Add (`on`) or remove `toxic` on every proxy of `l`.
    fn toxic(&self, l: &Link, on: bool, toxic: Toxic) -> anyhow::Result<String> {
        let mut n = 0;
        for p in self.proxies_of(l) {
            if on {
                if p.toxic(&toxic.name).is_some() {
                    p.update_toxic(toxic.clone())?;
                } else {
                    p.add_toxic(toxic.clone())?;
                }
            } else {
                let _ = p.remove_toxic(&toxic.name);
            }
            n += 1;
        }
        Ok(format!(
            "{} {} on {n} proxies",
            if on { "added" } else { "removed" },
            toxic.name
        ))
    }

    fn both_ways(&self, l: &Link, name: &str, kind: &ToxicKind) -> anyhow::Result<String> {
        let mut out = Vec::new();
        for stream in [Stream::Upstream, Stream::Downstream] {
            let t = Toxic::new(kind.clone(), stream).named(format!("{name}-{}", stream.as_str()));
            out.push(self.toxic(l, true, t)?);
        }
        Ok(out.join("; "))
    }

    fn redis_toxic(&self, name: &str, kind: ToxicKind, toxicity: f64) -> anyhow::Result<String> {
        let mut n = 0;
        for p in self.redis_proxies() {
            for stream in [Stream::Upstream, Stream::Downstream] {
                let t = Toxic::new(kind.clone(), stream)
                    .named(format!("{name}-{}", stream.as_str()))
                    .with_toxicity(toxicity);
                if p.toxic(&t.name).is_some() {
                    p.update_toxic(t)?;
                } else {
                    p.add_toxic(t)?;
                }
            }
            n += 1;
        }
        Ok(format!(
            "{name} toxic (toxicity {toxicity}) on {n} Redis proxies"
        ))
    }

    fn log_fault(&self, f: &FaultAt, done: &str) {
        let line = json!({
            "t_ms": spiral_harness::world::real::elapsed_ms(),
            "at_s": f.at_s,
            "fault": f.fault,
            "done": done,
        });
        if let Ok(mut file) = self.faults_log.lock() {
            use std::io::Write;
            let _ = writeln!(file, "{line}");
        }
    }
}
