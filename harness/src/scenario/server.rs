//! `[server]`: the server's own settings, drawn per seed (FoundationDB's knob randomisation). Each
//! setting is a fixed value, a `{ min, max }` range (uniform, inclusive) or a list to pick from:
//!
//! ```toml
//! [server]
//! journal_max = { min = 4, max = 64 }       # the degraded journal fills in some seeds
//! cb_failures = [1, 3, 5]
//! refresh_max_lifetime_s = 120
//! ```
//!
//! A setting left out has the simulator's default ([`KNOBS`]). The values drawn for a run come
//! from the run's seed alone (sub-seed `server-settings`), are the first line of its trace and
//! are printed by `sim`, so a failing seed names the settings it failed under.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use spiral_server::rng::SplitMix64;

/// One setting: a value, a range or a list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Knob {
    Fixed(u64),
    Range { min: u64, max: u64 },
    List(Vec<u64>),
}

impl Knob {
    fn draw(&self, rng: &mut SplitMix64) -> u64 {
        match self {
            Knob::Fixed(v) => *v,
            Knob::Range { min, max } => min + rng.next_u64() % (max - min + 1),
            Knob::List(v) => v[(rng.next_u64() % v.len() as u64) as usize],
        }
    }

    fn bounds(&self) -> Option<(u64, u64)> {
        match self {
            Knob::Fixed(v) => Some((*v, *v)),
            Knob::Range { min, max } => (min <= max).then_some((*min, *max)),
            Knob::List(v) => Some((*v.iter().min()?, *v.iter().max()?)),
        }
    }
}

/// Every setting `[server]` may draw: its name, the simulator's default, and the range it must
/// stay in (the server's own limits, or what a simulated minute can exercise).
pub const KNOBS: &[(&str, u64, u64, u64, &str)] = &[
    (
        "journal_max",
        10_000,
        0,
        1_000_000,
        "writes the degraded journal holds (DEGRADED_JOURNAL_MAX)",
    ),
    (
        "cb_failures",
        3,
        1,
        100,
        "outage failures that open the breaker (CB_FAILURES)",
    ),
    (
        "cb_window_ms",
        2_000,
        1,
        600_000,
        "how long the breaker stays open (CB_WINDOW)",
    ),
    (
        "cb_timeout_ms",
        500,
        1,
        60_000,
        "time limit of each storage call (CB_TIMEOUT)",
    ),
    (
        "ws_rate_limit",
        100,
        1,
        1_000_000,
        "WebSocket handshakes and messages per user per 10 s (WS_RATE_LIMIT)",
    ),
    (
        "ws_send_queue",
        256,
        1,
        1_000_000,
        "outbound frames queued per connection (WS_SEND_QUEUE)",
    ),
    (
        "store_rate_limit",
        100,
        1,
        1_000_000,
        "stores per user per 10 s (SPIRAL_RATE_LIMIT)",
    ),
    (
        "http_rate_limit",
        100,
        1,
        1_000_000,
        "HTTP requests per user per 10 s (HTTP_RATE_LIMIT)",
    ),
    (
        "rate_limit_block_ms",
        60_000,
        0,
        3_600_000,
        "a user over its HTTP limit is refused this long (RATE_LIMIT_BLOCK_SECONDS, in ms here)",
    ),
    (
        "rate_limit_buckets",
        10_000,
        1,
        100_000_000,
        "rate-limit buckets kept in memory before the idle ones are swept (SPIRAL_RATE_LIMIT_BUCKETS)",
    ),
    (
        "gc_time_budget_ms",
        25,
        1,
        10_000,
        "time budget of one GC pass (GC_TIME_BUDGET_MS)",
    ),
    (
        "refresh_max_lifetime_s",
        86_400,
        60,
        31_536_000,
        "a refreshed token never outlives its chain's start plus this (REFRESH_MAX_LIFETIME_S)",
    ),
    (
        "max_connections_per_user",
        4,
        1,
        100_000,
        "open WebSockets per user, both ports together (SPIRAL_MAX_CONNECTIONS_PER_USER)",
    ),
    (
        "gc_trigger_interval",
        100,
        1,
        1_000_000,
        "operations between GC passes (GC_TRIGGER_INTERVAL)",
    ),
    (
        "gc_budget_scale",
        10,
        1,
        1_000,
        "nodes a GC pass may collect per ms of its budget (GC_BUDGET_SCALE)",
    ),
    (
        "gc_force_skip",
        3,
        0,
        100,
        "second chances a recently read node gets from GC (GC_FORCE_SKIP)",
    ),
    (
        "auth_fail_closed",
        0,
        0,
        1,
        "1: refuse a handshake Redis cannot check with 503 instead of deciding locally (AUTH_FAIL_CLOSED)",
    ),
    (
        "http_header_timeout_ms",
        10_000,
        10,
        3_600_000,
        "a connection that has not sent a whole request header by then is closed (HTTP_HEADER_TIMEOUT_MS)",
    ),
    (
        "http_idle_timeout_ms",
        60_000,
        10,
        3_600_000,
        "an idle keep-alive connection is closed after this (HTTP_IDLE_TIMEOUT_MS)",
    ),
    (
        "ws_send_queue_bytes",
        8 * 1024 * 1024,
        1024,
        1 << 30,
        "outbound bytes queued per connection (WS_SEND_QUEUE_BYTES)",
    ),
    (
        "ws_slow_client_ms",
        10_000,
        10,
        3_600_000,
        "a connection at its queue's bound this long is closed with 1008 (WS_SLOW_CLIENT_MS)",
    ),
];

