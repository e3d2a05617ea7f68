//! A real Redis for each test binary, found or started once and shared by its tests.
//!
//! # Where the Redis comes from
//! `SPIRAL_REDIS_MODE` picks one path (`url`, `container`, `process`); unset (or `auto`) tries
//! them in this order:
//! 1. `REDIS_URL` — a server someone else runs (CI service, developer's own).
//! 2. a container of `SPIRAL_REDIS_IMAGE` (default `redis:7-alpine`; `scripts/build-redis-image.sh`
//!    builds `spiral-redis:local` without a registry) — only if a Docker engine answers *and* the
//!    image is present, because nothing can be pulled here and testcontainers pulls on a 404.
//!    Started with testcontainers (its `redis` module, renamed to the image); should testcontainers
//!    fail to drive the engine, the docker CLI starts the same image, and the fixture says so.
//!    (testcontainers is the `containers` feature, which the test command turns on; without it —
//!    the `spiral-chaos` binary, the SLO gate — the docker CLI starts the image.)
//! 3. `redis-server` on a free loopback port, no persistence.
//!
//! None of them: with `CI` set the test panics (a Redis-backed test must never pass unchecked in
//! CI); otherwise the fixture is `None` and a loud `SKIPPED: no Redis (…)` line goes to stderr.
//!
//! The Redis Cluster fixture is three `redis-server --cluster-enabled yes` processes joined by
//! `redis-cli --cluster create` (or `SPIRAL_REDIS_CLUSTER_URL`, comma-separated node URLs).
//!
//! # Clean-up
//! Fixtures live in statics, which are never dropped. Each started server therefore gets a
//! watchdog `sh` that blocks reading a pipe from this process; when the test binary exits — however
//! it exits — the pipe closes and the watchdog kills the server (or removes the container).
//!
//! # Isolation
//! Every [`RedisFixture::storage`] gets its own key namespace, so tests and proptest cases sharing
//! one server never see each other's keys (no `FLUSHALL` racing a neighbour).

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use spiral_server::config::redact;
use spiral_server::storage::redis::{RedisConfig, RedisStorage};
use spiral_server::storage::{SharedStorage, Storage};

/// Default image for the container path.
pub const DEFAULT_IMAGE: &str = "redis:7-alpine";

/// Polls while waiting for a server: 10 ms apart, 10 s in all.
const POLL: Duration = Duration::from_millis(10);
const POLLS: u32 = 1000;

/// A Redis (or Redis Cluster) this test binary may use.
#[derive(Debug)]
pub struct RedisFixture {
    url: String,
    description: String,
    control: Control,
}

#[derive(Debug)]
enum Control {
    /// Someone else's server: we neither pause nor stop it.
    External,
    Container {
        id: String,
    },
    Processes {
        pids: Vec<u32>,
    },
}

impl RedisFixture {
    /// `redis://…`, or for a cluster the comma-separated node URLs.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Where this Redis came from, as printed once at start-up.
    pub fn describe(&self) -> &str {
        &self.description
    }

    pub fn is_cluster(&self) -> bool {
        self.url.contains(',')
    }

    /// An adapter configuration for this Redis with a namespace no one else uses.
    pub fn config(&self) -> RedisConfig {
        let mut cfg = RedisConfig::new(self.url.clone());
        cfg.namespace = fresh_namespace();
        // Test machines are busy (two cores, parallel builds): keep the defaults' spirit but do not
        // let a scheduling hiccup fail a correctness test.
        cfg.response_timeout_ms = 5_000;
        cfg.connect_timeout_ms = 5_000;
        cfg
    }

    /// A ready adapter (`init` done) in a fresh namespace.
    pub async fn storage(&self) -> anyhow::Result<SharedStorage> {
        let storage = RedisStorage::connect(self.config())
            .await
            .with_context(|| format!("adapter for {}", self.description))?;
        storage
            .init()
            .await
            .with_context(|| format!("init against {}", self.description))?;
        Ok(Arc::new(storage))
    }

