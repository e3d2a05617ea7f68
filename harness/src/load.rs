//! The load generator (SPEC §3, "Load"): WebSocket `memory.store` round trips against a running
//! server on real sockets, open loop. Each connection sends on a fixed schedule whether or not
//! answers have come back.
//!
//! Latency is honest in three ways:
//! - It is measured from the *intended* send time into an HdrHistogram, so a stalled server shows
//!   up as latency instead of as a slower sender (no coordinated omission).
//! - A request still unanswered `timeout` after its intended send time is recorded *at* the
//!   timeout and counted as a `timeout` — never dropped from the percentiles. An answer that
//!   comes later is counted `late` and recorded nowhere else.
//! - The service time (from the moment the request was actually written to its answer, what a
//!   closed-loop tool reports) is kept beside it, as wrk2 does, so the two can be compared.
//!
//! The generator reports on itself: its schedule lag (actual minus intended send time), the
//! rate it sent against the rate it was asked for, and its own CPU. When its lag's p99 passes
//! [`LoadConfig::max_lag`] the phase's verdict is [`Verdict::Inconclusive`]: the figures
//! describe the generator, not the server.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use spiral_server::auth::{Claims, Keys};
use spiral_server::engine::StoreRequest;
use spiral_server::protocol::{self, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// One phase: a constant arrival rate for a duration.
#[derive(Debug, Clone)]
pub struct Phase {
    pub rate_per_s: u64,
    pub duration: Duration,
}

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub ws_url: String,
    /// HS256 secret to mint one token per connection (user `load-<n>`).
    pub jwt_secret: String,
    pub connections: usize,
    /// Discarded from the figures at the start of each phase.
    pub warmup: Duration,
    /// Bytes of content per store.
    pub payload_bytes: usize,
    /// A request unanswered this long after its intended send time is a `timeout`, recorded at
    /// this latency.
    pub timeout: Duration,
    /// The generator's schedule lag (p99) past which a phase is inconclusive.
    pub max_lag: Duration,
    /// The server's CPU to report per message, where it can be read.
    pub server_cpu: Option<ServerCpu>,
}

/// Whether a phase's figures describe the server.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "verdict", content = "reason")]
pub enum Verdict {
    /// The generator kept its schedule: the figures are the server's.
    Measured,
    /// The generator fell behind its own schedule (the reason says by how much): the figures
    /// are not the server's.
    Inconclusive(String),
}

/// Figures of one phase. Latencies in µs; the percentiles of `latency` include every timeout
/// at the timeout.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PhaseReport {
    /// The arrival rate asked for.
    pub rate_per_s: u64,
    /// Requests the schedule called for.
    pub scheduled: u64,
    /// Requests written to a socket.
    pub sent: u64,
    /// Answered with a result within the timeout.
    pub answered: u64,
    /// Answered with an error envelope within the timeout.
    pub errors: u64,
    /// Unanswered at the timeout (recorded at the timeout).
    pub timeouts: u64,
    /// Answers that came after their request's timeout (already counted as timeouts).
    pub late: u64,
    /// Requests the schedule called for on a connection the server had closed (errors too,
    /// counted apart).
    pub lost: u64,
    pub timeout_us: u64,
    /// Requests written per second over the phase (the generator's own rate).
    pub sent_per_s: f64,
    /// Results per second over the measured part of the phase.
    pub achieved_per_s: f64,
    /// Latency from the intended send time (no coordinated omission).
    pub latency: Percentiles,
    /// Service time: from the actual write to the answer (answered requests only).
    pub service: Percentiles,
    /// Schedule lag: actual write minus intended send time.
    pub lag: Percentiles,
    /// The generator's CPU over the phase, in cores (1.0 = one core busy throughout).
    pub generator_cpu: f64,
    /// The server's CPU per request sent, in µs (`--server-pid`, or the floor's threads), where
    /// it could be read. 10 ms ticks: meaningful over thousands of requests.
    pub server_cpu_us_per_request: Option<f64>,
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Latency and service time per second of the measured part, for the interval log
    /// ([`write_interval_log`]).
    #[serde(skip)]
    pub intervals: Vec<(Histogram<u64>, Histogram<u64>)>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        Percentiles {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p95_us: h.value_at_quantile(0.95),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
        }
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 10 min, three significant digits: any timeout a run can set.
    Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("static bounds are valid")
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    let _ = h.record((d.as_micros() as u64).max(1));
}

