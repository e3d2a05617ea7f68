//! Every setting of SPEC §1.5–§1.6 with its flag, env var and default. Parsed once at start-up by
//! clap; a bad value stops the program with a message naming the variable (each value name *is*
//! its env var, so clap's error reads `invalid value 'x' for '--cb-failures <CB_FAILURES>'`).

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{ArgAction, Args, Parser, ValueEnum, builder::BoolishValueParser};

use crate::clock::SharedClock;
use crate::engine::EngineConfig;
use crate::error::StorageError;
use crate::resilience::{FileLog, ResilienceConfig, ResilientStorage};
use crate::storage::SharedStorage;
use crate::storage::embedded::EmbeddedStorage;
use crate::storage::memory::MemoryStorage;
use crate::storage::redis::{RedisConfig, RedisStorage};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    Memory,
    Embedded,
    Redis,
}

/// Where nodes live.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Storage backend; default: `redis` if REDIS_URL is set, else `embedded` if SPIRAL_DB_PATH is set, else `memory`.
    #[arg(
        long = "storage",
        env = "SPIRAL_STORAGE",
        value_name = "SPIRAL_STORAGE",
        value_enum
    )]
    pub backend: Option<Backend>,
    /// Database file of the embedded backend.
    #[arg(
        long = "db-path",
        env = "SPIRAL_DB_PATH",
        value_name = "SPIRAL_DB_PATH"
    )]
    pub db_path: Option<PathBuf>,
    /// Redis URL (`redis://`, `rediss://`); a comma-separated list of nodes means Redis Cluster.
    #[arg(long = "redis-url", env = "REDIS_URL", value_name = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// CA certificate (PEM) that signs the Redis server's certificate, for `rediss://`.
    #[arg(long = "redis-ca", env = "REDIS_CA", value_name = "REDIS_CA")]
    pub redis_ca: Option<PathBuf>,
    /// Allow plain `redis://` to a host other than loopback.
    #[arg(long = "allow-insecure-redis", env = "ALLOW_INSECURE_REDIS", value_name = "ALLOW_INSECURE_REDIS",
          action = ArgAction::Set, value_parser = BoolishValueParser::new(), default_value = "false")]
    pub allow_insecure_redis: bool,
    /// Treat REDIS_URL as a Redis Cluster seed node even when it is a single URL.
    #[arg(long = "redis-cluster", env = "SPIRAL_REDIS_CLUSTER", value_name = "SPIRAL_REDIS_CLUSTER",
          action = ArgAction::Set, value_parser = BoolishValueParser::new(), default_value = "false")]
    pub redis_cluster: bool,
    /// Keyspace of this instance's nodes in Redis (a prefix of every data key), so that instances
    /// sharing one Redis each keep — and count — their own; rate limits, token ids and
    /// revocations stay in the shared default keyspace. Unset: the default keyspace.
    #[arg(
        long = "redis-namespace",
        env = "SPIRAL_REDIS_NAMESPACE",
        value_name = "SPIRAL_REDIS_NAMESPACE"
    )]
    pub redis_namespace: Option<String>,
    /// Consecutive storage failures that open the circuit breaker.
    #[arg(long = "cb-failures", env = "CB_FAILURES", value_name = "CB_FAILURES", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub cb_failures: u32,
    /// How long the breaker stays open before a probe (ms).
    #[arg(long = "cb-window-ms", env = "CB_WINDOW", value_name = "CB_WINDOW", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub cb_window_ms: u64,
    /// Time limit of each storage call (ms).
    #[arg(long = "cb-timeout-ms", env = "CB_TIMEOUT", value_name = "CB_TIMEOUT", default_value_t = 20_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub cb_timeout_ms: u64,
    /// Writes the degraded-mode journal may hold while storage is unreachable.
    #[arg(
        long = "degraded-journal-max",
        env = "DEGRADED_JOURNAL_MAX",
        value_name = "DEGRADED_JOURNAL_MAX",
        default_value_t = 10_000
    )]
    pub degraded_journal_max: usize,
    /// File that keeps the degraded journal across restarts (fsynced before a write is
    /// acknowledged); default: beside SPIRAL_DB_PATH for embedded storage, else
    /// SPIRAL_DATA_DIR/degraded-journal.jsonl for Redis. Memory storage keeps it in memory
    /// unless this is set, as it keeps everything else.
    #[arg(
        long = "degraded-journal-path",
        env = "DEGRADED_JOURNAL_PATH",
        value_name = "DEGRADED_JOURNAL_PATH"
    )]
    pub degraded_journal_path: Option<PathBuf>,
    /// Directory for local state when storage is remote (the degraded journal).
    #[arg(
        long = "data-dir",
        env = "SPIRAL_DATA_DIR",
        value_name = "SPIRAL_DATA_DIR",
        default_value = "./spiral-data"
    )]
    pub data_dir: PathBuf,
}

