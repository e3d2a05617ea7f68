//! `spiral-server`: the deterministic reference server.
//!
//! Library first: the `spiral` binary only parses flags and wires things together. Every source
//! of nondeterminism enters through one seam — [`clock`] for time, [`rng`] for randomness, [`sync`]
//! for locks and atomics — so one seed replays one run, and loom can check the locking.
//!
//! # Layout
//! - [`api`] — the surfaces: HTTP, the WebSocket command channel and event stream, [`api::serve`].
//! - [`protocol`] — the wire vocabulary shared with every client: commands, replies and error
//!   envelopes, event-stream frames, error codes, close codes, the breaker's states.
//! - [`auth`] — JWT verification on the injected clock; replay, revocation and rate-limit state.
//! - [`ratelimit`] — the token bucket decision, shared by the in-memory limiter and a Redis script.
//! - [`metrics`] — every Prometheus series, rendered as text.
//! - [`config`] — every setting with its env var, flag and default; validated once at start-up.
//! - [`engine`] — the spiral memory engine: spirals, nodes, sigils, selection, GC, rebuild-stats,
//!   meta snapshots. Synchronous state under one lock ([`engine::core`], with [`engine::sigil`],
//!   [`engine::spiral`], [`engine::gc`], [`engine::rebuild`] and [`engine::check`] beside it),
//!   storage I/O outside it in [`engine::Engine`] with reserve → persist → commit/abort.
//! - [`storage`] — the adapter contract and the `memory`, `embedded` (redb) and `redis` adapters.
//! - [`resilience`] — circuit breaker and degraded mode (bounded journal, replay) around an adapter.
//! - [`repair`] — `spiral repair`: rebuild statistics against the configured storage and report.
//! - [`signal`] — SIGTERM / Ctrl-C as a shutdown future, for the binaries.
//! - [`planted`] — deliberately broken variants (feature `planted-bugs` only).
//! - `test_support` — the test secret, tokens and a JSON WebSocket client shared by the test
//!   suites (feature `test-support` only).

pub mod api;
pub mod auth;
pub mod clock;
pub mod config;
pub mod coverage;
pub mod engine;
pub mod error;
pub mod metrics;
#[cfg(feature = "planted-bugs")]
pub mod planted;
pub mod protocol;
pub mod ratelimit;
pub mod repair;
pub mod resilience;
pub mod rng;
pub mod signal;
pub mod storage;
pub mod sync;
#[cfg(feature = "test-support")]
pub mod test_support;

pub use error::{EngineError, StorageError};

/// `reached!("journal.full")` marks a branch where the server handles a failure or a limit
/// (see [`coverage`]): counted only in builds with the `coverage` feature (the harness), nothing
/// otherwise. `reached!("auth.edge_leeway" if cond)` counts when `cond` holds, for a marker with
/// no branch of its own; without the feature `cond` is not even evaluated.
#[macro_export]
macro_rules! reached {
    ($marker:literal) => {{
        #[cfg(feature = "coverage")]
        $crate::coverage::hit($marker);
    }};
    ($marker:literal if $cond:expr) => {{
        #[cfg(feature = "coverage")]
        if $cond {
            $crate::coverage::hit($marker);
        }
    }};
}

/// `planted!(Bug)` is true only when the `planted-bugs` feature is on and `SPIRAL_PLANTED_BUG`
/// names that bug; in normal builds it is the constant `false` and the broken branch vanishes.
#[macro_export]
macro_rules! planted {
    ($bug:ident) => {{
        #[cfg(feature = "planted-bugs")]
        let on = $crate::planted::active($crate::planted::Bug::$bug);
        #[cfg(not(feature = "planted-bugs"))]
        let on = false;
        on
    }};
}
