//! `spiral-harness`: drives the reference server with seeded workloads and checks its invariants.
//!
//! Today it runs the engine in-process on the embedded store (redb, held in memory so thousands
//! of seeds each get a fresh database): every seed derives one operation stream — stores, reads,
//! collects, GC passes, rebuilds and engine restarts — and the invariants of SPEC §1.5 are
//! checked after every step. The turmoil world (network faults, server hosts, simulated Redis)
//! builds on this.
//!
//! # Layout
//! - [`engine_run`] — one seeded run and its checks.
//! - [`sim_redis`] — a simulated Redis (RESP over any stream) with fault knobs, for the real
//!   Redis adapter to run against inside the simulation.
//! - [`sim_net`] — turmoil's listener as an `axum::serve::Listener`: the server's own
//!   `api::serve` runs on simulated sockets.
//! - [`load`] — the open-loop WebSocket load generator for real sockets.
//! - [`scenario`] — the scenario file format (`scenarios/*.toml`).
//! - [`world`] — one seeded scenario run in turmoil: server and client hosts, faults, checkers,
//!   a JSON-lines trace.
//! - [`sweep`] — many seeds, a summary table, the worst exit code.

pub mod checkers;
pub mod engine_run;
pub mod load;
pub mod scenario;
pub mod shrink;
pub mod sim_net;
pub mod sim_redis;
pub mod sweep;
pub mod world;

/// Exit codes of a run (SPEC §3).
pub const EXIT_PASS: u8 = 0;
pub const EXIT_CRASH: u8 = 127;
pub const EXIT_LIVENESS: u8 = 128;
pub const EXIT_CORRECTNESS: u8 = 129;
