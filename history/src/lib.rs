//! `spiral-history`: what a run of Spiral saw, as typed records, and the checkers that judge it.
//!
//! A *world* — the simulated one in `spiral-harness`, the real-process one in `spiral-chaos`, or
//! a test writing records by hand — runs clients and faults against servers and records every
//! client operation and its answer, every handshake and probe, every fault, every server-side
//! observation (GC passes and removals, breaker transitions, the engine's own check, durable
//! lookups) and the run's [`Phase`]s as [`Event`]s. The [`checkers`] consume
//! nothing but those events, so every world is judged by the same code; the first violation and
//! its class make the run's [`Failure`], whose exit code is the harness's (SPEC §3).
//!
//! Nothing here depends on the simulator or an async runtime.
//!
//! # Layout
//! - [`event`] — the records: [`Event`], the operation ([`Op`]) and its [`Answer`], the kind of
//!   token a client offered ([`TokenKind`]), the run's phases, one JSON line per record.
//! - [`fault`] — the fault vocabulary ([`FaultKind`]) scenarios schedule and histories record.
//! - [`checkers`] — one module per property, the [`Checker`] trait, [`checkers::Panel`] (a set
//!   of checkers fed in order, first violation kept).
//! - [`failure`] — [`Failure`]: what a failed run found, and its exit code.
//! - [`hand`] — helpers for writing a history by hand (the checkers' tests).

pub mod checkers;
pub mod event;
pub mod failure;
pub mod fault;
pub mod hand;

pub use checkers::{Checker, Class, Violation};
pub use event::{Answer, Event, Op, Phase, Record, TenantShare, TokenKind};
pub use failure::Failure;
pub use fault::FaultKind;
