//! Where the degraded journal is kept so that it outlives the process (SPEC §1.9): a write is
//! acknowledged in degraded mode only once its journal entry is on local disk, and a restarted
//! server replays what it finds there before it opens.
//!
//! The resilience core calls the log inside its critical section, so the order on disk is the
//! replay order and an acknowledgement of a replayed entry is on disk before the entry leaves
//! the in-memory journal — a later write-through to the same key can never be overtaken by a
//! stale entry replayed after a crash. The price: while storage is unreachable, journaled
//! writes are serialised on the disk's sync (degraded mode is a slow path, never the common one).
//!
//! - [`FileLog`]: JSON lines, one line per append (a multi-key write is one line, so it is whole
//!   or absent after a crash), `{"ack":seq}` lines as replay lands, `fdatasync` after each. A
//!   torn last line is an append that never returned, so never an acknowledged write: it is
//!   ignored. The file is truncated whenever the journal drains and compacted on load.
//! - [`MemLog`]: the same contract in memory. The default (memory storage keeps nothing across
//!   a restart anyway) and the simulator's disk: the world holds it outside the server host, so
//!   it survives a crash as a disk would.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use super::journal::JournalOp;

/// Durable storage for the journal. `append` and `ack` return only once the record is durable.
pub trait JournalLog: std::fmt::Debug + Send + Sync {
    /// Entries `first..first + ops.len()`, as one record.
    fn append(&self, first: u64, ops: &[JournalOp]) -> std::io::Result<()>;
    /// Entry `seq` reached storage. `drained`: it was the last one; the log may forget it all.
    fn ack(&self, seq: u64, drained: bool) -> std::io::Result<()>;
    /// The entries not yet acknowledged, in order. The log is rewritten to hold exactly these,
    /// numbered `0..n`, which is how a fresh [`Journal`](super::Journal) numbers them.
    fn load(&self) -> std::io::Result<Vec<JournalOp>>;
    /// Where it lives, for logs and errors.
    fn describe(&self) -> String;
}

/// One line of the file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Line {
    Append { seq: u64, ops: Vec<JournalOp> },
    Ack { ack: u64 },
}

/// Replay `lines` to the unacknowledged entries, in order.
fn outstanding(lines: impl IntoIterator<Item = Line>) -> Vec<JournalOp> {
    let mut open: BTreeMap<u64, JournalOp> = BTreeMap::new();
    for line in lines {
        match line {
            Line::Append { seq, ops } => {
                for (i, op) in ops.into_iter().enumerate() {
                    open.insert(seq + i as u64, op);
                }
            }
            Line::Ack { ack } => {
                open.remove(&ack);
            }
        }
    }
    open.into_values().collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The journal in a file (`DEGRADED_JOURNAL_PATH`). The process holds an exclusive lock on it,
/// so two servers can never share one journal.
#[derive(Debug)]
pub struct FileLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl FileLog {
    /// Open (or create) the journal at `path`, creating its directory.
    pub fn open(path: impl AsRef<Path>) -> std::io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        file.try_lock().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                format!(
                    "{}: another process holds this degraded journal",
                    path.display()
                ),
            )
        })?;
        Ok(Self {
            path,
            file: Mutex::new(file),
        })
    }

    fn write_lines(file: &mut File, lines: &[Line]) -> std::io::Result<()> {
        let mut buf = Vec::new();
        for line in lines {
            serde_json::to_writer(&mut buf, line)?;
            buf.push(b'\n');
        }
        file.write_all(&buf)?;
        file.sync_data()
    }
}

impl JournalLog for FileLog {
    fn append(&self, first: u64, ops: &[JournalOp]) -> std::io::Result<()> {
        let line = Line::Append {
            seq: first,
            ops: ops.to_vec(),
        };
        Self::write_lines(&mut lock(&self.file), &[line])
    }

    fn ack(&self, seq: u64, drained: bool) -> std::io::Result<()> {
        let mut file = lock(&self.file);
        if drained {
            file.set_len(0)?;
            file.sync_data()
        } else {
            Self::write_lines(&mut file, &[Line::Ack { ack: seq }])
        }
    }