impl StorageArgs {
    /// The backend in force, after the REDIS_URL / SPIRAL_DB_PATH defaults.
    pub fn backend(&self) -> Backend {
        self.backend.unwrap_or(if self.redis_url.is_some() {
            Backend::Redis
        } else if self.db_path.is_some() {
            Backend::Embedded
        } else {
            Backend::Memory
        })
    }

    /// One line for logs and reports: which backend and where (never a password).
    pub fn describe(&self) -> String {
        match self.backend() {
            Backend::Memory => "memory".into(),
            Backend::Embedded => format!("embedded ({})", self.db_path().display()),
            Backend::Redis => format!(
                "redis ({})",
                redact(self.redis_url.as_deref().unwrap_or(""))
            ),
        }
    }

    fn db_path(&self) -> PathBuf {
        self.db_path
            .clone()
            .unwrap_or_else(|| PathBuf::from("spiral.redb"))
    }

    /// Where the degraded journal is kept; `None`: in memory (memory storage, unless
    /// DEGRADED_JOURNAL_PATH says otherwise).
    pub fn journal_path(&self) -> Option<PathBuf> {
        if let Some(p) = &self.degraded_journal_path {
            return Some(p.clone());
        }
        match self.backend() {
            Backend::Memory => None,
            Backend::Embedded => {
                let mut p = self.db_path().into_os_string();
                p.push(".journal");
                Some(PathBuf::from(p))
            }
            Backend::Redis => Some(self.data_dir.join("degraded-journal.jsonl")),
        }
    }

    /// `inner` behind the breaker, with the degraded journal where [`journal_path`](Self::journal_path) says.
    fn resilient(
        &self,
        inner: SharedStorage,
        clock: SharedClock,
    ) -> Result<ResilientStorage, StorageError> {
        let Some(path) = self.journal_path() else {
            return Ok(ResilientStorage::new(inner, self.resilience(), clock));
        };
        let journal = |e: std::io::Error| {
            StorageError::Config(format!(
                "DEGRADED_JOURNAL_PATH: cannot use {}: {e}",
                path.display()
            ))
        };
        let log = FileLog::open(&path).map_err(journal)?;
        ResilientStorage::with_log(inner, self.resilience(), clock, Arc::new(log)).map_err(journal)
    }

    pub fn resilience(&self) -> ResilienceConfig {
        ResilienceConfig {
            failures: self.cb_failures,
            window_ms: self.cb_window_ms,
            timeout_ms: self.cb_timeout_ms,
            journal_max: self.degraded_journal_max,
        }
    }

    /// Open the raw adapter this configuration names.
    pub async fn open_adapter(&self) -> Result<SharedStorage, StorageError> {
        Ok(match self.backend() {
            Backend::Memory => Arc::new(MemoryStorage::new()),
            Backend::Embedded => Arc::new(EmbeddedStorage::open(self.db_path())?),
            Backend::Redis => Arc::new(self.redis_data().await?),
        })
    }

