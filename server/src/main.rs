//! `spiral`: the reference server's command line. Parses flags, wires the library together and
//! reports errors; everything else lives in the library.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use axum::serve::ListenerExt;
use clap::{Parser, Subcommand, ValueEnum};
use futures_util::StreamExt;
use spiral_server::api::{self, KeyArgs, Listeners, ServeArgs, ServerBuilder};
use spiral_server::auth::{Claims, Keys};
use spiral_server::clock::{Clock, SharedClock, SystemClock};
use spiral_server::config::{EngineArgs, StorageArgs};
use spiral_server::engine::Engine;
use spiral_server::protocol;
use spiral_server::rng::SplitMix64;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Exit codes, for `spiral --help`: what `main` returns in each case.
const EXIT_CODES: &str = "\
Exit codes:
  0    success; `serve` stopped by SIGTERM or Ctrl-C; --help or --version; stdout closed by
       its reader (e.g. `spiral tail | head -1`)
  1    the command failed: a bad setting, a port that cannot be bound, storage that cannot be
       opened, a refused token or connection, a server answering an error; the message on
       stderr says which
  2    the command line could not be parsed (unknown flag, invalid value); the message names
       the flag and its variable
  101  a panic (a bug in spiral)";

#[derive(Debug, Parser)]
#[command(
    name = "spiral",
    version,
    about = "Spiral: the deterministic reference server",
    after_help = EXIT_CODES
)]
struct Cli {
    /// Runtime worker threads (default: one per core).
    #[arg(long, env = "SPIRAL_WORKER_THREADS", value_name = "SPIRAL_WORKER_THREADS", global = true,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    worker_threads: Option<u16>,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "SPIRAL_LOG_JSON", global = true, default_value_t = false)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// The token alone.
    Token,
    /// `SPIRAL_TOKEN=<token>`, for `eval` or an env file.
    Env,
    /// The token and its claims as JSON.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve HTTP (:3000), the WebSocket command channel (:3001) and the event stream (:3002)
    /// until SIGTERM or Ctrl-C.
    Serve {
        #[command(flatten)]
        serve: Box<ServeArgs>,
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Mint a token with the configured key (JWT_SECRET, or JWK with JWT_PRIVATE_KEY).
    Token {
        /// The subject (`sub`).
        #[arg(long)]
        user_id: String,
        /// Comma-separated roles, e.g. `user,admin`.
        #[arg(long, value_delimiter = ',', default_value = "user")]
        roles: Vec<String>,
        /// The tenant whose memories the token reaches.
        #[arg(long)]
        tenant: String,
        /// Space-separated scopes, e.g. `metacog.stream`.
        #[arg(long)]
        scope: Option<String>,
        /// Lifetime: a number with s, m, h or d (`90s`, `15m`, `1h`, `1d`).
        #[arg(long, default_value = "1h", value_parser = parse_duration_s)]
        expires_in: u64,
        /// What to print.
        #[arg(long, value_enum, default_value_t = Output::Token)]
        output: Output,
        #[command(flatten)]
        keys: KeyArgs,
    },
    /// Print a server's `/status`.
    Status {
        /// The server's HTTP base URL.
        #[arg(long, env = "SPIRAL_HTTP_URL", default_value = "http://127.0.0.1:3000")]
        http_url: String,
        /// A token (see `spiral token`).
        #[arg(long, env = "SPIRAL_TOKEN", hide_env_values = true)]
        token: String,
    },
    /// Print events from a server's event stream, one JSON object per line.
    Tail {
        /// The event stream's URL.
        #[arg(long, env = "SPIRAL_STREAM_URL", default_value = "ws://127.0.0.1:3002")]
        ws_url: String,
        /// A token with scope `metacog.stream`.
        #[arg(long, env = "SPIRAL_TOKEN", hide_env_values = true)]
        token: String,
        /// Stop after this many events.
        #[arg(long)]
        limit: Option<u64>,
        /// Leave out heartbeat events.
        #[arg(long)]
        no_heartbeats: bool,
    },
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

/// Write `text` to stdout. A reader that closed stdout (`spiral token … | head -c1`) ends the
/// program quietly with exit 0; any other write error is reported like a failed command.
fn out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("spiral: writing to stdout: {e}");
        std::process::exit(1);
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
    out(&spiral_server::repair::render(
        &storage.describe(),
        &report,
        &after,
        verbose,
    ));
    Ok(())
}

/// `90s`, `15m`, `1h`, `1d` (a bare number is seconds) → seconds.
fn parse_duration_s(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (num, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?}: expected a number with s, m, h or d"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: unit must be s, m, h or d")),
    };
    if n == 0 {
        return Err(format!("{text:?}: must be more than zero"));
    }
    Ok(n * scale)
}

