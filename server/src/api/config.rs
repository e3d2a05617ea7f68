//! Settings of the server's surfaces (SPEC §1.1–§1.4, §1.8): [`ServerConfig`] with documented
//! defaults for library users (tests, the harness), and [`ServeArgs`], the flags and env vars of
//! `spiral serve`, which validate into it with errors that name the variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgAction, Args, builder::BoolishValueParser};

use crate::auth::KeyConfig;
use crate::ratelimit::Limit;

/// Everything the surfaces need besides the engine, storage and keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Users refused even with a valid token (`BLOCKED_USERS`).
    pub blocked_users: Vec<String>,
    /// Admit WebSocket clients without a token as `anonymous` (`ALLOW_ANONYMOUS_WS`).
    pub allow_anonymous_ws: bool,
    /// WebSocket handshakes and messages per user (`WS_RATE_LIMIT` per `WS_RATE_WINDOW`).
    pub ws_rate: Limit,
    /// Store operations per user (`SPIRAL_RATE_LIMIT`).
    pub store_rate: Limit,
    /// HTTP requests per user (`HTTP_RATE_LIMIT`), blocking for `RATE_LIMIT_BLOCK_SECONDS` once hit.
    pub http_rate: Limit,
    /// Event-stream frames per second per client.
    pub stream_frames_per_s: u64,
    pub ws_ping_interval_ms: u64,
    pub ws_idle_timeout_ms: u64,
    /// Outbound frames queued per connection before new ones are dropped (`WS_SEND_QUEUE`).
    pub ws_send_queue: usize,
    /// Outbound bytes queued per connection before new frames are dropped
    /// (`WS_SEND_QUEUE_BYTES`); a frame into an empty queue is always taken.
    pub ws_send_queue_bytes: usize,
    /// A connection whose queue stays at its bound (frames were dropped and it has not drained
    /// since) this long is closed with 1008 (`WS_SLOW_CLIENT_MS`).
    pub ws_slow_client_ms: u64,
    /// A connection that has not sent a whole request header this long after it was accepted (or
    /// after the first byte of its next request) is closed, on every listener
    /// (`HTTP_HEADER_TIMEOUT_MS`).
    pub http_header_timeout_ms: u64,
    /// A keep-alive connection idle between requests this long is closed (`HTTP_IDLE_TIMEOUT_MS`).
    pub http_idle_timeout_ms: u64,
    /// Open WebSocket connections, both ports together (`SPIRAL_MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// Open WebSocket connections of one user, both ports together, on this instance
    /// (`SPIRAL_MAX_CONNECTIONS_PER_USER`); more handshakes of the user get 429.
    pub max_connections_per_user: usize,
    /// Largest WebSocket message and HTTP body (`SPIRAL_MAX_MESSAGE_SIZE`, bytes).
    pub max_message_size: usize,
    /// Event-stream heartbeat period.
    pub heartbeat_interval_ms: u64,
    /// How often a background probe looks for storage after an outage.
    pub recovery_period_ms: u64,
    /// Lifetime of tokens minted by `/auth/refresh` when the old token had no `iat`.
    pub refresh_lifetime_s: u64,
    /// No refreshed token lives past its original authentication (`auth_time`, else `iat`) plus
    /// this (`REFRESH_MAX_LIFETIME_S`, s).
    pub refresh_max_lifetime_s: u64,
    /// Conformance builds only (`SPIRAL_WS_ECHO`): the command channel echoes every data message
    /// instead of answering it, and sends no welcome.
    #[cfg(feature = "conformance")]
    pub ws_echo: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            blocked_users: Vec::new(),
            allow_anonymous_ws: false,
            ws_rate: Limit::new(100, 10_000, 0),
            store_rate: Limit::new(100, 10_000, 0),
            http_rate: Limit::new(100, 10_000, 60_000),
            stream_frames_per_s: 20,
            ws_ping_interval_ms: 30_000,
            ws_idle_timeout_ms: 300_000,
            ws_send_queue: 256,
            ws_send_queue_bytes: 8 * 1024 * 1024,
            ws_slow_client_ms: 10_000,
            http_header_timeout_ms: 10_000,
            http_idle_timeout_ms: 60_000,
            max_connections: 1000,
            max_connections_per_user: 16,
            max_message_size: 1024 * 1024,
            heartbeat_interval_ms: 1000,
            recovery_period_ms: 1000,
            refresh_lifetime_s: 3600,
            refresh_max_lifetime_s: 86_400,
            #[cfg(feature = "conformance")]
            ws_echo: false,
        }
    }
}