/// Real time: the load generator measures the wall clock of a real system, outside any server
/// logic, so the determinism seam does not apply here.
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

/// CPU time (user + system) in a `/proc/…/stat` line: fields 14 and 15, in USER_HZ ticks of
/// 10 ms. The command name (field 2) may hold spaces; the fields after it follow its `)`.
fn stat_cpu(stat: &str) -> Option<Duration> {
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// CPU time of process `pid` (`self` for this one); `None` where it cannot be read (not Linux,
/// the process is gone).
fn process_cpu(pid: &str) -> Option<Duration> {
    stat_cpu(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// CPU time of this process's threads whose name starts with `prefix` (an in-process floor's).
fn threads_cpu(prefix: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter(|stat| {
            let name = stat.split_once('(').map_or("", |(_, rest)| rest);
            name.starts_with(prefix)
        })
        .filter_map(|stat| stat_cpu(&stat))
        .sum()
}

/// Whose CPU a phase also reports per message: the server under load, when it can be read.
#[derive(Debug, Clone)]
pub enum ServerCpu {
    /// A process on this machine (`load --server-pid`).
    Process(u32),
    /// This process's threads named with this prefix: the floor `load --vs-floor` starts.
    Threads(&'static str),
}

impl ServerCpu {
    fn read(&self) -> Option<Duration> {
        match self {
            ServerCpu::Process(pid) => process_cpu(&pid.to_string()),
            ServerCpu::Threads(prefix) => Some(threads_cpu(prefix)),
        }
    }
}

/// The prefix of the in-process floor's thread names, left out of the generator's own CPU.
pub const FLOOR_THREADS: &str = "floor";

/// The generator's own CPU so far: this process less an in-process floor's threads.
fn generator_cpu() -> Option<Duration> {
    Some(process_cpu("self")?.saturating_sub(threads_cpu(FLOOR_THREADS)))
}

fn mint(secret: &str, n: usize, run: u64) -> String {
    let exp =
        spiral_server::clock::Clock::unix_ms(&spiral_server::clock::SystemClock) / 1000 + 3600;
    let claims = Claims::new(format!("load-{n}"), format!("load-{}", n % 4), exp)
        .jti(format!("load-{run}-{n}"));
    Keys::hs256(secret.as_bytes())
        .mint(&claims)
        .unwrap_or_default()
}

/// One connection's schedule: request `seq` is due at `start + offset + seq × interval`.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    start: Instant,
    offset: Duration,
    interval: Duration,
    warm_until: Instant,
    timeout: Duration,
}

impl Schedule {
    fn intended(&self, seq: u64) -> Instant {
        self.start + self.offset + self.interval.mul_f64(seq as f64)
    }

    fn measured(&self, seq: u64) -> bool {
        self.intended(seq) >= self.warm_until
    }
}

/// A request the sender began to write: when, and how late by the generator's own doing.
#[derive(Debug, Clone, Copy)]
struct Written {
    seq: u64,
    at: Instant,
    lag: Duration,
}

/// What one connection's reader found.
#[derive(Debug)]
struct ConnFigures {
    latency: Histogram<u64>,
    service: Histogram<u64>,
    /// Per second of the measured part of the phase (by intended send time): latency and
    /// service time, for the interval log.
    intervals: Vec<(Histogram<u64>, Histogram<u64>)>,
    lag: Histogram<u64>,
    sent: u64,
    answered: u64,
    answered_measured: u64,
    errors: u64,
    timeouts: u64,
    late: u64,
    lost: u64,
}

/// Read one connection's answers: each request's outcome is settled exactly once — answered,
/// error, timeout, or lost with the connection.
async fn read_answers<S>(
    mut stream: S,
    mut sent_rx: tokio::sync::mpsc::UnboundedReceiver<Written>,
    sched: Schedule,
    per_conn: u64,
) -> ConnFigures
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut f = ConnFigures::new();
    let n = per_conn as usize;
    let mut settled = vec![false; n];
    let mut sent_at: Vec<Option<Instant>> = vec![None; n];
    // Requests before `expired` have had their timeout checked.
    let mut expired = 0u64;
    let mut open = true;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Every request whose timeout has passed and has no answer is a timeout, at the timeout.
        let t = now();
        while expired < per_conn && sched.intended(expired) + sched.timeout <= t {
            let i = expired as usize;
            if !settled[i] {
                settled[i] = true;
                f.timeouts += 1;
                if sched.measured(expired) {
                    f.latency(&sched, expired, sched.timeout);
                }
            }
            expired += 1;
        }
        if expired == per_conn || !open {
            break;
        }
        tokio::select! {
            biased;
            Some(w) = sent_rx.recv() => note_written(&mut f, &mut sent_at, &sched, w),
            msg = stream.next() => {
                let t = now();
                let text = match msg {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => {
                        open = false;
                        continue;
                    }
                };
                let v: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                let Some(seq) = v["id"].as_u64().filter(|s| *s < per_conn) else {
                    continue;
                };
                let i = seq as usize;
                if settled[i] {
                    f.late += 1;
                    continue;
                }
                // The tick may not have run yet: an answer past its timeout is still a timeout.
                let latency = t.saturating_duration_since(sched.intended(seq));
                settled[i] = true;
                if latency >= sched.timeout {
                    f.timeouts += 1;
                    f.late += 1;
                    if sched.measured(seq) {
                        f.latency(&sched, seq, sched.timeout);
                    }
                    continue;
                }
                if v["type"] == "result" {
                    f.answered += 1;
                } else {
                    f.errors += 1;
                }
                if sched.measured(seq) {
                    f.latency(&sched, seq, latency);
                    if v["type"] == "result" {
                        f.answered_measured += 1;
                    }
                    // Drain the writes noted so far: this request's is among them.
                    while let Ok(w) = sent_rx.try_recv() {
                        note_written(&mut f, &mut sent_at, &sched, w);
                    }
                    if let Some(at) = sent_at[i] {
                        f.service(&sched, seq, t.saturating_duration_since(at));
                    }
                }
            }
            _ = tick.tick() => {}
        }
    }
    while let Ok(w) = sent_rx.try_recv() {
        note_written(&mut f, &mut sent_at, &sched, w);
    }
    // The connection went away: what is still unsettled was lost with it.
    for s in &settled {
        if !s {
            f.lost += 1;
            f.errors += 1;
        }
    }
    f
}

impl ConnFigures {
    fn new() -> ConnFigures {
        ConnFigures {
            latency: histogram(),
            service: histogram(),
            intervals: Vec::new(),
            lag: histogram(),
            sent: 0,
            answered: 0,
            answered_measured: 0,
            errors: 0,
            timeouts: 0,
            late: 0,
            lost: 0,
        }
    }

    /// Add another connection's figures to these (histograms exactly, counts summed).
    fn absorb(&mut self, f: &ConnFigures) {
        self.latency.add(&f.latency).ok();
        self.service.add(&f.service).ok();
        self.lag.add(&f.lag).ok();
        for (i, (l, sv)) in f.intervals.iter().enumerate() {
            while self.intervals.len() <= i {
                self.intervals
                    .push((interval_histogram(), interval_histogram()));
            }
            self.intervals[i].0.add(l).ok();
            self.intervals[i].1.add(sv).ok();
        }
        self.sent += f.sent;
        self.answered += f.answered;
        self.answered_measured += f.answered_measured;
        self.errors += f.errors;
        self.timeouts += f.timeouts;
        self.late += f.late;
        self.lost += f.lost;
    }

    fn interval(&mut self, sched: &Schedule, seq: u64) -> &mut (Histogram<u64>, Histogram<u64>) {
        let i = sched
            .intended(seq)
            .saturating_duration_since(sched.warm_until)
            .as_secs() as usize;
        while self.intervals.len() <= i {
            self.intervals
                .push((interval_histogram(), interval_histogram()));
        }
        &mut self.intervals[i]
    }

    /// A measured request's latency from its intended send time.
    fn latency(&mut self, sched: &Schedule, seq: u64, d: Duration) {
        record(&mut self.latency, d);
        record(&mut self.interval(sched, seq).0, d);
    }

    /// A measured request's service time.
    fn service(&mut self, sched: &Schedule, seq: u64, d: Duration) {
        record(&mut self.service, d);
        record(&mut self.interval(sched, seq).1, d);
    }
}

/// An interval's histogram: it grows to what it holds (most intervals hold little).
pub fn interval_histogram() -> Histogram<u64> {
    Histogram::<u64>::new(3).expect("3 significant digits are valid")
}

fn note_written(
    f: &mut ConnFigures,
    sent_at: &mut [Option<Instant>],
    sched: &Schedule,
    w: Written,
) {
    f.sent += 1;
    if let Some(slot) = sent_at.get_mut(w.seq as usize) {
        *slot = Some(w.at);
    }
    if sched.measured(w.seq) {
        record(&mut f.lag, w.lag);
    }
}

/// Run one phase over fresh connections.
pub async fn run_phase(cfg: &LoadConfig, phase: &Phase, run: u64) -> anyhow::Result<PhaseReport> {
    let conns = cfg.connections.max(1);
    // Each connection sends every `interval`; together they make the phase's rate.
    let interval = Duration::from_secs_f64(conns as f64 / phase.rate_per_s.max(1) as f64);
    let per_conn = (phase.duration.as_secs_f64() / interval.as_secs_f64()).ceil() as u64;
    let content = "x".repeat(cfg.payload_bytes);
    let mut sockets = Vec::with_capacity(conns);
    for n in 0..conns {
        let mut req = cfg.ws_url.as_str().into_client_request()?;
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", mint(&cfg.jwt_secret, n, run)).parse()?,
        );
        let (ws, _) = tokio_tungstenite::connect_async(req).await?;
        let _ = match ws.get_ref() {
            tokio_tungstenite::MaybeTlsStream::Plain(s) => s.set_nodelay(true),
            _ => Ok(()),
        };
        sockets.push(ws);
    }
    let cpu_before = generator_cpu();
    let server_before = cfg.server_cpu.as_ref().and_then(ServerCpu::read);
    let wall_before = now();
    let start = now() + Duration::from_millis(100);
    let warm_until = start + cfg.warmup;
    // Offsets stagger the connections across one interval so the arrivals are even.
    let offsets: Vec<Duration> = (0..conns)
        .map(|n| interval.mul_f64(n as f64 / conns as f64))
        .collect();
    let mut tasks = Vec::new();
    let mut triggers = Vec::new();
    for (n, ws) in sockets.into_iter().enumerate() {
        let (mut sink, stream) = ws.split();
        let sched = Schedule {
            start,
            offset: offsets[n],
            interval,
            warm_until,
            timeout: cfg.timeout,
        };
        let store = Command::MemoryStore(StoreRequest {
            content: Value::String(content.clone()),
            ..StoreRequest::default()
        });
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
        let (sent_tx, sent_rx) = tokio::sync::mpsc::unbounded_channel::<Written>();
        triggers.push(tx);
        let sender = tokio::spawn(async move {
            // When the previous write finished: a write that waits for it waits on the server
            // (a full socket), which is the server's latency, not the generator's lag.
            let mut free_at = sched.start;
            while let Some(seq) = rx.recv().await {
                let msg = protocol::request(&json!(seq), &store);
                let at = now();
                let due = sched.intended(seq).max(free_at);
                let lag = at.saturating_duration_since(due);
                let _ = sent_tx.send(Written { seq, at, lag });
                if sink.send(Message::Text(msg.into())).await.is_err() {
                    break;
                }
                free_at = now();
            }
            sink
        });
        let reader = tokio::spawn(read_answers(stream, sent_rx, sched, per_conn));
        tasks.push((sender, reader));
    }
    // The schedule runs on its own OS thread with the OS's sleep (tens of µs precise) instead
    // of tokio's 1 ms timer wheel, whose lateness would otherwise count as server latency.
    let pacer = spawn_pacer(start, interval, offsets, per_conn, triggers);
    let mut total = ConnFigures::new();
    for (mut sender, reader) in tasks {
        let f = reader.await?;
        // Every outcome is settled. A sender still writing is writing to a server that stopped
        // reading; it has nothing left to report.
        match tokio::time::timeout(Duration::from_secs(1), &mut sender).await {
            Ok(Ok(sink)) => drop(sink),
            _ => sender.abort(),
        }
        total.absorb(&f);
    }
    let _ = tokio::task::spawn_blocking(move || pacer.join()).await;
    let wall = now().saturating_duration_since(wall_before).as_secs_f64();
    let server_after = cfg.server_cpu.as_ref().and_then(ServerCpu::read);
    let generator_cpu = match (cpu_before, generator_cpu()) {
        (Some(a), Some(b)) => b.saturating_sub(a).as_secs_f64() / wall.max(1e-9),
        _ => f64::NAN,
    };
    let server_cpu_us_per_request = match (server_before, server_after) {
        (Some(a), Some(b)) if total.sent > 0 => {
            Some(b.saturating_sub(a).as_secs_f64() * 1e6 / total.sent as f64)
        }
        _ => None,
    };
    let measured = phase
        .duration
        .saturating_sub(cfg.warmup)
        .as_secs_f64()
        .max(1e-9);
    let lag = Percentiles::of(&total.lag);
    let verdict = if Duration::from_micros(lag.p99_us) > cfg.max_lag {
        Verdict::Inconclusive(format!(
            "the generator's schedule lag p99 was {} µs, over its bound of {} µs",
            lag.p99_us,
            cfg.max_lag.as_micros()
        ))
    } else {
        Verdict::Measured
    };
    Ok(PhaseReport {
        rate_per_s: phase.rate_per_s,
        scheduled: per_conn * conns as u64,
        sent: total.sent,
        answered: total.answered,
        errors: total.errors,
        timeouts: total.timeouts,
        late: total.late,
        lost: total.lost,
        timeout_us: cfg.timeout.as_micros() as u64,
        sent_per_s: total.sent as f64 / phase.duration.as_secs_f64().max(1e-9),
        achieved_per_s: total.answered_measured as f64 / measured,
        latency: Percentiles::of(&total.latency),
        service: Percentiles::of(&total.service),
        lag,
        generator_cpu,
        server_cpu_us_per_request,
        verdict,
        intervals: total.intervals,
    })
}

