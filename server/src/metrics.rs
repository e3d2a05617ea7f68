//! Every series of SPEC §1.7, rendered in the Prometheus text exposition format (0.0.4), which
//! `promtool check metrics` accepts. A small hand-written registry: counters and gauges are
//! atomics, labelled families keep their children in a `BTreeMap` so the output order never
//! depends on hashing, histograms have fixed buckets.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::sync::{self, AtomicI64, AtomicU64, Mutex, Ordering};

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn add(&self, d: i64) {
        self.0.fetch_add(d, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Label values equal, without allocating.
fn same(key: &[String], values: &[&str]) -> bool {
    key.len() == values.len() && key.iter().zip(values).all(|(k, v)| k == v)
}

/// Counters by the values of fixed label names.
#[derive(Debug)]
pub struct CounterVec {
    labels: &'static [&'static str],
    children: Mutex<BTreeMap<Vec<String>, u64>>,
}

impl CounterVec {
    fn new(labels: &'static [&'static str]) -> Self {
        Self {
            labels,
            children: Mutex::new(BTreeMap::new()),
        }
    }

    /// Add one to the child with these label values (in the order of the label names).
    pub fn inc(&self, values: &[&str]) {
        let mut c = sync::lock(&self.children);
        // Look up without allocating; allocate only for a new child.
        if let Some((_, n)) = c.iter_mut().find(|(k, _)| same(k, values)) {
            *n += 1;
        } else {
            c.insert(values.iter().map(|v| (*v).to_owned()).collect(), 1);
        }
    }

    pub fn get(&self, values: &[&str]) -> u64 {
        let key: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        sync::lock(&self.children).get(&key).copied().unwrap_or(0)
    }
}

/// Cumulative buckets with upper bounds `bounds`, a sum and a count.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// Sum in millionths of the unit, so it stays an atomic integer.
    sum_micro: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micro: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, v: f64) {
        let v = if v.is_finite() { v.max(0.0) } else { 0.0 };
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micro
            .fetch_add((v * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_micro.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
        let _ = writeln!(out, "{name}_count{} {count}", braces(labels));
    }
}

/// Histograms by label values.
#[derive(Debug)]
pub struct HistogramVec {
    labels: &'static [&'static str],
    bounds: &'static [f64],
    children: Mutex<BTreeMap<Vec<String>, std::sync::Arc<Histogram>>>,
}

impl HistogramVec {
    fn new(labels: &'static [&'static str], bounds: &'static [f64]) -> Self {
        Self {
            labels,
            bounds,
            children: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn observe(&self, values: &[&str], v: f64) {
        let h = {
            let mut c = sync::lock(&self.children);
            match c.iter().find(|(k, _)| same(k, values)) {
                Some((_, h)) => h.clone(),
                None => c
                    .entry(values.iter().map(|v| (*v).to_owned()).collect())
                    .or_insert_with(|| std::sync::Arc::new(Histogram::new(self.bounds)))
                    .clone(),
            }
        };
        h.observe(v);
    }
}

const MS_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0,
    5000.0,
];
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Gauges whose values are read at scrape time from the engine, storage and OS.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Snapshot {
    pub gc_backlog: u64,
    pub memories_total: u64,
    pub breaker_state: u8,
    pub breaker_opens: u64,
    pub eventbus_backlog: u64,
    pub heap_bytes: u64,
    pub rss_bytes: u64,
    /// 1 when Redis is configured without TLS (for `RedisTLSDisabled`).
    pub redis_tls_disabled: Option<bool>,
    pub journal_len: u64,
    pub shared_state_fallbacks: u64,
    pub ratelimit_buckets: u64,
}

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    pub ws_auth_attempts: CounterVec,
    pub http_auth_attempts: CounterVec,
    pub rate_limit_exceeded: CounterVec,
    pub ws_active_connections: Gauge,
    pub ws_active_users: Gauge,
    pub store_allowed: Counter,
    pub store_denied: Counter,
    pub eventbus_publish_lag_ms: Histogram,
    pub ws_messages_in: Counter,
    pub ws_messages_out: Counter,
    pub ws_bytes_out: Counter,
    pub storage_latency_ms: HistogramVec,
    pub gc_pause_ms: Histogram,
    pub heartbeat_skew_ms: Gauge,
    pub analysis_latency_ms: Histogram,
    pub ws_backpressure_drops: Counter,
    /// Outbound bytes queued for WebSocket clients, all connections together.
    pub ws_send_queue_bytes: Gauge,
    /// Connections closed by the header or idle timeout, by `reason`.
    pub http_connection_timeouts: CounterVec,
    pub ws_rate_limit_drops: Counter,
    pub ws_scope_reject: Counter,
    pub ws_closes: CounterVec,
    pub http_request_duration_seconds: HistogramVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