    /// Freeze the server(s): connections stay open and nothing answers (calls time out).
    pub fn pause(&self) -> anyhow::Result<()> {
        match &self.control {
            Control::External => bail!("{}: not started here, cannot pause", self.description),
            Control::Container { id } => run_quiet("docker", &["pause", id]),
            Control::Processes { pids } => signal_all("-STOP", pids),
        }
    }

    /// Undo [`pause`](Self::pause).
    pub fn resume(&self) -> anyhow::Result<()> {
        match &self.control {
            Control::External => bail!("{}: not started here, cannot resume", self.description),
            Control::Container { id } => run_quiet("docker", &["unpause", id]),
            Control::Processes { pids } => signal_all("-CONT", pids),
        }
    }

    /// Can [`pause`](Self::pause) work on this fixture?
    pub fn can_pause(&self) -> bool {
        !matches!(self.control, Control::External)
    }
}

/// The shared single-node Redis of this test binary; `None` (after a loud notice) when there is
/// none and `CI` is unset.
pub fn redis() -> Option<&'static RedisFixture> {
    single().as_ref().ok()
}

/// The shared 3-node Redis Cluster of this test binary; `None` as for [`redis()`].
pub fn redis_cluster() -> Option<&'static RedisFixture> {
    cluster().as_ref().ok()
}

/// Why [`redis()`] is `None`.
pub fn redis_unavailable() -> Option<&'static str> {
    single().as_ref().err().map(String::as_str)
}

/// Why [`redis_cluster`] is `None`.
pub fn redis_cluster_unavailable() -> Option<&'static str> {
    cluster().as_ref().err().map(String::as_str)
}

fn single() -> &'static Result<RedisFixture, String> {
    static FIXTURE: OnceLock<Result<RedisFixture, String>> = OnceLock::new();
    FIXTURE.get_or_init(|| found("Redis", start_single()))
}

fn cluster() -> &'static Result<RedisFixture, String> {
    static FIXTURE: OnceLock<Result<RedisFixture, String>> = OnceLock::new();
    FIXTURE.get_or_init(|| found("Redis Cluster", start_cluster()))
}

/// A fresh single-node Redis adapter, or an error saying why there is none (for binaries such as
/// `spiral-slo` that need a Redis and have no test harness to skip with).
pub async fn fresh_storage() -> anyhow::Result<SharedStorage> {
    match redis() {
        Some(f) => f.storage().await,
        None => Err(anyhow!(
            "no Redis: {}",
            redis_unavailable().unwrap_or("unknown")
        )),
    }
}

