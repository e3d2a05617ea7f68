//! The real world's processes: `spiral` servers (under libfaketime, so their clocks start at the
//! run's epoch and clock-skew faults can move them), one `redis-server`, and a small tmpfs per
//! server for its degraded journal when the scenario fills disks.

use std::fs::File;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

/// libfaketime's multi-threaded build (Debian's `faketime` package).
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// A free loopback port (bound and released: a port nobody holds right now).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Send `signal` (`KILL`, `TERM`, `STOP`, `CONT`) to `pid` with kill(1).
pub fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .context("kill(1)")?;
    if !status.success() {
        bail!("kill -{signal} {pid}: {status}");
    }
    Ok(())
}

/// Wait up to `within` for `child` to exit; whether it did.
pub async fn exited(child: &mut Child, within: Duration) -> bool {
    let steps = (within.as_millis() / 20).max(1);
    for _ in 0..steps {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    matches!(child.try_wait(), Ok(Some(_)))
}

/// Wait up to `within` until something accepts connections at `addr`.
pub async fn listening(addr: SocketAddr, within: Duration) -> bool {
    let steps = (within.as_millis() / 50).max(1);
    for _ in 0..steps {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// One `spiral` server process slot: how to start it, and the running child if any.
pub struct Server {
    pub index: u32,
    /// Where it listens: HTTP, commands, stream (the proxies' upstreams).
    pub addrs: [SocketAddr; 3],
    pub dir: PathBuf,
    bin: PathBuf,
    env: Vec<(String, String)>,
    /// libfaketime's offset file: the server's clock is the run's epoch plus the elapsed time
    /// plus its skew.
    faketime: PathBuf,
    /// Seconds from the real clock to the epoch.
    base_offset_s: i64,
    skew_ms: i64,
    child: Option<Child>,
    /// Lifetimes started, for log file names.
    lives: u32,
    /// It should be running: a process that exits meanwhile is started again by the
    /// supervisor. False from a crash (SIGKILL) or a stop until the next start.
    pub wanted: bool,
    /// The listen ports, held until the first start.
    reserved: Vec<TcpListener>,
    /// `RLIMIT_NOFILE` for the process (`--fd-limit`), set by util-linux's `prlimit`.
    pub fd_limit: Option<u64>,
}

impl Server {
    pub fn new(
        index: u32,
        bin: &Path,
        dir: PathBuf,
        env: Vec<(String, String)>,
        base_offset_s: i64,
    ) -> anyhow::Result<Server> {
        std::fs::create_dir_all(&dir)?;
        // Held until the first start, so that nothing else of the run (a proxy) takes them.
        let reserved = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<Vec<_>>>()?;
        let addrs = [
            reserved[0].local_addr()?,
            reserved[1].local_addr()?,
            reserved[2].local_addr()?,
        ];
        let s = Server {
            index,
            addrs,
            faketime: dir.join("faketime.rc"),
            dir,
            bin: bin.to_path_buf(),
            env,
            base_offset_s,
            skew_ms: 0,
            child: None,
            lives: 0,
            wanted: false,
            reserved,
            fd_limit: None,
        };
        s.write_offset()?;
        Ok(s)
    }

    fn write_offset(&self) -> anyhow::Result<()> {
        let offset = self.base_offset_s + self.skew_ms.div_euclid(1000);
        let mut f = File::create(&self.faketime)?;
        writeln!(f, "{offset:+}")?;
        Ok(())
    }

    /// Move the server's clock by `ms` (libfaketime reads the file again within a second; the
    /// skew is kept in whole seconds).
    pub fn skew(&mut self, ms: i64) -> anyhow::Result<i64> {
        self.skew_ms += ms;
        self.write_offset()?;
        Ok(self.skew_ms.div_euclid(1000) * 1000)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// It should run and has exited: what it exited with.
    pub fn exited_unwanted(&mut self) -> Option<String> {
        if !self.wanted {
            return None;
        }
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => Some(status.to_string()),
            None => Some("not running".into()),
            _ => None,
        }
    }

    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Start the process (its output to `server-N.K.log` in its directory) and wait until its
    /// HTTP port answers.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        self.spawn()?;
        self.wait_listening().await
    }

    /// Start the process and return at once: it boots as long as its boot takes (one that
    /// cannot reach storage exits, and the supervisor starts it again).
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        self.reserved.clear();
        self.wanted = true;
        self.lives += 1;
        let log = File::create(
            self.dir
                .join(format!("server-{}.{}.log", self.index, self.lives)),
        )?;
        let [http, ws, stream] = self.addrs;
        // `prlimit --nofile=N:N -- spiral` sets the limit and execs the server: the same pid.
        let mut cmd = match self.fd_limit {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg("--").arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        cmd.arg("serve")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("SPIRAL_HTTP_ADDR", http.to_string())
            .env("SPIRAL_WS_ADDR", ws.to_string())
            .env("SPIRAL_STREAM_ADDR", stream.to_string())
            .env("LD_PRELOAD", LIBFAKETIME)
            .env("FAKETIME_TIMESTAMP_FILE", &self.faketime)
            .env("FAKETIME_CACHE_DURATION", "1")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Wait until the HTTP port answers; an error if the process exits first or 30 s pass.
    pub async fn wait_listening(&mut self) -> anyhow::Result<()> {
        let http = self.addrs[0];
        for _ in 0..600 {
            if tokio::net::TcpStream::connect(http).await.is_ok() {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "server-{} exited at boot ({status}); see its log in {}",
                    self.index,
                    self.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "server-{} did not listen on {http} within 30 s; see its log in {}",
            self.index,
            self.dir.display()
        )
    }

    /// SIGKILL: gone at once, nothing flushed.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.wanted = false;
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        Ok(())
    }

    /// SIGTERM and wait for it to exit (graceful stop); killed if it takes over `grace`.
    pub async fn terminate(&mut self, grace: Duration) -> anyhow::Result<bool> {
        self.wanted = false;
        let Some(mut c) = self.child.take() else {
            return Ok(true);
        };
        signal(c.id(), "TERM")?;
        let clean = exited(&mut c, grace).await;
        if !clean {
            let _ = c.kill();
        }
        let _ = c.wait();
        Ok(clean)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A `redis-server` process of the run's own, persisting nothing (an outage pauses it, never
/// kills it, so it keeps its data).
pub struct Redis {
    pub addr: SocketAddr,
    pid: u32,
    paused: bool,
}

impl Redis {
    /// A `redis-server` on a free loopback port, its log (`redis-PORT.log`) in `dir` — started
    /// as the test fixture starts one, and killed when this process exits, whatever happens.
    pub fn start(dir: &Path) -> anyhow::Result<Redis> {
        let s = crate::redis_fixture::spawn_server(dir, &[])
            .context("starting redis-server (Debian's redis-server package)")?;
        Ok(Redis {
            addr: SocketAddr::from(([127, 0, 0, 1], s.port)),
            pid: s.pid,
            paused: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// SIGSTOP: connections stay open and nothing answers (an outage that hangs).
    pub fn pause(&mut self) -> anyhow::Result<()> {
        if !self.paused {
            signal(self.pid, "STOP")?;
            self.paused = true;
        }
        Ok(())
    }

    /// SIGCONT.
    pub fn resume(&mut self) -> anyhow::Result<()> {
        if self.paused {
            signal(self.pid, "CONT")?;
            self.paused = false;
        }
        Ok(())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.resume();
        let _ = signal(self.pid, "KILL");
    }
}

/// A server's disk for its degraded journal: a small tmpfs, filled by a ballast file while the
/// `disk-full` fault lasts.
pub struct Disk {
    pub dir: PathBuf,
    ballast: PathBuf,
}

impl Disk {
    /// Mount a 4 MiB tmpfs at `dir` (needs root with CAP_SYS_ADMIN; the error says so).
    pub fn mount(dir: PathBuf) -> anyhow::Result<Disk> {
        std::fs::create_dir_all(&dir)?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(&dir)
            .stderr(Stdio::null())
            .status()
            .context("mount(8)")?;
        if !status.success() {
            bail!(
                "disk faults need a tmpfs of their own for each server's journal: `mount -t tmpfs` \
                 at {} failed ({status}; it needs root with CAP_SYS_ADMIN)",
                dir.display()
            );
        }
        Ok(Disk {
            ballast: dir.join("ballast"),
            dir,
        })
    }

    /// Fill the disk: a ballast file takes every free block.
    pub fn fill(&self) -> anyhow::Result<()> {
        let mut f = File::create(&self.ballast)?;
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => return Err(e.into()),
            }
        }
        let _ = f.sync_all();
        Ok(())
    }

    /// Free it again.
    pub fn clear(&self) -> anyhow::Result<()> {
        match std::fs::remove_file(&self.ballast) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .stderr(Stdio::null())
            .status();
    }
}