/// Fire every connection's sends at their intended times, in time order.
#[allow(clippy::disallowed_methods)] // a load generator's pacing thread, not server logic
fn spawn_pacer(
    start: Instant,
    interval: Duration,
    offsets: Vec<Duration>,
    per_conn: u64,
    triggers: Vec<tokio::sync::mpsc::UnboundedSender<u64>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for seq in 0..per_conn {
            for (n, tx) in triggers.iter().enumerate() {
                let intended = start + offsets[n] + interval.mul_f64(seq as f64);
                let t = now();
                if intended > t {
                    std::thread::sleep(intended - t);
                }
                let _ = tx.send(seq);
            }
        }
    })
}

/// Write a phase's interval log: one line per second of its measured part for the latency
/// (tag `latency`) and one for the service time (tag `service`), HdrHistogram V2 with DEFLATE,
/// values in µs (`MaxValueDivisor` 1000: the max column in ms). `started` is the wall-clock
/// start of the measured part (the log's StartTime and BaseTime).
pub fn write_interval_log(
    r: &PhaseReport,
    started: std::time::SystemTime,
    comment: &str,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    use hdrhistogram::serialization::V2DeflateSerializer;
    use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
    let mut serializer = V2DeflateSerializer::new();
    let mut log = IntervalLogWriterBuilder::new()
        .add_comment(comment)
        .add_comment("values in µs; latency from the intended send time, timeouts at the timeout")
        .with_start_time(started)
        .with_base_time(started)
        .with_max_value_divisor(1000.0)
        .begin_log_with(out, &mut serializer)?;
    let second = Duration::from_secs(1);
    for (i, (latency, service)) in r.intervals.iter().enumerate() {
        let at = second * i as u32;
        for (h, tag) in [(latency, "latency"), (service, "service")] {
            log.write_histogram(h, at, second, Tag::new(tag))
                .map_err(|e| anyhow::anyhow!("interval log: {e}"))?;
        }
    }
    Ok(())
}

