//! The decision log: one JSON line per decision a proxy takes, so a run can be read back and two
//! runs with one seed compared.
//!
//! A record names the proxy, the connection (absent for proxy-wide events), the toxic and its
//! stream where one is involved, and a wall-clock `t_ms` since the proxy started. `t_ms` and the
//! `closed` byte counts depend on the machine; everything drawn from the seed does not.

use std::fmt;
use std::fs::File;
use std::io::{self, LineWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::toxic::{Stream, Toxic};

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Milliseconds since the proxy started (wall clock).
    pub t_ms: u64,
    pub proxy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toxic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<Stream>,
    #[serde(flatten)]
    pub decision: Decision,
}

/// What was decided. Serialized with a `decision` tag (`"decision":"applies"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// A client connected; connection ids count from 0 in accept order.
    Accepted {
        peer: String,
    },
    /// The upstream could not be reached; the client is closed.
    UpstreamUnreachable {
        upstream: String,
        error: String,
    },
    /// The toxic's once-per-connection draw: it applies because `draw < toxicity`.
    Applies {
        toxicity: f64,
        draw: f64,
    },
    /// The toxic's once-per-connection draw: it does not apply (`draw >= toxicity`).
    Skips {
        toxicity: f64,
        draw: f64,
    },
    /// latency: chunk `chunk` of this direction is delayed `delay_ms`.
    Delay {
        chunk: u64,
        delay_ms: u64,
    },
    /// slicer: chunk `chunk` (`bytes` long) went out as `slices` slices; `sizes` lists the
    /// first 64 of them.
    Sliced {
        chunk: u64,
        bytes: usize,
        slices: usize,
        sizes: Vec<usize>,
    },
    /// timeout: chunk `chunk` was dropped.
    Dropped {
        chunk: u64,
        bytes: usize,
    },
    /// loss: chunk `chunk` was lost; the direction is stalled from here on.
    Lost {
        chunk: u64,
        bytes: usize,
    },
    /// limit_data: the limit was reached; the connection closes once it is delivered.
    LimitReached {
        bytes: u64,
    },
    /// timeout: the connection is closed `timeout_ms` after the toxic began to apply.
    TimedOut {
        timeout_ms: u64,
    },
    /// reset_peer: both sockets are reset.
    Reset {
        timeout_ms: u64,
    },
    /// slow_close: the source closed; the close is passed on `delay_ms` later.
    SlowClose {
        delay_ms: u64,
    },
    /// down: the proxy was disabled (or stopped) and this connection is cut.
    Cut,
    /// The connection ended; bytes counted as delivered to each side.
    Closed {
        reason: String,
        upstream_bytes: u64,
        downstream_bytes: u64,
    },
    /// The proxy now accepts connections.
    Enabled,
    /// The proxy is down: its listener is closed and open connections are cut.
    Disabled,
    ToxicAdded {
        spec: Toxic,
    },
    ToxicUpdated {
        spec: Toxic,
    },
    ToxicRemoved,
}

enum Sink {
    Memory(Mutex<Vec<LogRecord>>),
    Writer(Mutex<LineWriter<Box<dyn Write + Send>>>),
}

/// Where records go: nowhere, an in-memory list (tests), or a writer of JSON lines (a file).
/// Cheap to clone; clones share the sink. Writes are synchronous and small (one line each), so
/// they happen in place rather than through a task that could lose the tail at exit.
#[derive(Clone, Default)]
pub struct DecisionLog(Option<Arc<Sink>>);

impl fmt::Debug for DecisionLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.0.as_deref() {
            None => "discard",
            Some(Sink::Memory(_)) => "memory",
            Some(Sink::Writer(_)) => "writer",
        };
        f.debug_tuple("DecisionLog").field(&kind).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl DecisionLog {
    /// Keep nothing.
    pub fn discard() -> Self {
        Self(None)
    }

    /// Keep records in memory; read them with [`DecisionLog::records`].
    pub fn memory() -> Self {
        Self(Some(Arc::new(Sink::Memory(Mutex::new(Vec::new())))))
    }

    /// Write JSON lines to `path` (created or truncated: one file, one run).
    pub fn file(path: impl AsRef<Path>) -> io::Result<Self> {
        Ok(Self::writer(File::create(path)?))
    }

    /// Write JSON lines to any writer (flushed line by line).
    pub fn writer(w: impl Write + Send + 'static) -> Self {
        let w: Box<dyn Write + Send> = Box::new(w);
        Self(Some(Arc::new(Sink::Writer(Mutex::new(LineWriter::new(w))))))
    }

    /// The records kept so far (an in-memory log only; empty otherwise).
    pub fn records(&self) -> Vec<LogRecord> {
        match self.0.as_deref() {
            Some(Sink::Memory(v)) => lock(v).clone(),
            _ => Vec::new(),
        }
    }

    pub(crate) fn record(&self, rec: LogRecord) {
        match self.0.as_deref() {
            None => {}
            Some(Sink::Memory(v)) => lock(v).push(rec),
            Some(Sink::Writer(w)) => {
                let mut w = lock(w);
                let written = serde_json::to_writer(&mut *w, &rec)
                    .map_err(io::Error::from)
                    .and_then(|()| w.write_all(b"\n"));
                if let Err(e) = written {
                    tracing::warn!(error = %e, "spiral-proxy: decision log write failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_one_flat_json_object() {
        let rec = LogRecord {
            t_ms: 5,
            proxy: "redis".into(),
            conn: Some(3),
            toxic: Some("lat".into()),
            stream: Some(Stream::Downstream),
            decision: Decision::Delay {
                chunk: 0,
                delay_ms: 105,
            },
        };
        let line = serde_json::to_string(&rec).unwrap();
        assert_eq!(
            line,
            r#"{"t_ms":5,"proxy":"redis","conn":3,"toxic":"lat","stream":"downstream","decision":"delay","chunk":0,"delay_ms":105}"#
        );
        assert_eq!(serde_json::from_str::<LogRecord>(&line).unwrap(), rec);
    }

    #[test]
    fn a_memory_log_keeps_records_and_a_discarding_one_does_not() {
        let rec = LogRecord {
            t_ms: 0,
            proxy: "p".into(),
            conn: None,
            toxic: None,
            stream: None,
            decision: Decision::Enabled,
        };
        let mem = DecisionLog::memory();
        mem.clone().record(rec.clone());
        assert_eq!(mem.records(), vec![rec.clone()]);
        let none = DecisionLog::discard();
        none.record(rec);
        assert!(none.records().is_empty());
    }
}