    /// What the server runs on: the adapter behind the circuit breaker and degraded mode, and
    /// the shared state (rate limits, token replay and revocation) — in the same Redis when
    /// storage is Redis, so instances sharing it share those too; otherwise in process memory
    /// with used and revoked tokens written through to the adapter (they survive a restart
    /// wherever storage does).
    pub async fn open_for_server(
        &self,
        clock: SharedClock,
    ) -> Result<(Arc<ResilientStorage>, crate::auth::Shared), StorageError> {
        let (inner, shared): (SharedStorage, _) = match self.backend() {
            Backend::Redis if self.redis_namespace.is_some() => {
                let shared = Arc::new(RedisStorage::connect(self.redis_config()?).await?);
                (
                    Arc::new(self.redis_data().await?),
                    crate::auth::Shared::redis(shared),
                )
            }
            Backend::Redis => {
                let redis = Arc::new(RedisStorage::connect(self.redis_config()?).await?);
                (redis.clone(), crate::auth::Shared::redis(redis))
            }
            _ => {
                let adapter = self.open_adapter().await?;
                (adapter.clone(), crate::auth::Shared::durable(adapter))
            }
        };
        let storage = Arc::new(self.resilient(inner, clock)?);
        Ok((storage, shared))
    }

    /// `Some(true)` when storage is Redis reached without TLS.
    pub fn redis_tls_disabled(&self) -> Option<bool> {
        (self.backend() == Backend::Redis).then(|| {
            !self
                .redis_url
                .as_deref()
                .unwrap_or("")
                .split(',')
                .all(|u| u.trim().starts_with("rediss://"))
        })
    }

    /// The Redis adapter for nodes, in SPIRAL_REDIS_NAMESPACE if set.
    async fn redis_data(&self) -> Result<RedisStorage, StorageError> {
        let redis = RedisStorage::connect(self.redis_config()?).await?;
        match &self.redis_namespace {
            Some(ns) => redis.with_namespace(ns.clone()),
            None => Ok(redis),
        }
    }

    fn redis_config(&self) -> Result<RedisConfig, StorageError> {
        let url = self.redis_url.clone().ok_or_else(|| {
            StorageError::Config("REDIS_URL: required when SPIRAL_STORAGE=redis".into())
        })?;
        let mut cfg = RedisConfig::new(url);
        cfg.ca_path = self.redis_ca.clone();
        cfg.allow_insecure = self.allow_insecure_redis;
        cfg.cluster |= self.redis_cluster;
        Ok(cfg)
    }

    /// The adapter wrapped in the circuit breaker and degraded mode, as the server runs it. The
    /// caller keeps the concrete type for `status()` (metrics, `/ready`) and `recover()`.
    pub async fn open(&self, clock: SharedClock) -> Result<Arc<ResilientStorage>, StorageError> {
        let inner = self.open_adapter().await?;
        Ok(Arc::new(self.resilient(inner, clock)?))
    }
}

