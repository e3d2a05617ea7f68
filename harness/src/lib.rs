//! `spiral-harness`: attacks the reference server in a deterministic simulated world and checks
//! every property it promises; plus the engine-only model and an open-loop load generator.
//!
//! - **The simulated world** ([`world`]): one seeded run of a [`scenario`] in turmoil — server
//!   hosts running the unmodified server library (`spiral_server::api::serve` on simulated
//!   listeners), client and bad-client hosts speaking real WebSocket and HTTP over simulated TCP,
//!   and storage that is either in process (memory or embedded, with injected latency) or the
//!   simulated Redis on its own host. A fault schedule (a timed list plus a seeded swarm:
//!   partitions, holds, latency and loss, server crashes and bounces, storage outages, clock
//!   skew) runs against it while the [`checkers`] judge every record of its history. Time is simulated and
//!   all randomness derives from the seed, so one seed gives one byte-identical JSON-lines trace;
//!   a failure prints the command that replays it. Exit codes: [`EXIT_CODES_HELP`].
//! - **Sweeps and shrinking**: many seeds over a worker [`pool`], summarised as a table and a
//!   JSON object ([`summary`]) with the worst run's exit code; what a failing seed leaves behind
//!   ([`artifacts`]); [`shrink`] cuts a failing run down to the fewest faults and operations that
//!   still fail the same way.
//! - **The engine-only model** ([`engine_run`], [`sweep`]): the engine in process on the embedded
//!   store (redb held in memory), one seeded stream of stores, reads, collects, GC passes,
//!   rebuilds and restarts, with the invariants of SPEC §1.5 checked after every step; no
//!   network.
//! - **The load generator** ([`load`]): open-loop WebSocket `memory.store` load against a running
//!   server on real sockets, latency from the intended send time into HdrHistogram.
//!
//! # Layout
//! - [`world`] — one seeded scenario run in turmoil: `build` (the shared context and the hosts),
//!   `run` (the run phase by phase: safety → heal → liveness → final checks; the sweep),
//!   `schedule` (timed faults + swarm), `apply` (what a fault does), the server, client and
//!   bad-client hosts and their simulated network.
//! - [`scenario`] — the scenario file format (`scenarios/*.toml`).
//! - [`checkers`] — re-exported from `spiral-history`: the typed history every world records and
//!   the checkers that judge it (engine invariants, acknowledged writes, tenant isolation, auth,
//!   rate limits, breaker, GC budget, close codes, liveness, SLOs, ...), with no simulator in
//!   them.
//! - [`sim_net`] — turmoil's listener as an `axum::serve::Listener`.
//! - [`sim_redis`] — a simulated Redis (RESP over any stream) with fault knobs, for the real
//!   Redis adapter to run against.
//! - [`shrink`] — shrinking a failing run to a minimal scenario.
//! - [`summary`] — a sweep's summary: the table and the JSON object.
//! - [`artifacts`] — the files a sweep keeps of each failing seed (`sweep --artifacts`).
//! - [`provenance`] — commit, harness version, planted bug and scenario digest of a run, pinned
//!   in every trace header and replay command.
//! - [`pool`] — the worker pool runs are spread over (`--jobs`).
//! - [`out`] — standard output that ends quietly when the reader closes it.
//! - [`engine_run`] — one seeded engine-only run and its checks.
//! - [`sweep`] — many seeds of the engine-only model.
//! - [`load`] — the open-loop WebSocket load generator for real sockets.

pub mod artifacts;
pub mod coverage;
pub mod engine_run;
pub mod floor;
pub mod load;
pub mod maxrate;
pub mod merge;
pub mod out;
pub mod pool;
pub mod provenance;
pub mod scenario;
pub mod shrink;
pub mod sim_net;
pub mod sim_redis;
pub mod summary;
pub mod sweep;
pub mod thresholds;
pub mod world;

/// The checkers and the history they judge live in `spiral-history`, shared with every world.
pub use spiral_history::checkers;
/// Exit codes of a run (SPEC §3): one [`Failure`](spiral_history::Failure) type, shared with
/// every world.
pub use spiral_history::failure::{EXIT_CORRECTNESS, EXIT_CRASH, EXIT_LIVENESS, EXIT_PASS};

// Exit codes of the tools around a run; `spiral-harness --help` lists them all.
/// The tool itself failed: a report could not be written, a load target did not answer.
pub const EXIT_ERROR: u8 = 1;
/// Bad usage: an unknown or unsupported flag, an invalid scenario file, a replay pinned to
/// another commit or scenario digest.
pub const EXIT_USAGE: u8 = 2;
/// `--check-determinism`: two runs of one seed gave different traces.
pub const EXIT_NONDETERMINISM: u8 = 3;
pub use coverage::EXIT_COVERAGE;
/// `load`: the generator fell behind its own schedule, so its figures are not the server's.
pub const EXIT_INCONCLUSIVE: u8 = 5;

/// The exit codes as `--help` prints them.
pub const EXIT_CODES_HELP: &str = "Exit codes:
  0    pass (every run passed; for `load`, the phases ran)
  1    the tool failed (a report could not be written, a load target did not answer)
  2    bad usage: unknown or unsupported flag, invalid scenario file, replay pinned to another
       commit or scenario digest (--commit, --scenario-sha256)
  3    nondeterminism: --check-determinism saw two different traces for one seed
  4    coverage gap: every run passed, but a marker `sweep --coverage FILE` requires was never
       reached (the sweep no longer exercises that failure path)
  5    inconclusive (`load`): the load generator fell behind its own schedule (its lag p99 over
       --max-lag-ms), so the figures describe the generator, not the server
  99   threshold breached (`load --threshold`): a measured phase failed a pass/fail criterion
  127  crash: the server or the simulation panicked
  128  liveness: work did not complete after the faults healed, or an SLO was missed
  129  correctness: a safety property broke (acknowledged write lost, tenant leak, ...)
A sweep exits with its worst run's code. A closed stdout (`| head`) ends the program quietly
with exit 0.";