impl ServerConfig {
    /// The per-client frame limit of the event stream.
    pub fn stream_limit(&self) -> Limit {
        Limit::new(self.stream_frames_per_s, 1000, 0)
    }
}

/// Flags and env vars of `spiral serve` (storage and engine settings are flattened beside these).
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// HTTP address.
    #[arg(
        long = "http-addr",
        env = "SPIRAL_HTTP_ADDR",
        value_name = "SPIRAL_HTTP_ADDR",
        default_value = "127.0.0.1:3000"
    )]
    pub http_addr: SocketAddr,
    /// WebSocket command channel address.
    #[arg(
        long = "ws-addr",
        env = "SPIRAL_WS_ADDR",
        value_name = "SPIRAL_WS_ADDR",
        default_value = "127.0.0.1:3001"
    )]
    pub ws_addr: SocketAddr,
    /// WebSocket event stream address.
    #[arg(
        long = "stream-addr",
        env = "SPIRAL_STREAM_ADDR",
        value_name = "SPIRAL_STREAM_ADDR",
        default_value = "127.0.0.1:3002"
    )]
    pub stream_addr: SocketAddr,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Comma-separated users refused even with a valid token.
    #[arg(
        long = "blocked-users",
        env = "BLOCKED_USERS",
        value_name = "BLOCKED_USERS",
        default_value = ""
    )]
    pub blocked_users: String,
    /// Admit WebSocket clients without a token as user `anonymous`.
    #[arg(long = "allow-anonymous-ws", env = "ALLOW_ANONYMOUS_WS", value_name = "ALLOW_ANONYMOUS_WS",
          action = ArgAction::Set, value_parser = BoolishValueParser::new(), default_value = "false")]
    pub allow_anonymous_ws: bool,
    /// WebSocket handshakes and messages per user per WS_RATE_WINDOW.
    #[arg(long = "ws-rate-limit", env = "WS_RATE_LIMIT", value_name = "WS_RATE_LIMIT", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub ws_rate_limit: u64,
    /// Window of WS_RATE_LIMIT (s).
    #[arg(long = "ws-rate-window", env = "WS_RATE_WINDOW", value_name = "WS_RATE_WINDOW", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub ws_rate_window: u64,
    /// Store operations per user: `<requests>,<window seconds>`.
    #[arg(
        long = "store-rate-limit",
        env = "SPIRAL_RATE_LIMIT",
        value_name = "SPIRAL_RATE_LIMIT",
        default_value = "100,10"
    )]
    pub store_rate_limit: String,
    /// HTTP requests per user: `<requests>,<window seconds>`.
    #[arg(
        long = "http-rate-limit",
        env = "HTTP_RATE_LIMIT",
        value_name = "HTTP_RATE_LIMIT",
        default_value = "100,10"
    )]
    pub http_rate_limit: String,
    /// How long a user who hit the HTTP limit stays refused (s).
    #[arg(
        long = "rate-limit-block-seconds",
        env = "RATE_LIMIT_BLOCK_SECONDS",
        value_name = "RATE_LIMIT_BLOCK_SECONDS",
        default_value_t = 60
    )]
    pub rate_limit_block_seconds: u64,
    /// Rate-limit buckets kept in process memory before the idle ones (full again, not blocked)
    /// are swept: the limiter's memory bound.
    #[arg(long = "rate-limit-buckets", env = "SPIRAL_RATE_LIMIT_BUCKETS", value_name = "SPIRAL_RATE_LIMIT_BUCKETS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub rate_limit_buckets: u64,
    /// Event-stream frames per second per client; the excess is dropped.
    #[arg(long = "stream-max-fps", env = "SPIRAL_STREAM_MAX_FPS", value_name = "SPIRAL_STREAM_MAX_FPS", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub stream_max_fps: u64,
    /// Server ping period (ms); two missed pongs close with 4001.
    #[arg(long = "ws-ping-interval-ms", env = "WS_PING_INTERVAL_MS", value_name = "WS_PING_INTERVAL_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(10..))]
    pub ws_ping_interval_ms: u64,
    /// No data message for this long closes with 4000 (ms).
    #[arg(long = "ws-idle-timeout-ms", env = "WS_IDLE_TIMEOUT_MS", value_name = "WS_IDLE_TIMEOUT_MS", default_value_t = 300_000,
          value_parser = clap::value_parser!(u64).range(10..))]
    pub ws_idle_timeout_ms: u64,
    /// Outbound frames queued per connection before new ones are dropped.
    #[arg(long = "ws-send-queue", env = "WS_SEND_QUEUE", value_name = "WS_SEND_QUEUE", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub ws_send_queue: u64,
    /// Outbound bytes queued per connection before new frames are dropped.
    #[arg(long = "ws-send-queue-bytes", env = "WS_SEND_QUEUE_BYTES", value_name = "WS_SEND_QUEUE_BYTES", default_value_t = 8 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..=(1 << 34)))]
    pub ws_send_queue_bytes: u64,
    /// A connection held at its outbound queue's bound this long is closed with 1008 (ms).
    #[arg(long = "ws-slow-client-ms", env = "WS_SLOW_CLIENT_MS", value_name = "WS_SLOW_CLIENT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(10..=86_400_000))]
    pub ws_slow_client_ms: u64,
    /// A connection without a whole request header this long after accept is closed (ms; all three listeners).
    #[arg(long = "http-header-timeout-ms", env = "HTTP_HEADER_TIMEOUT_MS", value_name = "HTTP_HEADER_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(10..=86_400_000))]
    pub http_header_timeout_ms: u64,
    /// An idle keep-alive connection is closed after this (ms).
    #[arg(long = "http-idle-timeout-ms", env = "HTTP_IDLE_TIMEOUT_MS", value_name = "HTTP_IDLE_TIMEOUT_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(10..=86_400_000))]
    pub http_idle_timeout_ms: u64,
    /// Open WebSocket connections (both ports); more handshakes get 503.
    #[arg(long = "max-connections", env = "SPIRAL_MAX_CONNECTIONS", value_name = "SPIRAL_MAX_CONNECTIONS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
    /// Open WebSocket connections of one user (both ports); more of its handshakes get 429.
    #[arg(long = "max-connections-per-user", env = "SPIRAL_MAX_CONNECTIONS_PER_USER", value_name = "SPIRAL_MAX_CONNECTIONS_PER_USER", default_value_t = 16,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections_per_user: u64,
    /// Largest WebSocket message or HTTP body (bytes); larger frames close with 1009.
    #[arg(long = "max-message-size", env = "SPIRAL_MAX_MESSAGE_SIZE", value_name = "SPIRAL_MAX_MESSAGE_SIZE", default_value_t = 1_048_576,
          value_parser = clap::value_parser!(u64).range(1024..=67_108_864))]
    pub max_message_size: u64,
    /// A refreshed token never lives past the original authentication plus this (s).
    #[arg(long = "refresh-max-lifetime-s", env = "REFRESH_MAX_LIFETIME_S", value_name = "REFRESH_MAX_LIFETIME_S", default_value_t = 86_400,
          value_parser = clap::value_parser!(u64).range(60..=31_536_000))]
    pub refresh_max_lifetime_s: u64,
    /// When Redis cannot answer a handshake's `jti` or revocation check, refuse it with 503
    /// `storage_unavailable` instead of deciding from this instance's memory.
    #[arg(long = "auth-fail-closed", env = "AUTH_FAIL_CLOSED", value_name = "AUTH_FAIL_CLOSED",
          action = ArgAction::Set, value_parser = BoolishValueParser::new(), default_value = "false")]
    pub auth_fail_closed: bool,
    /// Conformance builds only: echo every data message on the command channel instead of
    /// answering it, and send no welcome (for the Autobahn|Testsuite fuzzingclient).
    #[cfg(feature = "conformance")]
    #[arg(long = "ws-echo", env = "SPIRAL_WS_ECHO", value_name = "SPIRAL_WS_ECHO",
          action = ArgAction::Set, value_parser = BoolishValueParser::new(), default_value = "false")]
    pub ws_echo: bool,
}