/// `redis://user:secret@host` → `redis://user:***@host` for each comma-separated entry; a lone
/// credential (`redis://secret@host`) is hidden whole, since some clients read it as a password.
pub fn redact(url: &str) -> String {
    url.split(',')
        .map(|u| match (u.find("://"), u.rfind('@')) {
            (Some(s), Some(at)) if at > s => {
                let creds = &u[s + 3..at];
                match creds.find(':') {
                    Some(c) => format!("{}{}:***{}", &u[..s + 3], &creds[..c], &u[at..]),
                    None => format!("{}***{}", &u[..s + 3], &u[at..]),
                }
            }
            _ => u.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Parse `P` from `args` (the first is the program name) with every setting's environment
/// variable looked up in `env` instead of the process environment, so a caller — a unit test, a
/// harness composing a server's settings — decides exactly which variables are set.
///
/// Precedence is clap's: a flag on the command line beats the variable, the variable beats the
/// default, and a bad value is an error naming the flag and its variable. Meant for a flat parser
/// of single-valued settings such as [`StorageArgs`], [`EngineArgs`] or
/// [`crate::api::ServeArgs`]: the variables of a subcommand's arguments are not consulted, and
/// for a multi-valued argument the variable's values are added to the command line's.
pub fn try_parse_with_env<P: Parser>(
    args: impl IntoIterator<Item = impl Into<OsString>>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<P, clap::Error> {
    let mut args = args.into_iter().map(Into::into);
    let mut argv: Vec<OsString> = args.next().into_iter().collect();
    let mut from_env: Vec<OsString> = Vec::new();
    let cmd = P::command().args_override_self(true).mut_args(|arg| {
        let name = arg.get_env().map(|n| n.to_string_lossy().into_owned());
        if let (Some(name), Some(long)) = (name, arg.get_long())
            && let Some(value) = env(&name)
        {
            // A flag without a value (`SetTrue`) is on for `true`, off for `false` or empty;
            // anything else is handed over for clap to refuse.
            match value.as_str() {
                "" | "false" if !arg.get_action().takes_values() => {}
                "true" if !arg.get_action().takes_values() => {
                    from_env.push(format!("--{long}").into());
                }
                _ => from_env.push(format!("--{long}={value}").into()),
            }
        }
        // Without this, clap would read the process environment.
        arg.env(None)
    });
    // The variables go first, so a flag given on the command line overrides them.
    argv.extend(from_env);
    argv.extend(args);
    let mut cmd = cmd;
    let matches = cmd.try_get_matches_from_mut(argv)?;
    P::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))
}

/// Engine settings (SPEC §1.5).
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// `maxMemorySpirals`: spirals the engine may hold.
    #[arg(
        long = "max-spirals",
        env = "SPIRAL_MAX_SPIRALS",
        value_name = "SPIRAL_MAX_SPIRALS",
        default_value_t = 89
    )]
    pub max_spirals: u32,
    /// `spiralTurns`: turns of each spiral.
    #[arg(
        long = "spiral-turns",
        env = "SPIRAL_TURNS",
        value_name = "SPIRAL_TURNS",
        default_value_t = 21
    )]
    pub spiral_turns: u32,
    /// `maxMemoryNodes`: nodes held before GC must make room.
    #[arg(
        long = "max-nodes",
        env = "SPIRAL_MAX_NODES",
        value_name = "SPIRAL_MAX_NODES",
        default_value_t = 2618
    )]
    pub max_nodes: u64,
    /// `gcTimeBudget`: time budget of one GC pass (ms).
    #[arg(
        long = "gc-time-budget-ms",
        env = "GC_TIME_BUDGET_MS",
        value_name = "GC_TIME_BUDGET_MS",
        default_value_t = 25
    )]
    pub gc_time_budget_ms: u64,
    /// `gcTriggerInterval`: operations between GC passes.
    #[arg(
        long = "gc-trigger-interval",
        env = "GC_TRIGGER_INTERVAL",
        value_name = "GC_TRIGGER_INTERVAL",
        default_value_t = 100
    )]
    pub gc_trigger_interval: u64,
    /// Nodes a GC pass may collect per ms of budget.
    #[arg(
        long = "gc-budget-scale",
        env = "GC_BUDGET_SCALE",
        value_name = "GC_BUDGET_SCALE",
        default_value_t = 10
    )]
    pub gc_budget_scale: u64,
    /// Second chances a recently read node gets before GC collects it anyway.
    #[arg(
        long = "gc-force-skip",
        env = "GC_FORCE_SKIP",
        value_name = "GC_FORCE_SKIP",
        default_value_t = 3
    )]
    pub gc_force_skip: u32,
    /// Hex characters of the hash that make a sigil id.
    #[arg(
        long = "sigil-hash-slice",
        env = "SIGIL_HASH_SLICE",
        value_name = "SIGIL_HASH_SLICE",
        default_value_t = 10
    )]
    pub sigil_hash_slice: u32,
    /// Weight of the harmonic distance in the score by which `store` picks a spiral.
    #[arg(
        long = "hd-weight-distance",
        env = "HD_WEIGHT_DISTANCE",
        value_name = "HD_WEIGHT_DISTANCE",
        default_value_t = 0.5
    )]
    pub hd_weight_distance: f64,
    /// Weight of a spiral's load in the score by which `store` picks a spiral.
    #[arg(
        long = "hd-weight-load",
        env = "HD_WEIGHT_LOAD",
        value_name = "HD_WEIGHT_LOAD",
        default_value_t = 0.3
    )]
    pub hd_weight_load: f64,
    /// Weight of a spiral's age in the score by which `store` picks a spiral.
    #[arg(
        long = "hd-weight-age",
        env = "HD_WEIGHT_AGE",
        value_name = "HD_WEIGHT_AGE",
        default_value_t = 0.2
    )]
    pub hd_weight_age: f64,
    /// Link harmonically overlapping spirals with a seeded probability.
    #[arg(long = "enable-quantum-links", env = "ENABLE_QUANTUM_LINKS", value_name = "ENABLE_QUANTUM_LINKS",
          action = ArgAction::Set, value_parser = BoolishValueParser::new(), default_value = "false")]
    pub enable_quantum_links: bool,
    /// Waiting longer than this for the engine's critical section is an error (ms).
    #[arg(
        long = "lock-timeout-ms",
        env = "SPIRAL_LOCK_TIMEOUT_MS",
        value_name = "SPIRAL_LOCK_TIMEOUT_MS",
        default_value_t = 2000
    )]
    pub lock_timeout_ms: u64,
    /// Meta snapshots kept in storage.
    #[arg(
        long = "meta-snapshots-kept",
        env = "SPIRAL_META_SNAPSHOTS_KEPT",
        value_name = "SPIRAL_META_SNAPSHOTS_KEPT",
        default_value_t = 10
    )]
    pub meta_snapshots_kept: usize,
    /// Seed of the server's RNG (sigil salts, quantum links).
    #[arg(
        long = "seed",
        env = "SPIRAL_SEED",
        value_name = "SPIRAL_SEED",
        default_value_t = 0
    )]
    pub seed: u64,
}