/// The schema of `load --out`'s `summary.json`, and its version.
pub const LOAD_SCHEMA: &str = "spiral-harness/load";
pub const LOAD_SCHEMA_VERSION: u32 = 1;

/// The interval log names of `label`'s phases, in order: `LABEL-RATE.hlog`, and for a rate run
/// again (a search's repeats) `LABEL-RATE-2.hlog`, `-3`, ….
pub fn log_names(label: &str, reports: &[PhaseReport]) -> Vec<String> {
    let mut seen = std::collections::BTreeMap::<u64, u32>::new();
    reports
        .iter()
        .map(|r| {
            let k = seen.entry(r.rate_per_s).or_default();
            *k += 1;
            match *k {
                1 => format!("{label}-{}.hlog", r.rate_per_s),
                k => format!("{label}-{}-{k}.hlog", r.rate_per_s),
            }
        })
        .collect()
}

/// Write a run directory: `summary.json` (`summary`, with the log names of each label added as
/// `logs`) and one interval log per phase of the target (`server`) and of the floor.
pub fn write_run_dir(
    dir: &std::path::Path,
    mut summary: Value,
    server: &[PhaseReport],
    floor: &[PhaseReport],
    measured_from: std::time::SystemTime,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let commit = summary["commit"].as_str().unwrap_or("unknown").to_owned();
    let mut logs = serde_json::Map::new();
    for (label, list) in [("server", server), ("floor", floor)] {
        let names = log_names(label, list);
        for (r, name) in list.iter().zip(&names) {
            let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join(name))?);
            let comment = format!(
                "spiral-harness load: {label} at {}/s, commit {}",
                r.rate_per_s,
                &commit[..commit.len().min(12)]
            );
            write_interval_log(r, measured_from, &comment, &mut f)?;
            std::io::Write::flush(&mut f)?;
        }
        logs.insert(label.to_owned(), json!(names));
    }
    summary["logs"] = Value::Object(logs);
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)? + "\n",
    )?;
    Ok(())
}

