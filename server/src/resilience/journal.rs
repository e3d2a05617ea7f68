//! The degraded-mode journal: a bounded FIFO of writes acknowledged while storage was
//! unreachable, replayed in order when it returns.
//!
//! Pure and synchronous (it lives behind the resilience core's lock), so loom models drive the
//! very code the server runs. Entries are numbered; a replayer copies the front entry, writes it
//! to storage *outside* the lock, and only then [`ack`](Journal::ack)s it by number. Writes that
//! arrive meanwhile queue behind it, so order is preserved and nothing is removed before storage
//! has it.

use std::collections::{BTreeMap, VecDeque};

use serde_json::Value;

/// One journaled write. Re-applying one is harmless (set and del are idempotent), which is what
/// makes retrying a partially failed replay safe.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalOp {
    Set { key: String, value: Value },
    Del { key: String },
}

impl JournalOp {
    pub fn key(&self) -> &str {
        match self {
            JournalOp::Set { key, .. } | JournalOp::Del { key } => key,
        }
    }
}

/// The journal has no room; nothing was appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("degraded journal full ({max} entries)")]
pub struct JournalFull {
    pub max: usize,
}

#[derive(Debug, Clone)]
pub struct Journal {
    entries: VecDeque<(u64, JournalOp)>,
    next_seq: u64,
    max: usize,
    /// Entries per key, so a write-through can tell that a journaled write to its key is still
    /// waiting to land behind it.
    pending: BTreeMap<String, usize>,
}

impl Journal {
    pub fn new(max: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            next_seq: 0,
            max,
            pending: BTreeMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Append one write; its sequence number is its place in the replay order.
    pub fn append(&mut self, op: JournalOp) -> Result<u64, JournalFull> {
        self.append_all(vec![op]).map(|(first, _)| first)
    }

    /// Append every write or none: the sequence numbers `first..end`.
    pub fn append_all(&mut self, ops: Vec<JournalOp>) -> Result<(u64, u64), JournalFull> {
        if ops.len() > self.max - self.entries.len().min(self.max) {
            return Err(JournalFull { max: self.max });
        }
        Ok(self.append_in_doubt(ops))
    }

    /// Append writes whose outcome storage left in doubt (a write-through that timed out or lost
    /// its connection may have landed): always, past the bound if need be. Refusing one could
    /// leave a refused write in storage; journaled, it lands on replay whatever happened to it.
    /// The overflow is bounded by the writes in flight when the outage began, whose data their
    /// callers already hold.
    pub fn append_in_doubt(&mut self, ops: Vec<JournalOp>) -> (u64, u64) {
        let first = self.next_seq;
        for op in ops {
            *self.pending.entry(op.key().to_owned()).or_default() += 1;
            self.entries.push_back((self.next_seq, op));
            self.next_seq += 1;
        }
        (first, self.next_seq)
    }

    /// A copy of the oldest entry: the next one to replay. It stays in the journal until acked.
    pub fn front(&self) -> Option<(u64, JournalOp)> {
        self.entries.front().cloned()
    }

    /// Storage has entry `seq`: remove it, if it is still the front. Returns whether it was.
    pub fn ack(&mut self, seq: u64) -> bool {
        if self.entries.front().map(|(s, _)| *s) != Some(seq) {
            return false;
        }
        if let Some((_, op)) = self.entries.pop_front() {
            self.forget(op.key());
        }
        true
    }

    /// Take back the entries numbered `from` and after (their append could not be made
    /// durable, so they were never acknowledged). Numbers are not reused.
    pub fn truncate(&mut self, from: u64) {
        while let Some((seq, _)) = self.entries.back()
            && *seq >= from
        {
            if let Some((_, op)) = self.entries.pop_back() {
                self.forget(op.key());
            }
        }
    }

    fn forget(&mut self, key: &str) {
        if let Some(n) = self.pending.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                self.pending.remove(key);
            }
        }
    }

    /// Is a journaled write to `key` still waiting for replay?
    pub fn has_pending(&self, key: &str) -> bool {
        self.pending.contains_key(key)
    }

    /// The entries in replay order; for checkers and tests.
    pub fn iter(&self) -> impl Iterator<Item = &(u64, JournalOp)> {
        self.entries.iter()
    }
}