/// A key namespace unique to this process and call.
pub fn fresh_namespace() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "t{}n{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Is this a CI run (where a missing Redis is a failure, never a skip)?
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Print to the real stderr: libtest captures `eprintln!`, and a skip must be seen.
pub fn loud(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn found(kind: &str, outcome: Result<RedisFixture, Vec<String>>) -> Result<RedisFixture, String> {
    match outcome {
        Ok(f) => {
            loud(&format!("redis fixture: {}", f.description));
            Ok(f)
        }
        Err(reasons) => {
            let why = reasons.join("; ");
            if in_ci() {
                panic!(
                    "no {kind} for the {kind}-backed tests, and CI is set: failing instead of \
                     skipping ({why})"
                );
            }
            loud(&format!(
                "SKIPPED: no {kind} ({why}) — the {kind}-backed tests of {} check nothing",
                binary_name()
            ));
            Err(why)
        }
    }
}

fn binary_name() -> String {
    std::env::args()
        .next()
        .and_then(|a| {
            Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "this test binary".into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Auto,
    Url,
    Container,
    Process,
}

fn mode() -> Mode {
    match std::env::var("SPIRAL_REDIS_MODE")
        .unwrap_or_default()
        .as_str()
    {
        "" | "auto" => Mode::Auto,
        "url" => Mode::Url,
        "container" => Mode::Container,
        "process" => Mode::Process,
        other => panic!("SPIRAL_REDIS_MODE={other}: expected auto, url, container or process"),
    }
}

fn start_single() -> Result<RedisFixture, Vec<String>> {
    let mode = mode();
    let mut reasons = Vec::new();
    if matches!(mode, Mode::Auto | Mode::Url) {
        match std::env::var("REDIS_URL") {
            Ok(url) if !url.trim().is_empty() => {
                return Ok(RedisFixture {
                    description: format!("REDIS_URL {}", redact(&url)),
                    url,
                    control: Control::External,
                });
            }
            _ => reasons.push("REDIS_URL unset".to_owned()),
        }
    }
    if matches!(mode, Mode::Auto | Mode::Container) {
        match start_container() {
            Ok(f) => return Ok(f),
            Err(e) => reasons.push(format!("container: {e:#}")),
        }
    }
    if matches!(mode, Mode::Auto | Mode::Process) {
        match start_process() {
            Ok(f) => return Ok(f),
            Err(e) => reasons.push(format!("process: {e:#}")),
        }
    }
    if mode != Mode::Auto {
        // A forced path that cannot be had is a broken setup, not a reason to skip.
        panic!(
            "SPIRAL_REDIS_MODE={mode:?} but no Redis that way: {}",
            reasons.join("; ")
        );
    }
    Err(reasons)
}

fn start_cluster() -> Result<RedisFixture, Vec<String>> {
    if let Ok(url) = std::env::var("SPIRAL_REDIS_CLUSTER_URL")
        && !url.trim().is_empty()
    {
        return Ok(RedisFixture {
            description: format!("SPIRAL_REDIS_CLUSTER_URL {}", redact(&url)),
            url,
            control: Control::External,
        });
    }
    start_cluster_processes().map_err(|e| vec![format!("cluster processes: {e:#}")])
}

// --- readiness ---------------------------------------------------------------------------------

fn ping(url: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let mut con = client.get_connection_with_timeout(Duration::from_millis(500))?;
    con.set_read_timeout(Some(Duration::from_millis(500)))?;
    let pong: String = redis::cmd("PING").query(&mut con)?;
    if pong != "PONG" {
        bail!("PING answered {pong:?}");
    }
    Ok(())
}

/// Poll `ready` until it succeeds, `gone` reports the server dead, or the time is up.
fn wait_until(
    what: &str,
    mut ready: impl FnMut() -> anyhow::Result<()>,
    mut gone: impl FnMut() -> Option<String>,
) -> anyhow::Result<()> {
    let mut last = anyhow!("never polled");
    for _ in 0..POLLS {
        match ready() {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        if let Some(why) = gone() {
            bail!("{what} exited: {why}");
        }
        std::thread::sleep(POLL);
    }
    Err(last.context(format!(
        "{what} not ready after {} s",
        POLL.as_millis() as u32 * POLLS / 1000
    )))
}

// --- clean-up at exit --------------------------------------------------------------------------

/// Write ends of the watchdogs' pipes; closed only when this process exits.
static WATCHDOGS: Mutex<Vec<ChildStdin>> = Mutex::new(Vec::new());

/// Run `cleanup` (a shell command) once this process has exited, however it exits.
fn on_exit(cleanup: &str) -> anyhow::Result<()> {
    let script = format!("trap '' INT TERM HUP; read _line; {cleanup}");
    let mut child = Command::new("/bin/sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawn the clean-up watchdog (sh)")?;
    let stdin = child.stdin.take().context("watchdog stdin")?;
    match WATCHDOGS.lock() {
        Ok(mut w) => w.push(stdin),
        Err(poisoned) => poisoned.into_inner().push(stdin),
    }
    Ok(())
}

fn run_quiet(program: &str, args: &[&str]) -> anyhow::Result<()> {
    output(program, args).map(drop)
}

fn output(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn signal_all(signal: &str, pids: &[u32]) -> anyhow::Result<()> {
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let mut args = vec![signal];
    args.extend(pids.iter().map(String::as_str));
    run_quiet("kill", &args)
}

// --- container ---------------------------------------------------------------------------------

fn start_container() -> anyhow::Result<RedisFixture> {
    let image = std::env::var("SPIRAL_REDIS_IMAGE")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_IMAGE.to_owned());
    output("docker", &["version", "--format", "{{.Server.Version}}"])
        .context("no Docker engine answers")?;
    output("docker", &["image", "inspect", "--format", "{{.Id}}", &image]).with_context(|| {
        format!("image {image} is not present locally (no registry to pull from; build it with scripts/build-redis-image.sh)")
    })?;

    let (id, port, via) = match start_with_testcontainers(&image) {
        Ok((id, port)) => (id, port, "testcontainers".to_owned()),
        Err(tc) => {
            let (id, port) = start_with_docker_cli(&image).with_context(|| {
                format!("testcontainers failed ({tc:#}), and so did the docker CLI")
            })?;
            (
                id,
                port,
                format!(
                    "docker CLI, because testcontainers failed: {}",
                    first_line(&tc)
                ),
            )
        }
    };
    let url = format!("redis://127.0.0.1:{port}");
    wait_until("redis container", || ping(&url), || None)?;
    Ok(RedisFixture {
        description: format!("container of image {image} ({via}) at {url}"),
        url,
        control: Control::Container { id },
    })
}

fn first_line(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    text.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(160)
        .collect()
}

/// Start through testcontainers on a private runtime: the fixture is shared by tests that each
/// run their own runtime, and may be first asked for from inside one (where `block_on` panics).
/// This is test set-up, not server logic, so a short-lived OS thread is fine here.
#[cfg(feature = "containers")]
fn start_with_testcontainers(image: &str) -> anyhow::Result<(String, u16)> {
    use testcontainers_modules::redis::Redis;
    use testcontainers_modules::testcontainers::ImageExt;
    use testcontainers_modules::testcontainers::runners::AsyncRunner;

    let (name, tag) = split_image(image);
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> anyhow::Result<(String, u16)> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    let container = Redis::default()
                        .with_name(name)
                        .with_tag(tag)
                        .with_startup_timeout(Duration::from_secs(30))
                        .start()
                        .await?;
                    let id = container.id().to_owned();
                    // From here the watchdog owns the container's life.
                    on_exit(&format!("docker rm -f -v {id} >/dev/null 2>&1"))?;
                    let port = container.get_host_port_ipv4(6379).await?;
                    // Dropping the handle would remove the container; the watchdog does that at exit.
                    std::mem::forget(container);
                    Ok((id, port))
                })
            })
            .join()
            .map_err(|_| anyhow!("testcontainers start-up panicked"))?
    })
}