async fn serve(serve: ServeArgs, storage: StorageArgs, engine: EngineArgs) -> anyhow::Result<()> {
    let cfg = serve.server_config().map_err(anyhow::Error::msg)?;
    let keys = Keys::from_config(&serve.keys.key_config()).map_err(anyhow::Error::msg)?;
    let engine_cfg = engine.engine_config().map_err(anyhow::Error::msg)?;
    let clock: SharedClock = Arc::new(SystemClock);
    let bind = |var: &'static str, addr: std::net::SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("{var}: cannot listen on {addr}"))
    };
    let http = bind("SPIRAL_HTTP_ADDR", serve.http_addr).await?;
    let ws = bind("SPIRAL_WS_ADDR", serve.ws_addr).await?;
    let stream = bind("SPIRAL_STREAM_ADDR", serve.stream_addr).await?;
    let (resilient, shared) = storage
        .open_for_server(clock.clone())
        .await
        .context("opening storage")?;
    let shared = Arc::new(
        shared
            .fail_closed(serve.auth_fail_closed)
            .bucket_limit(serve.rate_limit_buckets as usize),
    );
    // A degraded journal kept from an earlier run is replayed before the engine opens; while
    // storage cannot take it, wait (it stays on disk whatever happens).
    let mut shutdown = Box::pin(spiral_server::signal::shutdown());
    let (state, report) = loop {
        let opened = ServerBuilder::new(keys.clone(), clock.clone())
            .storage(resilient.clone())
            .shared(shared.clone())
            .config(cfg.clone())
            .engine(engine_cfg.clone())
            .seed(engine.seed)
            .instance(serve.http_addr.to_string())
            .redis_tls_disabled(storage.redis_tls_disabled())
            .open()
            .await;
        match opened {
            Ok(opened) => break opened,
            Err(e) if resilient.status().journal_len > 0 => {
                tracing::warn!(error = %e, "waiting for storage to replay the degraded journal");
                tokio::select! {
                    () = &mut shutdown => return Ok(()),
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
            Err(e) => return Err(e).context("starting the engine (rebuild-stats)"),
        }
    };
    tracing::info!(
        storage = %storage.describe(),
        scanned = report.scanned,
        corrections = report.corrections.len(),
        "engine ready"
    );
    tracing::info!(
        http = %serve.http_addr, ws = %serve.ws_addr, stream = %serve.stream_addr,
        "spiral listening"
    );
    // Nagle's algorithm adds up to 40 ms to small WebSocket frames; switch it off.
    let nodelay = |t: &mut tokio::net::TcpStream| {
        let _ = t.set_nodelay(true);
    };
    let listeners = Listeners {
        http: http.tap_io(nodelay),
        ws: ws.tap_io(nodelay),
        stream: stream.tap_io(nodelay),
    };
    api::serve(listeners, state, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn token(
    user_id: String,
    roles: Vec<String>,
    tenant: String,
    scope: Option<String>,
    expires_in: u64,
    output: Output,
    keys: KeyArgs,
) -> anyhow::Result<()> {
    let keys = Keys::from_config(&keys.key_config()).map_err(anyhow::Error::msg)?;
    let now_ms = SystemClock.unix_ms();
    // A token id only needs to be unique, not secret.
    let mut rng = SplitMix64::new(now_ms ^ (u64::from(std::process::id()) << 32));
    let roles: Vec<String> = roles.into_iter().filter(|r| !r.is_empty()).collect();
    let claims = Claims {
        scope,
        ..Claims::new(user_id, tenant, now_ms / 1000 + expires_in)
            .roles(&roles)
            .jti(format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64()))
            .issued_at(now_ms / 1000)
    };
    let t = keys.mint(&claims).map_err(anyhow::Error::msg)?;
    match output {
        Output::Token => out(&format!("{t}\n")),
        Output::Env => out(&format!("SPIRAL_TOKEN={t}\n")),
        Output::Json => out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&serde_json::json!({"token": t, "claims": claims}))?
        )),
    }
    Ok(())
}

async fn status(http_url: String, token: String) -> anyhow::Result<()> {
    let reply = api::client::request_url(
        &http_url,
        axum::http::Method::GET,
        "/status",
        Some(&token),
        None,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    let body = reply.json();
    if reply.status != 200 {
        let msg = body["error"]["message"].as_str().unwrap_or("no message");
        bail!("{http_url}/status answered {}: {msg}", reply.status);
    }
    out(&format!("{}\n", serde_json::to_string_pretty(&body)?));
    Ok(())
}

async fn tail(
    ws_url: String,
    token: String,
    limit: Option<u64>,
    no_heartbeats: bool,
) -> anyhow::Result<()> {
    let mut req = ws_url
        .as_str()
        .into_client_request()
        .with_context(|| format!("{ws_url}: not a WebSocket URL"))?;
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .context("token is not a valid header value")?,
    );
    let (mut socket, _) = match tokio_tungstenite::connect_async(req).await {
        Ok(ok) => ok,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            bail!("{ws_url} refused the connection: {} {body}", resp.status());
        }
        Err(e) => bail!("{ws_url}: {e}"),
    };
    let mut printed = 0u64;
    while let Some(msg) = socket.next().await {
        use tokio_tungstenite::tungstenite::Message;
        match msg.with_context(|| format!("reading {ws_url}"))? {
            Message::Text(t) => {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap_or_default();
                if v["type"] == "welcome" {
                    eprintln!("connected: {t}");
                    continue;
                }
                let heartbeat = serde_json::from_value::<protocol::Event>(v)
                    .is_ok_and(|e| e.event == protocol::EventKind::Heartbeat);
                if no_heartbeats && heartbeat {
                    continue;
                }
                out(&format!("{t}\n"));
                printed += 1;
                if limit.is_some_and(|l| printed >= l) {
                    break;
                }
            }
            Message::Close(frame) => {
                if let Some(f) = frame {
                    eprintln!("closed by the server: {} {}", f.code, f.reason);
                }
                break;
            }
            _ => {}
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_json);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cli.worker_threads {
        builder.worker_threads(usize::from(n));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("spiral: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve {
                serve: s,
                storage,
                engine,
            } => serve(*s, storage, engine).await,
            Command::Token {
                user_id,
                roles,
                tenant,
                scope,
                expires_in,
                output,
                keys,
            } => token(user_id, roles, tenant, scope, expires_in, output, keys),
            Command::Status { http_url, token } => status(http_url, token).await,
            Command::Tail {
                ws_url,
                token,
                limit,
                no_heartbeats,
            } => tail(ws_url, token, limit, no_heartbeats).await,
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
