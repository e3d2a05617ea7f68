//! The harness's side of the real-process world (`spiral-chaos run`, in `chaos/`): the same
//! clients, the same history and the same checkers as a simulated run, with the servers, Redis
//! and the network made real by the caller.
//!
//! - [`enter`] switches this process to real sockets: every client connection goes to the
//!   address the caller gave for its (client host, server, port) — a fault proxy's — and the
//!   run's clock (`now_ms`) is wall time since the start the caller gives. A process runs one
//!   real world.
//! - [`Session`] is one run: the settings and fault schedule the seed draws (exactly as the
//!   simulator draws them), the environment each server process gets, the clients, the record
//!   of each fault the caller applies, and the verdict.
//!
//! What the caller must do itself, because only it holds the processes: apply the faults, look
//! at storage at the end (the durable checks), and say so through [`Session::record`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use spiral_history::Event;
use spiral_server::rng::SplitMix64;

use super::run::{RunResult, checks, finish, server_settings};
use super::schedule::schedule;
use super::{Ctx, EPOCH_MS, SECRET, bad, build, client, lock, now_ms};
use crate::scenario::{FaultAt, Scenario, ServerSettings};

/// Where the real world's clients connect, and when its run began.
#[derive(Debug)]
pub struct RealWorld {
    /// (client host, `server-N`, port) → the address to dial.
    endpoints: BTreeMap<(u32, String, u16), SocketAddr>,
    start: std::time::Instant,
}

static WORLD: OnceLock<RealWorld> = OnceLock::new();

tokio::task_local! {
    /// The client host the running client lives on: which proxies its connections cross.
    static CLIENT_HOST: u32;
}

/// The real world this process entered, if it did.
pub(crate) fn world() -> Option<&'static RealWorld> {
    WORLD.get()
}

impl RealWorld {
    /// The address for `host:port` from the running client's host (host 0 outside a client).
    pub(crate) fn endpoint(&self, host: &str, port: u16) -> Option<SocketAddr> {
        let from = CLIENT_HOST.try_with(|h| *h).unwrap_or(0);
        self.endpoints.get(&(from, host.to_owned(), port)).copied()
    }

    /// Wall milliseconds since the run began.
    pub(crate) fn elapsed_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}

/// Switch this process to real sockets: `endpoints` maps (client host, `server-N`, port) to the
/// address to dial, and the run's clock starts at `start`. Once per process.
pub fn enter(
    endpoints: BTreeMap<(u32, String, u16), SocketAddr>,
    start: std::time::Instant,
) -> Result<(), String> {
    WORLD
        .set(RealWorld { endpoints, start })
        .map_err(|_| "this process has already entered a real world".to_owned())
}

/// Milliseconds since the run began (wall time in the real world).
pub fn elapsed_ms() -> u64 {
    now_ms()
}

/// The ports a server listens on, as the clients name them: HTTP, commands, stream.
pub const PORTS: [u16; 3] = [super::net::HTTP, super::net::COMMANDS, super::net::STREAM];

/// The HS256 secret the clients sign with: every real server must be given it (`JWT_SECRET`).
pub fn jwt_secret() -> String {
    String::from_utf8_lossy(SECRET).into_owned()
}

/// The RS256 key set every server also accepts (`JWK`).
pub fn jwks() -> &'static str {
    super::net::JWKS
}

/// The fixed epoch of every run, in unix ms: a real server's clock is set to it at the start of
/// the run (libfaketime), so that tokens, refresh chains and rate-limit windows mean what they
/// mean in the simulator.
pub const EPOCH_UNIX_MS: u64 = EPOCH_MS;

/// One run of a scenario in the real world.
pub struct Session {
    ctx: Arc<Ctx>,
    seed: u64,
    root: SplitMix64,
    schedule: Vec<FaultAt>,
    server_seed: u64,
}

