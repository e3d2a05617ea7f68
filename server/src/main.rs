//! `spiral`: the reference server's command line. Parses flags, wires the library together and
//! reports errors; everything else lives in the library.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use spiral_server::clock::{SharedClock, SystemClock};
use spiral_server::config::{EngineArgs, StorageArgs};
use spiral_server::engine::Engine;

#[derive(Debug, Parser)]
#[command(
    name = "spiral",
    version,
    about = "Spiral: the deterministic reference server"
)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, env = "SPIRAL_LOG_JSON", global = true, default_value_t = false)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Rebuild the spiral statistics against the configured storage and report every correction.
    Repair {
        /// Also list every spiral's statistics after the rebuild.
        #[arg(long)]
        verbose: bool,
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        engine: EngineArgs,
    },
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SPIRAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn repair(verbose: bool, storage: StorageArgs, engine: EngineArgs) -> anyhow::Result<()> {
    let cfg = engine.engine_config().map_err(anyhow::Error::msg)?;
    let clock: SharedClock = Arc::new(SystemClock);
    // Repair talks to storage directly: a breaker would only hide the outage it should report.
    let adapter = storage.open_adapter().await.context("opening storage")?;
    let (engine_handle, report) = Engine::open(adapter, cfg, clock, engine.seed)
        .await
        .context("rebuilding statistics")?;
    let after = engine_handle.spirals()?.spirals;
    print!(
        "{}",
        spiral_server::repair::render(&storage.describe(), &report, &after, verbose)
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("spiral: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Repair {
                verbose,
                storage,
                engine,
            } => repair(verbose, storage, engine).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spiral: {e:#}");
            ExitCode::FAILURE
        }
    }
}