/// Settings `[server]` may draw that `[world]` also holds (its value is the default): name, the
/// range it must stay in, what it is. Drawn, they replace the `[world]` value for the run —
/// every server, client and checker of the run sees the drawn one.
pub const WORLD_KNOBS: &[(&str, u64, u64, &str)] = &[
    (
        "max_nodes",
        1,
        1_000_000,
        "engine capacity (SPIRAL_MAX_NODES); [world] max_nodes",
    ),
    (
        "ws_ping_interval_ms",
        100,
        600_000,
        "server ping period; two missed pongs close with 4001 (WS_PING_INTERVAL_MS); [world] ws_ping_interval_ms",
    ),
    (
        "ws_idle_timeout_ms",
        100,
        3_600_000,
        "a connection with no command this long is closed with 4000 (WS_IDLE_TIMEOUT_MS); [world] ws_idle_timeout_ms",
    ),
    (
        "max_connections",
        1,
        100_000,
        "open WebSockets per server, both ports together (SPIRAL_MAX_CONNECTIONS); [world] max_connections",
    ),
    (
        "max_message_size",
        1_024,
        16 * 1024 * 1024,
        "largest WebSocket message (SPIRAL_MAX_MESSAGE_SIZE); [world] max_message_size",
    ),
];

/// The `[server]` table as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct ServerSpec(pub BTreeMap<String, Knob>);

/// The settings of one run: every knob with a value, and the [`WORLD_KNOBS`] `[server]` drew.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ServerSettings(BTreeMap<&'static str, u64>);

impl ServerSettings {
    /// The value of knob `name` (one of [`KNOBS`]).
    pub fn get(&self, name: &str) -> u64 {
        self.0
            .get(name)
            .copied()
            .unwrap_or_else(|| panic!("`{name}` is not a [server] knob"))
    }

    /// The HTTP bucket these settings give the servers.
    pub fn http_rate(&self) -> spiral_server::ratelimit::Limit {
        spiral_server::ratelimit::Limit {
            capacity: self.get("http_rate_limit"),
            block_ms: self.get("rate_limit_block_ms"),
            ..spiral_server::api::ServerConfig::default().http_rate
        }
    }

