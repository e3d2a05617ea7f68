//! Scenario files (`scenarios/*.toml`): a named story — the world, the workload, the faults, the
//! checks and the SLOs. Unknown fields are errors, and every error names the file and the line
//! (parse errors carry `toml`'s line and column; a bad fault names the line it starts on).
//! The format is documented in `docs/simulation.md`; in short:
//!
//! ```toml
//! name = "smoke"
//! description = "one server, eight clients, no faults"
//!
//! [world]
//! servers = 1            # server hosts, each running the unmodified server library
//! clients = 8            # clients speaking real WebSocket over simulated TCP
//! client_hosts = 8       # hosts they run on, client c on `client-(c mod client_hosts)`
//! storage = "memory"     # memory | embedded (in-process, durable across a crash) | redis (a host)
//! duration_s = 60        # simulated seconds of workload
//!
//! [workload]
//! ops_per_s = 5.0        # per client
//! tenants = 3
//! mix = { store = 50, get = 25, collect = 10, list = 5, stats = 5, foreign_get = 5 }
//!
//! [[faults]]             # a timed list; each fires once
//! at_s = 20
//! kind = "partition"     # see Fault
//! a = "client-0"
//! b = "server-0"
//! ```
//!
//! One module per part: `[world]` and host naming ([`WorldSpec`], [`StorageKind`]), `[workload]`
//! ([`Workload`], [`Mix`]), `[[faults]]` typed per kind and `[swarm]` ([`FaultAt`], [`Fault`],
//! [`Swarm`]), `[checks]` ([`Checks`]); `[slo]` is the checkers' [`Slo`]. Here: the whole file,
//! parsing, validation and rendering it back as TOML.

mod checks;
mod fault;
pub(crate) mod server;
mod workload;
mod world;

use std::path::Path;

use serde::{Deserialize, Serialize};
pub use spiral_history::FaultKind;
use spiral_history::checkers::Settings;
pub use spiral_history::checkers::Slo;

pub use checks::Checks;
pub use fault::{Fault, FaultAt, OutageMode, Swarm};
pub use server::{KNOBS, Knob, ServerSettings, ServerSpec, WORLD_KNOBS};
pub use workload::{Mix, Workload};
pub use world::{StorageKind, WorldSpec};

/// A scenario file: its name, the world, the workload, the faults, the checks and the SLOs.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub world: WorldSpec,
    /// The server's settings, drawn per seed.
    #[serde(default, skip_serializing_if = "server_spec_is_empty")]
    pub server: ServerSpec,
    #[serde(default)]
    pub workload: Workload,
    #[serde(default)]
    pub faults: Vec<FaultAt>,
    #[serde(default)]
    pub swarm: Swarm,
    #[serde(default)]
    pub checks: Checks,
    #[serde(default)]
    pub slo: Slo,
}

impl Scenario {
    /// Parse TOML text; `origin` names the file in errors.
    pub fn parse(origin: &str, text: &str) -> Result<Self, String> {
        let s: Scenario = toml::from_str(text).map_err(|e| match fault::first_bad_fault(text) {
            // The same error, read from the fault alone: name that fault's line (`toml` can only
            // point at the start of the `faults` array).
            Some((i, f)) if f.message() == e.message() => {
                format!("{origin}: {}: {}", fault_location(text, i), e.message())
            }
            _ => format!("{origin}: {e}"),
        })?;
        s.validate(text).map_err(|e| format!("{origin}: {e}"))?;
        Ok(s)
    }

    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        Self::parse(&path.display().to_string(), &text)
    }

    /// The scenario as TOML (the shrinker prints its result with this).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// What the checkers need to know of a run of this scenario whose servers drew `server`.
    pub fn check_settings(&self, server: &ServerSettings) -> Settings {
        let ws_rate = spiral_server::api::ServerConfig::default().ws_rate;
        Settings {
            clients: self.world.clients - self.workload.bad_clients,
            ws_rate_capacity: server.get("ws_rate_limit"),
            ws_rate_window_ms: ws_rate.window_ms,
            http_rate: server.http_rate(),
            refresh_max_lifetime_s: server.get("refresh_max_lifetime_s"),
            max_connections_per_user: server.get("max_connections_per_user"),
            cb_window_ms: server.get("cb_window_ms"),
            cb_failures: server.get("cb_failures") as u32,
            gc_force_skip: server.get("gc_force_skip"),
            gc_grace_ms: self.checks.gc_grace_ms,
            liveness_within_ms: (self.checks.liveness_within_s * 1000.0) as u64,
            end_ms: self.world.duration_s * 1000,
            truncated: self.workload.max_ops_per_client.is_some(),
            slo: self.slo.clone(),
            disabled: self.checks.disable.iter().cloned().collect(),
        }
    }

    pub fn user_count(&self) -> u32 {
        self.workload.users.unwrap_or(self.world.clients).max(1)
    }

    /// What the types cannot say, section by section; a bad fault names the line it starts on.
    fn validate(&self, text: &str) -> Result<(), String> {
        self.world.validate()?;
        self.workload.validate(&self.world)?;
        self.checks.validate()?;
        self.server.validate()?;
        let hosts = self.host_names();
        for (i, f) in self.faults.iter().enumerate() {
            f.validate(&self.world, &hosts)
                .map_err(|e| format!("{}: {e}", fault_location(text, i)))?;
        }
        self.swarm.validate(&self.world)
    }

    /// Every host of the world: `server-0…`, `client-0…`, and `redis` when storage is Redis.
    pub fn host_names(&self) -> Vec<String> {
        self.world.host_names()
    }
}

fn server_spec_is_empty(s: &ServerSpec) -> bool {
    s.0.is_empty()
}

