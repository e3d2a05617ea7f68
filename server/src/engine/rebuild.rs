//! Rebuild inside the core: counts loaded from a meta snapshot, then reconciled with what a
//! storage scan found. A `RebuildWindow` remembers where the scan started so that stores and
//! collects committing while it runs keep the state their own protocol gives them.

use std::collections::BTreeSet;

use serde::Serialize;

use super::core::{Core, NodeMeta, NodeState, Tenant};
use super::sigil::Sigil;
use super::spiral::{DepthPpm, Spiral, SpiralStats};

/// A node as found in storage by a rebuild scan.
#[derive(Debug, Clone)]
pub struct ScannedNode {
    pub key: Sigil,
    pub tenant: Tenant,
    pub spiral: u32,
    pub depth_ppm: DepthPpm,
    pub priority: i64,
    pub created_ms: u64,
}

/// One corrected spiral: its statistics before and after the rebuild.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Correction {
    pub before: SpiralStats,
    pub after: SpiralStats,
}

/// A rebuild in progress: collections that commit while its scan runs must not be resurrected.
#[derive(Debug, Default)]
pub(super) struct RebuildWindow {
    pub(super) start_seq: u64,
    pub(super) collected: BTreeSet<Sigil>,
}

impl Core {
    /// Load counts from a meta snapshot (at boot, before the verifying rebuild).
    pub fn load_counts(&mut self, spirals: &[(u32, u64, u64)]) {
        for s in self.spirals.iter_mut() {
            *s = Spiral::default();
        }
        let mut total = 0;
        for &(i, count, depth_sum) in spirals {
            if let Some(s) = self.spirals.get_mut(i as usize) {
                s.node_count = count;
                s.depth_sum_ppm = depth_sum;
                total += count;
            }
        }
        self.total = total;
    }

    pub fn raw_counts(&self) -> Vec<(u32, u64, u64)> {
        self.spirals
            .iter()
            .enumerate()
            .map(|(i, s)| (i as u32, s.node_count, s.depth_sum_ppm))
            .collect()
    }

    /// Start a rebuild: remember the commit sequence its scan starts after. `None` if one is
    /// already running.
    pub fn begin_rebuild(&mut self) -> Option<u64> {
        if self.rebuild.is_some() {
            return None;
        }
        self.rebuild = Some(RebuildWindow {
            start_seq: self.commit_seq,
            collected: BTreeSet::new(),
        });
        Some(self.commit_seq)
    }

    pub fn cancel_rebuild(&mut self) {
        self.rebuild = None;
    }