impl EngineArgs {
    /// The engine configuration, validated; the error names the variable.
    pub fn engine_config(&self) -> Result<EngineConfig, String> {
        let cfg = EngineConfig {
            max_spirals: self.max_spirals,
            spiral_turns: self.spiral_turns,
            max_nodes: self.max_nodes,
            gc_time_budget_ms: self.gc_time_budget_ms,
            gc_trigger_interval: self.gc_trigger_interval,
            gc_budget_scale: self.gc_budget_scale,
            gc_force_skip: self.gc_force_skip,
            sigil_hash_slice: self.sigil_hash_slice,
            hd_weight_distance: self.hd_weight_distance,
            hd_weight_load: self.hd_weight_load,
            hd_weight_age: self.hd_weight_age,
            enable_quantum_links: self.enable_quantum_links,
            lock_timeout_ms: self.lock_timeout_ms,
            meta_snapshots_kept: self.meta_snapshots_kept,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
#[cfg(not(spiral_loom))]
mod tests {
    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        engine: EngineArgs,
    }

    /// Parse with exactly the variables in `env` set, whatever the process environment holds.
    fn parse_env(args: &[&str], env: &[(&str, &str)]) -> Result<Cli, clap::Error> {
        let env: std::collections::BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        try_parse_with_env(std::iter::once("spiral").chain(args.iter().copied()), |k| {
            env.get(k).cloned()
        })
    }

    fn parse(args: &[&str]) -> Cli {
        parse_env(args, &[]).unwrap()
    }

    #[test]
    fn defaults_match_the_spec() {
        let cli = parse(&[]);
        assert_eq!(cli.engine.engine_config().unwrap(), EngineConfig::default());
        let r = cli.storage.resilience();
        assert_eq!(
            (r.failures, r.window_ms, r.timeout_ms, r.journal_max),
            (5, 30_000, 20_000, 10_000)
        );
    }

    #[test]
    fn backend_defaults_follow_redis_url_then_db_path() {
        let cli = parse(&["--db-path", "x.redb"]);
        assert_eq!(cli.storage.backend(), Backend::Embedded);
        let cli = parse(&["--db-path", "x.redb", "--redis-url", "redis://127.0.0.1"]);
        assert_eq!(cli.storage.backend(), Backend::Redis);
        let cli = parse(&[]);
        assert_eq!(cli.storage.backend(), Backend::Memory);
        let cli = parse(&["--redis-url", "redis://127.0.0.1", "--storage", "memory"]);
        assert_eq!(cli.storage.backend(), Backend::Memory);
    }

    #[test]
    fn backend_defaults_follow_the_given_environment() {
        let backend =
            |args: &[&str], env: &[(&str, &str)]| parse_env(args, env).unwrap().storage.backend();
        assert_eq!(backend(&[], &[]), Backend::Memory);
        assert_eq!(
            backend(&[], &[("SPIRAL_DB_PATH", "x.redb")]),
            Backend::Embedded
        );
        assert_eq!(
            backend(
                &[],
                &[
                    ("SPIRAL_DB_PATH", "x.redb"),
                    ("REDIS_URL", "redis://127.0.0.1")
                ]
            ),
            Backend::Redis
        );
        assert_eq!(
            backend(
                &[],
                &[
                    ("REDIS_URL", "redis://127.0.0.1"),
                    ("SPIRAL_STORAGE", "memory")
                ]
            ),
            Backend::Memory
        );
        // A flag beats its variable.
        assert_eq!(
            backend(&["--storage", "embedded"], &[("SPIRAL_STORAGE", "redis")]),
            Backend::Embedded
        );
        let cli = parse_env(
            &["--cb-failures", "9"],
            &[("CB_FAILURES", "7"), ("CB_WINDOW", "5")],
        )
        .unwrap();
        assert_eq!((cli.storage.cb_failures, cli.storage.cb_window_ms), (9, 5));
        let cli = parse_env(&[], &[("ALLOW_INSECURE_REDIS", "true")]).unwrap();
        assert!(cli.storage.allow_insecure_redis);
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let err = parse_env(&["--cb-failures", "many"], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("CB_FAILURES"), "{err}");
        let err = parse_env(&[], &[("CB_FAILURES", "many")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("CB_FAILURES"), "{err}");
        let cli = parse(&["--sigil-hash-slice", "2"]);
        assert!(
            cli.engine
                .engine_config()
                .unwrap_err()
                .contains("SIGIL_HASH_SLICE")
        );
    }

    #[test]
    fn a_sigil_space_too_small_for_the_capacity_is_refused_naming_both() {
        // 4 hex characters are 65536 ids: enough for 8192 nodes, not for 100000 (finding a free
        // sigil would spin under the engine lock once they fill up).
        let cli = parse(&["--sigil-hash-slice", "4", "--max-nodes", "100000"]);
        let err = cli.engine.engine_config().unwrap_err();
        assert!(err.contains("SIGIL_HASH_SLICE=4"), "{err}");
        assert!(err.contains("SPIRAL_MAX_NODES=100000"), "{err}");
        assert!(err.contains("at least 5 hex characters"), "{err}");
        let fits = parse(&["--sigil-hash-slice", "4", "--max-nodes", "8192"]);
        assert!(fits.engine.engine_config().is_ok());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://u:pw@h:1,redis://h2"),
            "redis://u:***@h:1,redis://h2"
        );
        assert_eq!(redact("redis://h"), "redis://h");
        assert_eq!(redact("redis://:pw@h"), "redis://:***@h");
        assert_eq!(redact("redis://pw@h"), "redis://***@h");
    }
}