/// An interval log's histograms with `tag`, one per interval, by the interval's start second.
pub fn read_intervals(text: &[u8], tag: &str) -> anyhow::Result<Vec<Histogram<u64>>> {
    use base64::Engine as _;
    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    let mut out: Vec<Histogram<u64>> = Vec::new();
    let mut de = Deserializer::new();
    for entry in IntervalLogIterator::new(text) {
        let entry = entry.map_err(|e| anyhow::anyhow!("interval log: {e:?}"))?;
        let LogEntry::Interval(h) = entry else {
            continue;
        };
        if h.tag().map(|t| t.as_str()) != Some(tag) {
            continue;
        }
        let bytes = base64::engine::general_purpose::STANDARD.decode(h.encoded_histogram())?;
        let hist: Histogram<u64> = de.deserialize(&mut bytes.as_slice())?;
        let i = h.start_timestamp().as_secs() as usize;
        while out.len() <= i {
            out.push(interval_histogram());
        }
        out[i]
            .add(&hist)
            .map_err(|e| anyhow::anyhow!("interval log: {e:?}"))?;
    }
    Ok(out)
}

/// Read back an interval log's histograms with `tag`, added together: the same histogram the
/// log was written from (exactly: the log holds every count).
pub fn read_interval_log(text: &[u8], tag: &str) -> anyhow::Result<Histogram<u64>> {
    let mut total = interval_histogram();
    for h in read_intervals(text, tag)? {
        total
            .add(&h)
            .map_err(|e| anyhow::anyhow!("interval log: {e:?}"))?;
    }
    Ok(total)
}

