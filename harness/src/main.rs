//! `spiral-harness`: seeded simulation runs, sweeps and shrinking of scenarios against the
//! reference server, the engine-only model, and load on real sockets. Exit codes: see
//! [`spiral_harness::EXIT_CODES_HELP`]. The subcommands live in [`cli`], one module each; this
//! file parses the command line and dispatches.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use cli::args::{Cli, Command};

// A simulated run allocates and frees small objects all the time (messages, JSON, timers, trace
// lines); mimalloc makes a sweep noticeably cheaper than the system allocator.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Sim(a) => cli::sim::main(a),
        Command::Sweep(a) => cli::sweep::main(a),
        Command::Shrink(a) => cli::shrink::main(a),
        Command::Load(a) => cli::load::main(a),
        Command::Floor(a) => cli::load::floor(a),
        Command::Merge(a) => cli::load::merge(a),
    }
}