/// Where fault `i` of the file starts: `line N: [[faults]]` (the `[[faults]]` headers in order),
/// or `faults[i]` when the faults are an inline array.
fn fault_location(text: &str, i: usize) -> String {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("[[faults]]"))
        .nth(i)
        .map_or(format!("faults[{i}]"), |(n, _)| {
            format!("line {}: [[faults]]", n + 1)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses_and_round_trips() {
        let text = "name = \"x\"\n[world]\nclients = 2\nduration_s = 10\n[[faults]]\nat_s = 1\nkind = \"partition\"\na = \"client-0\"\nb = \"server-0\"\n";
        let s = Scenario::parse("x.toml", text).unwrap();
        assert_eq!(
            (s.world.servers, s.world.clients, s.faults.len()),
            (1, 2, 1)
        );
        assert_eq!(s.workload, Workload::default());
        let again = Scenario::parse("again.toml", &s.to_toml()).unwrap();
        assert_eq!(again, s);
    }

    #[test]
    fn errors_name_the_line_and_the_field() {
        let e = Scenario::parse(
            "bad.toml",
            "name = \"x\"\n[world]\nclients = 2\nduration_s = 10\nspeed = 3\n",
        )
        .unwrap_err();
        assert!(
            e.contains("bad.toml") && e.contains("line 5") && e.contains("speed"),
            "{e}"
        );
        let text = "name = \"x\"\n[world]\nclients = 2\nduration_s = 10\n\n[[faults]]\nat_s = 1\nkind = \"crash\"\na = \"server-0\"\n\n[[faults]]\nat_s = 2\nkind = \"crash\"\na = \"nobody\"\n";
        let e = Scenario::parse("bad.toml", text).unwrap_err();
        assert!(e.contains("line 11") && e.contains("nobody"), "{e}");
        let e = Scenario::parse("bad.toml", "name = \"x\"\n[world]\nclients = 2\nduration_s = 10\n[[faults]]\nat_s = 1\nkind = \"redis-outage\"\n").unwrap_err();
        assert!(
            e.contains("line 5") && e.contains("storage = \\\"redis\\\"")
                || e.contains("storage = \"redis\""),
            "{e}"
        );
        let e = Scenario::parse(
            "bad.toml",
            "name = \"x\"\n[world]\nclients = 2\nduration_s = 10\n[checks]\ndisable = [\"nope\"]\n",
        )
        .unwrap_err();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn a_fault_with_the_wrong_fields_is_named_by_its_own_line_and_kind() {
        let world = "[world]\nclients = 2\nduration_s = 10\n";
        let crash = "\n[[faults]]\nat_s = 1\nkind = \"crash\"\na = \"server-0\"\n";
        let repair = "\n[[faults]]\nat_s = 2\nkind = \"repair\"\na = \"client-0\"\n";
        let text = format!("name = \"x\"\n{world}{crash}{repair}");
        let e = Scenario::parse("bad.toml", &text).unwrap_err();
        assert_eq!(
            e,
            "bad.toml: line 11: [[faults]]: repair: missing field `b`"
        );
        // Inline, the fault is named by its index.
        let inline = "faults = [{ at_s = 1, kind = \"crash\", a = \"server-0\" }, \
                      { at_s = 2, kind = \"crash\", a = \"server-0\", ms = 5 }]\n";
        let text = format!("name = \"x\"\n{inline}{world}");
        let e = Scenario::parse("bad.toml", &text).unwrap_err();
        assert_eq!(
            e,
            "bad.toml: faults[1]: crash: unknown field `ms`, expected `a`"
        );
    }

    #[test]
    fn clients_share_the_client_hosts_round_robin() {
        let base = "name = \"x\"\n[world]\nclients = 5\nduration_s = 10\n";
        let s = Scenario::parse("x.toml", &format!("{base}client_hosts = 2\n")).unwrap();
        assert_eq!(
            s.host_names(),
            ["server-0", "client-0", "client-1"].map(String::from)
        );
        let hosts: Vec<String> = (0..5).map(|c| s.world.client_host(c)).collect();
        assert_eq!(
            hosts,
            ["client-0", "client-1", "client-0", "client-1", "client-0"].map(String::from)
        );
        // By default every client has a host of its own.
        let s = Scenario::parse("x.toml", base).unwrap();
        assert_eq!(s.world.client_host(4), "client-4");
        // A fault may only name a host that exists.
        let fault =
            "[[faults]]\nat_s = 1\nkind = \"partition\"\na = \"client-3\"\nb = \"server-0\"\n";
        let e = Scenario::parse("x.toml", &format!("{base}client_hosts = 2\n{fault}")).unwrap_err();
        assert!(e.contains("line 6") && e.contains("client-3"), "{e}");
        for bad in ["0", "6"] {
            let e =
                Scenario::parse("x.toml", &format!("{base}client_hosts = {bad}\n")).unwrap_err();
            assert!(e.contains("client_hosts"), "{e}");
        }
    }

    #[test]
    fn every_shipped_scenario_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Scenario::load(&path).unwrap();
                n += 1;
            }
        }
        assert!(n >= 8, "only {n} scenarios in {}", dir.display());
    }

    /// The reproducers of open defects (`scenarios/open/`, outside the CI sweep) stay runnable.
    #[test]
    fn every_open_defect_reproducer_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/open");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Scenario::load(&path).unwrap();
            }
        }
    }

    #[test]
    fn every_shipped_scenario_round_trips_through_to_toml() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let s = Scenario::load(&path).unwrap();
                let again = Scenario::parse("again.toml", &s.to_toml()).unwrap();
                assert_eq!(again, s, "{}", path.display());
            }
        }
    }
}