fn label_pairs(names: &[&str], values: &[String]) -> String {
    names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
        .collect::<Vec<_>>()
        .join(",")
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn scalar(out: &mut String, name: &str, kind: &str, help: &str, v: impl std::fmt::Display) {
    head(out, name, kind, help);
    let _ = writeln!(out, "{name} {v}");
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            ws_auth_attempts: CounterVec::new(&["status"]),
            http_auth_attempts: CounterVec::new(&["status"]),
            rate_limit_exceeded: CounterVec::new(&["endpoint"]),
            ws_active_connections: Gauge::default(),
            ws_active_users: Gauge::default(),
            store_allowed: Counter::default(),
            store_denied: Counter::default(),
            eventbus_publish_lag_ms: Histogram::new(MS_BUCKETS),
            ws_messages_in: Counter::default(),
            ws_messages_out: Counter::default(),
            ws_bytes_out: Counter::default(),
            storage_latency_ms: HistogramVec::new(&["method", "backend"], MS_BUCKETS),
            gc_pause_ms: Histogram::new(MS_BUCKETS),
            heartbeat_skew_ms: Gauge::default(),
            analysis_latency_ms: Histogram::new(MS_BUCKETS),
            ws_backpressure_drops: Counter::default(),
            ws_send_queue_bytes: Gauge::default(),
            http_connection_timeouts: CounterVec::new(&["reason"]),
            ws_rate_limit_drops: Counter::default(),
            ws_scope_reject: Counter::default(),
            ws_closes: CounterVec::new(&["code"]),
            http_request_duration_seconds: HistogramVec::new(&["route", "status"], SECONDS_BUCKETS),
        }
    }

    fn counter_vec(out: &mut String, name: &str, help: &str, v: &CounterVec) {
        head(out, name, "counter", help);
        let children = sync::lock(&v.children);
        for (values, n) in children.iter() {
            let _ = writeln!(out, "{name}{{{}}} {n}", label_pairs(v.labels, values));
        }
    }

    fn histogram_vec(out: &mut String, name: &str, help: &str, v: &HistogramVec) {
        head(out, name, "histogram", help);
        let children: Vec<_> = sync::lock(&v.children)
            .iter()
            .map(|(k, h)| (k.clone(), h.clone()))
            .collect();
        for (values, h) in children {
            h.render(out, name, &label_pairs(v.labels, &values));
        }
    }

    /// The exposition text, with the scrape-time values of `snap`.
    pub fn render(&self, snap: &Snapshot) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let o = &mut out;
        Self::counter_vec(
            o,
            "spiral_ws_auth_attempts_total",
            "WebSocket handshake authentications by outcome.",
            &self.ws_auth_attempts,
        );
        Self::counter_vec(
            o,
            "spiral_http_auth_attempts_total",
            "HTTP request authentications by outcome.",
            &self.http_auth_attempts,
        );
        Self::counter_vec(
            o,
            "spiral_ws_rate_limit_exceeded_total",
            "Requests refused by a rate limit, by endpoint.",
            &self.rate_limit_exceeded,
        );
        scalar(
            o,
            "spiral_ws_active_connections",
            "gauge",
            "Open WebSocket connections (command channel and stream).",
            self.ws_active_connections.get(),
        );
        scalar(
            o,
            "spiral_ws_active_users",
            "gauge",
            "Distinct users with an open WebSocket connection.",
            self.ws_active_users.get(),
        );
        scalar(
            o,
            "spiral_store_allowed_total",
            "counter",
            "Store operations admitted by the store rate limit.",
            self.store_allowed.get(),
        );
        scalar(
            o,
            "spiral_store_denied_total",
            "counter",
            "Store operations refused by the store rate limit.",
            self.store_denied.get(),
        );
        scalar(
            o,
            "eventbus_backlog",
            "gauge",
            "Engine events queued for the event stream and not yet relayed.",
            snap.eventbus_backlog,
        );
        head(
            o,
            "eventbus_publish_lag_ms",
            "histogram",
            "Time from an engine event to its frame being written to a stream client (ms).",
        );
        self.eventbus_publish_lag_ms
            .render(o, "eventbus_publish_lag_ms", "");
        scalar(
            o,
            "process_heap_bytes",
            "gauge",
            "Anonymous resident memory of the process (heap and allocator arenas), from /proc.",
            snap.heap_bytes,
        );
        scalar(
            o,
            "process_rss_bytes",
            "gauge",
            "Resident set size of the process, from /proc.",
            snap.rss_bytes,
        );
        scalar(
            o,
            "ws_messages_in_total",
            "counter",
            "WebSocket data messages received.",
            self.ws_messages_in.get(),
        );
        scalar(
            o,
            "ws_messages_out_total",
            "counter",
            "WebSocket messages written.",
            self.ws_messages_out.get(),
        );
        scalar(
            o,
            "ws_bytes_out_total",
            "counter",
            "Bytes of WebSocket messages written.",
            self.ws_bytes_out.get(),
        );
        Self::histogram_vec(
            o,
            "spiral_storage_latency_ms",
            "Storage call latency by method and backend (ms).",
            &self.storage_latency_ms,
        );
        head(
            o,
            "spiral_gc_pause_ms",
            "histogram",
            "Garbage-collection pass duration (ms).",
        );
        self.gc_pause_ms.render(o, "spiral_gc_pause_ms", "");
        scalar(
            o,
            "spiral_gc_backlog",
            "gauge",
            "Nodes over capacity that GC still has to collect.",
            snap.gc_backlog,
        );
        scalar(
            o,
            "spiral_memories_total",
            "gauge",
            "Memory nodes held (totalMemories).",
            snap.memories_total,
        );
        scalar(
            o,
            "heartbeat_skew_ms",
            "gauge",
            "How late the last event-stream heartbeat fired (ms).",
            self.heartbeat_skew_ms.get(),
        );
        head(
            o,
            "metacog_analysis_latency_ms",
            "histogram",
            "Time to compute spiral statistics (spiral.stats, rebuild-stats) (ms).",
        );
        self.analysis_latency_ms
            .render(o, "metacog_analysis_latency_ms", "");
        scalar(
            o,
            "ws_backpressure_drops_total",
            "counter",
            "Outbound WebSocket frames dropped because a client's send queue was full.",
            self.ws_backpressure_drops.get(),
        );
        scalar(
            o,
            "ws_send_queue_bytes",
            "gauge",
            "Outbound bytes queued for WebSocket clients (all connections).",
            self.ws_send_queue_bytes.get(),
        );
        Self::counter_vec(
            o,
            "spiral_http_connection_timeouts_total",
            "Connections closed for not sending a whole request header in time (header) or for idling between requests (idle).",
            &self.http_connection_timeouts,
        );
        scalar(
            o,
            "ws_rate_limit_drops_total",
            "counter",
            "Event-stream frames dropped by the per-client frame rate limit.",
            self.ws_rate_limit_drops.get(),
        );
        scalar(
            o,
            "ws_scope_reject_total",
            "counter",
            "Event-stream handshakes refused for a missing scope.",
            self.ws_scope_reject.get(),
        );
        Self::counter_vec(
            o,
            "ws_close_total",
            "WebSocket connections closed by the server, by close code.",
            &self.ws_closes,
        );
        scalar(
            o,
            "circuit_breaker_open_total",
            "counter",
            "Times the storage circuit breaker opened.",
            snap.breaker_opens,
        );
        scalar(
            o,
            "breaker_state",
            "gauge",
            "Storage circuit breaker: 0 closed, 1 open, 2 half-open.",
            snap.breaker_state,
        );
        scalar(
            o,
            "spiral_degraded_journal_entries",
            "gauge",
            "Writes in the degraded-mode journal awaiting replay.",
            snap.journal_len,
        );
        scalar(
            o,
            "spiral_auth_shared_state_fallbacks_total",
            "counter",
            "Rate-limit and token decisions taken locally because Redis was unreachable.",
            snap.shared_state_fallbacks,
        );
        scalar(
            o,
            "spiral_ratelimit_buckets",
            "gauge",
            "Rate-limit buckets held in process memory (bounded by SPIRAL_RATE_LIMIT_BUCKETS plus the ones in use).",
            snap.ratelimit_buckets,
        );
        if let Some(off) = snap.redis_tls_disabled {
            scalar(
                o,
                "spiral_redis_tls_disabled",
                "gauge",
                "1 when Redis is reached without TLS.",
                u8::from(off),
            );
        }
        Self::histogram_vec(
            o,
            "http_request_duration_seconds",
            "HTTP request duration by route and status (s).",
            &self.http_request_duration_seconds,
        );
        out
    }
}

/// Resident and anonymous-resident bytes of this process, from `/proc/self/status`; zeros where
/// that file does not exist.
pub fn process_memory() -> (u64, u64) {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return (0, 0);
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("RssAnon:"), field("VmRSS:"))
}

#[cfg(test)]
#[cfg(not(spiral_loom))]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_counted() {
        let h = Histogram::new(&[1.0, 10.0]);
        for v in [0.5, 5.0, 50.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "");
        assert!(out.contains("x_bucket{le=\"1\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_sum 55.5\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
    }

    #[test]
    fn labels_are_escaped_and_ordered() {
        let m = Metrics::new();
        m.ws_auth_attempts.inc(&["ok"]);
        m.ws_auth_attempts.inc(&["bad\"one"]);
        let out = m.render(&Snapshot::default());
        let a = out.find("status=\"bad\\\"one\"").unwrap();
        let b = out.find("status=\"ok\"").unwrap();
        assert!(a < b);
    }

    #[test]
    fn process_memory_is_read_from_the_os() {
        let (heap, rss) = process_memory();
        assert!(rss > 0 && heap > 0 && heap <= rss, "{heap} {rss}");
    }
}
