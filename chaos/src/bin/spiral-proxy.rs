//! `spiral-proxy --seed N [--listen 127.0.0.1:8474] [--log FILE] [--config FILE.json]`: the
//! seeded fault proxy as a process, controlled over Toxiproxy's HTTP API.
//!
//! Prints the seed first, then the control address and each configured proxy; runs until
//! SIGTERM or ctrl-c, then stops every proxy and exits 0. `--config` takes Toxiproxy's `-config`
//! format: a JSON list of `{name, listen, upstream, enabled}` (plus an optional `toxics` list).
//! `--log -` writes the decision log to stdout.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use spiral_chaos::proxy::DecisionLog;
use spiral_chaos::proxy::http::{self, DEFAULT_CONTROL_ADDR, ProxySpec, Registry};

#[derive(Debug, Parser)]
#[command(
    name = "spiral-proxy",
    about = "A seeded TCP fault proxy with Toxiproxy's toxics and HTTP API"
)]
struct Args {
    /// The run seed: every fault decision derives from it.
    #[arg(long, env = "SPIRAL_PROXY_SEED")]
    seed: u64,
    /// Address of the HTTP control API.
    #[arg(long, default_value = DEFAULT_CONTROL_ADDR)]
    listen: SocketAddr,
    /// Write the decision log (JSON lines) here; `-` for stdout.
    #[arg(long)]
    log: Option<PathBuf>,
    /// Proxies to create at start-up (Toxiproxy's config format).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    say(&format!("spiral-proxy seed={}", args.seed));
    let log = match &args.log {
        None => DecisionLog::discard(),
        Some(p) if p.as_os_str() == "-" => DecisionLog::writer(std::io::stdout()),
        Some(p) => DecisionLog::file(p).with_context(|| format!("log file {}", p.display()))?,
    };
    let registry = Arc::new(Registry::new(args.seed, log));
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("config file {}", path.display()))?;
        let specs: Vec<ProxySpec> = serde_json::from_str(&text)
            .with_context(|| format!("config file {}", path.display()))?;
        for view in registry.populate(specs).await? {
            say(&format!(
                "spiral-proxy proxy={} listen={} upstream={} enabled={}",
                view.name, view.listen, view.upstream, view.enabled
            ));
        }
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("control address {}", args.listen))?;
    say(&format!(
        "spiral-proxy control=http://{}",
        listener.local_addr()?
    ));
    http::serve(
        listener,
        registry.clone(),
        spiral_server::signal::shutdown(),
    )
    .await?;
    registry.shutdown().await;
    say("spiral-proxy stopped");
    Ok(())
}

/// A line on stdout; a reader that went away is no reason to stop proxying.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}