#[cfg(not(feature = "containers"))]
fn start_with_testcontainers(_image: &str) -> anyhow::Result<(String, u16)> {
    Err(anyhow!("built without spiral-chaos's `containers` feature"))
}

fn start_with_docker_cli(image: &str) -> anyhow::Result<(String, u16)> {
    let id = output(
        "docker",
        &[
            "run",
            "-d",
            "--rm",
            "--label",
            "org.spiral.chaos=redis-fixture",
            "-p",
            "127.0.0.1::6379",
            image,
        ],
    )?;
    on_exit(&format!("docker rm -f -v {id} >/dev/null 2>&1"))?;
    let mapping = output("docker", &["port", &id, "6379/tcp"])?;
    let port = mapping
        .lines()
        .filter_map(|l| l.rsplit(':').next()?.trim().parse::<u16>().ok())
        .next()
        .with_context(|| format!("docker port {id}: unexpected {mapping:?}"))?;
    Ok((id, port))
}

/// `repo/name:tag` → (`repo/name`, `tag`); no tag means `latest`.
#[cfg(any(test, feature = "containers"))]
fn split_image(image: &str) -> (&str, &str) {
    match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => (&image[..i], &image[i + 1..]),
        _ => (image, "latest"),
    }
}

// --- processes ---------------------------------------------------------------------------------

fn redis_binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} is not on PATH (apt-get install redis-server)"))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A scratch directory removed by the watchdog at exit.
fn scratch_dir() -> anyhow::Result<PathBuf> {
    let dir = tempfile::Builder::new()
        .prefix("spiral-redis-")
        .tempdir()?
        .keep();
    on_exit(&format!("rm -rf '{}'", dir.display()))?;
    Ok(dir)
}

pub(crate) struct Spawned {
    pub(crate) pid: u32,
    pub(crate) port: u16,
}