/// Key settings (SPEC §1.2), shared by `spiral serve` and `spiral token`.
#[derive(Debug, Clone, Args)]
pub struct KeyArgs {
    /// HS256 secret (at least 32 bytes).
    #[arg(
        long = "jwt-secret",
        env = "JWT_SECRET",
        value_name = "JWT_SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,
    /// The secret being rotated out; still accepted for verification.
    #[arg(
        long = "jwt-secret-previous",
        env = "JWT_SECRET_PREVIOUS",
        value_name = "JWT_SECRET_PREVIOUS",
        hide_env_values = true
    )]
    pub jwt_secret_previous: Option<String>,
    /// RS256 public key(s): a JWK or JWKS as JSON, or a file holding one.
    #[arg(long = "jwk", env = "JWK", value_name = "JWK")]
    pub jwk: Option<String>,
    /// RS256 private key (PEM file), to mint tokens with JWK.
    #[arg(
        long = "jwt-private-key",
        env = "JWT_PRIVATE_KEY",
        value_name = "JWT_PRIVATE_KEY"
    )]
    pub jwt_private_key: Option<PathBuf>,
}

impl KeyArgs {
    pub fn key_config(&self) -> KeyConfig {
        KeyConfig {
            jwt_secret: self.jwt_secret.clone(),
            jwt_secret_previous: self.jwt_secret_previous.clone(),
            jwk: self.jwk.clone(),
            jwt_private_key: self.jwt_private_key.clone(),
        }
    }
}