    /// Finish a rebuild: reconcile the index with what the scan found in storage (storage is the
    /// truth), recompute every spiral from the nodes, and report each spiral whose statistics
    /// changed. Nodes whose store or collect raced the scan keep the state their own protocol
    /// gives them.
    pub fn apply_rebuild(&mut self, mut scanned: Vec<ScannedNode>) -> Vec<Correction> {
        let window = self.rebuild.take().unwrap_or_default();
        let before = self.all_spiral_stats();
        // Storage lists keys in order, so this is a merge of two sorted sequences: one pass,
        // sequential access, no per-node lookups (sorting sorted input is linear).
        scanned.sort_unstable_by_key(|s| s.key);
        let spirals = self.spirals.len();
        let usable =
            |s: &ScannedNode| !window.collected.contains(&s.key) && (s.spiral as usize) < spirals;
        let mut fresh: Vec<ScannedNode> = Vec::new();
        let mut lost: Vec<Sigil> = Vec::new();
        let mut scan = scanned.into_iter().peekable();
        for (&key, n) in self.nodes.iter_mut() {
            while let Some(s) = scan.next_if(|s| s.key < key) {
                if usable(&s) {
                    fresh.push(s);
                }
            }
            match scan.next_if(|s| s.key == key).filter(|s| usable(s)) {
                Some(s) => {
                    // Storage decides where a node lives and what it weighs.
                    n.spiral = s.spiral;
                    n.depth_ppm = s.depth_ppm;
                    if (n.priority, n.created_ms) != (s.priority, s.created_ms) {
                        let old = (n.priority, n.created_ms, key);
                        n.priority = s.priority;
                        n.created_ms = s.created_ms;
                        if self.gc_queue.remove(&old) {
                            self.gc_queue.insert((s.priority, s.created_ms, key));
                        }
                    }
                }
                // Counted, committed before the scan began, and not in storage: gone.
                None if n.state == NodeState::Live && n.commit_seq <= window.start_seq => {
                    lost.push(key)
                }
                None => {}
            }
        }
        fresh.extend(scan.filter(|s| usable(s)));
        for s in fresh {
            self.commit_seq += 1;
            self.gc_queue.insert((s.priority, s.created_ms, s.key));
            self.nodes.insert(
                s.key,
                NodeMeta {
                    tenant: s.tenant,
                    spiral: s.spiral,
                    depth_ppm: s.depth_ppm,
                    priority: s.priority,
                    created_ms: s.created_ms,
                    state: NodeState::Live,
                    referenced: false,
                    skips: 0,
                    commit_seq: self.commit_seq,
                },
            );
        }
        for key in lost {
            if let Some(n) = self.nodes.remove(&key) {
                self.gc_queue.remove(&(n.priority, n.created_ms, key));
            }
        }
        // Recount from the nodes themselves.
        let mut fresh = vec![Spiral::default(); self.spirals.len()];
        let mut total = 0;
        for n in self
            .nodes
            .values()
            .filter(|n| n.state != NodeState::Pending)
        {
            let s = &mut fresh[n.spiral as usize];
            s.node_count += 1;
            s.depth_sum_ppm += u64::from(n.depth_ppm);
            total += 1;
        }
        for (old, new) in self.spirals.iter().zip(fresh.iter_mut()) {
            new.last_used_op = old.last_used_op;
        }
        self.spirals = fresh;
        self.total = total;
        let after = self.all_spiral_stats();
        before
            .into_iter()
            .zip(after)
            .filter(|(b, a)| b != a)
            .map(|(before, after)| {
                crate::reached!("rebuild.corrected");
                Correction { before, after }
            })
            .collect()
    }
}

#[cfg(test)]
#[cfg(not(spiral_loom))]
mod tests {
    use super::super::core::tests::{core, store};
    use super::super::sigil::parse_sigil;
    use super::*;

    #[test]
    fn rebuild_corrects_drifted_counts_and_reports_before_and_after() {
        let mut c = core(100);
        let id = store(&mut c, "t", 0.25, 0, 1);
        let spiral = c.nodes[&parse_sigil(&id, 10).unwrap()].spiral;
        c.load_counts(&[(spiral, 7, 1)]);
        assert!(c.check().is_err());
        c.begin_rebuild().unwrap();
        let fixes = c.apply_rebuild(vec![ScannedNode {
            key: parse_sigil(&id, 10).unwrap(),
            tenant: "t".into(),
            spiral,
            depth_ppm: 250_000,
            priority: 0,
            created_ms: 1,
        }]);
        assert_eq!(fixes.len(), 1);
        assert_eq!(fixes[0].before.node_count, 7);
        assert_eq!(fixes[0].after.node_count, 1);
        assert_eq!(fixes[0].after.avg_depth, 0.25);
        c.check().unwrap();
    }

    #[test]
    fn rebuild_keeps_stores_that_commit_during_the_scan_and_drops_collects() {
        let mut c = core(100);
        let early = store(&mut c, "t", 0.5, 0, 1);
        let gone = store(&mut c, "t", 0.5, 0, 2);
        c.begin_rebuild().unwrap();
        let scan_saw = |c: &Core, id: &str| ScannedNode {
            key: parse_sigil(id, 10).unwrap(),
            tenant: "t".into(),
            spiral: c.nodes[&parse_sigil(id, 10).unwrap()].spiral,
            depth_ppm: 500_000,
            priority: 0,
            created_ms: 1,
        };
        let scanned = vec![scan_saw(&c, &early), scan_saw(&c, &gone)];
        // While the scan runs: one store commits, one collect commits.
        let late = store(&mut c, "t", 0.5, 0, 3);
        assert!(c.begin_collect("t", &gone));
        assert!(c.commit_collect(&gone));
        c.apply_rebuild(scanned);
        assert_eq!(c.counted_ids().len(), 2);
        assert!(c.node_state(&late).is_some());
        assert!(c.node_state(&gone).is_none());
        c.check().unwrap();
    }
}