/// A table row: the counts, the latency from the intended send time (timeouts at the timeout),
/// the service time's p95, the generator's lag and CPU, and the verdict when it is not measured.
pub fn row(r: &PhaseReport) -> String {
    let mut s = format!(
        "{:>8}/s  sent {:>7}  ok {:>7}  err {:>5}  timeout {:>5}  p50 {:>7} µs  p95 {:>7} µs  p99 {:>7} µs  max {:>8} µs  service p95 {:>7} µs  lag p99 {:>6} µs  cpu {:>3.0} %",
        r.rate_per_s,
        r.sent,
        r.answered,
        r.errors,
        r.timeouts,
        r.latency.p50_us,
        r.latency.p95_us,
        r.latency.p99_us,
        r.latency.max_us,
        r.service.p95_us,
        r.lag.p99_us,
        r.generator_cpu * 100.0,
    );
    if let Some(us) = r.server_cpu_us_per_request {
        s.push_str(&format!("  server cpu {us:.1} µs/req"));
    }
    if let Verdict::Inconclusive(why) = &r.verdict {
        s.push_str(&format!("  INCONCLUSIVE: {why}"));
    }
    s
}

/// Each figure of `server` as a ratio to the floor's in the same run (`load --vs-floor`): how
/// many times the floor's latency (and throughput) the server's is.
pub fn ratio_row(server: &PhaseReport, floor: &PhaseReport) -> String {
    let x = |a: u64, b: u64| a as f64 / (b.max(1)) as f64;
    format!(
        "{:>8}/s  vs floor: p50 ×{:.2}  p95 ×{:.2}  p99 ×{:.2}  max ×{:.2}  service p95 ×{:.2}  ok/s ×{:.2}  cpu/req {}  timeouts {} vs {}",
        server.rate_per_s,
        x(server.latency.p50_us, floor.latency.p50_us),
        x(server.latency.p95_us, floor.latency.p95_us),
        x(server.latency.p99_us, floor.latency.p99_us),
        x(server.latency.max_us, floor.latency.max_us),
        x(server.service.p95_us, floor.service.p95_us),
        server.achieved_per_s / floor.achieved_per_s.max(1e-9),
        match (
            server.server_cpu_us_per_request,
            floor.server_cpu_us_per_request
        ) {
            (Some(a), Some(b)) if b > 0.0 => format!("×{:.2}", a / b),
            _ => "n/a (--server-pid)".to_owned(),
        },
        server.timeouts,
        floor.timeouts,
    )
}