/// Start one `redis-server` on a free loopback port, retrying if another process took the port
/// between our probe and Redis's bind.
pub(crate) fn spawn_server(dir: &Path, extra: &[String]) -> anyhow::Result<Spawned> {
    let binary = redis_binary("redis-server")?;
    let mut last = anyhow!("not tried");
    for _ in 0..5 {
        let port = free_port()?;
        let log = dir.join(format!("redis-{port}.log"));
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--dir",
            &dir.to_string_lossy(),
            "--logfile",
            &log.to_string_lossy(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().cloned());
        let mut child = Command::new(&binary)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("spawn {}", binary.display()))?;
        let pid = child.id();
        on_exit(&format!("kill -9 {pid} 2>/dev/null"))?;
        let url = format!("redis://127.0.0.1:{port}");
        let ready = wait_until(
            "redis-server",
            || ping(&url),
            || match child.try_wait() {
                Ok(Some(status)) => Some(format!(
                    "{status}; log: {}",
                    std::fs::read_to_string(&log)
                        .unwrap_or_default()
                        .lines()
                        .last()
                        .unwrap_or("")
                )),
                _ => None,
            },
        );
        match ready {
            Ok(()) => return Ok(Spawned { pid, port }),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                last = e;
            }
        }
    }
    Err(last)
}

fn start_process() -> anyhow::Result<RedisFixture> {
    redis_binary("redis-server")?;
    let dir = scratch_dir()?;
    let s = spawn_server(&dir, &[])?;
    let url = format!("redis://127.0.0.1:{}", s.port);
    Ok(RedisFixture {
        description: format!("redis-server process (pid {}) at {url}", s.pid),
        url,
        control: Control::Processes { pids: vec![s.pid] },
    })
}

fn start_cluster_processes() -> anyhow::Result<RedisFixture> {
    redis_binary("redis-server")?;
    let cli = redis_binary("redis-cli")?;
    let dir = scratch_dir()?;
    let mut nodes = Vec::new();
    for i in 0..3 {
        let node_dir = dir.join(format!("node{i}"));
        std::fs::create_dir_all(&node_dir)?;
        let bus = free_port()?;
        let extra = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-port",
            &bus.to_string(),
        ]
        .map(str::to_owned);
        nodes.push(spawn_server(&node_dir, &extra)?);
    }
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let mut args = vec!["--cluster".to_owned(), "create".to_owned()];
    args.extend(addrs.iter().cloned());
    args.extend(["--cluster-replicas", "0", "--cluster-yes"].map(str::to_owned));
    let out = Command::new(&cli)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .context("run redis-cli --cluster create")?;
    if !out.status.success() {
        bail!(
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let urls: Vec<String> = addrs.iter().map(|a| format!("redis://{a}")).collect();
    for url in &urls {
        wait_until("redis cluster", || cluster_ok(url), || None)?;
    }
    let url = urls.join(",");
    Ok(RedisFixture {
        description: format!(
            "3-node Redis Cluster of redis-server processes (pids {}) at {url}",
            nodes
                .iter()
                .map(|n| n.pid.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
        url,
        control: Control::Processes {
            pids: nodes.iter().map(|n| n.pid).collect(),
        },
    })
}

fn cluster_ok(url: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let mut con = client.get_connection_with_timeout(Duration::from_millis(500))?;
    con.set_read_timeout(Some(Duration::from_millis(500)))?;
    let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut con)?;
    if info.lines().any(|l| l.trim() == "cluster_state:ok") {
        Ok(())
    } else {
        bail!("cluster_state is not ok yet")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_split_into_name_and_tag() {
        assert_eq!(split_image("redis:7-alpine"), ("redis", "7-alpine"));
        assert_eq!(split_image("spiral-redis:local"), ("spiral-redis", "local"));
        assert_eq!(split_image("redis"), ("redis", "latest"));
        assert_eq!(
            split_image("localhost:5000/redis"),
            ("localhost:5000/redis", "latest")
        );
        assert_eq!(
            split_image("localhost:5000/redis:7"),
            ("localhost:5000/redis", "7")
        );
    }

    #[test]
    fn namespaces_are_unique() {
        assert_ne!(fresh_namespace(), fresh_namespace());
    }
}