impl ServeArgs {
    /// The validated configuration; an error names the variable.
    pub fn server_config(&self) -> Result<ServerConfig, String> {
        // Echo mode exists only in conformance builds: asked of a normal build, say so rather
        // than answer JSON to a test suite that expects echoes.
        #[cfg(not(feature = "conformance"))]
        if std::env::var("SPIRAL_WS_ECHO").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false")) {
            return Err(
                "SPIRAL_WS_ECHO: echo mode exists only in builds with `--features conformance`"
                    .into(),
            );
        }
        let block_ms = self.rate_limit_block_seconds.saturating_mul(1000);
        let blocked_users = self
            .blocked_users
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(ServerConfig {
            blocked_users,
            allow_anonymous_ws: self.allow_anonymous_ws,
            ws_rate: Limit::new(self.ws_rate_limit, self.ws_rate_window * 1000, 0),
            store_rate: Limit::parse("SPIRAL_RATE_LIMIT", &self.store_rate_limit, 0)?,
            http_rate: Limit::parse("HTTP_RATE_LIMIT", &self.http_rate_limit, block_ms)?,
            stream_frames_per_s: self.stream_max_fps,
            ws_ping_interval_ms: self.ws_ping_interval_ms,
            ws_idle_timeout_ms: self.ws_idle_timeout_ms,
            ws_send_queue: self.ws_send_queue as usize,
            ws_send_queue_bytes: self.ws_send_queue_bytes as usize,
            ws_slow_client_ms: self.ws_slow_client_ms,
            http_header_timeout_ms: self.http_header_timeout_ms,
            http_idle_timeout_ms: self.http_idle_timeout_ms,
            max_connections: self.max_connections as usize,
            max_connections_per_user: self.max_connections_per_user as usize,
            max_message_size: self.max_message_size as usize,
            refresh_max_lifetime_s: self.refresh_max_lifetime_s,
            #[cfg(feature = "conformance")]
            ws_echo: self.ws_echo,
            ..ServerConfig::default()
        })
    }
}

#[cfg(test)]
#[cfg(not(spiral_loom))]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn flag_defaults_are_the_library_defaults() {
        let cli = Cli::try_parse_from(["spiral"]).unwrap();
        assert_eq!(cli.serve.server_config().unwrap(), ServerConfig::default());
        assert_eq!(cli.serve.http_addr.to_string(), "127.0.0.1:3000");
        assert_eq!(cli.serve.ws_addr.to_string(), "127.0.0.1:3001");
        assert_eq!(cli.serve.stream_addr.to_string(), "127.0.0.1:3002");
    }

    #[test]
    fn bad_values_name_their_variable() {
        let e = Cli::try_parse_from(["spiral", "--ws-addr", "nowhere"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("SPIRAL_WS_ADDR"), "{e}");
        let e = Cli::try_parse_from(["spiral", "--max-connections", "0"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("SPIRAL_MAX_CONNECTIONS"), "{e}");
        let e = Cli::try_parse_from(["spiral", "--max-connections-per-user", "0"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("SPIRAL_MAX_CONNECTIONS_PER_USER"), "{e}");
        let cli = Cli::try_parse_from(["spiral", "--max-connections-per-user", "3"]).unwrap();
        assert_eq!(
            cli.serve.server_config().unwrap().max_connections_per_user,
            3
        );
        for (flag, var) in [
            ("--http-header-timeout-ms", "HTTP_HEADER_TIMEOUT_MS"),
            ("--http-idle-timeout-ms", "HTTP_IDLE_TIMEOUT_MS"),
            ("--ws-send-queue-bytes", "WS_SEND_QUEUE_BYTES"),
            ("--ws-slow-client-ms", "WS_SLOW_CLIENT_MS"),
        ] {
            let e = Cli::try_parse_from(["spiral", flag, "0"])
                .unwrap_err()
                .to_string();
            assert!(e.contains(var), "{flag}: {e}");
        }
        let cli = Cli::try_parse_from(["spiral", "--store-rate-limit", "ten"]).unwrap();
        assert!(
            cli.serve
                .server_config()
                .unwrap_err()
                .contains("SPIRAL_RATE_LIMIT")
        );
    }
}