    /// `name=value …`, in name order.
    pub fn describe(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The settings as the trace records them.
    pub fn values(&self) -> BTreeMap<String, u64> {
        self.0.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    /// `world` with the [`WORLD_KNOBS`] this run drew in place of its own values.
    pub fn apply_to(&self, world: &mut super::WorldSpec) {
        for (name, v) in &self.0 {
            match *name {
                "max_nodes" => world.max_nodes = *v,
                "ws_ping_interval_ms" => world.ws_ping_interval_ms = *v,
                "ws_idle_timeout_ms" => world.ws_idle_timeout_ms = *v,
                "max_connections" => world.max_connections = *v as usize,
                "max_message_size" => world.max_message_size = *v as usize,
                _ => {}
            }
        }
    }
}

impl ServerSpec {
    /// Draw every knob: the same `rng` state gives the same settings. Knobs are drawn in
    /// [`KNOBS`] order, one draw each whether written or not, so adding a knob to a scenario
    /// does not move the others' draws.
    pub fn draw(&self, rng: &mut SplitMix64) -> ServerSettings {
        let world = WORLD_KNOBS.iter().filter_map(|(name, ..)| {
            let knob = self.0.get(*name)?;
            Some((*name, knob.draw(&mut rng.fork(name))))
        });
        ServerSettings(
            KNOBS
                .iter()
                .map(|(name, default, ..)| {
                    let mut own = rng.fork(name);
                    let v = self.0.get(*name).map_or(*default, |k| k.draw(&mut own));
                    (*name, v)
                })
                .chain(world)
                .collect(),
        )
    }

    /// The settings every seed gets when nothing is drawn (the defaults, or fixed values).
    pub fn defaults(&self) -> ServerSettings {
        self.draw(&mut SplitMix64::new(0))
    }

    /// Unknown names, empty lists, inverted ranges and values outside a knob's range.
    pub(super) fn validate(&self) -> Result<(), String> {
        for (name, knob) in &self.0 {
            let range = KNOBS
                .iter()
                .find(|(n, ..)| n == name)
                .map(|(_, _, lo, hi, _)| (lo, hi))
                .or_else(|| {
                    WORLD_KNOBS
                        .iter()
                        .find(|(n, ..)| n == name)
                        .map(|(_, lo, hi, _)| (lo, hi))
                });
            let Some((lo, hi)) = range else {
                let known: Vec<&str> = KNOBS
                    .iter()
                    .map(|(n, ..)| *n)
                    .chain(WORLD_KNOBS.iter().map(|(n, ..)| *n))
                    .collect();
                return Err(format!(
                    "[server] {name}: no such setting; known: {}",
                    known.join(", ")
                ));
            };
            let Some((min, max)) = knob.bounds() else {
                return Err(format!(
                    "[server] {name}: an empty list or a range with min > max"
                ));
            };
            if min < *lo || max > *hi {
                return Err(format!("[server] {name}: must stay within {lo}..={hi}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(toml_text: &str) -> ServerSpec {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn values_ranges_and_lists_draw_within_themselves_and_replay_from_the_seed() {
        let s =
            spec("journal_max = 7\ncb_failures = { min = 2, max = 4 }\nws_send_queue = [8, 16]");
        s.validate().unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let d = s.draw(&mut SplitMix64::new(seed));
            assert_eq!(
                d,
                s.draw(&mut SplitMix64::new(seed)),
                "same seed, same draw"
            );
            assert_eq!(d.get("journal_max"), 7);
            assert!((2..=4).contains(&d.get("cb_failures")));
            assert!([8, 16].contains(&d.get("ws_send_queue")));
            assert_eq!(d.get("cb_window_ms"), 2_000, "left out: the default");
            seen.insert((d.get("cb_failures"), d.get("ws_send_queue")));
        }
        assert_eq!(seen.len(), 6, "every combination is reached: {seen:?}");
    }

    #[test]
    fn a_world_setting_drawn_replaces_the_world_value_and_one_left_out_keeps_it() {
        let s = spec("max_nodes = { min = 10, max = 20 }\nws_ping_interval_ms = [1000, 2000]");
        s.validate().unwrap();
        let text = "[world]\nclients = 1\nduration_s = 10\nmax_nodes = 500\nmax_connections = 7";
        let base: super::super::Scenario =
            toml::from_str(&format!("name = \"w\"\ndescription = \"\"\n{text}")).unwrap();
        for seed in 0..16 {
            let d = s.draw(&mut SplitMix64::new(seed));
            let mut world = base.world.clone();
            d.apply_to(&mut world);
            assert!((10..=20).contains(&world.max_nodes), "{}", world.max_nodes);
            assert!([1000, 2000].contains(&world.ws_ping_interval_ms));
            assert_eq!(world.max_connections, 7, "not drawn: the [world] value");
            assert_eq!(
                d.values().get("max_nodes"),
                Some(&world.max_nodes),
                "in the trace"
            );
            assert!(!d.values().contains_key("max_connections"));
        }
        let e = spec("max_message_size = 10").validate().unwrap_err();
        assert!(e.contains("max_message_size: must stay within 1024"), "{e}");
    }

    #[test]
    fn adding_a_knob_does_not_move_the_others() {
        let a = spec("cb_failures = { min = 1, max = 100 }");
        let b = spec("cb_failures = { min = 1, max = 100 }\njournal_max = { min = 0, max = 9 }");
        for seed in 0..16 {
            let (da, db) = (
                a.draw(&mut SplitMix64::new(seed)),
                b.draw(&mut SplitMix64::new(seed)),
            );
            assert_eq!(da.get("cb_failures"), db.get("cb_failures"));
        }
    }

    #[test]
    fn bad_tables_are_refused_with_the_setting_named() {
        for (text, want) in [
            ("nonsense = 1", "[server] nonsense: no such setting"),
            (
                "cb_failures = 0",
                "[server] cb_failures: must stay within 1..=100",
            ),
            ("cb_failures = { min = 5, max = 2 }", "min > max"),
            ("ws_send_queue = []", "empty list"),
        ] {
            let e = spec(text).validate().unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