    fn load(&self) -> std::io::Result<Vec<JournalOp>> {
        let mut file = lock(&self.file);
        let reader = BufReader::new(File::open(&self.path)?);
        let mut lines = Vec::new();
        let mut raw = reader.split(b'\n').peekable();
        while let Some(bytes) = raw.next() {
            let bytes = bytes?;
            match serde_json::from_slice::<Line>(&bytes) {
                Ok(line) => lines.push(line),
                // The last line may be torn by a crash mid-append: that append never returned.
                Err(_) if raw.peek().is_none() => break,
                Err(e) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{}: corrupt journal line: {e}", self.path.display()),
                    ));
                }
            }
        }
        let ops = outstanding(lines);
        file.set_len(0)?;
        if ops.is_empty() {
            file.sync_data()?;
        } else {
            Self::write_lines(
                &mut file,
                &[Line::Append {
                    seq: 0,
                    ops: ops.clone(),
                }],
            )?;
        }
        Ok(ops)
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// The journal in memory. Clones share one log: whoever holds a clone holds the "disk".
#[derive(Debug, Clone, Default)]
pub struct MemLog {
    lines: Arc<Mutex<Vec<Line>>>,
}

impl MemLog {
    pub fn new() -> Self {
        Self::default()
    }
}

impl JournalLog for MemLog {
    fn append(&self, first: u64, ops: &[JournalOp]) -> std::io::Result<()> {
        lock(&self.lines).push(Line::Append {
            seq: first,
            ops: ops.to_vec(),
        });
        Ok(())
    }

    fn ack(&self, seq: u64, drained: bool) -> std::io::Result<()> {
        let mut lines = lock(&self.lines);
        if drained {
            lines.clear();
        } else {
            lines.push(Line::Ack { ack: seq });
        }
        Ok(())
    }

    fn load(&self) -> std::io::Result<Vec<JournalOp>> {
        let mut lines = lock(&self.lines);
        let ops = outstanding(std::mem::take(&mut *lines));
        if !ops.is_empty() {
            lines.push(Line::Append {
                seq: 0,
                ops: ops.clone(),
            });
        }
        Ok(ops)
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}

#[cfg(test)]
#[cfg(not(spiral_loom))]
mod tests {
    use super::*;

    use crate::resilience::journal::set_op as set;

    fn del(k: &str) -> JournalOp {
        JournalOp::Del { key: k.into() }
    }

    /// Both logs keep exactly the unacknowledged entries, in order, renumbered from 0, across
    /// "boots" (`open` gives the log the next process would find).
    fn contract(open: &dyn Fn() -> Box<dyn JournalLog>) {
        {
            let log = open();
            assert!(log.load().unwrap().is_empty());
            log.append(0, &[set("a", 1), set("b", 1)]).unwrap();
            log.append(2, &[del("a")]).unwrap();
            log.ack(0, false).unwrap();
        }
        {
            let log = open();
            assert_eq!(log.load().unwrap(), vec![set("b", 1), del("a")]);
            // After load the entries are numbered 0 and 1.
            log.ack(0, false).unwrap();
            log.append(2, &[set("c", 3)]).unwrap();
        }
        {
            let log = open();
            assert_eq!(log.load().unwrap(), vec![del("a"), set("c", 3)]);
            log.ack(0, false).unwrap();
            log.ack(1, true).unwrap();
        }
        assert!(open().load().unwrap().is_empty(), "a drained log is empty");
    }

    #[test]
    fn the_memory_log_keeps_what_was_not_acknowledged() {
        let disk = MemLog::new();
        contract(&|| Box::new(disk.clone()));
    }

    #[test]
    fn the_file_log_keeps_what_was_not_acknowledged_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("journal.jsonl");
        contract(&|| Box::new(FileLog::open(&path).unwrap()));
    }

    #[test]
    fn a_torn_last_line_is_an_append_that_never_returned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        {
            let log = FileLog::open(&path).unwrap();
            log.append(0, &[set("a", 1)]).unwrap();
        }
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"seq":1,"ops":[{"set""#).unwrap();
        drop(f);
        let log = FileLog::open(&path).unwrap();
        assert_eq!(log.load().unwrap(), vec![set("a", 1)]);
    }

    #[test]
    fn a_corrupt_line_before_the_end_is_an_error_not_a_silent_loss() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        std::fs::write(&path, "garbage\n{\"ack\":0}\n").unwrap();
        let err = FileLog::open(&path).unwrap().load().unwrap_err();
        assert!(err.to_string().contains("corrupt journal line"), "{err}");
    }

    #[test]
    fn a_second_process_cannot_share_a_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let _held = FileLog::open(&path).unwrap();
        let err = FileLog::open(&path).unwrap_err();
        assert!(err.to_string().contains("another process"), "{err}");
    }
}