// The generator against a real WebSocket server on loopback that never answers some requests:
// every unanswered request must be counted as a timeout and recorded at the timeout (not dropped
// from the percentiles, the coordinated omission the generator exists to avoid), the service time
// stays apart, and a generator held to an impossible schedule bound says its figures are
// inconclusive.
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{LoadConfig, Phase, Verdict, run_phase};
    use futures_util::{SinkExt, StreamExt};
    use serde_json::{Value, json};
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::Message;

    /// Requests (per connection) the test server never answers.
    const SILENT: std::ops::Range<u64> = 20..40;

    /// A WebSocket server that answers every request with a result envelope at once, except those
    /// whose `id` is in [`SILENT`]: those it reads and drops.
    async fn serve(listener: TcpListener) {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    let Message::Text(text) = msg else { continue };
                    let v: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                    let id = v["id"].as_u64().unwrap_or(u64::MAX);
                    if SILENT.contains(&id) {
                        continue;
                    }
                    let reply = json!({"id": id, "type": "result", "data": {}}).to_string();
                    if ws.send(Message::Text(reply.into())).await.is_err() {
                        return;
                    }
                }
            });
        }
    }

    async fn config(max_lag: Duration) -> LoadConfig {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener));
        LoadConfig {
            ws_url: format!("ws://{addr}"),
            jwt_secret: "test-secret".into(),
            connections: 2,
            warmup: Duration::ZERO,
            payload_bytes: 16,
            timeout: Duration::from_millis(300),
            max_lag,
            server_cpu: None,
        }
    }

    fn phase() -> Phase {
        // 2 connections × 100 requests each.
        Phase {
            rate_per_s: 200,
            duration: Duration::from_secs(1),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn unanswered_requests_are_timeouts_recorded_at_the_timeout() {
        let cfg = config(Duration::from_secs(5)).await;
        let r = run_phase(&cfg, &phase(), 1).await.unwrap();
        let silent = 2 * (SILENT.end - SILENT.start);
        assert_eq!(r.scheduled, 200, "{r:?}");
        assert_eq!(r.sent, 200, "{r:?}");
        assert_eq!(
            r.timeouts, silent,
            "every unanswered request is a timeout: {r:?}"
        );
        assert_eq!(r.answered, 200 - silent, "{r:?}");
        assert_eq!((r.errors, r.lost, r.late), (0, 0, 0), "{r:?}");
        // One request in five never answered: the p95 and p99 are the timeout (to the histogram's
        // three significant digits), and so is the maximum — nothing was left out.
        assert_eq!(
            r.latency.count, 200,
            "every request is in the latency: {r:?}"
        );
        for (name, v) in [
            ("p95", r.latency.p95_us),
            ("p99", r.latency.p99_us),
            ("max", r.latency.max_us),
        ] {
            assert!(
                (299_000..=301_000).contains(&v),
                "{name} {v} µs: should be the 300 ms timeout; {r:?}"
            );
        }
        // The service time covers the answered requests only, and none of them waited long.
        assert_eq!(r.service.count, 200 - silent, "{r:?}");
        assert!(r.service.max_us < 300_000, "{r:?}");
        assert_eq!(r.timeout_us, 300_000);
        assert_eq!(r.verdict, Verdict::Measured, "{r:?}");
        // The interval log holds every count: read back, its latency histograms add up to the
        // phase's figures exactly.
        let mut log = Vec::new();
        let started = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        super::write_interval_log(&r, started, "test", &mut log).unwrap();
        let text = String::from_utf8(log.clone()).unwrap();
        assert!(text.contains("#[StartTime: 1800000000.000"), "{text}");
        assert!(
            text.contains(",tag=latency") || text.contains("Tag=latency"),
            "{text}"
        );
        let back = super::read_interval_log(&log, "latency").unwrap();
        assert_eq!(back.len(), r.latency.count);
        assert_eq!(back.value_at_quantile(0.99), r.latency.p99_us);
        assert_eq!(back.value_at_quantile(0.50), r.latency.p50_us);
        assert_eq!(back.max(), r.latency.max_us);
        let service = super::read_interval_log(&log, "service").unwrap();
        assert_eq!(service.len(), r.service.count);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_generator_behind_its_schedule_bound_is_inconclusive() {
        // No generator keeps a schedule to within 0 µs: the bound makes the phase inconclusive,
        // whatever the server did.
        let cfg = config(Duration::ZERO).await;
        let r = run_phase(&cfg, &phase(), 2).await.unwrap();
        match &r.verdict {
            Verdict::Inconclusive(why) => assert!(why.contains("schedule lag p99"), "{why}"),
            Verdict::Measured => panic!("a 0 µs lag bound cannot be met: {r:?}"),
        }
        assert!(r.lag.count > 0, "{r:?}");
    }

    #[test]
    fn cpu_is_read_from_a_stat_line_whose_name_holds_spaces() {
        let line = "42 (floor worker) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 3 0";
        assert_eq!(super::stat_cpu(line), Some(Duration::from_millis(3000)));
        assert_eq!(super::stat_cpu("garbage"), None);
        assert!(super::process_cpu("self").is_some());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_floor_answers_every_request_and_reports_its_cpu() {
        let addr = crate::floor::spawn_on_loopback().unwrap();
        let cfg = LoadConfig {
            ws_url: format!("ws://{addr}"),
            server_cpu: Some(super::ServerCpu::Threads(super::FLOOR_THREADS)),
            max_lag: Duration::from_secs(5),
            ..config(Duration::from_secs(5)).await
        };
        let r = run_phase(&cfg, &phase(), 3).await.unwrap();
        assert_eq!((r.answered, r.timeouts, r.errors), (200, 0, 0), "{r:?}");
        let cpu = r
            .server_cpu_us_per_request
            .expect("the floor's threads are readable");
        assert!(cpu >= 0.0 && cpu.is_finite(), "{r:?}");
    }
}
