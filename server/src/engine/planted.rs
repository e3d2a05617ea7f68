//! The core's helpers for the planted engine bugs (feature `planted-bugs` only): the broken
//! sequences of critical sections `CoreHandle` runs when `count-race` or `double-collect` is
//! planted. Normal builds do not compile them.

use super::core::{Core, NodeState};
use super::spiral::DepthPpm;

impl Core {
    /// Planted `count-race`: read the counts (first critical section)…
    pub(super) fn read_counts(&self, spiral: u32) -> (u64, u64, u64) {
        let s = &self.spirals[spiral as usize];
        (s.node_count, s.depth_sum_ppm, self.total)
    }

    /// …and write them back incremented in a second one: a lost update when two commits
    /// interleave.
    pub(super) fn write_counts(&mut self, spiral: u32, depth_ppm: DepthPpm, read: (u64, u64, u64)) {
        let s = &mut self.spirals[spiral as usize];
        s.node_count = read.0 + 1;
        s.depth_sum_ppm = read.1 + u64::from(depth_ppm);
        self.total = read.2 + 1;
    }

    /// Commit a store without counting it (the caller counts it separately). Planted bugs only.
    pub(super) fn commit_store_uncounted(&mut self, id: &str) -> Option<(u32, DepthPpm)> {
        self.commit_seq += 1;
        let seq = self.commit_seq;
        let key = self.key(id)?;
        let node = self.nodes.get_mut(&key)?;
        node.state = NodeState::Live;
        node.commit_seq = seq;
        let out = (node.spiral, node.depth_ppm);
        self.gc_queue.insert((node.priority, node.created_ms, key));
        self.ops_since_gc += 1;
        Some(out)
    }

    /// Planted `double-collect`: GC took a node without marking it; take it now, whoever has it.
    pub(super) fn force_collecting(&mut self, id: &str) -> bool {
        let Some(key) = self.key(id) else {
            return false;
        };
        match self.nodes.get_mut(&key) {
            Some(n) if n.state != NodeState::Pending => {
                n.state = NodeState::Collecting;
                true
            }
            _ => false,
        }
    }
}