/// `Set key = v`: the journal entry the resilience tests write most.
#[cfg(test)]
#[cfg(not(spiral_loom))]
pub(crate) fn set_op(key: &str, v: i64) -> JournalOp {
    JournalOp::Set {
        key: key.into(),
        value: Value::from(v),
    }
}

#[cfg(test)]
#[cfg(not(spiral_loom))]
mod tests {
    use super::*;

    use super::set_op as set;

    #[test]
    fn entries_replay_in_append_order_and_leave_only_when_acked() {
        let mut j = Journal::new(10);
        let a = j.append(set("a", 1)).unwrap();
        let b = j.append(JournalOp::Del { key: "a".into() }).unwrap();
        assert!(a < b);
        assert_eq!(j.front(), Some((a, set("a", 1))));
        assert_eq!(j.front(), Some((a, set("a", 1))), "front does not pop");
        assert!(!j.ack(b), "only the front can be acked");
        assert!(j.ack(a));
        assert!(!j.ack(a), "acking twice is a no-op");
        assert_eq!(j.front().map(|(s, _)| s), Some(b));
        assert!(j.has_pending("a"));
        assert!(j.ack(b));
        assert!(j.is_empty());
        assert!(!j.has_pending("a"));
    }

    #[test]
    fn a_full_journal_refuses_and_appends_nothing() {
        let mut j = Journal::new(2);
        j.append(set("a", 1)).unwrap();
        assert_eq!(
            j.append_all(vec![set("b", 1), set("c", 1)]),
            Err(JournalFull { max: 2 })
        );
        assert_eq!(j.len(), 1);
        assert!(!j.has_pending("b"));
        j.append(set("b", 1)).unwrap();
        assert_eq!(j.append(set("c", 1)), Err(JournalFull { max: 2 }));
    }

    #[test]
    fn writes_in_doubt_are_appended_past_the_bound() {
        let mut j = Journal::new(1);
        j.append(set("a", 1)).unwrap();
        assert_eq!(j.append(set("b", 1)), Err(JournalFull { max: 1 }));
        let (first, end) = j.append_in_doubt(vec![set("b", 2), set("c", 2)]);
        assert_eq!((end - first, j.len()), (2, 3));
        assert!(j.has_pending("b") && j.has_pending("c"));
        assert_eq!(
            j.append(set("d", 1)),
            Err(JournalFull { max: 1 }),
            "still full"
        );
    }

    #[test]
    fn sequence_numbers_keep_rising_across_drains() {
        let mut j = Journal::new(1);
        let a = j.append(set("a", 1)).unwrap();
        assert!(j.ack(a));
        let b = j.append(set("a", 2)).unwrap();
        assert!(
            b > a,
            "a stale ack of an old number can never pop a new entry"
        );
        assert!(!j.ack(a));
    }

    #[test]
    fn truncate_takes_back_the_tail_and_its_pending_keys() {
        let mut j = Journal::new(10);
        let a = j.append(set("a", 1)).unwrap();
        let (b, _) = j.append_all(vec![set("b", 1), set("a", 2)]).unwrap();
        j.truncate(b);
        assert_eq!(j.len(), 1);
        assert!(!j.has_pending("b"));
        assert!(j.has_pending("a"), "the first write to a is still queued");
        assert_eq!(j.front(), Some((a, set("a", 1))));
        assert!(j.append(set("c", 1)).unwrap() > b, "numbers are not reused");
    }

    #[test]
    fn a_zero_sized_journal_refuses_everything() {
        let mut j = Journal::new(0);
        assert!(j.append(set("a", 1)).is_err());
        assert_eq!(j.append_all(vec![]), Ok((0, 0)));
    }
}