impl Session {
    /// The run of `scenario` with `seed`: the same settings, schedule and client seeds as the
    /// simulator's run of that seed.
    pub fn new(scenario: &Scenario, seed: u64) -> Session {
        let root = SplitMix64::new(seed);
        let server_seed = root.fork("server").next_u64();
        let settings = server_settings(scenario, seed);
        let ctx = build::context_over(scenario, settings, server_seed, None, None);
        let schedule = schedule(scenario, &mut root.fork("swarm"));
        Session {
            ctx,
            seed,
            root,
            schedule,
            server_seed,
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The scenario with what `[server]` drew for this run in place.
    pub fn scenario(&self) -> &Scenario {
        &self.ctx.sc
    }

    pub fn settings(&self) -> &ServerSettings {
        &self.ctx.settings
    }

    /// The timed faults and the swarm's, in time order.
    pub fn schedule(&self) -> &[FaultAt] {
        &self.schedule
    }

    /// Server `s`'s settings as the environment of the `spiral` binary (every knob the run drew,
    /// the engine's capacity, the keys and the seed); the caller adds addresses and storage.
    pub fn server_env(&self, s: u32) -> Result<Vec<(String, String)>, String> {
        let mut env = vec![
            ("JWT_SECRET".to_owned(), jwt_secret()),
            ("JWK".to_owned(), jwks().to_owned()),
            (
                "SPIRAL_SEED".to_owned(),
                spiral_server::rng::sub_seed(self.server_seed, &format!("server-{s}")).to_string(),
            ),
        ];
        for (name, v) in self.ctx.settings.values() {
            env.push(knob_env(&name, v)?);
        }
        let w = &self.ctx.sc.world;
        for (name, v) in [
            ("SPIRAL_MAX_NODES", w.max_nodes),
            ("WS_PING_INTERVAL_MS", w.ws_ping_interval_ms),
            ("WS_IDLE_TIMEOUT_MS", w.ws_idle_timeout_ms),
            ("SPIRAL_MAX_CONNECTIONS", w.max_connections as u64),
            ("SPIRAL_MAX_MESSAGE_SIZE", w.max_message_size as u64),
        ] {
            env.retain(|(k, _)| k != name);
            env.push((name.to_owned(), v.to_string()));
        }
        Ok(env)
    }

    /// Every client of the scenario, well-behaved and hostile, each on its client host, until
    /// the workload ends.
    pub async fn run_clients(&self) {
        let sc = &self.ctx.sc;
        let clients = (0..sc.world.clients).map(|c| {
            let ctx = self.ctx.clone();
            let rng = self.root.fork(&format!("client-{c}"));
            let host = sc.world.client_host_index(c);
            CLIENT_HOST.scope(host, async move {
                if ctx.bad_client(c) {
                    bad::main(&ctx, c, rng).await;
                } else {
                    client::main(&ctx, c, rng).await;
                }
                ctx.clients_done.fetch_add(1, Ordering::SeqCst);
            })
        });
        futures_util::future::join_all(clients).await;
    }

    /// The caller applied `f` now (`detail`: how, for the record).
    pub fn fault(&self, f: &FaultAt, detail: Option<String>) {
        super::apply::record_fault(&self.ctx, f, detail, now_ms());
    }

    /// Server `s` was asked to stop gracefully (`on`), or is back (`!on`): clients that lose
    /// their connection meanwhile expect a 1001 from it.
    pub fn stopping(&self, s: u32, on: bool) {
        if on {
            self.ctx.servers[s as usize]
                .terminations
                .fetch_add(1, Ordering::SeqCst);
        }
        lock(&self.ctx.disturbance).stop(s, on, now_ms());
    }

    /// Record `event` now: a trace line, and every checker sees it.
    pub fn record(&self, event: Event) {
        self.ctx.record(event);
    }

    /// Every acknowledged store still expected to exist, with the server that took it.
    pub fn acked(&self) -> Vec<(String, u32)> {
        self.ctx.acked()
    }

    /// The tenant whose store of `id` was acknowledged, while the node is on record.
    pub fn acked_tenant(&self, id: &str) -> Option<String> {
        self.ctx.acked_tenant(id)
    }

    /// Workload clients that have finished.
    pub fn clients_done(&self) -> u32 {
        self.ctx.clients_done.load(Ordering::SeqCst)
    }

    /// The handshake `jti`s `server` admitted, with their tokens' `exp` (unix s).
    pub fn admitted(&self, server: u32) -> Vec<(String, u64)> {
        self.ctx.admitted(server)
    }

    /// The harness itself failed: the run is reported as a crash.
    pub fn harness_error(&self, e: String) {
        self.ctx.harness_error(e);
    }

    /// The checkers' final verdicts and the run's result; `crash`: the run could not complete.
    pub fn finish(&self, crash: Option<String>) -> RunResult {
        let checks = checks(&self.ctx.sc);
        finish(&self.ctx, self.seed, crash, checks, BTreeMap::new())
    }
}

/// A `[server]` knob as the `spiral` binary's environment variable (its name is in the knob's
/// description, [`KNOBS`](crate::scenario::server::KNOBS)).
fn knob_env(name: &str, v: u64) -> Result<(String, String), String> {
    let (var, value) = match name {
        "journal_max" => ("DEGRADED_JOURNAL_MAX", v.to_string()),
        "cb_failures" => ("CB_FAILURES", v.to_string()),
        "cb_window_ms" => ("CB_WINDOW", v.to_string()),
        "cb_timeout_ms" => ("CB_TIMEOUT", v.to_string()),
        "ws_rate_limit" => ("WS_RATE_LIMIT", v.to_string()),
        "ws_send_queue" => ("WS_SEND_QUEUE", v.to_string()),
        "store_rate_limit" => ("SPIRAL_RATE_LIMIT", format!("{v},10")),
        "http_rate_limit" => ("HTTP_RATE_LIMIT", format!("{v},10")),
        "rate_limit_block_ms" if v.is_multiple_of(1000) => {
            ("RATE_LIMIT_BLOCK_SECONDS", (v / 1000).to_string())
        }
        "rate_limit_buckets" => ("SPIRAL_RATE_LIMIT_BUCKETS", v.to_string()),
        "gc_time_budget_ms" => ("GC_TIME_BUDGET_MS", v.to_string()),
        "refresh_max_lifetime_s" => ("REFRESH_MAX_LIFETIME_S", v.to_string()),
        "max_connections_per_user" => ("SPIRAL_MAX_CONNECTIONS_PER_USER", v.to_string()),
        "gc_trigger_interval" => ("GC_TRIGGER_INTERVAL", v.to_string()),
        "gc_budget_scale" => ("GC_BUDGET_SCALE", v.to_string()),
        "gc_force_skip" => ("GC_FORCE_SKIP", v.to_string()),
        "auth_fail_closed" => ("AUTH_FAIL_CLOSED", (v == 1).to_string()),
        "http_header_timeout_ms" => ("HTTP_HEADER_TIMEOUT_MS", v.to_string()),
        "http_idle_timeout_ms" => ("HTTP_IDLE_TIMEOUT_MS", v.to_string()),
        "ws_send_queue_bytes" => ("WS_SEND_QUEUE_BYTES", v.to_string()),
        "ws_slow_client_ms" => ("WS_SLOW_CLIENT_MS", v.to_string()),
        "max_nodes" => ("SPIRAL_MAX_NODES", v.to_string()),
        "ws_ping_interval_ms" => ("WS_PING_INTERVAL_MS", v.to_string()),
        "ws_idle_timeout_ms" => ("WS_IDLE_TIMEOUT_MS", v.to_string()),
        "max_connections" => ("SPIRAL_MAX_CONNECTIONS", v.to_string()),
        "max_message_size" => ("SPIRAL_MAX_MESSAGE_SIZE", v.to_string()),
        _ => {
            return Err(format!(
                "[server] {name} = {v} has no setting of the spiral binary that honours it"
            ));
        }
    };
    Ok((var.to_owned(), value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::server::{KNOBS, WORLD_KNOBS};

    /// Every knob a scenario may draw reaches the binary, under the variable its description
    /// names.
    #[test]
    fn every_knob_has_the_environment_variable_its_description_names() {
        let knobs = KNOBS
            .iter()
            .map(|(name, default, _, _, what)| (*name, *default, *what))
            .chain(
                WORLD_KNOBS
                    .iter()
                    .map(|(name, min, _, what)| (*name, *min, *what)),
            );
        for (name, v, what) in knobs {
            let v = if name == "rate_limit_block_ms" {
                15_000
            } else {
                v
            };
            let (var, _) = knob_env(name, v).unwrap();
            assert!(
                what.contains(&format!("({var}")),
                "{name}: {var} not in {what:?}"
            );
        }
        assert!(
            knob_env("rate_limit_block_ms", 1_500).is_err(),
            "whole seconds only"
        );
    }
}
